import asyncio
import threading
import time

import numpy as np
import pytest

from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.embedding.config import EmbeddingConfig, EmbeddingModelConfig
from ragtune.embedding.service import EmbeddingService
from ragtune.v1 import embedding_pb2 as pb
from tests.conftest import run


@pytest.fixture(scope="module")
def service():
    svc = EmbeddingService(EmbeddingConfig(max_batch_texts=8, max_text_chars=5000))
    svc.warm_up()
    return svc


def test_embeds_normalised_vectors_with_token_counts(service):
    reply = run(service.Embed(pb.EmbedRequest(texts=["the cat sat", "a warranty of 36 months"])))
    vectors = np.array([v.values for v in reply.vectors])
    assert reply.dims == 384 and vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert reply.model == "all-MiniLM-L6-v2"
    assert list(reply.token_counts) == [5, 8]  # [CLS] + words + [SEP]
    assert list(reply.truncated_tokens) == [0, 0]


def test_related_texts_are_closer(service):
    reply = run(
        service.Embed(
            pb.EmbedRequest(
                texts=[
                    "How long is the drone battery life?",
                    "The Kestrel battery lasts 47 minutes.",
                    "Our Lyon office opened in March.",
                ],
                input_type=pb.INPUT_TYPE_QUERY,
            )
        )
    )
    q, near, far = (np.array(v.values) for v in reply.vectors)
    assert q @ near > q @ far


def test_a_text_embedded_alone_or_in_a_concurrent_batch_agrees(service):
    texts = [f"Robot number {i} carries {i * 3} boxes to the dock." for i in range(24)]

    async def concurrently():
        return await asyncio.gather(*(service.Embed(pb.EmbedRequest(texts=[t])) for t in texts))

    batches_before = service._models["all-MiniLM-L6-v2"].batcher.stats.batches
    together = run(concurrently())
    batches = service._models["all-MiniLM-L6-v2"].batcher.stats.batches - batches_before
    assert batches < len(texts)  # requests were batched
    for text, reply in zip(texts, together, strict=True):
        alone = run(service.Embed(pb.EmbedRequest(texts=[text])))
        assert np.allclose(alone.vectors[0].values, reply.vectors[0].values, atol=1e-5)


def test_long_text_truncation_is_reported(service):
    reply = run(service.Embed(pb.EmbedRequest(texts=["word " * 400])))
    assert reply.token_counts[0] == 402
    assert reply.truncated_tokens[0] == 402 - 256


@pytest.mark.parametrize(
    ("texts", "field"),
    [([], "texts"), (["ok", "  "], "texts[1]"), (["x"] * 9, "texts"), (["y" * 5001], "texts[0]")],
)
def test_bad_input_names_the_field(service, texts, field):
    with pytest.raises(InvalidArgument) as err:
        run(service.Embed(pb.EmbedRequest(texts=texts)))
    assert err.value.field == field


def test_unknown_model_is_not_found(service):
    with pytest.raises(NotFound, match="nope"):
        run(service.Embed(pb.EmbedRequest(texts=["x"], model="nope")))


def test_config_rejects_unknown_default_model():
    with pytest.raises(ValueError, match="default_model"):
        EmbeddingConfig(models=[EmbeddingModelConfig(name="a")], default_model="b")


def test_passes_shared_among_threads_give_the_same_vectors_in_order():
    from ragtune.embedding.backend import SentenceTransformerEmbedder

    texts = [("word " * (i * 7 % 40 + 1)) + f"item {i}" for i in range(30)]  # mixed lengths
    one = SentenceTransformerEmbedder(EmbeddingModelConfig(name="m", parallel_passes=1))
    three = SentenceTransformerEmbedder(EmbeddingModelConfig(name="m", parallel_passes=3))
    np.testing.assert_allclose(three.embed(texts), one.embed(texts), atol=1e-5)
    assert three.parallel == 3


