import asyncio
import threading
import time

import pytest

from ragtune.common.batching import DynamicBatcher


class Recorder:
    """A model stand-in: doubles each item and records every batch it was given."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[list[int]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, items):
        time.sleep(self.delay)
        with self.lock:
            self.batches.append(list(items))
        return [2 * i for i in items]


def test_concurrent_requests_share_model_calls_and_get_their_own_results():
    model = Recorder(delay=0.02)
    batcher = DynamicBatcher(model, max_batch_tokens=1000, max_wait_s=0.05)

    async def main():
        return await asyncio.gather(*(batcher.submit([i, i + 100], tokens=2) for i in range(40)))

    results = asyncio.run(main())
    assert results == [[2 * i, 2 * (i + 100)] for i in range(40)]
    assert len(model.batches) < 10 and batcher.stats.requests == 40
    assert batcher.stats.largest_batch_requests >= 10


def test_the_token_budget_bounds_every_batch():
    model = Recorder(delay=0.01)
    batcher = DynamicBatcher(model, max_batch_tokens=10, max_wait_s=0.05)

    async def main():
        return await asyncio.gather(*(batcher.submit([i], tokens=3) for i in range(20)))

    assert asyncio.run(main()) == [[2 * i] for i in range(20)]
    assert max(len(b) for b in model.batches) == 3  # 3 x 3 tokens fit in 10, a 4th does not
    assert sorted(i for b in model.batches for i in b) == list(range(20))  # none lost


def test_a_request_larger_than_the_budget_is_split_into_batches_that_fit():
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_tokens=5, max_wait_s=0.01)
    assert asyncio.run(batcher.submit(list(range(8)), tokens=[2] * 8)) == [2 * i for i in range(8)]
    assert [len(b) for b in model.batches] == [2, 2, 2, 2]  # 2 x 2 tokens fit in 5
    # An item over the budget on its own still runs, alone.
    assert asyncio.run(batcher.submit([1, 2], tokens=[50, 1])) == [2, 4]
    assert model.batches[-2:] == [[1], [2]]


class Overlap(Recorder):
    """Also records how many calls ran at once."""

    def __init__(self, delay: float):
        super().__init__(delay)
        self.running = self.most_at_once = 0

    def __call__(self, items):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return super().__call__(items)
        finally:
            with self.lock:
                self.running -= 1


def test_several_workers_run_batches_at_once():
    model = Overlap(delay=0.05)
    batcher = DynamicBatcher(model, max_batch_tokens=1000, max_wait_s=0.01, workers=2)

    async def main():
        return await asyncio.gather(*(batcher.submit([i], tokens=1) for i in range(40)))

    assert asyncio.run(main()) == [[2 * i] for i in range(40)]
    assert model.most_at_once == 2
    assert sorted(i for b in model.batches for i in b) == list(range(40))


def test_a_lone_large_request_is_shared_out_among_idle_workers():
    model = Overlap(delay=0.1)
    batcher = DynamicBatcher(model, max_batch_tokens=1000, max_wait_s=0.01, workers=2)

    async def main():
        start = time.monotonic()
        results = await batcher.submit(list(range(64)), tokens=64)
        return results, time.monotonic() - start

    results, _ = asyncio.run(main())
    assert results == [2 * i for i in range(64)]  # in order, though computed in two halves
    assert sorted(len(b) for b in model.batches) == [32, 32] and model.most_at_once == 2
    assert batcher.stats.requests == 1


def test_a_failed_part_fails_its_request_once_and_the_rest_is_dropped():
    calls = []

    def flaky(items):
        calls.append(list(items))
        if 0 in items:
            raise RuntimeError("device lost")
        return items

    batcher = DynamicBatcher(flaky, max_batch_tokens=2, max_wait_s=0.01)

    async def main():
        with pytest.raises(RuntimeError, match="device lost"):
            await batcher.submit([0, 1, 2, 3, 4, 5], tokens=6)
        return await batcher.submit([7], tokens=1)

    assert asyncio.run(main()) == [7]
    assert calls == [[0, 1], [7]]  # the failed request's later parts never ran


def test_a_lone_request_waits_at_most_max_wait():
    batcher = DynamicBatcher(Recorder(), max_batch_tokens=1000, max_wait_s=0.05)

    async def main():
        start = time.monotonic()
        await batcher.submit([1], tokens=1)
        return time.monotonic() - start

    assert asyncio.run(main()) < 0.5


def test_a_model_error_reaches_every_request_of_the_batch_and_the_next_batch_runs():
    calls = []

    def flaky(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return items

    batcher = DynamicBatcher(flaky, max_batch_tokens=100, max_wait_s=0.05)

    async def main():
        first = await asyncio.gather(
            *(batcher.submit([i], tokens=1) for i in range(3)), return_exceptions=True
        )
        return first, await batcher.submit([7], tokens=1)

    first, after = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in first) and after == [7]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        DynamicBatcher(Recorder(), max_batch_tokens=0, max_wait_s=0.01)
    with pytest.raises(ValueError):
        DynamicBatcher(Recorder(), max_batch_tokens=10, max_wait_s=0.01, workers=0)
    batcher = DynamicBatcher(Recorder(), max_batch_tokens=10, max_wait_s=0.01)
    with pytest.raises(ValueError, match="2 token counts for 3 items"):
        asyncio.run(batcher.submit([1, 2, 3], tokens=[1, 1]))


def test_each_request_is_charged_its_token_share_of_the_batch():
    batcher = DynamicBatcher(Recorder(delay=0.2), max_batch_tokens=1000, max_wait_s=0.05)

    async def main():
        return await asyncio.gather(
            batcher.submit_timed([1], tokens=10), batcher.submit_timed([2, 3], tokens=30)
        )

    (small, small_busy), (large, large_busy) = asyncio.run(main())
    assert (small, large) == ([2], [4, 6]) and batcher.stats.batches == 1
    # One 0.2 s model call, split 1:3 by tokens: together they pay for it exactly once.
    assert large_busy == pytest.approx(3 * small_busy)
    assert small_busy + large_busy >= 0.2


def test_closed_loop_clients_answered_together_come_back_into_one_batch():
    # 16 clients that start 4 ms apart, then send each next request 0-15 ms after its answer
    # (the transport). The first batch closes before the last clients arrive; a batcher that
    # then starts each batch at once with whoever is queued keeps two cohorts alternating.
    model = Recorder(delay=0.03)
    batcher = DynamicBatcher(model, max_batch_tokens=1000, max_wait_s=0.03)

    async def client(n: int) -> None:
        await asyncio.sleep(n * 0.004)
        for round_ in range(8):
            assert await batcher.submit([n], tokens=1) == [2 * n]
            await asyncio.sleep(((n * 7 + round_ * 3) % 16) / 1000)

    async def main():
        await asyncio.gather(*(client(n) for n in range(16)))

    asyncio.run(main())
    sizes = [len(b) for b in model.batches]
    assert sum(sizes) == 16 * 8
    # Merged after the start: most batches hold all 16 (the last ones shrink as clients finish
    # their rounds). Starting each batch at once instead alternates 6 and 10 for good.
    assert sizes.count(16) >= 5, sizes


def test_a_lone_client_is_not_held_back_by_the_wait():
    # One request in flight at a time: nobody else can join, so no batch waits for company.
    batcher = DynamicBatcher(Recorder(), max_batch_tokens=1000, max_wait_s=0.5)

    async def main():
        start = time.monotonic()
        for i in range(5):
            assert await batcher.submit([i], tokens=1) == [2 * i]
        return time.monotonic() - start

    assert asyncio.run(main()) < 0.25  # five waits of max_wait would take 2.5 s
