"""Fuzzing every public RPC (issue 21): messages drawn from the Gateway's descriptors, arbitrary
and at the configured limits, sent with an admin key, a plain key, a wrong key or none, to the
gateway class over in-process services. Whatever a caller sends, the answer is a status a client
can act on: never INTERNAL or UNKNOWN, details never longer than the cap, and the gateway keeps
answering.

`make test` runs a small sample (FUZZ_EXAMPLES per RPC); `make fuzz` runs 10,000 per RPC
(RAGTUNE_FUZZ_EXAMPLES) and writes the codes seen to results/fuzz/gateway.json.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ragtune.common.auth import create_key
from ragtune.common.clients import LocalTransport
from ragtune.common.context import CallContext
from ragtune.common.errors import MAX_DETAILS_CHARS, to_status
from ragtune.common.services import EMBEDDING, GENERATION, RETRIEVAL
from ragtune.embedding.config import EmbeddingConfig
from ragtune.embedding.service import EmbeddingService
from ragtune.gateway.config import GatewayConfig
from ragtune.gateway.input_limits import Limits
from ragtune.gateway.service import GatewayService
from ragtune.retrieval.config import RetrievalConfig
from ragtune.retrieval.service import RetrievalService
from ragtune.v1 import common_pb2, gateway_pb2
from tests.conftest import REPO, make_generation_service, run
from tests.fuzzing import Boundaries, messages

FUZZ_EXAMPLES = int(os.environ.get("RAGTUNE_FUZZ_EXAMPLES", "0")) or 50
GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
HANG_S = 120  # no call may take longer (the slowest, a 16-token answer, takes well under 1 s)
# Small limits: the boundaries the fuzzer aims at stay cheap to serve (a 16-token answer, a
# 2,000-character document), and every limit is exercised on both sides.
LIMITS = Limits(
    max_question_chars=500,
    max_documents_per_ingest=4,
    max_ingest_bytes=20_000,
    max_document_chars=2000,
    max_title_chars=300,
    max_delete_ids=20,
    max_metadata_entries=4,
    max_filter_entries=4,
    max_value_chars=300,
    max_top_k=10,
    max_tokens=16,
    max_stop_sequences=4,
    max_comment_chars=300,
    max_source_chars=300,
    max_list_items=20,
)
BOUNDS = Boundaries(v for v in LIMITS.model_dump().values() if v < 10_000)
# Plausible values by field name: what the test gateway holds, so plausible requests get past
# validation into the pipeline (retrieval, routing, generation, the ledger).
HINTS = {
    "question": ["When did the Lyon office open?", "Kestrel battery?", "Reply in JSON: why?",
                 "Talk like a pirate: name a parrot", "tl;dr the Lyon office"],
    "collection": ["kb", "kb", "default"],
    "name": ["kb", "kb2", "pirate", "json-answer", "tldr"],
    "adapter": ["pirate", "json-answer", "tldr"],
    "doc_id": ["kestrel", "lyon", "new"],
    "doc_ids": ["kestrel", "lyon", "new"],
    "text": ["The Kestrel drone flies 47 minutes.", "Lyon opened in 2026."],
    "output_format": ["", "json"], "tone": ["", "pirate"], "task": ["", "summarization"],
    "rating": [1, 3, 5], "top_k": [0, 3], "max_tokens": [0, 4, 16],
    "latency_budget_ms": [0, 60_000], "max_cost_micro_usd": [0, 1_000_000],
    "since": ["", "2026-01-01"], "until": [""], "source": ["", "beir:x"], "ingest_id": ["", "run-1"],
    "index_type": ["", "flat", "hnsw"], "metric": ["", "ip", "l2"],
}  # fmt: skip
CALLERS = ("admin", "tenant", "wrong key", "no key")
WHO = ("admin", "admin", "admin", "tenant", "tenant", "wrong key", "no key")  # mostly keyed
REPORT: dict[str, dict] = {}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, devmodel):
    # A generation service of its own: the fuzzer unloads adapters, which other tests use.
    generation = make_generation_service(devmodel)
    embedding = EmbeddingService(EmbeddingConfig())
    embedding.warm_up()
    tmp = tmp_path_factory.mktemp("fuzz")
    keys = tmp / "keys.yaml"
    admin, tenant = create_key(keys, "acme", admin=True), create_key(keys, "globex")
    gw = GatewayService(
        GatewayConfig(
            keys_file=str(keys),
            database_url=f"sqlite:///{tmp}/ledger.db",
            limits=LIMITS,
            default_max_tokens=8,
        ),
        embedding=EMBEDDING.connect(LocalTransport(embedding)),
        retrieval=RETRIEVAL.connect(
            LocalTransport(RetrievalService(RetrievalConfig(database_url=f"sqlite:///{tmp}/r.db")))
        ),
        generation=GENERATION.connect(LocalTransport(generation)),
    )
    gw.warm_up()
    gw.callers = {
        "admin": CallContext({"authorization": f"Bearer {admin}"}),
        "tenant": CallContext({"authorization": f"Bearer {tenant}"}),
        "wrong key": CallContext({"authorization": "Bearer rt_not-a-key"}),
        "no key": CallContext(),
    }
    docs = [
        gateway_pb2.Document(doc_id="kestrel", text="The Kestrel drone flies 47 minutes."),
        gateway_pb2.Document(doc_id="lyon", text="The Lyon office opened in March 2026."),
    ]
    for who in ("admin", "tenant"):
        run(
            gw.Ingest(
                gateway_pb2.IngestRequest(collection="kb", documents=docs, create_collection=True),
                gw.callers[who],
            )
        )
    yield gw
    if os.environ.get("RAGTUNE_FUZZ_EXAMPLES"):
        _write_report()


async def _call(gw: GatewayService, rpc, request, context) -> tuple[grpc.StatusCode, str]:
    async def call() -> None:
        if rpc.server_streaming:
            async for _ in getattr(gw, rpc.name)(request, context):
                pass
        else:
            await getattr(gw, rpc.name)(request, context)

    task = asyncio.ensure_future(call())
    done, _ = await asyncio.wait({task}, timeout=HANG_S)
    if not done:  # a call that never ends fails the test as a crash would
        stacks = io.StringIO()
        for other in asyncio.all_tasks():
            other.print_stack(file=stacks)
        task.cancel()
        pytest.fail(f"{rpc.name} did not end in {HANG_S} s: {request}\n{stacks.getvalue()}")
    try:
        await task
    except Exception as exc:
        return to_status(exc)
    return grpc.StatusCode.OK, ""


def test_found_by_fuzzing_a_tiny_temperature_is_greedy_and_the_engine_lives(gateway):
    """Found by the fuzzer: temperature 1.2e-38 (float32's smallest normal) made
    logits/temperature inf, softmax NaN and multinomial raise inside the transformers engine's
    scheduler, which then failed every later request (INTERNAL) and made UnloadAdapter wait
    forever. (Before the fuzzing below, which may unload the adapter.)"""
    request = gateway_pb2.AnswerRequest(
        question="tl;dr the Lyon office",
        adapter="pirate",
        sampling=common_pb2.SamplingParams(max_tokens=16, temperature=1.17549435e-38),
    )
    for _ in range(2):
        assert run(_call(gateway, GATEWAY.methods_by_name["Answer"], request,
                         gateway.callers["admin"]))[0] == grpc.StatusCode.OK  # fmt: skip


@pytest.mark.parametrize("name", [m.name for m in GATEWAY.methods])
def test_fuzzed_requests_never_answer_internal_or_unknown(gateway, name):
    rpc = GATEWAY.methods_by_name[name]
    codes: Counter[str] = Counter()
    messages_seen: Counter[str] = Counter()  # the start of each refusal's details
    started = time.perf_counter()

    # No shrinking: a failure is reported as drawn (shrinking a call that hangs would hang on).
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )
    @given(
        request=messages(rpc.input_type, BOUNDS, huge=5000, hints=HINTS), who=st.sampled_from(WHO)
    )
    def one(request, who):
        code, details = run(_call(gateway, rpc, request, gateway.callers[who]))
        codes[code.name] += 1
        messages_seen[details.split(":")[0][:40]] += 1
        assert code not in FAILURES, f"{name} ({who}): {code.name} {details}\n{request}"
        assert len(details) <= MAX_DETAILS_CHARS

    try:
        one()
    finally:  # the figures of a failed run too
        REPORT[name] = {
            "examples": sum(codes.values()),
            "seconds": round(time.perf_counter() - started, 1),
            "codes": dict(codes.most_common()),
            "commonest_refusals": dict(messages_seen.most_common(6)),
        }
        if os.environ.get("RAGTUNE_FUZZ_EXAMPLES"):
            _write_report(quiet=True)
    # Still answering afterwards.
    still = gateway_pb2.GatewayListCollectionsRequest()
    listing = GATEWAY.methods_by_name["ListCollections"]
    assert run(_call(gateway, listing, still, gateway.callers["admin"]))[0] == grpc.StatusCode.OK


def _write_report(quiet: bool = False) -> None:
    out = Path(os.environ.get("RAGTUNE_FUZZ_OUT", REPO / "results" / "fuzz" / "gateway.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(REPORT, indent=2) + "\n")
    if quiet:
        return
    for name, row in REPORT.items():
        print(f"{name:16} {row['examples']:6} examples {row['seconds']:8.1f} s  {row['codes']}")
    total = sum(row["examples"] for row in REPORT.values())
    failed = sum(row["codes"].get(c.name, 0) for row in REPORT.values() for c in FAILURES)
    print(f"fuzzed gateway calls: {total}, INTERNAL or UNKNOWN: {failed}")
