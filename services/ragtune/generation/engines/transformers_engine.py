"""transformers + PEFT engine: one base model, LoRA adapters loaded and unloaded at run time.

CPU default and GPU fallback. Each request names its adapter through PEFT's per-request
``adapter_names`` argument, so no global "active adapter" state is switched between requests.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.generation.engine import Chunk, Engine, Sampling

BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names


class _QueueStreamer:
    """transformers streamer that hands new token ids to an asyncio queue from the worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self._loop, self._queue = loop, queue
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first passes the prompt
            self._prompt_seen = True
            return
        self._loop.call_soon_threadsafe(self._queue.put_nowait, value.reshape(-1).tolist())

    def end(self) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)


class TransformersEngine(Engine):
    def __init__(
        self, model_path: str, *, model_name: str, device: str = "cpu", dtype: str = "float32"
    ):
        self.model_path = model_path
        self.model_name = model_name
        self.device = device
        self.dtype = dtype
        self._base = None
        self._peft = None  # PeftModel once the first adapter is loaded
        self.tokenizer = None
        # One generate() at a time: on CPU one request already uses every core.
        self._lock = asyncio.Lock()
        # Adapter load/unload changes the model's layers: never while generate() runs.
        self._model_lock = threading.Lock()

    def warm_up(self) -> None:
        if self._base is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self._base = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=getattr(torch, self.dtype)
        ).to(self.device)
        self._base.eval()

    # -- adapters --------------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str) -> None:
        self.warm_up()
        if name == BASE:
            raise InvalidArgument(f"{BASE!r} is reserved", field="name")
        with self._model_lock:
            self._load_adapter(name, path)

    def _load_adapter(self, name: str, path: str) -> None:
        if self._peft is None:
            from peft import PeftModel

            self._peft = PeftModel.from_pretrained(self._base, path, adapter_name=name)
            self._peft.eval()
        elif name not in self._peft.peft_config:
            self._peft.load_adapter(path, adapter_name=name)

    def unload_adapter(self, name: str) -> None:
        if name not in self.loaded_adapters():
            raise NotFound(f"adapter {name!r} is not loaded")
        with self._model_lock:
            self._unload_adapter(name)

    def _unload_adapter(self, name: str) -> None:
        if len(self._peft.peft_config) == 1:
            # PEFT cannot delete its last adapter: take the LoRA layers out instead.
            self._base = self._peft.unload()
            self._peft = None
        else:
            self._peft.delete_adapter(name)

    def loaded_adapters(self) -> set[str]:
        return set(self._peft.peft_config) if self._peft is not None else set()

    # -- generation ------------------------------------------------------------------------------

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        self.warm_up()
        if self.tokenizer.chat_template:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True
            )
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self.tokenizer(text)["input_ids"]

    def _generate(
        self,
        ids: list[int],
        sampling: Sampling,
        adapter: str | None,
        streamer: _QueueStreamer,
        cancel: threading.Event,
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return cancel.is_set()

        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.seed:
                torch.manual_seed(sampling.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        input_ids = torch.tensor([ids], device=self.device)
        try:
            with self._model_lock, torch.inference_mode():
                model = self._base
                if self._peft is not None:
                    model = self._peft
                    kwargs["adapter_names"] = [adapter or BASE]
                elif adapter:
                    raise NotFound(f"adapter {adapter!r} was unloaded")
                model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs
                )
        finally:
            streamer.end()

    async def stream(
        self, messages: list[dict[str, str]], sampling: Sampling, adapter: str | None
    ) -> AsyncIterator[Chunk]:
        if adapter and adapter not in self.loaded_adapters():
            raise NotFound(f"adapter {adapter!r} is not loaded")
        ids = self._prompt_ids(messages)
        async with self._lock:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()
            cancel = threading.Event()
            worker = loop.run_in_executor(
                None, self._generate, ids, sampling, adapter, _QueueStreamer(loop, queue), cancel
            )
            out: list[int] = []
            text, finish = "", "length"
            try:
                while (new := await queue.get()) is not None:
                    if self.tokenizer.eos_token_id in new:
                        new = new[: new.index(self.tokenizer.eos_token_id)]
                        finish = "stop"
                    out.extend(new)
                    full = self.tokenizer.decode(out, skip_special_tokens=True)
                    stop_at = min(
                        (i for s in sampling.stop if (i := full.find(s)) >= 0), default=-1
                    )
                    if stop_at >= 0:
                        full, finish = full[:stop_at], "stop"
                        cancel.set()
                    if full.endswith("\ufffd") and finish == "length":
                        continue  # half of a multi-byte character: wait for the rest
                    if len(full) > len(text):
                        yield Chunk(delta=full[len(text) :])
                        text = full
                    if finish == "stop":
                        cancel.set()
                        break
                await worker
            finally:
                cancel.set()  # client went away or we stopped early: end generate() promptly
                await asyncio.shield(worker)
            yield Chunk(
                delta="", finish_reason=finish, prompt_tokens=len(ids), completion_tokens=len(out)
            )
