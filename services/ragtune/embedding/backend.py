"""Embedding backends. The service depends only on the ``Embedder`` protocol."""

from __future__ import annotations

import copy
import itertools
import queue
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from ragtune.common.lazy import LazyModel, require
from ragtune.common.models import default_minilm_path
from ragtune.common.threads import cores
from ragtune.embedding.config import EmbeddingModelConfig


class Embedder(Protocol):
    name: str
    dims: int
    max_tokens: int
    parallel: int  # forward passes run at once (threads), for the torch thread budget

    def warm_up(self) -> None: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before truncation, special tokens included."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dims) float32, L2-normalised; texts over max_tokens are truncated.
        May share the texts out among ``parallel`` threads."""
        ...

    def embed_serial(self, texts: Sequence[str]) -> np.ndarray:
        """``embed`` on the calling thread alone; safe from ``parallel`` threads at once (the
        service's batch workers each call this)."""
        ...


class SentenceTransformerEmbedder(LazyModel):
    """A sentence-transformers model loaded from a local directory.

    A call's texts are sorted by token length and run in the forward passes that compute the
    fewest padded tokens (``plan_passes``). ``embed`` shares a call's passes out among
    ``parallel`` threads, ``embed_serial`` runs them on the calling thread (the service runs one
    batch worker per pass that may run at once). Each thread has its own copy of the model's
    Python objects (fast tokenizers are not thread-safe) over one shared set of weights; for a
    small model on CPU, one torch thread each beats torch's intra-op threads, which synchronise
    on every operator.
    """

    def __init__(self, config: EmbeddingModelConfig) -> None:
        super().__init__()
        self.config = config
        self.name = config.name
        self.path = config.path or default_minilm_path()
        self.dims = 0
        self.max_tokens = 0
        self.parallel = config.parallel_passes or (
            1 if config.device.startswith("cuda") else cores()
        )
        self._copies: queue.SimpleQueue = queue.SimpleQueue()  # one per running pass
        self._pool: ThreadPoolExecutor | None = None

    def _load(self):
        st = require("sentence_transformers", "sentence-transformers", "the embedding backend")
        import torch  # sentence-transformers runs on it: present once that imported

        model = st.SentenceTransformer(self.path, device=self.config.device)
        if self.config.dtype != "float32":
            model = model.to(getattr(torch, self.config.dtype))
        self.dims = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)
        # Fast tokenizers are not thread-safe: each call reconfigures truncation. Counting runs
        # on the event loop while passes run in worker threads, so it gets its own copy: the
        # Rust tokenizer itself, untruncated, cheaper than the transformers wrapper (measured:
        # README.md, "Embedding and reranking").
        backend = getattr(model.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            self._counter = Tokenizer.from_str(backend.to_str())
            self._counter.no_truncation()
            self._counter.no_padding()
        else:  # a slow (Python) tokenizer
            self._counter = copy.deepcopy(model.tokenizer)
        weights = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        self._copies.put(model)
        for _ in range(self.parallel - 1):
            self._copies.put(copy.deepcopy(model, memo=dict(weights)))
        if self.parallel > 1:
            self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix=f"embed-{self.name}")
        return model

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self.warm_up()
        if hasattr(self._counter, "encode_batch"):
            return [len(e.ids) for e in self._counter.encode_batch(list(texts))]
        encoded = self._counter(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The texts' passes, planned together, run by up to ``parallel`` threads at once."""
        return self._embed(list(texts), self.parallel)

    def embed_serial(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(list(texts), 1)

    def _embed(self, texts: list[str], threads: int) -> np.ndarray:
        self.warm_up()
        vectors = np.empty((len(texts), self.dims), dtype=np.float32)
        model = self._copies.get()  # waits only if more than `parallel` threads call at once
        try:
            ids = model.tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
            order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
            lengths = [len(ids[i]) for i in order]
            planned = plan_passes(lengths, self.config.batch_size, self.config.pass_overhead_tokens)
            # Costliest first, each thread taking the next when it is free: none idles at the end.
            passes = deque(sorted(([order[i] for i in range(a, b)] for a, b in planned),
                                  key=lambda rows: -len(rows) * len(ids[rows[-1]])))  # fmt: skip
            helpers = [] if self._pool is None else [
                self._pool.submit(self._run_passes, None, texts, passes, vectors)
                for _ in range(min(threads, len(passes)) - 1)
            ]  # fmt: skip
            self._run_passes(model, texts, passes, vectors)
            for helper in helpers:
                helper.result()
        finally:
            self._copies.put(model)
        return vectors

    def _run_passes(self, model, texts: list[str], passes: deque, vectors: np.ndarray) -> None:
        """Run passes (lists of rows) from ``passes`` until none is left, with ``model`` or a
        copy of its own: what SentenceTransformer.encode does for each (preprocess, forward,
        normalise)."""
        import torch
        from sentence_transformers.util import batch_to_device

        own = model is None
        if own:
            model = self._copies.get()
        try:
            with torch.inference_mode():
                while True:
                    try:
                        rows = passes.popleft()
                    except IndexError:
                        return
                    features = model.preprocess([texts[i] for i in rows])
                    out = model(batch_to_device(features, model.device))["sentence_embedding"]
                    out = torch.nn.functional.normalize(out.float(), p=2, dim=1)
                    vectors[rows] = out.cpu().numpy()
        finally:
            if own:
                self._copies.put(model)


def plan_passes(lengths: Sequence[int], max_texts: int, overhead: float) -> list[tuple[int, int]]:
    """Split texts sorted by token length (ascending) into forward passes, as (start, stop),
    computing the fewest tokens: a pass pads every text to its longest and costs ``overhead``
    tokens more (on a CPU, streaming the weights from memory once per pass). Exact, by dynamic
    programming over passes of at most ``max_texts``."""
    best = [0.0] + [float("inf")] * len(lengths)
    cut = [0] * (len(lengths) + 1)
    for stop in range(1, len(lengths) + 1):
        longest = lengths[stop - 1]
        for start in range(max(0, stop - max_texts), stop):
            cost = best[start] + overhead + (stop - start) * longest
            if cost < best[stop]:
                best[stop], cut[stop] = cost, start
    passes, stop = [], len(lengths)
    while stop > 0:
        passes.append((cut[stop], stop))
        stop = cut[stop]
    return passes[::-1]
