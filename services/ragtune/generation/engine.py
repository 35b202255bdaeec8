"""The engine interface: everything the generation service needs from a model runtime."""

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


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed output. The last one has ``finish_reason`` set."""

    delta: str
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine(ABC):
    model_name: str

    @abstractmethod
    def warm_up(self) -> None:
        """Load the base model; idempotent."""

    @abstractmethod
    def stream(
        self, messages: list[dict[str, str]], sampling: Sampling, adapter: str | None
    ) -> AsyncIterator[Chunk]:
        """Generate a reply to chat ``messages``; closing the iterator cancels generation."""

    @abstractmethod
    def load_adapter(self, name: str, path: str) -> None:
        """Make ``name`` servable; blocks until no generation is using the model."""

    @abstractmethod
    def unload_adapter(self, name: str) -> None:
        """Free ``name``; requests already running finish first."""

    @abstractmethod
    def loaded_adapters(self) -> set[str]: ...
