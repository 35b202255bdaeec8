"""Dynamic batching: many small concurrent requests become one model call.

Requests queue up; a single worker task takes the first waiting request, then keeps adding
requests until the batch holds ``max_batch_tokens`` tokens, or as many requests as were in
flight together lately, or the wait is over: ``max_wait_s`` since the batch could start (the
first request's arrival, or the end of the previous batch when the worker was busy), and never
longer than the previous batch's model call took (waiting longer cannot pay off: two batches
would be done sooner). A lone client never waits: it is the only request in flight.

Closing at the recent in-flight count is what keeps closed-loop clients in one batch. When a
batch of 25 comes back, its clients send their next requests over the following milliseconds;
a batcher that starts at once with the 7 already queued splits its clients into two cohorts
that alternate for good, and a FAISS scan of 7 queries costs nearly what one of 32 does.
Waiting for the in-flight count (bounded by ``max_wait_s``) merges them again.

It is plain asyncio rather than ``@serve.batch`` so the service classes batch the same way
in unit tests, in-process and under Ray Serve, and so batches are bounded by tokens (the cost
of a transformer forward pass) rather than by request count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# How long the largest number of requests seen in flight together counts as "lately".
PEAK_WINDOW_S = 1.0


@dataclass
class _Pending(Generic[Item, Result]):
    items: Sequence[Item]
    tokens: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What the last batches looked like (for metrics and tests)."""

    batches: int = 0
    requests: int = 0
    largest_batch_requests: int = 0
    busy_seconds: float = 0.0  # time spent in model calls


class DynamicBatcher(Generic[Item, Result]):
    """Run ``fn`` (blocking, called in a worker thread) over batches of queued items.

    ``fn`` gets the concatenated items of several requests and returns one result per item;
    each request gets back its own slice, in order.
    """

    def __init__(
        self,
        fn: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch_tokens: int,
        max_wait_s: float,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self.fn = fn
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # (requests, items, seconds queued by the first) per batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._carry: _Pending | None = None  # the request that did not fit: next batch's head
        self._free_since = 0.0  # when the worker finished its last batch (monotonic)
        self._last_busy = max_wait_s  # the last batch's model time (seconds)
        self._in_flight = 0  # requests submitted and not yet answered
        self._peak, self._peak_at = 0, 0.0  # most requests in flight together lately, and when

    @property
    def pending(self) -> int:
        """Requests waiting for a batch (the queue depth)."""
        queued = self._queue.qsize() if self._queue is not None else 0
        return queued + (self._carry is not None)

    async def submit(self, items: Sequence[Item], tokens: int) -> list[Result]:
        """Queue ``items`` (costing ``tokens``) and wait for their results."""
        results, _ = await self.submit_timed(items, tokens)
        return results

    async def submit_timed(self, items: Sequence[Item], tokens: int) -> tuple[list[Result], float]:
        """``submit``, also returning this request's share of its batch's model time in seconds
        (the batch's time split by tokens): what the request kept the model busy, for costing."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            # First use, or a new event loop (tests run each call in its own): start afresh.
            self._loop, self._queue, self._carry = loop, asyncio.Queue(), None
            self._worker = loop.create_task(self._run())
        pending = _Pending(items, tokens, loop.create_future())
        self._in_flight += 1
        if self._in_flight >= self._peak or pending.enqueued - self._peak_at > PEAK_WINDOW_S:
            self._peak, self._peak_at = self._in_flight, pending.enqueued
        try:
            await self._queue.put(pending)
            return await pending.future
        finally:
            self._in_flight -= 1

    async def _next_batch(self) -> list[_Pending]:
        first, self._carry = self._carry or await self._queue.get(), None
        batch = [first]
        tokens = batch[0].tokens
        wait = min(self.max_wait_s, self._last_busy)
        deadline = max(batch[0].enqueued, self._free_since) + wait
        while tokens < self.max_batch_tokens and len(batch) < self._peak:
            if self._queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                nxt = self._queue.get_nowait()
            if nxt.future.cancelled():
                continue
            if tokens + nxt.tokens > self.max_batch_tokens:
                self._carry = nxt
                break
            batch.append(nxt)
            tokens += nxt.tokens
        return batch

    async def _run(self) -> None:
        while True:
            self._free_since = time.monotonic()
            batch = [p for p in await self._next_batch() if not p.future.cancelled()]
            if not batch:
                continue
            flat = [item for p in batch for item in p.items]
            waited = time.monotonic() - batch[0].enqueued
            started = time.perf_counter()
            try:
                results = await asyncio.to_thread(self.fn, flat)
            except Exception as exc:  # every request of the batch gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            busy = self._last_busy = time.perf_counter() - started
            total_tokens = sum(p.tokens for p in batch) or 1
            start = 0
            for p in batch:
                if not p.future.done():
                    share = busy * p.tokens / total_tokens
                    p.future.set_result((list(results[start : start + len(p.items)]), share))
                start += len(p.items)
            self.stats.batches += 1
            self.stats.busy_seconds += busy
            self.stats.requests += len(batch)
            self.stats.largest_batch_requests = max(self.stats.largest_batch_requests, len(batch))
            if self.on_batch is not None:
                self.on_batch(len(batch), len(flat), waited)
