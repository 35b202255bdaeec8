"""The engine interface: everything the generation service needs from a model runtime.

Two engines implement it, in ``backends/``: ``TransformersEngine`` (transformers + PEFT, CPU
default, GPU fallback) and ``VLLMEngine`` (vLLM's async engine, production GPUs). The service
and its tests use only this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False  # generate exactly max_tokens (benchmarks fix output lengths)


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed output. The last one has ``finish_reason`` set and the counts."""

    delta: str
    finish_reason: str = ""  # "stop" (eos or a stop string), "length" (max_tokens)
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class EngineStats:
    """Counters a caller can check instead of assuming (tests and metrics read them)."""

    running: int = 0  # requests generating right now
    finished: int = 0  # requests that ran to eos, a stop string or max_tokens
    cancelled: int = 0  # requests stopped because the caller went away
    steps: int = 0  # decode steps (transformers engine) or 0 where the engine does not say
    largest_batch: int = 0  # most requests decoded in one step


class Engine(ABC):
    model_name: str

    @abstractmethod
    def warm_up(self) -> None:
        """Load the base model; idempotent."""

    @abstractmethod
    def stream(
        self, messages: list[dict[str, str]], sampling: Sampling, adapter: str | None
    ) -> AsyncIterator[Chunk]:
        """Generate a reply to chat ``messages`` with ``adapter`` (None: the base model).

        Closing the iterator (the caller cancelled, or its deadline passed) stops generation
        for this request inside the engine. Raises ``NotFound`` for an adapter not loaded.
        """

    @abstractmethod
    async def load_adapter(self, name: str, path: str) -> None:
        """Make ``name`` servable from a local directory, without disturbing running requests."""

    @abstractmethod
    async def unload_adapter(self, name: str) -> None:
        """Stop serving ``name``: new requests for it fail at once with ``NotFound``; requests
        already running with it finish first, then its weights are freed."""

    @abstractmethod
    def loaded_adapters(self) -> set[str]:
        """Adapters a request may name right now."""

    @abstractmethod
    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        """Prompt tokens of ``messages`` once rendered with the chat template."""

    @abstractmethod
    def check_health(self) -> None:
        """Raise if the engine cannot serve (model not loaded, engine loop dead)."""

    def stats(self) -> EngineStats:
        """Running/finished/cancelled counts; engines that cannot say return zeros."""
        return EngineStats()

    async def shutdown(self) -> None:  # noqa: B027 - optional hook, nothing to free by default
        """Free the model; the engine is unusable afterwards."""
