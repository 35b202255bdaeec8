"""Share of a worker's time per request, when requests run concurrently on it.

A continuous-batching engine serves many requests at once, so a request's wall time overstates
what it cost. ``SharedClock`` splits time evenly among the requests in flight (processor
sharing): it advances by ``dt / n`` while ``n`` requests run, and a request's share is how far
the clock moved between its start and its end. O(1) per event, and the shares of all requests
add up to the time the worker had any request.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SharedClock:
    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now
        self._clock = 0.0  # seconds of one request's share, accumulated
        self._last = now()
        self._running = 0

    def _advance(self) -> None:
        now = self._now()
        if self._running:
            self._clock += (now - self._last) / self._running
        self._last = now

    def start(self) -> float:
        """Mark a request started; pass the returned value to ``stop``."""
        self._advance()
        self._running += 1
        return self._clock

    def stop(self, started: float) -> float:
        """Mark the request started at ``started`` finished; returns its share in seconds."""
        self._advance()
        self._running = max(0, self._running - 1)
        return self._clock - started
