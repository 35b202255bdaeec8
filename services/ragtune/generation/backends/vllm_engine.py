"""vLLM engine: vLLM's async engine (``AsyncLLM``) with LoRA adapters loaded and unloaded at run
time. The production GPU engine.

vLLM does the hard parts itself: continuous batching, paged KV cache, and batches that mix the
base model with up to ``max_loras`` adapters. This class adds what the service needs on top:

* adapter names mapped to ``LoRARequest``s whose int id is fixed at load time. vLLM knows an
  adapter by that id (its adapter cache is keyed on it), so a name loaded again after an unload
  gets a fresh id and can never be served stale weights;
* unloads that take the adapter off the servable set at once, then wait for the requests still
  using it before ``remove_lora``;
* cancellation: closing a stream aborts the request inside vLLM;
* counters (``EngineStats``).

One event loop for vLLM
    ``AsyncLLM`` binds its background tasks (the output handler and the ZMQ reader of the
    engine-core client) to the event loop it first runs on, and breaks on any other loop. Our
    callers use several: the service preloads adapters with ``asyncio.run``, Serve serves on
    its own loop, tests run one loop per test. So the engine owns an event loop on a daemon
    thread; every vLLM call runs there, and streamed outputs cross back to the caller's loop
    through an ``Outbox``.

Prompts
    Rendered with the tokenizer's chat template and tokenized here, then handed to vLLM as
    token ids (``vllm.inputs.tokens_input``): vLLM does not tokenize again, the prompt carries
    the template's own special tokens only (no second BOS), and ``count_tokens`` matches what
    the model reads. The engine keeps its own tokenizer object: HF fast tokenizers are not safe
    to share across threads, and vLLM's is used on its engine loop and renderer threads.

vLLM API used (read in the 0.26.0 and 0.33.0 sources; the same in both):
``vllm.AsyncEngineArgs``; ``vllm.v1.engine.async_llm.AsyncLLM`` (also exported as
``vllm.AsyncLLMEngine``): ``from_engine_args``, ``generate``, ``abort``, ``add_lora``,
``remove_lora``, ``errored``, ``model_config``, ``shutdown``; ``vllm.SamplingParams`` with
``vllm.sampling_params.RequestOutputKind``; ``vllm.lora.request.LoRARequest``;
``vllm.inputs.tokens_input``; ``vllm.v1.engine.exceptions.EngineDeadError`` and
``vllm.exceptions.VLLMValidationError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ragtune.common.errors import InvalidArgument, NotFound, Unavailable
from ragtune.generation.backend import Chunk, Engine, EngineStats, Sampling
from ragtune.generation.backends.shared import Outbox, adapter_load_failed, translated

log = logging.getLogger(__name__)

T = TypeVar("T")

# ragtune's defaults for AsyncEngineArgs where vLLM's do not suit a multi-adapter service
# (vLLM's max_loras is 1: one adapter per batch). engine_kwargs overrides them.
ENGINE_DEFAULTS: dict[str, Any] = {"max_loras": 4}

# vLLM's finish reasons (vllm.v1.engine.FinishReason) as the service reports them. "abort" and
# "error" are not here: the request did not complete, the caller gets Unavailable.
_FINISH = {"stop": "stop", "length": "length", "repetition": "stop"}


def one_worker_process_on_cpu(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """On vLLM's CPU build with one worker, run the worker inside the engine-core process.

    vLLM's CPU platform always starts its worker in a process of its own, so a replica starts
    three Python processes, one after the other, each importing vLLM (about 6 s each on the
    2-core build machine); on a GPU vLLM runs a single worker inside the engine core. Doing
    the same on CPU ("uni" executor, which vLLM allows there only with
    VLLM_ENABLE_V1_MULTIPROCESSING=0: AsyncLLM still runs the engine core in its own process)
    saves one of those starts, which is most of a replica's recovery after a crash (measured:
    docs/generation.md#start-up). Left alone: GPUs, several workers, and an explicit
    ``distributed_executor_backend`` or VLLM_ENABLE_V1_MULTIPROCESSING.
    """
    from vllm.platforms import current_platform

    workers = int(engine_kwargs.get("tensor_parallel_size", 1)) * int(
        engine_kwargs.get("pipeline_parallel_size", 1)
    )
    if (
        not current_platform.is_cpu()
        or workers != 1
        or "distributed_executor_backend" in engine_kwargs
        or "VLLM_ENABLE_V1_MULTIPROCESSING" in os.environ
    ):
        return {}
    # Read by vLLM's CPU platform in this process and in the engine core it spawns (which
    # inherits the environment); AsyncLLM does not read it.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return {"distributed_executor_backend": "uni"}


class _EngineLoop:
    """An asyncio event loop on a daemon thread; coroutines from any thread or loop run on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="vllm-engine-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the engine loop and await it from the caller's loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what still runs on the loop, stop it and join the thread (blocking)."""
        if not self._thread.is_alive():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.submit(cancel_all()).result(timeout)
        except Exception:  # stop anyway: the loop goes away with whatever is left
            log.warning("tasks on the vLLM engine loop did not finish", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


@dataclass(eq=False)
class _Adapter:
    """A loaded adapter: the ``LoRARequest`` its requests carry, and who still uses it."""

    lora: Any  # vllm.lora.request.LoRARequest
    running: int = 0  # streams using it right now
    # Set by unload_adapter; done once vLLM has dropped the adapter.
    removed: concurrent.futures.Future[None] | None = None
    removing: bool = False  # remove_lora was submitted


@dataclass(eq=False)
class _Run:
    """One request as the engine loop sees it; the caller ends it early through ``_stop``."""

    task: asyncio.Task | None = None
    stopped: bool = False


class VLLMEngine(Engine):
    def __init__(
        self,
        model_path: str,
        *,
        model_name: str,
        dtype: str = "auto",
        max_lora_rank: int = 64,
        engine_kwargs: dict[str, Any] | None = None,
    ):
        """``engine_kwargs`` go to vLLM's ``AsyncEngineArgs`` as they are (GenerationConfig
        has checked their names), over ``ENGINE_DEFAULTS``."""
        self.model_path = model_path
        self.model_name = model_name
        self.dtype = dtype
        self.max_lora_rank = max_lora_rank
        self.engine_kwargs = {**ENGINE_DEFAULTS, **(engine_kwargs or {})}
        self.tokenizer = None
        self._engine: Any = None  # vllm AsyncLLM once warmed up
        self._loop: _EngineLoop | None = None
        self._closed = False
        self._start_lock = threading.Lock()  # warm_up / shutdown
        self._tokenizer_lock = threading.Lock()
        # Adapters and counters are touched from the callers' loops and the engine loop.
        self._lock = threading.Lock()
        self._adapters: dict[str, _Adapter] = {}  # servable: requests may name these
        self._loading: dict[str, concurrent.futures.Future[None]] = {}
        self._ids = itertools.count(1)  # LoRARequest ids: >= 1, never reused
        self._stats = EngineStats()

    # -- lifecycle -------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Start vLLM: load the model, profile memory, allocate the KV cache (idempotent).

        Blocks the calling thread until vLLM is ready, which takes from seconds to minutes; that
        is fine in a Serve replica's constructor (the replica serves nothing yet), even when it
        runs on an event loop's thread, since vLLM is built on the engine's own loop. vLLM starts
        its engine core in a child process (spawned, not forked, inside a Ray worker).
        """
        with self._start_lock:
            if self._closed:
                raise RuntimeError("the vLLM engine was shut down")
            if self._engine is not None:
                return
            from vllm.v1.engine.async_llm import AsyncLLM
            from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

            self._tokenizer()
            args = self.engine_args()

            async def build() -> Any:
                # Built inside the loop, so AsyncLLM starts its output handler on this loop.
                # vLLM's own metrics go through Ray's metrics API, so they are scraped from
                # Ray's metrics port with ragtune's (as ray_vllm_*: ':' becomes '_').
                return AsyncLLM.from_engine_args(args, stat_loggers=[RayPrometheusStatLogger])

            loop = _EngineLoop()
            try:
                self._engine = loop.submit(build()).result()
            except BaseException:
                loop.stop()
                raise
            self._loop = loop

    def engine_args(self) -> Any:
        """vLLM's ``AsyncEngineArgs``: ragtune's own settings, then ``engine_kwargs``."""
        from vllm import AsyncEngineArgs

        return AsyncEngineArgs(
            model=self.model_path,
            served_model_name=self.model_name,
            dtype=self.dtype,
            enable_lora=True,
            max_lora_rank=self.max_lora_rank,
            **self.engine_kwargs,
            **one_worker_process_on_cpu(self.engine_kwargs),  # {} when engine_kwargs chose
        )

    def check_health(self) -> None:
        engine, loop = self._engine, self._loop
        if engine is None or loop is None:
            raise RuntimeError("the vLLM engine is not started (or was shut down)")
        if not loop.is_alive():
            raise RuntimeError("the vLLM engine's event loop stopped")
        # AsyncLLM.check_health() is async and only reads `errored`: read it here (True once
        # the engine-core process died or the output handler task ended).
        if engine.errored:
            raise RuntimeError("the vLLM engine is dead (engine core or output handler failed)")

    def stats(self) -> EngineStats:
        with self._lock:
            return replace(self._stats)

    async def shutdown(self) -> None:
        with self._start_lock:
            engine, loop = self._engine, self._loop
            self._engine, self._loop, self._closed = None, None, True
        with self._lock:
            self._adapters.clear()
        if loop is None:
            return

        async def close() -> None:
            # On the engine loop, where AsyncLLM closes its sockets and tasks directly.
            engine.shutdown()

        try:
            if engine is not None:
                await loop.call(close())
        finally:
            await asyncio.to_thread(loop.stop)

    async def _started(self) -> tuple[Any, _EngineLoop]:
        if self._engine is None:
            await asyncio.to_thread(self.warm_up)  # minutes of blocking: not on this loop
        engine, loop = self._engine, self._loop
        if engine is None or loop is None:
            raise Unavailable("the vLLM engine was shut down")
        return engine, loop

    # -- adapters --------------------------------------------------------------------------------

    async def load_adapter(self, name: str, path: str) -> None:
        engine, loop = await self._started()
        from vllm.lora.request import LoRARequest

        with self._lock:
            if name in self._adapters:
                return
            pending = self._loading.get(name)  # a load of this name already under way: join it
            if pending is None:
                lora = LoRARequest(lora_name=name, lora_int_id=next(self._ids), lora_path=path)
                pending = self._loading[name] = loop.submit(self._add(engine, name, lora))
        # vLLM's engine core reports a failed add_lora as a bare Exception("Call to add_lora
        # method failed: ...").
        failed = adapter_load_failed(name, path)
        with translated(lambda exc: _translate(exc) or failed(exc)):
            # Shielded: a caller that goes away must not cancel a load others may be waiting on.
            await asyncio.shield(asyncio.wrap_future(pending))

    async def _add(self, engine: Any, name: str, lora: Any) -> None:
        """Engine loop: load the adapter's weights into vLLM, then make the name servable."""
        try:
            # Loads into vLLM's CPU-side adapter cache (max_cpu_loras, LRU); a batch moves it to
            # one of the max_loras GPU slots. An adapter evicted from that cache is read from
            # lora_path again by the next request that carries its LoRARequest.
            await engine.add_lora(lora)
        except BaseException:
            with self._lock:
                self._loading.pop(name, None)
            raise
        with self._lock:
            self._loading.pop(name, None)
            self._adapters[name] = _Adapter(lora)

    async def unload_adapter(self, name: str) -> None:
        with self._lock:
            entry = self._adapters.pop(name, None)  # new requests for it fail from now on
            if entry is None:
                raise NotFound(f"adapter {name!r} is not loaded")
            entry.removed = concurrent.futures.Future()
            idle = entry.running == 0
            entry.removing = idle
        if idle:
            self._submit_remove(entry)
        # Otherwise the last stream using it submits the removal (_release). Shielded: the
        # removal happens even if this caller goes away.
        await asyncio.shield(asyncio.wrap_future(entry.removed))

    def _submit_remove(self, entry: _Adapter) -> None:
        engine, loop = self._engine, self._loop
        if engine is None or loop is None:  # shut down: vLLM is gone with its adapters
            entry.removed.set_result(None)
            return
        try:
            loop.submit(self._remove(engine, entry))
        except RuntimeError as exc:  # the engine loop is closed
            entry.removed.set_exception(exc)

    @staticmethod
    async def _remove(engine: Any, entry: _Adapter) -> None:
        """Engine loop: drop the adapter from vLLM's caches (CPU and GPU slots)."""
        try:
            await engine.remove_lora(entry.lora.lora_int_id)  # False if LRU already evicted it
        except BaseException as exc:
            if not entry.removed.done():
                entry.removed.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            if not entry.removed.done():
                entry.removed.set_result(None)

    def _acquire(self, adapter: str | None) -> _Adapter | None:
        if not adapter:
            return None
        with self._lock:
            entry = self._adapters.get(adapter)
            if entry is None:
                raise NotFound(f"adapter {adapter!r} is not loaded")
            entry.running += 1
            return entry

    def _release(self, entry: _Adapter | None) -> None:
        if entry is None:
            return
        with self._lock:
            entry.running -= 1
            drained = entry.running == 0 and entry.removed is not None and not entry.removing
            if drained:
                entry.removing = True
        if drained:  # an unload was waiting for this last request
            self._submit_remove(entry)

    def loaded_adapters(self) -> set[str]:
        with self._lock:
            return set(self._adapters)

    # -- generation ------------------------------------------------------------------------------

    def _tokenizer(self) -> Any:
        with self._tokenizer_lock:
            if self.tokenizer is None:
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            return self.tokenizer

    def _render(self, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
        """The prompt as text and as token ids."""
        tokenizer = self._tokenizer()
        with self._tokenizer_lock:
            if getattr(tokenizer, "chat_template", None):
                text = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
                # The template writes its special tokens (bos included) itself.
                return text, list(tokenizer.encode(text, add_special_tokens=False))
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            return text, list(tokenizer.encode(text))

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self._render(messages)[1])

    @staticmethod
    def _sampling_params(sampling: Sampling) -> tuple[Any, bool]:
        """vLLM SamplingParams for ``sampling``, and whether outputs come as deltas."""
        from vllm import SamplingParams

        greedy = sampling.temperature <= 0
        kwargs: dict[str, Any] = {
            "max_tokens": sampling.max_tokens,
            "temperature": 0.0 if greedy else sampling.temperature,  # vLLM: 0 means greedy
            "top_p": 1.0 if greedy else sampling.top_p,
            "seed": sampling.seed or None,  # 0: no seed
            "stop": list(sampling.stop) or None,  # stop strings are cut from the output text
            "ignore_eos": sampling.ignore_eos,  # benchmarks: exactly max_tokens
        }
        try:
            from vllm.sampling_params import RequestOutputKind
        except ImportError:  # no delta outputs in this vLLM: stream() diffs cumulative text
            return SamplingParams(**kwargs), False
        # DELTA: each RequestOutput carries only the text and token ids new since the last one.
        return SamplingParams(**kwargs, output_kind=RequestOutputKind.DELTA), True

    async def stream(
        self, messages: list[dict[str, str]], sampling: Sampling, adapter: str | None
    ) -> AsyncIterator[Chunk]:
        engine, loop = await self._started()
        entry = self._acquire(adapter)  # NotFound; an unload now waits for this request
        request_id = f"ragtune-{uuid.uuid4().hex}"  # vLLM adds its own suffix internally
        run = _Run()
        state = "new"  # -> running -> finished | cancelled (caller left) | failed
        try:
            with translated(_translate):
                if engine.errored:
                    raise Unavailable("the vLLM engine is dead; the replica must restart")
                text, ids = self._render(messages)
                limit = engine.model_config.max_model_len  # as vLLM resolved it
                if len(ids) >= limit:
                    raise InvalidArgument(
                        f"prompt is {len(ids)} tokens; this model takes at most {limit - 1}",
                        field="messages",
                    )
                params, deltas = self._sampling_params(sampling)
                from vllm.inputs import tokens_input

                prompt = tokens_input(ids, prompt=text)  # pre-tokenized: vLLM skips tokenizing
                out = Outbox()
                self._count(running=1)
                state = "running"
                lora = entry.lora if entry is not None else None
                loop.submit(self._pump(engine, run, request_id, prompt, params, lora, out))
                sent, completion, finish = "", 0, ""
                async for new_text, new_tokens, reason in out:
                    if deltas:
                        delta, completion = new_text, completion + new_tokens
                    else:
                        delta, sent, completion = new_text[len(sent) :], new_text, new_tokens
                    if reason is not None:
                        finish = _FINISH.get(reason, "")
                        if not finish:
                            raise Unavailable(f"vLLM ended the request ({reason}); retry")
                        # Done inside vLLM: count it, and let a waiting unload go on at once.
                        state = "finished"
                        self._count(running=-1, finished=1)
                        self._release(entry)
                        entry = None
                    if delta:
                        yield Chunk(delta=delta)
                    if finish:
                        break
                else:  # the outputs ended before the one that finishes the request
                    raise Unavailable("vLLM ended the request without a final output; retry")
                yield Chunk(
                    delta="",
                    finish_reason=finish,
                    prompt_tokens=len(ids),
                    completion_tokens=completion,
                )
        except (GeneratorExit, asyncio.CancelledError):
            if state == "running":
                state = "cancelled"
            raise
        finally:
            try:
                if state in ("running", "cancelled"):  # left early: stop it inside vLLM
                    await self._abort(loop, engine, run, request_id)
            finally:
                if state in ("running", "cancelled"):
                    self._count(running=-1, cancelled=int(state == "cancelled"))
                self._release(entry)

    async def _pump(
        self,
        engine: Any,
        run: _Run,
        request_id: str,
        prompt: Any,
        params: Any,
        lora: Any,
        out: Outbox,
    ) -> None:
        """Engine loop: run one request through ``AsyncLLM.generate`` and hand each output to
        the caller as ``(text, new token count, finish reason or None)``."""
        if run.stopped:  # the caller left before the request started
            return
        run.task = asyncio.current_task()
        outputs = engine.generate(prompt, params, request_id, lora_request=lora)
        try:
            async for output in outputs:
                first = output.outputs[0]  # n=1: one completion per request
                reason = (first.finish_reason or "stop") if output.finished else None
                if not out.put((first.text, len(first.token_ids), reason)):
                    return  # the caller's loop is gone; aclose() below aborts the request
        except Exception as exc:
            out.fail(exc)
        else:
            out.close()
        finally:
            # generate() aborts the request in vLLM when closed before its last output.
            await outputs.aclose()

    @staticmethod
    async def _stop(engine: Any, run: _Run, request_id: str) -> None:
        """Engine loop: end a request whose caller left. Idempotent, harmless once finished."""
        run.stopped = True
        if run.task is not None and not run.task.done():
            run.task.cancel()  # generate() sees CancelledError and aborts the request itself
            await asyncio.wait([run.task])
        # Abort by id as well, in case the cancel landed before generate() registered it.
        # Unknown or finished ids are ignored by vLLM.
        await engine.abort(request_id)

    async def _abort(self, loop: _EngineLoop, engine: Any, run: _Run, request_id: str) -> None:
        try:
            # Shielded: runs to the end even if this task is cancelled again meanwhile.
            await asyncio.shield(loop.call(self._stop(engine, run, request_id)))
        except Exception:
            log.warning("could not abort vLLM request %s", request_id, exc_info=True)

    def _count(self, *, running: int = 0, finished: int = 0, cancelled: int = 0) -> None:
        with self._lock:
            self._stats.running += running
            self._stats.finished += finished
            self._stats.cancelled += cancelled


def _translate(exc: Exception) -> Exception | None:
    """vLLM's errors as the service's: a dead engine is Unavailable, a bad request invalid;
    None for the others."""
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, EngineDeadError):
        return Unavailable("the vLLM engine is dead; the replica must restart")
    if isinstance(exc, VLLMValidationError):
        return InvalidArgument(str(exc))
    return None
