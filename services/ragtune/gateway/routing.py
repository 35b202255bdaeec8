"""What the router decides from, what it decides, and the policy interface.

The gateway builds a ``RouteRequest`` (the request's signals, the adapters the tenant may use),
runs the retrieval probe when the policy may need it, and asks a ``RoutingPolicy`` for a
``Route``. Policies are plain synchronous code: no I/O, so a decision is cheap next to the
probe (measured: docs/routing.md, `make bench-router`) and tests drive them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, cast

from ragtune.v1 import common_pb2

PATH_NAMES: dict[int, str] = {
    common_pb2.PATH_RAG: "RAG",
    common_pb2.PATH_TUNED: "TUNED",
    common_pb2.PATH_HYBRID: "HYBRID",
}

# Every reason code a policy may give: a bounded set, so it can label metrics.
REASONS = frozenset(
    {
        "explicit_path",  # the request named its path
        "adapter_named",  # the request named an adapter
        "format_requested",  # an output format was asked for (field or phrase)
        "similar_request",  # the question reads like an adapter's example requests
        "task_requested",
        "tone_requested",
        "no_matching_adapter",  # a phrase asked for a behaviour no usable adapter declares
        "citations_required",
        "freshness_sensitive",
        "corpus_can_answer",  # the probe found close matches
        "corpus_cannot_answer",  # it did not
        "probe_off",  # no probe: retrieval assumed useful
        "no_collection",  # nothing to search: the collection is missing or empty
        "fallback_adapter",  # general adapter for what the collection cannot answer
        "no_adapter",  # retrieval although the probe doubts it: no adapter applies
        "latency_budget",  # moved off a path expected to be too slow
        "cost_budget",  # moved off a path expected to cost too much
    }
)


@dataclass(frozen=True)
class AdapterCard:
    """What the adapter registry declares about an adapter, as the router reads it."""

    name: str
    tasks: tuple[str, ...] = ()
    output_format: str = ""
    tone: str = ""
    examples: tuple[str, ...] = ()  # requests that want it (semantic cues)
    counter_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class CueMatch:
    """The adapter whose example requests a part of the question is most similar to."""

    adapter: str
    similarity: float  # the part's closest example
    example: str
    counter_similarity: float  # mean over the part's closest counter-examples
    offset: float = 0.0  # feedback on this adapter's cue threshold
    part: int = 0  # which of the embedded texts matched: 0 the whole question, else a part
    support: float | None = None  # mean over the part's closest examples (None: similarity)
    topic_similarity: float | None = None  # the part's best score in the collection, if searched

    @property
    def example_support(self) -> float:
        return self.similarity if self.support is None else self.support

    @property
    def only_mentioned(self) -> bool:
        """The part is closer to the adapter's counter-examples (requests that mention the
        thing without asking for it) than to its examples."""
        return self.counter_similarity > self.example_support

    @property
    def topical(self) -> bool:
        """The collection matches the part better than the example does: it is what the
        question is about, not how it wants the answer."""
        return self.topic_similarity is not None and self.topic_similarity > self.similarity

    def to_pb(self, threshold: float) -> common_pb2.CueMatch:
        return common_pb2.CueMatch(
            adapter=self.adapter,
            similarity=self.similarity,
            example=self.example,
            threshold=threshold,
            counter_similarity=self.counter_similarity,
            support=self.example_support,
            topic_similarity=self.topic_similarity or 0.0,
        )


@dataclass(frozen=True)
class Need:
    """A behaviour the request asks for; ``explicit`` when from the request's fields (then
    an unmet need is an error) rather than from a phrase in the question."""

    output_format: str = ""
    task: str = ""
    tone: str = ""
    explicit: bool = False

    def __bool__(self) -> bool:
        return bool(self.output_format or self.task or self.tone)

    def met_by(self, card: AdapterCard) -> bool:
        return (
            (not self.output_format or card.output_format.lower() == self.output_format)
            and (not self.task or self.task in {t.lower() for t in card.tasks})
            and (not self.tone or card.tone.lower() == self.tone)
        )

    def reasons(self) -> list[str]:
        wanted = (self.output_format, self.task, self.tone)
        codes = ("format_requested", "task_requested", "tone_requested")
        return [code for code, value in zip(codes, wanted, strict=True) if value]

    def describe(self) -> str:
        parts = [
            f"{kind} {value!r}"
            for kind, value in (
                ("output format", self.output_format),
                ("task", self.task),
                ("tone", self.tone),
            )
            if value
        ]
        return " and ".join(parts)


@dataclass(frozen=True)
class Evidence:
    """What the probe's search of the collection found."""

    collection_exists: bool
    top_score: float = 0.0
    margin: float = 0.0
    hits: int = 0
    ms: float = 0.0
    threshold: float | None = None  # the collection's calibrated threshold; None: not fitted
    slope: float = 0.0  # its probability slope
    offset: float = 0.0  # what feedback moved the threshold by


