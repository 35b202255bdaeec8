"""Per-collection calibration of the router's retrieval probe.

The probe asks "can this collection answer the question?" from the best similarity of the
question to the collection's chunks. A cosine score means different things on different
corpora and embedders: off-topic questions score higher against a broad collection than
against a narrow one, and on-topic questions lower against one with short chunks. So no single
threshold holds everywhere; each collection gets its own, fitted on two samples the platform
draws itself, with no labelled data:

- **in-collection positives**: pseudo-queries, one sentence of each of up to ``positives``
  chunks kept as a reservoir sample of everything ingested into the collection, searched
  against it. A real question is worded unlike its answer, so a sentence's own chunk does not
  count: its score is the best *other* chunk's, the similarity that the collection's
  neighbourhood of a topic gives (``pseudo_query``, ``Calibrator``).
- **off-collection negatives**: questions about everyday and professional topics the platform
  ships (``data/probe-negatives.txt``), searched against the collection.

A logistic regression (scikit-learn) on the best score separates the two; its 0.5 point is the
collection's threshold and its output the calibrated probability that the collection can
answer, which the route decision carries. Feedback moves the threshold within bounds
(``feedback.py``). Fits, samples and feedback offsets are rows in the gateway's database, so
they survive restarts and every gateway replica reads the same ones. The cost is bounded: one
embedding call of at most ``positives`` sentences (the negatives' vectors are embedded once per
replica) and ``positives + negatives`` searches, whatever the collection's size; it runs in the
background after an ingest grows the collection by ``regrow`` (docs/routing.md has the measured
figures).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ragtune.gateway.config import CalibrationConfig

log = logging.getLogger(__name__)

metadata_obj = sa.MetaData()

fits = sa.Table(
    "router_calibrations",
    metadata_obj,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("collection", sa.String(64), primary_key=True),
    sa.Column(
        "chunks_seen", sa.BigInteger, nullable=False, default=0
    ),  # ingested ever (the reservoir's n)
    sa.Column("chunks_at_fit", sa.BigInteger, nullable=False, default=0),  # 0: never fitted
    sa.Column("threshold", sa.Float, nullable=False, default=0),
    sa.Column("slope", sa.Float, nullable=False, default=0),
    sa.Column("positives", sa.Integer, nullable=False, default=0),
    sa.Column("negatives", sa.Integer, nullable=False, default=0),
    sa.Column("positive_median", sa.Float, nullable=False, default=0),
    sa.Column("negative_p90", sa.Float, nullable=False, default=0),
    sa.Column("fitted_unix_ms", sa.BigInteger, nullable=False, default=0),
    sa.Column("cost_ms", sa.Float, nullable=False, default=0),
)

samples = sa.Table(
    "router_probe_samples",
    metadata_obj,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("collection", sa.String(64), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("chunk_id", sa.String(300), nullable=False),
    sa.Column("doc_id", sa.String(256), nullable=False),
    sa.Column("query", sa.Text, nullable=False),
)

SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
MARKUP = re.compile(r"^[#>*\-\s|`]+|[*_`|]+")


def pseudo_query(text: str, rng: random.Random) -> str:
    """A sentence of ``text`` (5-40 words; markup stripped) that stands in for a question the
    chunk answers; "" when the chunk has none."""
    sentences = []
    for part in SENTENCE_END.split(text):
        clean = MARKUP.sub("", part).strip()
        if 5 <= len(clean.split()) <= 40:
            sentences.append(clean)
    return rng.choice(sentences) if sentences else ""


def shipped_negatives() -> list[str]:
    text = resources.files("ragtune.gateway").joinpath("data/probe-negatives.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


@dataclass(frozen=True)
class Calibration:
    """A collection's fitted probe: the score at which it is as likely as not to answer."""

    threshold: float
    slope: float
    positives: int = 0
    negatives: int = 0
    positive_median: float = 0.0
    negative_p90: float = 0.0
    chunks: int = 0  # the collection's size (chunks ingested) when fitted
    fitted_unix_ms: int = 0
    cost_ms: float = 0.0

    def probability(self, top_score: float, offset: float = 0.0) -> float:
        """Calibrated probability that the collection can answer a question whose best score
        is ``top_score``; ``offset`` (from feedback) shifts the threshold."""
        return probability(top_score, self.threshold + offset, self.slope)


