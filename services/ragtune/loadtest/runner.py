"""The load generator: sends a workload's requests at each load level, records every request,
and summarizes each level (``stats.summarize``) into a results folder (``__init__``'s format).

One asyncio loop sends everything; it measures its own CPU per level and says when it nears a
full core, because a saturated generator reports its own queueing as the server's latency.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ragtune.loadtest.callers import Caller, CallError
from ragtune.loadtest.stats import SATURATED_CORES, RequestRecord, levels_csv, summarize
from ragtune.loadtest.workload import Route, Sampler, Workload
from ragtune.v1 import common_pb2, gateway_pb2, generation_pb2


def lookup_request(
    question: str, collection: str, key: str, value: str
) -> gateway_pb2.AnswerRequest:
    """A one-token RAG answer over the chunks whose metadata ``key`` is ``value``: whether a
    document written by the load test is searchable yet (it is cited when it is)."""
    return gateway_pb2.AnswerRequest(
        question=question,
        path=common_pb2.PATH_RAG,
        collection=collection,
        filter={key: value},
        top_k=1,
        sampling=common_pb2.SamplingParams(max_tokens=1),
    )


class Cpu:
    """This process's CPU time over a wall-clock span, in cores."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def cores(self) -> float:
        return (time.process_time() - self.cpu) / max(time.perf_counter() - self.wall, 1e-9)


def arrival_gap(rng: random.Random, rate: float, arrival: str, burstiness: float) -> float:
    """Seconds to the next arrival, mean 1/rate: constant; exponential (Poisson arrivals); or
    gamma with shape ``burstiness`` (coefficient of variation 1/sqrt(burstiness): below 1
    burstier than Poisson, above 1 smoother), as ``vllm bench serve`` draws them."""
    if arrival == "constant":
        return 1 / rate
    shape = 1.0 if arrival == "poisson" else burstiness
    return rng.gammavariate(shape, 1 / (rate * shape))


