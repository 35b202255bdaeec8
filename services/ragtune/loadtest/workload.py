"""What a load run sends, in YAML (docs/load-testing.md): the traffic mix, the load levels, the
SLOs goodput is measured against, and the optional background work (ingestion, adapter churn).

Every field has a default, so ``{}`` is a valid workload: the demo questions, routed by the
gateway (AUTO), streamed, closed loop at concurrency 1, 2 and 4.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ragtune.resources import DEMO_QUESTIONS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Questions(Strict):
    """Where questions come from: a text file (one per line), a BEIR folder's queries.jsonl, or
    inline; default the demo questions. ``words`` trims or repeats each to a length range."""

    file: Path | None = None
    beir: Path | None = None
    inline: list[str] = Field(default_factory=list)
    limit: int = Field(0, ge=0, description="use at most this many (0: all)")
    words: tuple[int, int] | None = Field(None, description="[min, max] words per question")

    @model_validator(mode="after")
    def _one_source(self) -> Questions:
        if sum(bool(x) for x in (self.file, self.beir, self.inline)) > 1:
            raise ValueError("give at most one of file, beir, inline")
        return self

    def load(self, base: Path) -> list[str]:
        if self.inline:
            texts = list(self.inline)
        elif self.beir is not None:
            path = _resolve(base, self.beir) / "queries.jsonl"
            with path.open() as f:
                texts = [json.loads(line)["text"] for line in f if line.strip()]
        else:
            path = _resolve(base, self.file) if self.file else DEMO_QUESTIONS
            texts = path.read_text().splitlines()
        texts = [t.strip() for t in texts if t.strip()]
        if self.limit:
            texts = texts[: self.limit]
        if not texts:
            raise ValueError("the workload has no questions")
        return texts


class Slo(Strict):
    """A request counts toward goodput when it succeeded within both limits (0: no limit)."""

    ttft_ms: float = Field(2000, ge=0)
    e2el_ms: float = Field(10000, ge=0)


class Route(Strict):
    """One kind of request in the mix, drawn with probability ``weight`` / sum of weights."""

    path: Literal["AUTO", "RAG", "TUNED", "HYBRID"] = "AUTO"
    weight: float = Field(1.0, gt=0)
    adapter: str = ""
    collection: str = ""
    output_format: str = ""
    tone: str = ""
    task: str = ""

    @field_validator("path", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class Tenant(Strict):
    """An API key to send requests with (``key`` or ``key_file``); its ``weight`` in the mix."""

    key: str = ""
    key_file: Path | None = None
    weight: float = Field(1.0, gt=0)

    def api_key(self, base: Path) -> str:
        if self.key:
            return self.key
        if self.key_file is not None:
            return _resolve(base, self.key_file).read_text().strip()
        raise ValueError("a tenant needs key or key_file")


class Load(Strict):
    """The load levels. ``closed``: ``concurrency`` users, each sending its next request when
    the last one ends. ``open``: requests arrive at ``rates`` per second whatever the replies
    (``arrival``: constant gaps, Poisson, or gamma with ``burstiness`` < 1 burstier, > 1
    smoother), at most ``max_concurrency`` in flight. ``sweep``: closed loop at 1, 2, 4, ...
    until throughput stops rising, errors pass ``max_error_rate`` or p90 latency grows past
    ``max_latency_growth`` times the first level's."""

    mode: Literal["closed", "open", "sweep"] = "closed"
    concurrency: list[int] = Field(default_factory=lambda: [1, 2, 4])
    rates: list[float] = Field(default_factory=lambda: [0.5, 1.0])
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    burstiness: float = Field(1.0, gt=0)
    max_concurrency: int = Field(256, ge=1)
    duration_s: float = Field(20, gt=0, description="per level; ends early at `requests`")
    requests: int = Field(0, ge=0, description="per level (0: until duration_s)")
    warmup_s: float = Field(0, ge=0, description="per level, sent but not counted")
    warmup_requests: int = Field(0, ge=0, description="per level, sent but not counted")
    sweep_max_concurrency: int = Field(64, ge=1)
    min_gain: float = Field(0.1, ge=0, description="sweep: stop when throughput rises less")
    max_error_rate: float = Field(0.05, ge=0, le=1)
    max_latency_growth: float = Field(10.0, gt=1)

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(c < 1 for c in value):
            raise ValueError("concurrency levels must be >= 1")
        return value

    @field_validator("rates")
    @classmethod
    def _positive_rates(cls, value: list[float]) -> list[float]:
        if not value or any(r <= 0 for r in value):
            raise ValueError("rates must be > 0")
        return value


