"""What both engines share: the hand-off of a request's output from where the model runs (the
transformers scheduler thread, vLLM's own event loop) to the caller's event loop, and the
translation of a model runtime's exceptions into the service's errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ragtune.common.errors import InvalidArgument, RagtuneError

_END = object()


class Outbox:
    """One request's output, put from any thread and read on the caller's event loop.

    Make it on the caller's loop. The producer calls ``put`` for each item, then ``close`` or
    ``fail``; the caller iterates, which ends after ``close`` and raises what ``fail`` carried.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, item: Any) -> bool:
        """Hand ``item`` to the caller; False when its loop is closed (nobody is listening)."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            return False
        return True

    def fail(self, exc: BaseException) -> bool:
        """End the output with ``exc``, raised to the caller."""
        return self.put(exc)

    def close(self) -> bool:
        """End the output."""
        return self.put(_END)

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (item := await self._queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item


@contextmanager
def translated(translate: Callable[[Exception], Exception | None]) -> Iterator[None]:
    """Raise a model runtime's own exceptions as the service's errors.

    ``translate`` returns the error to raise instead (chained to the original) or None to let
    the exception through; the service's own errors always pass unchanged.
    """
    try:
        yield
    except RagtuneError:
        raise
    except Exception as exc:
        err = translate(exc)
        if err is None:
            raise
        raise err from exc


def adapter_load_failed(name: str, path: str) -> Callable[[Exception], Exception]:
    """For ``translated``: the runtime failed to load an adapter the registry had accepted, so
    its files are at fault (bad weights, a layout the runtime does not take)."""
    return lambda exc: InvalidArgument(f"could not load adapter {name!r} from {path}: {exc}")
