"""A Search request's filter and ranking, checked and turned into what the indexes take."""

from __future__ import annotations

from collections.abc import Callable

from ragtune.common.errors import InvalidArgument
from ragtune.common.fusion import reciprocal_rank_fusion
from ragtune.retrieval.backend import Hit
from ragtune.v1 import retrieval_pb2 as pb

MAX_FILTER_VALUES = 100
FUSION_DEPTH = 100  # candidates each ranking contributes to hybrid fusion


def metadata_filter(request: pb.SearchRequest) -> Callable[[dict[str, str]], bool] | None:
    """``filter`` (equality) and ``filters`` (key in any_of) as one predicate; None: no filter.
    Malformed clauses are INVALID_ARGUMENT naming the clause."""
    clauses: list[tuple[str, frozenset[str]]] = [
        (k, frozenset([v])) for k, v in request.filter.items()
    ]
    for i, clause in enumerate(request.filters):
        if not clause.key:
            raise InvalidArgument("needs a metadata key", field=f"filters[{i}].key")
        if not 1 <= len(clause.any_of) <= MAX_FILTER_VALUES:
            raise InvalidArgument(
                f"needs 1 to {MAX_FILTER_VALUES} values", field=f"filters[{i}].any_of"
            )
        clauses.append((clause.key, frozenset(clause.any_of)))
    if not clauses:
        return None
    for key, _ in clauses:
        if not key:
            raise InvalidArgument("keys must be non-empty", field="filter")

    def accept(metadata: dict[str, str]) -> bool:
        return all(metadata.get(key) in values for key, values in clauses)

    return accept


def fuse(
    dense: list[Hit], lexical: list[Hit], dense_weight: float, lexical_weight: float, top_k: int
) -> list[Hit]:
    """Reciprocal-rank fusion of two rankings; each hit's score becomes its fused score."""
    chunks = {h.chunk.id: h.chunk for h in [*dense, *lexical]}
    fused = reciprocal_rank_fusion(
        [[h.chunk.id for h in dense], [h.chunk.id for h in lexical]],
        [dense_weight, lexical_weight],
    )
    best = sorted(fused, key=lambda i: (-fused[i], i))[:top_k]
    return [Hit(chunks[i], fused[i]) for i in best]
