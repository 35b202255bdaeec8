"""A Locust user for the gateway's ``Answer`` and ``AnswerStream``, for teams that run Locust
(docs/load-testing.md, "Locust")::

    locust -f load_tests/locustfile.py --headless -u 8 -r 2 -t 2m --host localhost:9000 \\
        --ragtune-paths auto:2,rag:1,tuned:1 --ragtune-adapter json-answer

Each user is one closed-loop client (``-u`` is the concurrency): it asks a question, waits for
the answer, asks the next. Locust's statistics get one row per RPC, ``Answer`` and
``AnswerStream`` (end to end), plus ``AnswerStream TTFT`` (time to the first answer text); a
failed call is a failure named by its gRPC code. ``ragtune-load`` (docs/load-testing.md) measures
more (per-stage times, goodput, open-loop arrivals); this file is for an existing Locust setup.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent
from locust import User, constant, events, task

from ragtune.resources import DEMO_QUESTIONS
from ragtune.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

# Locust runs users as gevent greenlets; gRPC's C core blocks its thread unless it polls through
# gevent. gRPC requires this after gevent's monkey-patching (Locust did it before importing this
# file) and before any channel exists (users create theirs in on_start).
grpc.experimental.gevent.init_gevent()

APPLICATION = "gateway"  # Serve's gRPC proxy routes on this metadata
# Locust's row names: the RPCs' own names (from the proto, not spelt out), and the stream's TTFT.
(_GATEWAY,) = gateway_pb2.DESCRIPTOR.services_by_name.values()
ANSWER, ANSWER_STREAM = (
    next(
        m.name
        for m in _GATEWAY.methods
        if m.input_type.name == "AnswerRequest" and m.server_streaming == streaming
    )
    for streaming in (False, True)
)
TTFT = f"{ANSWER_STREAM} TTFT"
# "auto" -> "PATH_AUTO", ...: --ragtune-paths names paths as `ragtune ask --path` does.
PATHS = {
    name.removeprefix("PATH_").lower(): name for name in common_pb2.Path.DESCRIPTOR.values_by_name
}


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    # On the parser itself, not a group: Locust's web UI shows only its own parser's arguments.
    parser.add_argument(
        "--ragtune-key",
        default="",
        is_secret=True,
        help="API key (default: $RAGTUNE_API_KEY, else $RAGTUNE_DATA/dev-api-key, data/ by default)",
    )
    parser.add_argument(
        "--ragtune-paths",
        default="auto:1",
        help="requested paths with weights, e.g. auto:2,rag:1,tuned:1 (auto|rag|tuned|hybrid)",
    )
    parser.add_argument(
        "--ragtune-adapter", default="", help="LoRA adapter for the tuned and hybrid requests"
    )
    parser.add_argument(
        "--ragtune-collection", default="", help="collection (default: the gateway's)"
    )
    parser.add_argument(
        "--ragtune-questions",
        default="",
        help="questions, one a line (default: the demo questions)",
    )
    parser.add_argument(
        "--ragtune-stream-share",
        type=float,
        default=0.5,
        help="share of requests sent as AnswerStream, 0-1 (the rest: Answer)",
    )
    parser.add_argument(
        "--ragtune-max-tokens", type=int, default=0, help="max output tokens (0: gateway default)"
    )
    parser.add_argument("--ragtune-timeout", type=float, default=60.0, help="deadline per call, s")


@dataclass(frozen=True)
class Settings:
    """The ``--ragtune-*`` options, checked."""

    key: str
    paths: list[str]
    weights: list[float]
    adapter: str
    collection: str
    questions: list[str]
    stream_share: float
    max_tokens: int
    timeout_s: float

    @classmethod
    def from_options(cls, options: Any) -> Settings:
        paths, weights = parse_mix(options.ragtune_paths)
        source = Path(options.ragtune_questions or DEMO_QUESTIONS)
        # Blank lines (a trailing newline) are not questions the user meant to send.
        questions = [q.strip() for q in source.read_text().splitlines() if q.strip()]
        if not questions:
            raise ValueError(f"--ragtune-questions: no question in {source}")
        if not 0 <= options.ragtune_stream_share <= 1:
            raise ValueError("--ragtune-stream-share: must be between 0 and 1")
        return cls(
            key=api_key(options.ragtune_key),
            paths=paths,
            weights=weights,
            adapter=options.ragtune_adapter,
            collection=options.ragtune_collection,
            questions=questions,
            stream_share=options.ragtune_stream_share,
            max_tokens=options.ragtune_max_tokens,
            timeout_s=options.ragtune_timeout,
        )


def parse_mix(text: str) -> tuple[list[str], list[float]]:
    """``auto:2,rag:1`` -> (["auto", "rag"], [2.0, 1.0]); a path without weight weighs 1."""
    paths, weights = [], []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        name = name.strip().lower()
        if name not in PATHS:
            raise ValueError(f"--ragtune-paths: unknown path {name!r} ({'|'.join(PATHS)})")
        paths.append(name)
        weights.append(float(weight or 1))
    if not paths or sum(weights) <= 0:
        raise ValueError(f"--ragtune-paths: no path with a positive weight in {text!r}")
    return paths, weights


def api_key(given: str) -> str:
    """The CLI's order (``ragtune --api-key``): the option, the environment, the dev key file."""
    key = given or os.environ.get("RAGTUNE_API_KEY", "")
    dev_key = Path(os.environ.get("RAGTUNE_DATA", "data")) / "dev-api-key"
    if not key and dev_key.is_file():
        key = dev_key.read_text().strip()
    return key


