"""Dynamic batching: many small concurrent requests become few model calls.

Requests queue up; ``workers`` batch loops share the queue, and each runs its batches in a
worker thread, one batch at a time. A GPU model wants one worker (one big call at a time); a
CPU model whose calls run on one core each wants one worker per core, so no core waits while
another finishes its share of a batch, and a batch forms while the others run.

A worker takes the first waiting request, then keeps adding requests until the batch holds
``max_batch_tokens`` tokens, or its share of the requests in flight together lately (all of
them for one worker, half for two, ...), or the wait is over: ``max_wait_s`` since the batch
could start (the first request's arrival, or the end of the worker's previous batch), and
never longer than its previous model call took (waiting longer cannot pay off: two batches
would be done sooner). A lone client never waits: it is the only request in flight.

Closing at the in-flight share is what keeps closed-loop clients together. When a batch
comes back, its clients send their next requests over the following milliseconds; a batcher
that starts at once with the few already queued splits them into two cohorts that alternate for
good, and a FAISS scan of a few queries costs nearly what one of the whole cohort does
(measured: docs/retrieval.md, "Search").

A request is split when it does not fit: the items beyond a batch's token budget go to the
next batch, and while other workers wait for work a many-item request is shared out among
them (one request of 64 texts on two idle CPU workers: 32 each, at once). It is answered when
its last part is done, with its results in order.

It is plain asyncio rather than ``@serve.batch`` so the service classes batch the same way
in unit tests, in-process and under Ray Serve, and so batches are bounded by tokens (the cost
of a transformer forward pass) rather than by request count.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# How long the largest number of requests seen in flight together counts as "lately".
PEAK_WINDOW_S = 1.0


@dataclass(eq=False)
class _Request:
    items: Sequence[Any]
    tokens: list[int]  # per item
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    taken: int = 0  # items handed to batches so far (they are taken in order)
    running: int = 0  # parts of it in batches not yet finished
    busy: float = 0.0  # its share of the model time of its finished parts
    results: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)


@dataclass
class _Part:
    request: _Request
    start: int
    stop: int
    tokens: int


@dataclass
class BatchStats:
    """What the last batches looked like (for metrics and tests)."""

    batches: int = 0
    requests: int = 0  # requests answered
    largest_batch_requests: int = 0  # requests (or parts of one) in the largest batch
    busy_seconds: float = 0.0  # time spent in model calls, all workers together


class DynamicBatcher(Generic[Item, Result]):
    """Run ``fn`` (blocking, called in worker threads) over batches of queued items.

    ``fn`` gets the concatenated items of several requests and returns one result per item;
    each request gets back its own results, in order. With ``workers`` > 1, ``fn`` is called
    from that many threads at once.
    """

    def __init__(
        self,
        fn: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch_tokens: int,
        max_wait_s: float,
        workers: int = 1,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.fn = fn
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.workers = workers
        self.on_batch = on_batch  # (requests, items, seconds queued by the first) per batch
        self.stats = BatchStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._queue: deque[_Request] = deque()  # requests with items not yet in a batch
        self._arrived: asyncio.Condition | None = None
        self._busy = 0  # workers running a batch
        self._in_flight = 0  # requests submitted and not yet answered
        self._peak, self._peak_at = 0, 0.0  # most requests in flight together lately, and when

    @property
    def pending(self) -> int:
        """Requests waiting for a batch (the queue depth)."""
        return len(self._queue)

    async def submit(self, items: Sequence[Item], tokens: int | Sequence[int]) -> list[Result]:
        """Queue ``items`` and wait for their results. ``tokens``: what they cost, in all or
        per item (a total is spread evenly over the items)."""
        results, _ = await self.submit_timed(items, tokens)
        return results

    async def submit_timed(
        self, items: Sequence[Item], tokens: int | Sequence[int]
    ) -> tuple[list[Result], float]:
        """``submit``, also returning this request's share of its batches' model time in
        seconds (each batch's time split by tokens): what the request kept the model busy, for
        costing."""
        if not items:
            return [], 0.0
        self._ensure_workers()
        per_item = _per_item(tokens, len(items))
        request = _Request(items, per_item, asyncio.get_running_loop().create_future())
        self._in_flight += 1
        if self._in_flight >= self._peak or request.enqueued - self._peak_at > PEAK_WINDOW_S:
            self._peak, self._peak_at = self._in_flight, request.enqueued
        try:
            async with self._arrived:
                self._queue.append(request)
                self._arrived.notify_all()
            return await request.future
        finally:
            self._in_flight -= 1

    def _ensure_workers(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and all(not t.done() for t in self._tasks):
            return
        # First use, or a new event loop (tests run each call in its own): start afresh.
        self._loop, self._queue, self._busy = loop, deque(), 0
        self._arrived = asyncio.Condition()
        self._tasks = [loop.create_task(self._work()) for _ in range(self.workers)]

    async def _form(self, free_since: float, last_busy: float) -> list[_Part]:
        async with self._arrived:
            while not self._drop_finished_heads():
                await self._arrived.wait()
            wait = min(self.max_wait_s, last_busy)
            deadline = max(self._queue[0].enqueued, free_since) + wait
            parts: list[_Part] = []
            tokens = 0
            while True:
                share = math.ceil(self._peak / self.workers)
                tokens, closed = self._take(parts, tokens, share)
                if closed or tokens >= self.max_batch_tokens or len(parts) >= share:
                    return parts
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return parts
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    return parts

    def _drop_finished_heads(self) -> bool:
        """Drop requests already answered (cancelled, or failed in another part) from the
        head of the queue; whether a request is left."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        return bool(self._queue)

    def _take(self, parts: list[_Part], tokens: int, share: int) -> tuple[int, bool]:
        """Move queued items into ``parts`` while they fit; (tokens now, whether the batch is
        closed because a request was split)."""
        while len(parts) < share and self._drop_finished_heads():
            request = self._queue[0]
            start = stop = request.taken
            end = len(request.items)
            idle = self.workers - self._busy
            if not parts and idle > 1 and end - start > 1:
                # Other workers wait for work: this batch takes only its share of the request.
                end = start + math.ceil((end - start) / idle)
            cost = 0
            while stop < end:
                fits = tokens + cost + request.tokens[stop] <= self.max_batch_tokens
                if not fits and (parts or stop > start):
                    break
                cost += request.tokens[stop]  # an item over the budget goes alone
                stop += 1
            if stop == start:
                return tokens, True  # the next request does not fit: the batch is full
            parts.append(_Part(request, start, stop, cost))
            request.taken, request.running = stop, request.running + 1
            tokens += cost
            if request.taken < len(request.items):
                return tokens, True  # the rest of the request goes to another batch
            self._queue.popleft()
        return tokens, False

    async def _work(self) -> None:
        free_since, last_busy = time.monotonic(), self.max_wait_s
        while True:
            parts = await self._form(free_since, last_busy)
            if not parts:
                continue
            flat = [item for p in parts for item in p.request.items[p.start : p.stop]]
            waited = time.monotonic() - parts[0].request.enqueued
            started = time.perf_counter()
            self._busy += 1
            try:
                results = await asyncio.to_thread(self.fn, flat)
            except Exception as exc:  # every request of the batch gets the error
                for p in parts:
                    if not p.request.future.done():
                        p.request.future.set_exception(exc)
                free_since = time.monotonic()
                continue
            finally:
                self._busy -= 1
            busy = last_busy = time.perf_counter() - started
            free_since = time.monotonic()
            self._finish(parts, results, busy)
            self.stats.batches += 1
            self.stats.busy_seconds += busy
            self.stats.largest_batch_requests = max(self.stats.largest_batch_requests, len(parts))
            if self.on_batch is not None:
                self.on_batch(len(parts), len(flat), waited)

    def _finish(self, parts: list[_Part], results: Sequence[Any], busy: float) -> None:
        total_tokens = sum(p.tokens for p in parts) or 1
        offset = 0
        for p in parts:
            request, n = p.request, p.stop - p.start
            request.results[p.start : p.stop] = results[offset : offset + n]
            request.busy += busy * p.tokens / total_tokens
            request.running -= 1
            offset += n
            done = request.taken == len(request.items) and request.running == 0
            if done and not request.future.done():
                request.future.set_result((request.results, request.busy))
                self.stats.requests += 1


def _per_item(tokens: int | Sequence[int], n: int) -> list[int]:
    if isinstance(tokens, int):
        base, extra = divmod(max(tokens, 0), n)
        return [base + (i < extra) for i in range(n)]
    if len(tokens) != n:
        raise ValueError(f"{len(tokens)} token counts for {n} items")
    return [max(0, int(t)) for t in tokens]