class Ingestion(Strict):
    """Background ingestion while the load runs: one small document every ``interval_s`` into
    ``collection``; each is then searched (a 1-token RAG answer filtered to that document)
    until found, giving the freshness lag (upsert acknowledged -> first answer citing it)."""

    collection: str = "loadtest-fresh"
    interval_s: float = Field(2.0, gt=0)
    poll_s: float = Field(0.2, gt=0)
    give_up_s: float = Field(30, gt=0)


class AdapterChurn(Strict):
    """Background adapter churn: unload then load ``adapter`` every ``interval_s`` (an admin
    key), while the load runs; requests for it meanwhile show what churn costs."""

    adapter: str
    source: str = Field("", description="LoadAdapter source; empty: the server's adapters_dir")
    interval_s: float = Field(5.0, gt=0)
    admin_key: str = ""
    admin_key_file: Path | None = None


class Workload(Strict):
    target: str = "localhost:9000"
    application: str = "gateway"
    tls: bool = False
    tenants: list[Tenant] = Field(
        default_factory=lambda: [Tenant(key_file=Path("data/dev-api-key"))]
    )
    mix: list[Route] = Field(default_factory=lambda: [Route()])
    questions: Questions = Field(default_factory=Questions)
    stream: bool = True
    max_tokens: int = Field(32, ge=1)
    ignore_eos: bool = Field(False, description="always generate max_tokens (fixed output length)")
    temperature: float = Field(0.0, ge=0)
    top_k: int = Field(0, ge=0)
    timeout_s: float = Field(120, gt=0)
    slo: Slo = Field(default_factory=Slo)
    load: Load = Field(default_factory=Load)
    ingestion: Ingestion | None = None
    adapter_churn: AdapterChurn | None = None
    seed: int = 0

    @field_validator("mix")
    @classmethod
    def _non_empty(cls, value: list[Route]) -> list[Route]:
        if not value:
            raise ValueError("the mix needs at least one route")
        return value

    @classmethod
    def load_file(cls, path: Path) -> Workload:
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a workload is a YAML mapping")
        return cls.model_validate(data)


class Sampler:
    """Draws each request's route, tenant key and question, reproducibly from the seed."""

    def __init__(self, workload: Workload, base: Path) -> None:
        self.workload = workload
        self.random = random.Random(workload.seed)
        self.questions = workload.questions.load(base)
        self.keys = [t.api_key(base) for t in workload.tenants]
        self.tenant_weights = [t.weight for t in workload.tenants]
        self.route_weights = [r.weight for r in workload.mix]
        self._next = 0

    def question(self) -> str:
        text = self.questions[self._next % len(self.questions)]
        self._next += 1
        words = self.workload.questions.words
        if words is not None:
            tokens = text.split()
            n = self.random.randint(*words)
            text = " ".join((tokens * (n // max(len(tokens), 1) + 1))[:n])
        return text

    def route(self) -> Route:
        return self.random.choices(self.workload.mix, self.route_weights)[0]

    def tenant(self) -> tuple[int, str]:
        index = self.random.choices(range(len(self.keys)), self.tenant_weights)[0]
        return index, self.keys[index]


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path
