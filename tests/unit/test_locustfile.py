"""load_tests/locustfile.py run by the real ``locust`` (a subprocess: Locust monkey-patches the
process with gevent) against a fake Gateway served in this process."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections import Counter
from concurrent import futures
from pathlib import Path

import grpc

from ragtune.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.conftest import REPO

LOCUST = Path(sys.executable).parent / "locust"
KEY = "test-key"
MAX_QUESTION_CHARS = 200


class FakeGateway(gateway_pb2_grpc.GatewayServicer):
    """Canned answers after a few milliseconds; refuses what the real gateway refuses."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()  # (path, adapter)

    def _check(self, request: gateway_pb2.AnswerRequest, context: grpc.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata())
        if (
            metadata.get("authorization") != f"Bearer {KEY}"
            or metadata.get("application") != "gateway"
        ):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key")
        if not request.question.strip():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "question: must not be empty")
        if len(request.question) > MAX_QUESTION_CHARS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "question: too long")
        self.requests[common_pb2.Path.Name(request.path), request.adapter] += 1

    def _reply(self, request: gateway_pb2.AnswerRequest) -> gateway_pb2.AnswerResponse:
        path = request.path or common_pb2.PATH_RAG
        return gateway_pb2.AnswerResponse(
            answer="Two years.",
            route=common_pb2.RouteDecision(path=path, adapter=request.adapter),
            cost=common_pb2.Cost(total_micro_usd=42),
            finish_reason="stop",
        )

    def Answer(self, request, context):
        self._check(request, context)
        time.sleep(0.01)
        return self._reply(request)

    def AnswerStream(self, request, context):
        self._check(request, context)
        reply = self._reply(request)
        yield gateway_pb2.AnswerEvent(route=reply.route)
        for delta in ("Two ", "years."):
            time.sleep(0.005)
            yield gateway_pb2.AnswerEvent(delta=delta)
        reply.ClearField("answer")
        yield gateway_pb2.AnswerEvent(done=reply)


def serve(gateway: FakeGateway) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    gateway_pb2_grpc.add_GatewayServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def locust(port: int, out: Path, *options: str) -> subprocess.Popen[str]:
    command = [str(LOCUST), "-f", "load_tests/locustfile.py", "--headless", "-u", "2", "-r", "2"]
    command += ["-t", "5s", "--host", f"127.0.0.1:{port}", "--csv", str(out), "--only-summary"]
    command += ["--ragtune-key", KEY, *options]
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def stats(out: Path) -> dict[str, dict[str, str]]:
    with open(f"{out}_stats.csv") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def failures(out: Path) -> list[dict[str, str]]:
    with open(f"{out}_failures.csv") as f:
        return list(csv.DictReader(f))


def test_locust_reports_answers_streams_ttft_and_refusals_by_code(tmp_path):
    """Three runs side by side (about 7 s): valid questions, some refused, a bad option."""
    valid, refused = FakeGateway(), FakeGateway()
    servers = [serve(valid), serve(refused)]
    questions = tmp_path / "questions.txt"
    questions.write_text("How long is the warranty?\n\n" + "x" * (MAX_QUESTION_CHARS + 1) + "\n")
    try:
        runs = [
            locust(
                servers[0][1],
                tmp_path / "valid",
                "--ragtune-paths",
                "rag:1,tuned:1",
                "--ragtune-adapter",
                "json-extractor",
            ),
            locust(servers[1][1], tmp_path / "refused", "--ragtune-questions", str(questions)),
            locust(servers[1][1], tmp_path / "bad", "--ragtune-paths", "auto:1,fast:2"),
        ]
        outputs = [run.communicate(timeout=30)[0] for run in runs]
    finally:
        for server, _ in servers:
            server.stop(grace=None)

    assert runs[0].returncode == 0, outputs[0]
    rows = stats(tmp_path / "valid")
    for name in ("Answer", "AnswerStream", "AnswerStream TTFT"):
        assert int(rows[name]["Request Count"]) > 0, name
        assert rows[name]["Failure Count"] == "0", name
        assert rows[name]["Type"] == "grpc"
    # Time to the first delta is less than to the end of the stream.
    assert float(rows["AnswerStream TTFT"]["Average Response Time"]) < float(
        rows["AnswerStream"]["Average Response Time"]
    )
    # The mix asked for RAG and TUNED only; the adapter went with TUNED, not with RAG.
    assert set(valid.requests) == {("PATH_RAG", ""), ("PATH_TUNED", "json-extractor")}

    assert runs[1].returncode == 1, outputs[1]  # Locust's exit code when a request failed
    rows = stats(tmp_path / "refused")
    for name in ("Answer", "AnswerStream"):
        assert 0 < int(rows[name]["Failure Count"]) < int(rows[name]["Request Count"]), name
    errors = {(f["Name"], f["Error"]) for f in failures(tmp_path / "refused")}
    assert ("Answer", "GrpcError('INVALID_ARGUMENT: question: too long')") in errors
    assert ("AnswerStream", "GrpcError('INVALID_ARGUMENT: question: too long')") in errors
    # The blank line was skipped, not sent: nothing failed as empty.
    assert not any("empty" in error for _, error in errors)

    assert runs[2].returncode != 0
    assert "--ragtune-paths: unknown path 'fast'" in outputs[2]