class Runner:
    def __init__(
        self,
        workload: Workload,
        caller: Caller,
        out_dir: Path,
        *,
        base: Path = Path("."),
        mode: str = "platform",
        target: str = "",
        console: Console | None = None,
    ) -> None:
        self.workload, self.caller, self.out_dir = workload, caller, out_dir
        self.sampler = Sampler(workload, base)
        self.base, self.mode = base, mode
        self.target = target or workload.target
        self.console = console or Console(stderr=True)
        self.random = random.Random(workload.seed + 1)
        self.t0 = time.perf_counter()
        self.levels: list[dict[str, Any]] = []
        self.saturation: dict[str, Any] | None = None
        self.started_at = ""
        self._in_flight = 0

    # -- one request -----------------------------------------------------------------------------

    def _request(self, route: Route, question: str) -> gateway_pb2.AnswerRequest:
        w = self.workload
        return gateway_pb2.AnswerRequest(
            question=question,
            path=f"PATH_{route.path}",  # the enum value by name
            adapter=route.adapter,
            collection=route.collection,
            top_k=w.top_k,
            output_format=route.output_format,
            tone=route.tone,
            task=route.task,
            sampling=common_pb2.SamplingParams(
                max_tokens=w.max_tokens, temperature=w.temperature, ignore_eos=w.ignore_eos
            ),
        )

    async def send(self, level: str) -> RequestRecord:
        route, question = self.sampler.route(), self.sampler.question()
        tenant, key = self.sampler.tenant()
        request = self._request(route, question)
        record = RequestRecord(
            level=level,
            t_start=time.perf_counter() - self.t0,
            requested_path=route.path,
            tenant=tenant,
            stream=self.workload.stream,
            adapter=route.adapter,
            collection=route.collection,
        )
        self._in_flight += 1
        start = time.perf_counter()
        try:
            if self.workload.stream:
                done = await self._stream(request, key, start, record)
            else:
                done = await self.caller.answer(request, key, self.workload.timeout_s)
            record.e2el_ms = (time.perf_counter() - start) * 1000
            if done is not None:
                record.path = common_pb2.Path.Name(done.route.path).removeprefix("PATH_")
                record.prompt_tokens = done.usage.prompt_tokens
                record.output_tokens = done.usage.completion_tokens
                record.cost_micro_usd = done.cost.total_micro_usd
                record.stages = {t.stage: t.ms for t in done.timings if t.stage != "total"}
        except CallError as exc:
            record.e2el_ms = (time.perf_counter() - start) * 1000
            record.code, record.error = exc.code, exc.details[:500]
        finally:
            self._in_flight -= 1
        return record

    async def _stream(
        self, request: gateway_pb2.AnswerRequest, key: str, start: float, record: RequestRecord
    ) -> gateway_pb2.AnswerResponse | None:
        done, last = None, None
        stream = self.caller.answer_stream(request, key, self.workload.timeout_s)
        async for event in stream:
            which = event.WhichOneof("event")
            if which == "delta":
                now = time.perf_counter()
                if last is None:
                    record.ttft_ms = (now - start) * 1000
                else:
                    record.itl_ms.append((now - last) * 1000)
                last = now
            elif which == "done":
                done = event.done
        return done

    # -- one level -------------------------------------------------------------------------------

    async def _closed(self, level: str, users: int, until: Callable[[int], bool]) -> list:
        records: list[RequestRecord] = []
        sent = 0

        async def user() -> None:
            nonlocal sent
            while not until(sent):  # counted when sent, so `requests` is never overshot
                sent += 1
                records.append(await self.send(level))

        await asyncio.gather(*(user() for _ in range(users)))
        return records

    async def _open(self, level: str, rate: float, until: Callable[[int], bool]) -> list:
        """Arrivals at ``rate``/s whatever the replies (``arrival_gap``), at most
        ``max_concurrency`` in flight (later arrivals wait for a slot)."""
        load = self.workload.load
        records: list[RequestRecord] = []
        tasks: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(load.max_concurrency)

        async def one() -> None:
            async with slots:
                records.append(await self.send(level))

        sent = 0
        next_at = time.perf_counter()
        while not until(sent):
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            next_at += arrival_gap(self.random, rate, load.arrival, load.burstiness)
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if tasks:
            await asyncio.gather(*tasks)
        return records

    async def run_level(self, kind: str, value: float) -> dict[str, Any]:
        load = self.workload.load
        name = f"c={int(value)}" if kind == "concurrency" else f"rate={value:g}"

        def drive(limit_n: int, limit_s: float) -> Awaitable[list[RequestRecord]]:
            end = time.perf_counter() + limit_s

            def until(n: int) -> bool:
                return (bool(limit_n) and n >= limit_n) or time.perf_counter() >= end

            if kind == "concurrency":
                return self._closed(name, int(value), until)
            return self._open(name, value, until)

        if load.warmup_requests or load.warmup_s:
            with self._progress(f"{name} warm-up", None):
                await drive(load.warmup_requests, load.warmup_s or float("inf"))
        background = Background(self, name)
        cpu, started = Cpu(), time.perf_counter()
        with self._progress(name, load.duration_s) as tick:
            ticker = asyncio.create_task(self._tick(tick, cpu, started))
            background.start()
            try:
                records = await drive(load.requests, load.duration_s)
            finally:
                ticker.cancel()
            duration = time.perf_counter() - started
            freshness, churn = await background.stop()
        cores = cpu.cores()
        summary = summarize(
            records,
            level=name,
            kind=kind,
            value=value,
            duration_s=duration,
            slo_ttft_ms=self.workload.slo.ttft_ms,
            slo_e2el_ms=self.workload.slo.e2el_ms,
            cpu_cores=cores,
            freshness=freshness,
            churn=churn,
        )
        if self.mode == "baseline":
            # The backends run in this process too: its CPU is theirs, not a generator limit.
            summary["generator"] = {"cpu_cores": cores, "saturated": False,
                                    "includes_backends": True}  # fmt: skip
        self._write_requests(name, records)
        self.levels.append(summary)
        self._save(complete=False)
        self._report_level(summary)
        return summary

    # -- progress --------------------------------------------------------------------------------

    def _progress(self, name: str, seconds: float | None) -> AbstractContextManager[Any]:
        if not self.console.is_terminal:
            self.console.print(f"[bold]{name}[/]: running ...")
            return nullcontext(lambda text, done: None)
        return _LevelProgress(self.console, name, seconds)

    async def _tick(self, tick: Callable[[str, float], None], cpu: Cpu, started: float) -> None:
        while True:
            await asyncio.sleep(0.5)
            cores = cpu.cores()
            warn = " [red]generator CPU-bound[/]" if cores > SATURATED_CORES else ""
            tick(f"in flight {self._in_flight:3d}  generator {cores:.2f} cores{warn}",
                 time.perf_counter() - started)  # fmt: skip

    def _report_level(self, s: dict[str, Any]) -> None:
        e2el = s["latency"]["e2el_ms"] or {}
        self.console.print(
            f"[bold]{s['level']}[/]: {s['completed']}/{s['sent']} ok, "
            f"{s['request_throughput']:.2f} req/s, {s['output_token_throughput']:.1f} tok/s, "
            f"e2el p50 {e2el.get('p50', 0):.0f} ms p99 {e2el.get('p99', 0):.0f} ms, "
            f"goodput {s['goodput']['share']:.2f}"
            + (f", errors {s['errors']}" if s["errors"] else "")
        )
        if s["generator"]["saturated"]:
            self.console.print(
                f"[red]warning[/]: the generator used {s['generator']['cpu_cores']:.2f} cores at "
                f"{s['level']}: its own queueing is in these latencies; run it on another machine "
                "or with fewer levels (docs/load-testing.md)"
            )

    # -- the run ---------------------------------------------------------------------------------

    def _plan(self) -> list[tuple[str, float]]:
        load = self.workload.load
        if load.mode == "closed":
            return [("concurrency", c) for c in load.concurrency]
        if load.mode == "open":
            return [("rate", r) for r in load.rates]
        return []

    async def run(self) -> dict[str, Any]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if self.workload.load.mode == "sweep":
            self.saturation = await self._sweep()
        else:
            for kind, value in self._plan():
                await self.run_level(kind, value)
        return self._save(complete=True)

    def _save(self, *, complete: bool) -> dict[str, Any]:
        """Written after every level, so an interrupted run keeps the levels it finished."""
        worst = max((lv["generator"]["cpu_cores"] for lv in self.levels), default=0.0)
        saturated = any(lv["generator"]["saturated"] for lv in self.levels)
        run = {
            "workload": self.workload.model_dump(mode="json"),
            "target": self.target,
            "mode": self.mode,
            "started_at": self.started_at,
            "complete": complete,
            "levels": self.levels,
            "saturation": self.saturation,
            "generator": {"cpu_cores": worst, "saturated": saturated},
        }
        (self.out_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
        (self.out_dir / "levels.json").write_text(json.dumps(self.levels, indent=2) + "\n")
        (self.out_dir / "levels.csv").write_text(levels_csv(self.levels))
        return run

    async def _sweep(self) -> dict[str, Any]:
        """Closed loop at 1, 2, 4, ... users; the saturation point is the level after which
        throughput rose less than ``min_gain`` (or the last level before errors or latency blew
        up)."""
        load = self.workload.load
        best: dict[str, Any] | None = None
        first_p90: float | None = None
        users, reason = 1, f"reached sweep_max_concurrency={load.sweep_max_concurrency}"
        while users <= load.sweep_max_concurrency:
            s = await self.run_level("concurrency", users)
            p90 = (s["latency"]["e2el_ms"] or {}).get("p90")
            error_rate = s["failed"] / s["sent"] if s["sent"] else 1.0
            if first_p90 is None:
                first_p90 = p90
            if error_rate > load.max_error_rate:
                reason = f"error rate {error_rate:.2f} > {load.max_error_rate} at c={users}"
                break
            if p90 and first_p90 and p90 > load.max_latency_growth * first_p90:
                reason = (f"p90 latency {p90:.0f} ms > {load.max_latency_growth:g} x the first "
                          f"level's at c={users}")  # fmt: skip
                break
            if best is not None and s["request_throughput"] < best["request_throughput"] * (
                1 + load.min_gain
            ):
                # Saturated at the lower level: more users bought less than min_gain (a level
                # within that margin of it, above or below, is noise, not headroom).
                reason = f"throughput rose less than {load.min_gain:.0%} from c={best['value']:g}"
                break
            best = s
            users *= 2
        if best is None:
            return {"level": None, "reason": reason}
        return {
            "level": best["level"],
            "concurrency": best["value"],
            "request_throughput": best["request_throughput"],
            "output_token_throughput": best["output_token_throughput"],
            "reason": reason,
        }

    def _write_requests(self, name: str, records: list[RequestRecord]) -> None:
        path = self.out_dir / f"requests-{name.replace('=', '')}.jsonl"
        with path.open("w") as f:
            for record in records:
                f.write(json.dumps(record.to_json()) + "\n")


class _LevelProgress:
    """A rich progress bar for one level: elapsed over its duration, with live counters."""

    def __init__(self, console: Console, name: str, seconds: float | None) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task(name, total=seconds, stats="")

    def __enter__(self) -> Callable[[str, float], None]:
        self.progress.start()
        return self.tick

    def tick(self, stats: str, elapsed: float) -> None:
        self.progress.update(self.task, completed=elapsed, stats=stats)

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


class Background:
    """Work beside one level's load: ingestion (freshness) and adapter churn."""

    def __init__(self, runner: Runner, level: str) -> None:
        self.runner, self.level = runner, level
        self.freshness: list[float | None] = []
        self.churn = {"loads": 0, "unloads": 0, "errors": 0}
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()

    def start(self) -> None:
        w = self.runner.workload
        if w.ingestion is not None:
            self.tasks.append(asyncio.create_task(self._ingest()))
        if w.adapter_churn is not None:
            self.tasks.append(asyncio.create_task(self._churn()))

    async def stop(self) -> tuple[list[float | None], dict[str, int] | None]:
        self.stopping.set()
        await asyncio.gather(*self.tasks)
        churn = self.churn if self.runner.workload.adapter_churn is not None else None
        return self.freshness, churn

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; False once stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return False
        except TimeoutError:
            return True

    async def _ingest(self) -> None:
        """One small document per interval; after its Ingest is acknowledged, 1-token RAG
        answers filtered to that document until one cites it. The freshness lag is from the
        acknowledgement to the sending of that answer's request: 0 when the first search finds
        the document (read-your-writes), else resolved to one probe's duration."""
        w, runner = self.runner.workload, self.runner
        assert w.ingestion is not None
        spec = w.ingestion
        _, key = runner.sampler.tenant()
        while True:
            token = uuid.uuid4().hex[:12]
            document = gateway_pb2.Document(
                doc_id=f"loadtest-{token}",
                title=f"Load test note {token}",
                text=f"Load test note {token}: written at level {self.level}.",
                metadata={"loadtest": token},
            )
            ingest = gateway_pb2.IngestRequest(
                collection=spec.collection, documents=[document], create_collection=True
            )
            try:
                await runner.caller.ingest(ingest, key, w.timeout_s)
            except CallError:
                self.freshness.append(None)
            else:
                acked = time.perf_counter()
                self.freshness.append(await self._find(spec, key, token, acked))
            if not await self._sleep(spec.interval_s):
                return

    async def _find(self, spec: Any, key: str, token: str, acked: float) -> float | None:
        probe = lookup_request(f"Load test note {token}", spec.collection, "loadtest", token)
        w = self.runner.workload
        while (sent := time.perf_counter()) - acked < spec.give_up_s:
            try:
                reply = await self.runner.caller.answer(probe, key, w.timeout_s)
                if any(c.doc_id == f"loadtest-{token}" for c in reply.citations):
                    # When the probe that found it was sent: its search ran a few ms later
                    # (embedding the question), its answer much later (rerank, generation).
                    return (sent - acked) * 1000
            except CallError:
                pass  # not searchable yet (an empty filter result can be refused)
            await asyncio.sleep(spec.poll_s)
        return None

    async def _churn(self) -> None:
        w = self.runner.workload
        spec = w.adapter_churn
        assert spec is not None
        key = spec.admin_key
        if not key and spec.admin_key_file is not None:
            key = (self.runner.base / spec.admin_key_file).read_text().strip()
        key = key or self.runner.sampler.keys[0]
        while await self._sleep(spec.interval_s):
            caller = self.runner.caller
            for call, request, counter in (
                (caller.unload_adapter, generation_pb2.UnloadAdapterRequest(name=spec.adapter),
                 "unloads"),
                (caller.load_adapter, generation_pb2.LoadAdapterRequest(name=spec.adapter,
                                                                        source=spec.source),
                 "loads"),
            ):  # fmt: skip
                try:
                    await call(request, key, w.timeout_s)
                    self.churn[counter] += 1
                except CallError:
                    self.churn["errors"] += 1
