"""transformers + PEFT engine: one base model, many LoRA adapters, continuous batching.

CPU default and GPU fallback. A single scheduler thread owns the model. Each iteration it

1. applies pending adapter loads and unloads (so they happen between decode steps, never
   under a running forward pass),
2. admits new requests: one prefill pass each, whose KV cache joins the running batch,
3. runs one decode step for every running request together, each row with its own adapter
   (PEFT's mixed-adapter batches: ``adapter_names=[...]`` per row), and samples each row
   with its own parameters,
4. drops rows that finished or whose caller went away.

So a new request joins at the next step instead of waiting for the batch to drain, and one
forward pass serves the base model and several adapters at once. The running batch keeps one
KV tensor per layer, left-padded to a common length with an attention mask; positions are kept
per row, so padding never shifts a sequence.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ragtune.common.errors import InvalidArgument, NotFound, Unavailable
from ragtune.generation.backend import Chunk, Engine, EngineStats, Sampling
from ragtune.generation.backends.shared import Outbox, adapter_load_failed, translated

BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names


@dataclass(eq=False)
class _Request:
    """One generation as the scheduler sees it. Token ids flow out through ``out``."""

    prompt: list[int]
    adapter: str | None
    sampling: Sampling
    out: Outbox  # token ids, then closed (or failed)
    generator: Any = None  # torch.Generator when sampling with a seed
    generated: int = 0
    last_token: int = 0
    stop: str = ""  # set by the consumer: "cancel" (caller gone) or "stop" (stop string seen)


@dataclass
class _Batch:
    """The running rows: per-layer KV tensors [rows, heads, length, dim], left-padded."""

    requests: list[_Request] = field(default_factory=list)
    keys: list[Any] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    mask: Any = None  # [rows, length] 1 for real tokens, 0 for left padding
    positions: Any = None  # [rows] position of the next token of each row


class TransformersEngine(Engine):
    def __init__(
        self,
        model_path: str,
        *,
        model_name: str,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch: int = 32,
        max_prefills_per_step: int = 8,
    ):
        if max_batch < 1 or max_prefills_per_step < 1:
            raise ValueError("max_batch and max_prefills_per_step must be >= 1")
        self.model_path = model_path
        self.model_name = model_name
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch
        self.max_prefills_per_step = max_prefills_per_step
        self.tokenizer = None
        self._base = None
        self._peft = None  # PeftModel once the first adapter is loaded
        self._servable: set[str] = set()  # adapters requests may name (loaded, not draining)
        self._stats = EngineStats()
        self._cv = threading.Condition()
        self._waiting: list[_Request] = []
        self._ops: list[tuple[Callable[[], bool], Callable[[BaseException | None], None]]] = []
        self._batch = _Batch()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._failure: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def warm_up(self) -> None:
        if self._base is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self._eos = self.tokenizer.eos_token_id
        self._base = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=getattr(torch, self.dtype)
        ).to(self.device)
        self._base.eval()
        self._thread = threading.Thread(target=self._loop, name="generation-scheduler", daemon=True)
        self._thread.start()

    def check_health(self) -> None:
        if self._base is None:
            raise RuntimeError("the base model is not loaded")
        if self._failure is not None or self._thread is None or not self._thread.is_alive():
            raise RuntimeError(f"the generation scheduler stopped: {self._failure!r}")

    def stats(self) -> EngineStats:
        with self._cv:
            s = self._stats
            return EngineStats(
                len(self._batch.requests) + len(self._waiting),
                s.finished,
                s.cancelled,
                s.steps,
                s.largest_batch,
            )

    async def shutdown(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # -- adapters (applied by the scheduler between steps) ---------------------------------------

    async def _between_steps(self, op: Callable[[], bool]) -> None:
        """Run ``op`` on the scheduler thread between decode steps; it returns False to be
        retried at the next iteration (an unload waiting for its requests to finish)."""
        self.warm_up()
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def finish(exc: BaseException | None) -> None:
            def settle() -> None:
                if not done.done():
                    done.set_exception(exc) if exc else done.set_result(None)

            loop.call_soon_threadsafe(settle)

        with self._cv:
            self._ops.append((op, finish))
            self._cv.notify_all()
        await done

    async def load_adapter(self, name: str, path: str) -> None:
        if name == BASE:
            raise InvalidArgument(f"{BASE!r} is reserved", field="name")

        def load() -> bool:
            if self._peft is None:
                from peft import PeftModel

                with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecates
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing")
                    self._peft = PeftModel.from_pretrained(self._base, path, adapter_name=name)
                self._peft.eval()
            elif name not in self._peft.peft_config:
                try:
                    self._peft.load_adapter(path, adapter_name=name)
                except Exception:
                    # PEFT adds the adapter's layers before reading its weights: take them out,
                    # or a later load of this name would serve them untrained.
                    if name in self._peft.peft_config:
                        self._peft.delete_adapter(name)
                    raise
            self._servable.add(name)
            return True

        with translated(adapter_load_failed(name, path)):
            await self._between_steps(load)

    async def unload_adapter(self, name: str) -> None:
        if name not in self._servable:
            raise NotFound(f"adapter {name!r} is not loaded")
        self._servable.discard(name)  # new requests for it fail from now on

        def unload() -> bool:
            with self._cv:
                users = [r for r in self._batch.requests + self._waiting if r.adapter == name]
            if users:
                return False  # requests still use it: try again after the next step
            if name in self._servable:  # loaded again while draining: keep it
                return True
            if self._peft is not None and name in self._peft.peft_config:
                if len(self._peft.peft_config) == 1:
                    # PEFT cannot delete its last adapter: take the LoRA layers out instead.
                    self._base = self._peft.unload()
                    self._peft = None
                else:
                    with warnings.catch_warnings():  # "active adapter" means nothing here:
                        warnings.filterwarnings("ignore", message=".*now deleted")  # rows
                        self._peft.delete_adapter(name)  # name their adapter per step
            return True

        await self._between_steps(unload)

    def loaded_adapters(self) -> set[str]:
        return set(self._servable)

    # -- generation ------------------------------------------------------------------------------

    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        self.warm_up()
        if self.tokenizer.chat_template:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True
            )
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self.tokenizer(text)["input_ids"]

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self._render(messages))

    async def stream(
        self, messages: list[dict[str, str]], sampling: Sampling, adapter: str | None
    ) -> AsyncIterator[Chunk]:
        if adapter and adapter not in self._servable:
            raise NotFound(f"adapter {adapter!r} is not loaded")
        self.check_health()
        request = _Request(
            prompt=self._render(messages), adapter=adapter, sampling=sampling, out=Outbox()
        )
        with self._cv:
            self._waiting.append(request)
            self._cv.notify_all()
        out: list[int] = []  # tokens received, eos excluded
        text, finish, ended = "", "", False
        try:
            async for item in request.out:
                if item == self._eos and not sampling.ignore_eos:
                    finish = "stop"
                    continue
                out.append(item)
                full = self.tokenizer.decode(out, skip_special_tokens=True)
                stop_at = min((i for s in sampling.stop if (i := full.find(s)) >= 0), default=-1)
                if stop_at >= 0:
                    full, finish = full[:stop_at], "stop"
                    request.stop = "stop"  # the scheduler drops the row at its next step
                if len(full) > len(text) and not full.endswith("\ufffd"):
                    yield Chunk(delta=full[len(text) :])
                    text = full
                if request.stop:
                    break
            ended = True
        finally:
            if not ended:
                request.stop = "cancel"  # the caller went away: free the row at the next step
        if not request.stop:
            tail = self.tokenizer.decode(out, skip_special_tokens=True)
            if len(tail) > len(text):  # a partial character held back at the very end
                yield Chunk(delta=tail[len(text) :])
        yield Chunk(
            delta="",
            finish_reason=finish or "length",
            prompt_tokens=len(request.prompt),
            completion_tokens=len(out) + (finish == "stop" and not request.stop),
        )

    # -- the scheduler thread --------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                while True:
                    with self._cv:
                        while not (
                            self._stopped or self._waiting or self._ops or self._batch.requests
                        ):
                            self._cv.wait()
                        if self._stopped:
                            break
                        ops, self._ops = self._ops, []
                        room = self.max_batch - len(self._batch.requests)
                        admit = self._waiting[: min(room, self.max_prefills_per_step)]
                        del self._waiting[: len(admit)]
                    self._run_ops(ops)
                    for request in admit:
                        self._prefill(request)
                    if self._batch.requests:
                        self._decode_step()
        except BaseException as exc:  # the engine is broken: fail every request, loudly
            self._failure = exc
            for request in self._batch.requests + self._waiting:
                request.out.fail(Unavailable("the generation engine failed; restart the replica"))
            raise

    def _run_ops(self, ops) -> None:
        retry = []
        for op, finish in ops:
            try:
                if op():
                    finish(None)
                else:
                    retry.append((op, finish))
            except Exception as exc:  # a bad adapter must not stop the engine
                finish(exc)
        if retry:
            with self._cv:
                self._ops[:0] = retry

    def _model(self):
        return self._peft if self._peft is not None else self._base

    def _forward(self, input_ids, mask, positions, keys, values, adapters):
        from transformers import DynamicCache

        cache = DynamicCache(list(zip(keys, values, strict=True))) if keys else DynamicCache()
        kwargs: dict[str, Any] = {}
        if self._peft is not None:
            kwargs["adapter_names"] = [a or BASE for a in adapters]
        out = self._model()(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            **kwargs,
        )
        layers = out.past_key_values.layers
        return out.logits[:, -1, :], [la.keys for la in layers], [la.values for la in layers]

    def _prefill(self, request: _Request) -> None:
        import torch

        if request.stop:  # cancelled while waiting
            self._finish(request)
            return
        if request.adapter and (
            self._peft is None or request.adapter not in self._peft.peft_config
        ):  # cannot happen: an unload waits for the requests that use it
            request.out.fail(NotFound(f"adapter {request.adapter!r} was unloaded"))
            return
        ids = torch.tensor([request.prompt], device=self.device)
        n = ids.shape[1]
        logits, keys, values = self._forward(
            ids,
            torch.ones_like(ids),
            torch.arange(n, device=self.device)[None],
            [],
            [],
            [request.adapter],
        )
        if request.sampling.seed:
            request.generator = torch.Generator(device=self.device)
            request.generator.manual_seed(request.sampling.seed)
        self._join(request, keys, values, n)
        if self._accept(request, self._sample(logits, [request])[0]):
            return
        self._drop([request])

    def _join(self, request: _Request, keys, values, n: int) -> None:
        """Add a prefilled row to the batch, left-padding whichever side is shorter."""
        import torch

        b = self._batch
        if not b.requests:
            b.requests, b.keys, b.values = [request], keys, values
            b.mask = torch.ones((1, n), dtype=torch.long, device=self.device)
            b.positions = torch.tensor([n], device=self.device)
            return
        length = b.mask.shape[1]

        def pad(t, width):  # left-pad the length axis (-2 of KV, -1 of the mask)
            if width == 0:
                return t
            shape = list(t.shape)
            axis = -2 if t.dim() == 4 else -1
            shape[axis] = width
            return torch.cat([t.new_zeros(shape), t], dim=axis)

        grow, short = max(0, n - length), max(0, length - n)

        def merged(olds, news):
            return [
                torch.cat([pad(a, grow), pad(c, short)]) for a, c in zip(olds, news, strict=True)
            ]

        b.keys, b.values = merged(b.keys, keys), merged(b.values, values)
        row_mask = torch.ones((1, n), dtype=torch.long, device=self.device)
        b.mask = torch.cat([pad(b.mask, grow), pad(row_mask, short)])
        b.positions = torch.cat([b.positions, torch.tensor([n], device=self.device)])
        b.requests.append(request)

    def _decode_step(self) -> None:
        import torch

        b = self._batch
        stale = [r for r in b.requests if r.stop]
        if stale:
            self._drop(stale)
            b = self._batch  # _drop may have replaced it
            if not b.requests:
                return
        tokens = torch.tensor([[r.last_token] for r in b.requests], device=self.device)
        mask = torch.cat([b.mask, torch.ones_like(tokens)], dim=1)
        logits, b.keys, b.values = self._forward(
            tokens, mask, b.positions[:, None], b.keys, b.values, [r.adapter for r in b.requests]
        )
        b.mask, b.positions = mask, b.positions + 1
        with self._cv:
            self._stats.steps += 1
            self._stats.largest_batch = max(self._stats.largest_batch, len(b.requests))
        done = [
            r
            for r, token in zip(b.requests, self._sample(logits, b.requests), strict=True)
            if not self._accept(r, token)
        ]
        if done:
            self._drop(done)

    def _sample(self, logits, requests: list[_Request]) -> list[int]:
        import torch

        chosen = logits.argmax(dim=-1).tolist()
        for i, r in enumerate(requests):
            s = r.sampling
            # Below this, greedy, as vLLM does (its _SAMPLING_EPS): logits divided by a
            # temperature such as 1e-38 overflow to inf, softmax gives NaN and multinomial
            # raises, which stopped the scheduler for every request (found by fuzzing).
            if s.temperature < 1e-5:
                continue
            probs = torch.softmax(logits[i].float() / s.temperature, dim=-1)
            if s.top_p < 1:
                sorted_probs, order = probs.sort(descending=True)
                keep = sorted_probs.cumsum(0) - sorted_probs < s.top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
            chosen[i] = int(torch.multinomial(probs, 1, generator=r.generator))
        return chosen

    def _accept(self, request: _Request, token: int) -> bool:
        """Hand ``token`` to the caller; False when the request is over."""
        if request.stop:
            return False
        if not request.out.put(token):  # the caller's event loop is closed: nobody listens
            request.stop = "cancel"
            return False
        request.generated += 1
        request.last_token = token
        if request.generated >= request.sampling.max_tokens:
            return False
        return token != self._eos or request.sampling.ignore_eos

    def _drop(self, requests: list[_Request]) -> None:
        """Take ``requests`` out of the batch, then tell their callers they are over."""
        b = self._batch
        gone = {id(r) for r in requests}
        keep = [i for i, r in enumerate(b.requests) if id(r) not in gone]
        if not keep:
            self._batch = _Batch()
        elif len(keep) < len(b.requests):
            import torch

            index = torch.tensor(keep, device=self.device)
            mask = b.mask[index]
            # Columns that are padding in every remaining row are dead weight: cut them.
            first = int(mask.any(dim=0).nonzero()[0])
            with self._cv:  # stats() reads the batch from other threads
                b.requests = [b.requests[i] for i in keep]
            b.mask, b.positions = mask[:, first:], b.positions[index]
            b.keys = [k[index, :, first:] for k in b.keys]
            b.values = [v[index, :, first:] for v in b.values]
        for r in requests:
            self._finish(r)

    def _finish(self, request: _Request) -> None:
        with self._cv:
            if request.stop == "cancel":
                self._stats.cancelled += 1
            else:
                self._stats.finished += 1
        request.out.close()