@dataclass(frozen=True)
class RouteRequest:
    question: str
    path: int  # common_pb2.Path, may be PATH_AUTO
    adapter: str  # named by the request, or ""
    collection: str  # the request's, or the gateway's default
    collection_named: bool  # the request named it: then a missing one is NOT_FOUND
    need: Need
    require_citations: bool = False
    freshness_sensitive: bool = False
    latency_budget_ms: int = 0  # 0: none
    max_cost_micro_usd: int = 0  # 0: none
    registered: dict[str, AdapterCard] = field(default_factory=dict)
    allowed: frozenset[str] | None = None  # adapters the tenant may use; None: all
    cues: tuple[CueMatch, ...] = ()  # closest adapters by example requests, best first

    def may_use(self, adapter: str) -> bool:
        return self.allowed is None or adapter in self.allowed

    @property
    def usable(self) -> list[AdapterCard]:
        return [c for n, c in sorted(self.registered.items()) if self.may_use(n)]


@dataclass(frozen=True)
class Route:
    path: int  # common_pb2.Path value, never PATH_AUTO
    adapter: str
    collection: str
    reasons: tuple[str, ...] = ()
    explanation: str = ""
    confidence: float = 1.0
    expected_latency_ms: float = 0.0
    expected_cost_micro_usd: int = 0
    probe: common_pb2.RetrievalProbe | None = None
    cue: common_pb2.CueMatch | None = None

    @property
    def retrieves(self) -> bool:
        return self.path in (common_pb2.PATH_RAG, common_pb2.PATH_HYBRID)

    @property
    def path_name(self) -> str:
        return PATH_NAMES[self.path]

    def to_pb(self) -> common_pb2.RouteDecision:
        return common_pb2.RouteDecision(
            path=cast(common_pb2.Path, self.path),  # an int of that enum, as stored
            adapter=self.adapter,
            collection=self.collection,
            reasons=list(self.reasons),
            explanation=self.explanation,
            confidence=self.confidence,
            expected_latency_ms=self.expected_latency_ms,
            expected_cost_micro_usd=self.expected_cost_micro_usd,
            probe=self.probe,
            cue=self.cue,
        )


class RoutingPolicy(Protocol):
    def read_need(self, question: str, output_format: str, task: str, tone: str) -> Need:
        """The behaviour the request asks for (its fields, or phrases in the question)."""
        ...

    def wants_evidence(self, request: RouteRequest) -> bool:
        """Whether ``decide`` needs the probe's search of the collection."""
        ...

    def decide(self, request: RouteRequest, evidence: Evidence | None) -> Route:
        """The route, or a RagtuneError (PermissionDenied, NotFound, FailedPrecondition,
        InvalidArgument) saying why the request cannot be served as asked."""
        ...

    def observe(self, path: str, latency_ms: float, cost_micro_usd: int) -> None:
        """An answered request's latency and cost, for the live per-path statistics."""
        ...