def probability(top_score: float, threshold: float, slope: float) -> float:
    """The logistic the fit produces: 0.5 at ``threshold``, steeper with ``slope``."""
    z = slope * (top_score - threshold)
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def fit(
    positive: Sequence[float], negative: Sequence[float], config: CalibrationConfig
) -> Calibration:
    """Logistic regression of "in-collection" on the best score, classes weighted equally."""
    from sklearn.linear_model import LogisticRegression

    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    x = np.concatenate([pos, neg]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    model = LogisticRegression(C=config.regularization, class_weight="balanced").fit(x, y)
    slope, intercept = float(model.coef_[0][0]), float(model.intercept_[0])
    if slope <= 0:  # the collection's own text scores no higher than off-topic questions
        threshold, slope = config.max_threshold, config.default_slope
    else:
        threshold = -intercept / slope
    threshold = min(config.max_threshold, max(config.min_threshold, threshold))
    return Calibration(
        threshold=round(threshold, 4),
        slope=round(slope, 3),
        positives=len(pos),
        negatives=len(neg),
        positive_median=round(float(np.median(pos)), 4),
        negative_p90=round(float(np.quantile(neg, 0.9)), 4),
    )


# -- storage -------------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


class CalibrationStore:
    """The fits and pseudo-query samples, in the gateway's database (beside the ledger)."""

    def __init__(self, engine: Engine, config: CalibrationConfig, seed: int = 0) -> None:
        self.engine, self.config, self.seed = engine, config, seed
        metadata_obj.create_all(engine)

    def _key(self, table: sa.Table, tenant: str, collection: str) -> sa.ColumnElement[bool]:
        return (table.c.tenant == tenant) & (table.c.collection == collection)

    def add_chunks(
        self, tenant: str, collection: str, chunks: Sequence[tuple[str, str, str]]
    ) -> int:
        """Reservoir-sample ingested chunks ``(chunk_id, doc_id, text)`` into the collection's
        pseudo-queries (algorithm R); returns the chunks seen so far, these included."""
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    return self._add_chunks(conn, tenant, collection, chunks)
            except sa.exc.IntegrityError:
                continue  # a concurrent first ingest created the row: claim it now
        raise RuntimeError("calibration sample could not be written")  # pragma: no cover

    def _add_chunks(
        self,
        conn: sa.Connection,
        tenant: str,
        collection: str,
        chunks: Sequence[tuple[str, str, str]],
    ) -> int:
        # Concurrent ingests of one collection (the CLI keeps two batches in flight, replicas
        # share the database) must not sample from the same count. Writing the collection's row
        # first serialises them: SQLite takes its write lock, PostgreSQL locks the row; a
        # first ingest racing another for a new row gets IntegrityError and is retried.
        size, key = self.config.positives, self._key(fits, tenant, collection)
        claimed = conn.execute(fits.update().where(key).values(chunks_seen=fits.c.chunks_seen))
        if claimed.rowcount == 0:  # every figure starts at 0: not fitted yet
            conn.execute(fits.insert().values(tenant=tenant, collection=collection))
        seen = int(conn.execute(sa.select(fits.c.chunks_seen).where(key)).scalar_one())
        # Seeded by the collection and its size: the same ingests give the same sample (and so
        # the same fit) on every replica and every run.
        rng = random.Random(f"{self.seed}/{tenant}/{collection}/{seen}")
        for chunk_id, doc_id, text in chunks:
            seen += 1
            slot = seen - 1 if seen <= size else rng.randrange(seen)
            if slot >= size:
                continue
            query = pseudo_query(text, rng)
            if not query:
                continue
            in_slot = self._key(samples, tenant, collection) & (samples.c.slot == slot)
            conn.execute(samples.delete().where(in_slot))
            conn.execute(
                samples.insert().values(
                    tenant=tenant,
                    collection=collection,
                    slot=slot,
                    chunk_id=chunk_id[:300],
                    doc_id=doc_id[:256],
                    query=query,
                )  # fmt: skip
            )
        conn.execute(fits.update().where(key).values(chunks_seen=seen))
        return seen

    def drop_documents(self, tenant: str, collection: str, doc_ids: Sequence[str]) -> None:
        """Deleted documents' sentences are no longer in-collection positives."""
        with self.engine.begin() as conn:
            conn.execute(
                samples.delete().where(
                    self._key(samples, tenant, collection) & samples.c.doc_id.in_(list(doc_ids))
                )
            )

    def samples(self, tenant: str, collection: str) -> list[tuple[str, str]]:
        """The collection's pseudo-queries: (chunk_id, query)."""
        query = sa.select(samples.c.chunk_id, samples.c.query).where(
            self._key(samples, tenant, collection)
        )
        with self.engine.connect() as conn:
            return [(r.chunk_id, r.query) for r in conn.execute(query)]

    def sizes(self, tenant: str, collection: str) -> tuple[int, int]:
        """(chunks ingested so far, chunks when last fitted; 0: never)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(fits.c.chunks_seen, fits.c.chunks_at_fit).where(
                    self._key(fits, tenant, collection)
                )
            ).one_or_none()
        return (int(row.chunks_seen), int(row.chunks_at_fit)) if row is not None else (0, 0)

    def needs_fit(self, tenant: str, collection: str) -> bool:
        """Whether the collection has grown enough since its last fit (or was never fitted)."""
        seen, at_fit = self.sizes(tenant, collection)
        if seen < self.config.min_chunks:
            return False
        return at_fit == 0 or seen >= at_fit * (1 + self.config.regrow)

    def save(self, tenant: str, collection: str, fitted: Calibration) -> None:
        values = dict(
            chunks_at_fit=fitted.chunks, threshold=fitted.threshold, slope=fitted.slope,
            positives=fitted.positives, negatives=fitted.negatives,
            positive_median=fitted.positive_median, negative_p90=fitted.negative_p90,
            fitted_unix_ms=fitted.fitted_unix_ms, cost_ms=fitted.cost_ms,
        )  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(fits.update().where(self._key(fits, tenant, collection)).values(**values))

    def get(self, tenant: str, collection: str) -> Calibration | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(fits).where(self._key(fits, tenant, collection))
            ).one_or_none()
        if row is None or row.chunks_at_fit == 0:
            return None
        return Calibration(
            threshold=row.threshold, slope=row.slope, positives=row.positives,
            negatives=row.negatives, positive_median=row.positive_median,
            negative_p90=row.negative_p90, chunks=int(row.chunks_at_fit),
            fitted_unix_ms=int(row.fitted_unix_ms), cost_ms=row.cost_ms,
        )  # fmt: skip

    def forget(self, tenant: str, collection: str) -> None:
        """A deleted collection's calibration goes with it."""
        with self.engine.begin() as conn:
            conn.execute(fits.delete().where(self._key(fits, tenant, collection)))
            conn.execute(samples.delete().where(self._key(samples, tenant, collection)))


# -- fitting against the live services ------------------------------------------------------------

Embed = Callable[[list[str]], Awaitable[np.ndarray]]
# (vector, k) -> [(chunk_id, score)], best first; [] when the collection is missing.
Search = Callable[[np.ndarray, int], Awaitable[list[tuple[str, float]]]]


async def measure(
    queries: Sequence[tuple[str, str]],
    negative_vectors: np.ndarray,
    embed: Embed,
    search: Search,
    config: CalibrationConfig,
) -> tuple[list[float], list[float]]:
    """The positives' and negatives' best scores against one collection. A pseudo-query's own
    chunk is skipped (its best score is the best other chunk's)."""
    vectors = await embed([q for _, q in queries]) if queries else np.zeros((0, 1))
    slots = asyncio.Semaphore(config.searches_in_flight)

    async def best(vector: np.ndarray, own: str) -> float | None:
        async with slots:
            hits = await search(vector, 2)
        others = [score for chunk_id, score in hits if chunk_id != own]
        return others[0] if others else None

    positive = await asyncio.gather(
        *(best(v, own) for v, (own, _) in zip(vectors, queries, strict=True))
    )
    negative = await asyncio.gather(*(best(v, "") for v in negative_vectors))
    return [s for s in positive if s is not None], [s for s in negative if s is not None]


class Calibrator:
    """Fits collections in the background, one at a time per collection, and caches fits and
    feedback offsets for the router (which decides without I/O)."""

    def __init__(
        self, store: CalibrationStore, embed: Embed, search_for: Callable[[str, str], Search]
    ) -> None:
        self.store, self.config = store, store.config
        self.embed, self.search_for = embed, search_for
        self._negatives: np.ndarray | None = None
        self._running: dict[tuple[str, str], asyncio.Task] = {}
        self._again: set[tuple[str, str]] = set()
        self._cache: dict[tuple[str, str], tuple[float, Calibration | None]] = {}

    async def negative_vectors(self) -> np.ndarray:
        if self._negatives is None:
            self._negatives = await self.embed(shipped_negatives())
        return self._negatives

    async def calibrate(self, tenant: str, collection: str) -> Calibration | None:
        """Fit the collection now (``None`` when it has too few usable samples)."""
        started = time.perf_counter()
        queries = await asyncio.to_thread(self.store.samples, tenant, collection)
        chunks, _ = await asyncio.to_thread(self.store.sizes, tenant, collection)
        if len(queries) < self.config.min_chunks:
            return None
        positive, negative = await measure(
            queries, await self.negative_vectors(), self.embed,
            self.search_for(tenant, collection), self.config,
        )  # fmt: skip
        if len(positive) < self.config.min_chunks or not negative:
            return None
        fitted = fit(positive, negative, self.config)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        fitted = replace(fitted, chunks=chunks, fitted_unix_ms=_now_ms(), cost_ms=elapsed_ms)
        await asyncio.to_thread(self.store.save, tenant, collection, fitted)
        self._cache[(tenant, collection)] = (time.monotonic(), fitted)
        log.info(
            "calibrated %s/%s: threshold %.4f from %d positives, %d negatives in %.0f ms",
            tenant, collection, fitted.threshold, fitted.positives, fitted.negatives,
            fitted.cost_ms,
        )  # fmt: skip
        return fitted

    async def ingested(
        self, tenant: str, collection: str, chunks: Sequence[tuple[str, str, str]]
    ) -> None:
        """Record an ingest's chunks; fit again in the background when the collection grew
        enough."""
        if not self.config.enabled:
            return
        await asyncio.to_thread(self.store.add_chunks, tenant, collection, chunks)
        if await asyncio.to_thread(self.store.needs_fit, tenant, collection):
            self.schedule(tenant, collection)

    def schedule(self, tenant: str, collection: str) -> None:
        """Fit once the current burst of ingests settles; a fit asked for while one runs runs
        again after it (so the last ingest is always reflected)."""
        key = (tenant, collection)
        if key in self._running:
            self._again.add(key)
            return
        self._running[key] = asyncio.get_running_loop().create_task(self._run(key))

    async def _run(self, key: tuple[str, str]) -> None:
        try:
            while True:
                self._again.discard(key)
                await asyncio.sleep(self.config.debounce_s)
                try:
                    await self.calibrate(*key)
                except Exception:  # a failed fit keeps the previous one; the next ingest retries
                    log.exception("calibrating %s/%s failed", *key)
                if key not in self._again:
                    return
        finally:
            self._running.pop(key, None)

    async def wait(self) -> None:
        """Until no fit is pending (tests, benchmarks)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def get(self, tenant: str, collection: str) -> Calibration | None:
        """The collection's fit, reread from the database every ``cache_s`` (other replicas
        fit too)."""
        key = (tenant, collection)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.config.cache_s:
            return cached[1]
        fitted = await asyncio.to_thread(self.store.get, tenant, collection)
        self._cache[key] = (time.monotonic(), fitted)
        return fitted

    async def forget(self, tenant: str, collection: str) -> None:
        await asyncio.to_thread(self.store.forget, tenant, collection)
        self._cache.pop((tenant, collection), None)

    async def documents_deleted(self, tenant: str, collection: str, doc_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.store.drop_documents, tenant, collection, doc_ids)
