"""The Generation RPCs as a plain class (no Serve decorator: ``app.py`` wraps it)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

from ragtune.common.busy import SharedClock
from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.common.telemetry import annotate, tracer
from ragtune.common.threads import set_torch_threads
from ragtune.common.validation import check_name, check_range
from ragtune.generation.adapters import AdapterInfo, AdapterRegistry
from ragtune.generation.backend import Chunk, Engine, Sampling
from ragtune.generation.config import GenerationConfig
from ragtune.generation.metrics import GenerationMetrics, annotate_generation
from ragtune.generation.prompting import Passage, build_messages
from ragtune.generation.sharing import SharedAdapters
from ragtune.v1 import generation_pb2 as pb

log = logging.getLogger(__name__)

ROLES = {"system", "user", "assistant"}


def make_engine(config: GenerationConfig) -> Engine:
    """The engine the config names; vLLM is imported only when chosen (extra `gpu`)."""
    if config.engine == "vllm":
        from ragtune.generation.backends.vllm_engine import VLLMEngine

        return VLLMEngine(
            config.model_path,
            model_name=config.model_name,
            dtype=config.dtype,
            max_lora_rank=config.max_lora_rank,
            engine_kwargs=config.engine_kwargs,
        )
    from ragtune.generation.backends.transformers_engine import TransformersEngine

    return TransformersEngine(
        config.model_path,
        model_name=config.model_name,
        device=config.device,
        dtype=config.dtype,
        max_batch=config.max_batch,
    )


class GenerationService:
    def __init__(self, config: GenerationConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or make_engine(config)
        cache_dir = config.adapter_cache_dir or (
            str(Path(config.adapters_dir).parent / "remote-adapters")
            if config.adapters_dir
            else None  # a temporary folder, made by the registry on first use
        )
        self.registry = AdapterRegistry(
            config.adapters_dir,
            base_model=config.model_name,
            max_rank=config.max_lora_rank,
            cache_dir=cache_dir,
            roots=config.adapter_roots,
        )
        # Resident adapters -> when last used (Unix s), least recently used first. The lock
        # serialises loads and evictions; requests for resident adapters never wait on it.
        self._resident: OrderedDict[str, float] = OrderedDict()
        self._residency_lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._load_ms: dict[str, float] = {}  # each adapter's latest load time
        self._busy = SharedClock()  # each request's share of the engine, for costing
        self.metrics = GenerationMetrics()
        self._running = 0
        # The platform's adapters, when replicas share a database (sharing.py).
        self.shared = SharedAdapters(self, config.database_url) if config.database_url else None

    def warm_up(self) -> None:
        set_torch_threads(self.config.torch_threads)
        self.engine.warm_up()
        for name, why in self.registry.scan().items():
            log.warning("adapter %s refused: %s", name, why)

    async def start(self) -> None:
        """Read the adapter catalog, preload adapters and keep following the catalog (in the
        event loop that will serve requests)."""
        if self.shared is not None:
            await self.shared.sync()
        wanted = self.config.preload_adapters
        names = sorted(self.registry.known) if wanted is None else wanted
        for name in names[: self.config.max_resident_adapters]:
            await self.ensure_resident(name, use=False)
        if self.shared is not None:
            self.shared.follow()

    # -- residency (LRU) -------------------------------------------------------------------------

    async def ensure_resident(self, name: str, *, use: bool = True) -> None:
        """Make a registered adapter resident, evicting the least recently used one if the
        replica is full, and (``use``) record that a request uses it now. NotFound if the
        adapter is not registered (or was unloaded)."""
        if name not in self._resident:
            loop = asyncio.get_running_loop()
            if self._lock_loop is not loop:  # first use, or a new loop (tests run one per call)
                self._residency_lock, self._lock_loop = asyncio.Lock(), loop
            async with self._residency_lock:
                if name not in self._resident:  # not loaded meanwhile by another request
                    await self._load(name)
        if use:
            self._resident[name] = time.time()
        self._resident.move_to_end(name)

    def resident_adapters(self) -> list[str]:
        return list(self._resident)

    async def drop_resident(self, name: str) -> None:
        """Free ``name``'s weights if resident (after the requests running with it)."""
        if self._resident.pop(name, None) is not None:
            await self.engine.unload_adapter(name)
            self.metrics.unloads.inc(tags={"reason": "request"})

    async def _load(self, name: str) -> None:
        if self.shared is not None and name not in self.registry.known:
            await self.shared.sync()  # loaded on another replica since this one last looked
        info = self.registry.resolve(name)
        while len(self._resident) >= self.config.max_resident_adapters:
            victim, _ = self._resident.popitem(last=False)
            log.info("evicting adapter %s (least recently used)", victim)
            await self.engine.unload_adapter(victim)
            self.metrics.unloads.inc(tags={"reason": "evicted"})
        with tracer().start_as_current_span("adapter load", attributes={"ragtune.adapter": name}):
            start = time.perf_counter()
            try:
                await self.engine.load_adapter(info.name, info.source)
            except Exception:
                self.metrics.loads.inc(tags={"outcome": "error"})
                raise
            seconds = time.perf_counter() - start
        self.metrics.loads.inc(tags={"outcome": "ok"})
        self.metrics.load_seconds.observe(seconds)
        self._load_ms[name] = seconds * 1000
        self._resident[name] = 0.0

    def report_gauges(self) -> None:
        self.metrics.running.set(self._running)
        self.metrics.resident.set(len(self._resident))

    async def shutdown(self) -> None:
        if self.shared is not None:
            await self.shared.close()
        await self.engine.shutdown()

    # -- request checking ------------------------------------------------------------------------

    def _prepare(
        self, request: pb.GenerateRequest
    ) -> tuple[list[dict[str, str]], Sampling, str | None]:
        if not request.messages:
            raise InvalidArgument("must contain at least one message", field="messages")
        chars = 0
        for i, m in enumerate(request.messages):
            if m.role not in ROLES:
                raise InvalidArgument(
                    f"must be one of {sorted(ROLES)}", field=f"messages[{i}].role"
                )
            chars += len(m.content)
        chars += sum(len(c.text) for c in request.context)
        if chars > self.config.max_prompt_chars:
            raise InvalidArgument(
                f"prompt is {chars} characters; the limit is {self.config.max_prompt_chars}",
                field="messages",
            )
        s = request.sampling
        max_tokens = s.max_tokens or self.config.default_max_tokens
        check_range(max_tokens, "sampling.max_tokens", 1, self.config.max_tokens_limit)
        if not 0 <= s.temperature <= 5:
            raise InvalidArgument("must be between 0 and 5", field="sampling.temperature")
        if not 0 <= s.top_p <= 1:
            raise InvalidArgument("must be between 0 and 1", field="sampling.top_p")
        sampling = Sampling(
            max_tokens, s.temperature, s.top_p or 1.0, s.seed, tuple(s.stop), s.ignore_eos
        )
        adapter = request.adapter or None
        if adapter:
            check_name(adapter, "adapter")
        passages = [Passage(c.marker, c.source, c.text) for c in request.context]
        messages = build_messages(
            [{"role": m.role, "content": m.content} for m in request.messages], passages
        )
        return messages, sampling, adapter

    # -- RPCs ------------------------------------------------------------------------------------

    async def _stream(self, request: pb.GenerateRequest) -> AsyncIterator[tuple[Chunk, float]]:
        """The engine's chunks, each with the request's engine share so far (seconds; final on
        the last chunk)."""
        messages, sampling, adapter = self._prepare(request)
        if adapter:
            await self.ensure_resident(adapter)
        tags = {"adapter": adapter or "base"}
        if self.config.telemetry.capture_content:
            annotate({"gen_ai.input.messages": json.dumps(messages)})
        started, t0 = self._busy.start(), time.perf_counter()
        self._running += 1
        stopped, last, ttft = False, None, None
        capture = self.config.telemetry.capture_content
        text: list[str] = []  # only kept when the answer goes on the span
        try:
            async for chunk in self.engine.stream(messages, sampling, adapter):
                now = time.perf_counter()
                if chunk.delta:
                    if ttft is None:
                        ttft = now - t0
                        self.metrics.ttft.observe(ttft, tags=tags)
                    else:
                        self.metrics.inter_token.observe(now - last, tags=tags)
                    last = now
                    if capture:
                        text.append(chunk.delta)
                if chunk.finish_reason:
                    busy, stopped = self._busy.stop(started), True
                    annotate_generation(
                        model=self.engine.model_name,
                        adapter=adapter or "",
                        max_tokens=sampling.max_tokens,
                        temperature=sampling.temperature,
                        prompt_tokens=chunk.prompt_tokens,
                        completion_tokens=chunk.completion_tokens,
                        ttft_s=ttft,
                        finish_reason=chunk.finish_reason,
                    )
                    if capture:
                        annotate({"gen_ai.output.messages": "".join(text)})
                    yield chunk, busy
                else:
                    yield chunk, 0.0
        finally:
            self._running -= 1
            if not stopped:
                self._busy.stop(started)

    async def GenerateStream(
        self, request: pb.GenerateRequest
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        async for chunk, busy_s in self._stream(request):
            yield pb.GenerateStreamResponse(
                delta=chunk.delta,
                finish_reason=chunk.finish_reason,
                prompt_tokens=chunk.prompt_tokens,
                completion_tokens=chunk.completion_tokens,
                busy_ms=busy_s * 1000,
            )

    async def Generate(self, request: pb.GenerateRequest) -> pb.GenerateResponse:
        parts: list[str] = []
        last, busy_s = Chunk(""), 0.0
        async for chunk, busy in self._stream(request):
            parts.append(chunk.delta)
            last, busy_s = chunk, busy
        adapter = request.adapter
        return pb.GenerateResponse(
            text="".join(parts),
            finish_reason=last.finish_reason,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            model=self.engine.model_name,
            adapter=adapter,
            busy_ms=busy_s * 1000,
        )

    def _adapter_pb(
        self, info: AdapterInfo, where: dict[str, list[str]] | None = None, by: str = ""
    ) -> pb.Adapter:
        last_used = self._resident.get(info.name)
        return pb.Adapter(
            resident_on=(where or {}).get(info.name, []),
            registered_by=by,
            name=info.name,
            source=info.origin,
            base_model=info.base_model,
            rank=info.rank,
            loaded=last_used is not None,
            description=info.description,
            tasks=info.tasks,
            output_format=info.output_format,
            tone=info.tone,
            examples=info.examples,
            counter_examples=info.counter_examples,
            size_bytes=info.size_bytes,
            last_used_unix_ms=int((last_used or 0) * 1000),
            load_ms=self._load_ms.get(info.name, 0.0),
        )

    async def ListAdapters(self, request: pb.ListAdaptersRequest) -> pb.ListAdaptersResponse:
        self.registry.scan()
        if self.shared is not None:
            await self.shared.sync()
        where, by = await self._placement()
        known = self.registry.known
        adapters = [self._adapter_pb(known[n], where, by.get(n, "")) for n in sorted(known)]
        return pb.ListAdaptersResponse(adapters=adapters, base_model=self.engine.model_name)

    async def _placement(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        return await self.shared.placement() if self.shared is not None else ({}, {})

    async def LoadAdapter(self, request: pb.LoadAdapterRequest) -> pb.LoadAdapterResponse:
        """Register (and check) the adapter, then make it resident on this replica."""
        check_name(request.name, "name")
        info = await asyncio.to_thread(
            self.registry.resolve, request.name, request.source, reload=True
        )
        if self.shared is not None:  # the platform's from now on: every replica serves it
            await self.shared.register(info.name, info.origin, request.registered_by)
        if request.source and info.name in self._resident:  # new weights under a loaded name
            self._resident.pop(info.name)
            await self.engine.unload_adapter(info.name)
        await self.ensure_resident(info.name, use=False)
        if self.shared is not None:
            await self.shared.heartbeat()
        where, by = await self._placement()
        return pb.LoadAdapterResponse(
            adapter=self._adapter_pb(info, where, by.get(info.name, "")),
            load_ms=self._load_ms[info.name],
        )

    async def UnloadAdapter(self, request: pb.UnloadAdapterRequest) -> pb.UnloadAdapterResponse:
        """Stop serving the adapter: new requests get NOT_FOUND at once, running ones finish,
        then its weights are freed. LoadAdapter brings it back."""
        check_name(request.name, "name")
        if self.shared is None:
            info = self.registry.remove(request.name)
            await self.drop_resident(request.name)
        else:  # every replica's: removed everywhere before this returns
            await self.shared.sync()
            info = self.registry.known.get(request.name)
            if info is None:
                raise NotFound(f"adapter {request.name!r} not found")
            await self.shared.remove(request.name)
        return pb.UnloadAdapterResponse(adapter=self._adapter_pb(info))
