"""The Generation RPCs as a plain class (no Ray)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.common.threads import set_torch_threads
from ragtune.common.validation import check_name, check_range
from ragtune.generation.adapters import AdapterRegistry
from ragtune.generation.config import GenerationConfig
from ragtune.generation.engine import Chunk, Engine, Sampling
from ragtune.generation.prompting import Passage, build_messages
from ragtune.v1 import generation_pb2 as pb

log = logging.getLogger(__name__)

ROLES = {"system", "user", "assistant"}


def make_engine(config: GenerationConfig) -> Engine:
    from ragtune.generation.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        config.model_path, model_name=config.model_name, device=config.device, dtype=config.dtype
    )


class GenerationService:
    def __init__(self, config: GenerationConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or make_engine(config)
        self.registry = AdapterRegistry(
            config.adapters_dir, base_model=config.model_name, max_rank=config.max_lora_rank
        )

    def warm_up(self) -> None:
        set_torch_threads(self.config.torch_threads)
        self.engine.warm_up()
        refused = self.registry.scan()
        if refused:
            log.warning("adapters refused at start (see LoadAdapter for the reason): %s", refused)
        wanted = self.config.preload_adapters
        for name in sorted(self.registry.known) if wanted is None else wanted:
            info = self.registry.resolve(name)
            self.engine.load_adapter(info.name, info.source)

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
        sampling = Sampling(max_tokens, s.temperature, s.top_p or 1.0, s.seed, tuple(s.stop))
        adapter = request.adapter or None
        if adapter and adapter not in self.engine.loaded_adapters():
            raise NotFound(f"adapter {adapter!r} not found or not loaded")
        passages = [Passage(c.marker, c.source, c.text) for c in request.context]
        messages = build_messages(
            [{"role": m.role, "content": m.content} for m in request.messages], passages
        )
        return messages, sampling, adapter

    # -- RPCs ------------------------------------------------------------------------------------

    async def GenerateStream(
        self, request: pb.GenerateRequest
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        messages, sampling, adapter = self._prepare(request)
        async for chunk in self.engine.stream(messages, sampling, adapter):
            yield pb.GenerateStreamResponse(
                delta=chunk.delta,
                finish_reason=chunk.finish_reason,
                prompt_tokens=chunk.prompt_tokens,
                completion_tokens=chunk.completion_tokens,
            )

    async def Generate(self, request: pb.GenerateRequest) -> pb.GenerateResponse:
        messages, sampling, adapter = self._prepare(request)
        parts: list[str] = []
        last = Chunk("")
        async for last in self.engine.stream(messages, sampling, adapter):
            parts.append(last.delta)
        return pb.GenerateResponse(
            text="".join(parts),
            finish_reason=last.finish_reason,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            model=self.engine.model_name,
            adapter=adapter or "",
        )

    def _adapter_pb(self, name: str) -> pb.Adapter:
        info = self.registry.known[name]
        return pb.Adapter(
            name=info.name,
            source=info.source,
            base_model=info.base_model,
            rank=info.rank,
            loaded=name in self.engine.loaded_adapters(),
            description=info.description,
            tasks=info.tasks,
            output_format=info.output_format,
            tone=info.tone,
        )

    async def ListAdapters(self, request: pb.ListAdaptersRequest) -> pb.ListAdaptersResponse:
        self.registry.scan()
        return pb.ListAdaptersResponse(
            adapters=[self._adapter_pb(n) for n in sorted(self.registry.known)]
        )

    async def LoadAdapter(self, request: pb.LoadAdapterRequest) -> pb.LoadAdapterResponse:
        check_name(request.name, "name")
        info = self.registry.resolve(request.name, request.source)
        start = time.perf_counter()
        await asyncio.to_thread(self.engine.load_adapter, info.name, info.source)
        load_ms = (time.perf_counter() - start) * 1000
        return pb.LoadAdapterResponse(adapter=self._adapter_pb(info.name), load_ms=load_ms)

    async def UnloadAdapter(self, request: pb.UnloadAdapterRequest) -> pb.UnloadAdapterResponse:
        check_name(request.name, "name")
        if request.name not in self.registry.known:
            raise NotFound(f"adapter {request.name!r} not found")
        await asyncio.to_thread(self.engine.unload_adapter, request.name)
        return pb.UnloadAdapterResponse(adapter=self._adapter_pb(request.name))