@events.init.add_listener
def check_options(environment: Any, **_: Any) -> None:
    """Fails the run at start on a bad option, rather than once per user."""
    if environment.parsed_options is not None:
        try:
            Settings.from_options(environment.parsed_options)
        except (ValueError, OSError) as exc:
            raise SystemExit(f"load_tests/locustfile.py: {exc}") from None


class GrpcError(Exception):
    """A failed call; Locust groups failures by this message, so it starts with the code name."""

    def __init__(self, error: grpc.RpcError) -> None:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        super().__init__(f"{code.name}: {details}")
        self.code = code.name


def path_name(path: int) -> str:
    return common_pb2.Path.Name(path).removeprefix("PATH_")


class GatewayUser(User):
    """One client of the gateway: Answer or AnswerStream, one request at a time."""

    host = "localhost:9000"
    wait_time = constant(0)  # closed loop: the next question as soon as the answer is in

    def on_start(self) -> None:
        self.settings = Settings.from_options(self.environment.parsed_options)
        self.channel = grpc.insecure_channel(self.host)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.metadata = [
            ("application", APPLICATION),
            ("authorization", f"Bearer {self.settings.key}"),
        ]

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def ask(self) -> None:
        path = random.choices(self.settings.paths, self.settings.weights)[0]
        request = self.request(random.choice(self.settings.questions), path)
        if random.random() < self.settings.stream_share:
            self.answer_stream(request)
        else:
            self.answer(request)

    def request(self, question: str, path: str) -> gateway_pb2.AnswerRequest:
        s = self.settings
        return gateway_pb2.AnswerRequest(
            question=question,
            path=PATHS[path],
            # An adapter named on an AUTO request would sway the router toward it: name it only
            # where the request asks for an adapter path.
            adapter=s.adapter if path in ("tuned", "hybrid") else "",
            collection=s.collection if path != "tuned" else "",
            sampling=common_pb2.SamplingParams(max_tokens=s.max_tokens),
        )

    def answer(self, request: gateway_pb2.AnswerRequest) -> None:
        context = {"requested_path": path_name(request.path)}
        start = time.perf_counter()
        try:
            reply = self.stub.Answer(
                request, metadata=self.metadata, timeout=self.settings.timeout_s
            )
        except grpc.RpcError as exc:
            self.fire(ANSWER, start, exception=GrpcError(exc), context=context)
            return
        context |= {
            "path": path_name(reply.route.path),
            "cost_micro_usd": reply.cost.total_micro_usd,
        }
        self.fire(ANSWER, start, length=reply.ByteSize(), context=context)

    def answer_stream(self, request: gateway_pb2.AnswerRequest) -> None:
        """End to end as ``AnswerStream``; the first text delta also as ``AnswerStream TTFT``."""
        context: dict[str, Any] = {"requested_path": path_name(request.path)}
        start = time.perf_counter()
        length, first_delta = 0, True
        try:
            stream = self.stub.AnswerStream(
                request, metadata=self.metadata, timeout=self.settings.timeout_s
            )
            for event in stream:
                length += event.ByteSize()
                kind = event.WhichOneof("event")
                if kind == "route":
                    context["path"] = path_name(event.route.path)
                elif kind == "delta" and first_delta:
                    first_delta = False
                    self.fire(TTFT, start, length=len(event.delta.encode()), context=context)
                elif kind == "done":
                    context["cost_micro_usd"] = event.done.cost.total_micro_usd
        except grpc.RpcError as exc:
            self.fire(ANSWER_STREAM, start, exception=GrpcError(exc), context=context)
            return
        self.fire(ANSWER_STREAM, start, length=length, context=context)

    def fire(
        self,
        name: str,
        start: float,
        *,
        length: int = 0,
        exception: Exception | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=exception,
            context=dict(context or {}),
        )