def test_planned_passes_give_what_sentence_transformers_encode_gives():
    from ragtune.embedding.backend import SentenceTransformerEmbedder

    texts = [("word " * (i * 11 % 60 + 1)) + f"item {i}" for i in range(40)] + ["x" * 3000]
    embedder = SentenceTransformerEmbedder(EmbeddingModelConfig(name="m", parallel_passes=1))
    reference = embedder.model.encode(texts, batch_size=64, normalize_embeddings=True)
    np.testing.assert_allclose(embedder.embed_serial(texts), reference, atol=1e-5)


def brute_force_cost(lengths, max_texts, overhead):
    """The cheapest split of sorted lengths into passes, by trying every split."""
    if not lengths:
        return 0.0
    return min(
        overhead + k * lengths[k - 1] + brute_force_cost(lengths[k:], max_texts, overhead)
        for k in range(1, min(max_texts, len(lengths)) + 1)
    )


def test_passes_compute_the_fewest_tokens_within_the_limit():
    from ragtune.embedding.backend import plan_passes

    rng = np.random.default_rng(3)
    for _ in range(40):
        lengths = sorted(rng.integers(5, 80, rng.integers(1, 12)).tolist())
        max_texts, overhead = int(rng.integers(1, 6)), float(rng.integers(0, 60))
        passes = plan_passes(lengths, max_texts, overhead)
        assert [a for a, _ in passes][1:] == [b for _, b in passes][:-1]  # contiguous
        assert passes[0][0] == 0 and passes[-1][1] == len(lengths)
        assert all(0 < b - a <= max_texts for a, b in passes)
        cost = sum(overhead + (b - a) * lengths[b - 1] for a, b in passes)
        assert cost == pytest.approx(brute_force_cost(lengths, max_texts, overhead))
    # Free passes: no padding at all; costly passes: as few as the limit allows.
    assert plan_passes([3, 5, 9], 8, 0.0) == [(0, 1), (1, 2), (2, 3)]
    assert len(plan_passes([3, 5, 9, 9, 9], 2, 1000.0)) == 3


class SlowEmbedder:
    """Two passes may run at once; records how many did, and what each batch held."""

    name, dims, max_tokens, parallel = "slow", 4, 64, 2

    def __init__(self, config):
        self.lock = threading.Lock()
        self.running = self.most_at_once = 0
        self.batches: list[int] = []

    def warm_up(self):
        pass

    def count_tokens(self, texts):
        return [len(t.split()) + 2 for t in texts]

    def embed(self, texts):
        return self.embed_serial(texts)

    def embed_serial(self, texts):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.batches.append(len(texts))
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return np.full((len(texts), self.dims), 0.5, dtype=np.float32)


def test_one_batch_worker_per_parallel_pass():
    made = []
    svc = EmbeddingService(
        EmbeddingConfig(models=[EmbeddingModelConfig(name="slow")]),
        embedder_factory=lambda config: made.append(SlowEmbedder(config)) or made[-1],
    )

    async def clients():
        return await asyncio.gather(
            *(svc.Embed(pb.EmbedRequest(texts=[f"text {i}"])) for i in range(24))
        )

    replies = run(clients())
    assert all(len(r.vectors) == 1 and r.dims == 4 for r in replies)
    embedder = made[0]
    assert embedder.most_at_once == 2  # two batches ran at once, one per pass that may
    assert sum(embedder.batches) == 24 and max(embedder.batches) <= 12  # each its share


def test_stats_report_batches_per_model(service):
    before = service.stats()["all-MiniLM-L6-v2"]
    run(service.Embed(pb.EmbedRequest(texts=["one more"])))
    after = service.stats()["all-MiniLM-L6-v2"]
    assert after["requests"] == before["requests"] + 1
    assert after["busy_seconds"] > before["busy_seconds"]


def test_a_backend_used_from_several_threads_at_once_loads_once():
    from ragtune.common.lazy import LazyModel

    class Slow(LazyModel):
        loads = 0

        def _load(self):
            Slow.loads += 1
            if Slow.loads == 1:
                raise OSError("weights not there yet")  # a failed load is tried again
            time.sleep(0.05)  # long enough for the other threads to arrive
            return object()

    backend = Slow()
    with pytest.raises(OSError):
        backend.warm_up()
    threads = [threading.Thread(target=backend.warm_up) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Slow.loads == 2 and backend.model is backend.model
