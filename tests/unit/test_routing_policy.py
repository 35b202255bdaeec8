"""The default routing policy, driven directly: what it picks, why, and what it refuses."""

from __future__ import annotations

import pytest

from ragtune.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from ragtune.gateway.config import RouterConfig
from ragtune.gateway.policy import DefaultPolicy
from ragtune.gateway.routing import REASONS, AdapterCard, Evidence, RouteRequest
from ragtune.v1 import common_pb2

AUTO, RAG, TUNED, HYBRID = (
    common_pb2.PATH_AUTO,
    common_pb2.PATH_RAG,
    common_pb2.PATH_TUNED,
    common_pb2.PATH_HYBRID,
)
CARDS = {
    "json-answer": AdapterCard("json-answer", ("structured-output", "json"), "json", "neutral"),
    "pirate": AdapterCard("pirate", ("chat",), "text", "pirate"),
    "tldr": AdapterCard("tldr", ("summarization",), "text", "terse"),
    "general": AdapterCard("general", ("chat",), "text", "neutral"),
}
CLOSE = Evidence(True, top_score=0.71, margin=0.2, hits=8)
FAR = Evidence(True, top_score=0.12, margin=0.01, hits=8)
MISSING = Evidence(False)


def policy(**config) -> DefaultPolicy:
    return DefaultPolicy(RouterConfig(**config))


def request(p: DefaultPolicy, question="Does aspirin lower fever?", **fields) -> RouteRequest:
    need = p.read_need(
        question,
        fields.pop("output_format", ""),
        fields.pop("task", ""),
        fields.pop("tone", ""),
    )
    fields.setdefault("registered", CARDS)
    return RouteRequest(
        question=question,
        path=fields.pop("path", AUTO),
        adapter=fields.pop("adapter", ""),
        collection=fields.pop("collection", "kb"),
        collection_named=fields.pop("collection_named", False),
        need=need,
        **fields,
    )


def test_phrases_and_fields_pick_the_adapter_that_declares_them():
    p = policy()
    json_q = request(p, "Answer in JSON: does aspirin lower fever?")
    assert p.decide(json_q, CLOSE).adapter == "json-answer"
    route = p.decide(json_q, CLOSE)
    assert route.path == HYBRID and route.reasons == ("format_requested", "corpus_can_answer")
    assert "json" in route.explanation and route.probe.confident
    tuned = p.decide(request(p, "Talk like a pirate about sailing knots."), FAR)
    assert (tuned.path, tuned.adapter) == (TUNED, "pirate")
    assert "corpus_cannot_answer" in tuned.reasons and not tuned.collection
    summary = p.decide(request(p, "q", task="Summarization"), FAR)
    assert (summary.path, summary.adapter) == (TUNED, "tldr")
    with pytest.raises(FailedPrecondition, match="output format 'xml'"):
        p.decide(request(p, "q", output_format="xml"), CLOSE)


def test_auto_never_picks_a_path_it_cannot_serve():
    p = policy()
    # No adapter applies: never TUNED, even when the probe doubts the collection.
    far = p.decide(request(p, "How do I reset my router?"), FAR)
    assert far.path == RAG and "no_adapter" in far.reasons and far.confidence < 0.5
    # No collection: never RAG.
    no_coll = p.decide(request(p, "Reply in json please"), MISSING)
    assert (no_coll.path, no_coll.reasons) == (TUNED, ("format_requested", "no_collection"))
    empty = p.decide(request(p, "tl;dr of the plot"), Evidence(True, hits=0))
    assert empty.path == TUNED
    with pytest.raises(FailedPrecondition, match="nothing can answer"):
        p.decide(request(p, "How do I reset my router?"), MISSING)
    with pytest.raises(FailedPrecondition, match="citations are required"):
        p.decide(request(p, "json please", require_citations=True), MISSING)
    with pytest.raises(NotFound):
        p.decide(request(p, "q", collection_named=True), MISSING)
    # A general adapter, when configured, takes what the collection cannot answer.
    general = policy(fallback_adapter="general")
    route = general.decide(request(general, "How do I reset my router?"), FAR)
    assert (route.path, route.adapter) == (TUNED, "general")
    assert route.reasons == ("corpus_cannot_answer", "fallback_adapter")


def test_citations_and_freshness_force_retrieval():
    p = policy()
    route = p.decide(request(p, "Pirate voice: who won?", require_citations=True), FAR)
    assert (route.path, route.adapter) == (HYBRID, "pirate")
    assert "citations_required" in route.reasons
    fresh = p.decide(request(p, "Who won?", freshness_sensitive=True), FAR)
    assert fresh.path == RAG and fresh.reasons == ("freshness_sensitive",) and fresh.confidence == 1


def test_permissions_follow_the_tenant():
    p = policy()
    only_pirate = frozenset({"pirate"})
    with pytest.raises(PermissionDenied, match="json-answer"):
        p.decide(request(p, adapter="json-answer", allowed=only_pirate), CLOSE)
    with pytest.raises(PermissionDenied):
        p.decide(request(p, adapter="json-answer", path=TUNED, allowed=only_pirate), None)
    # A phrase asking for JSON cannot reach an adapter the tenant may not use.
    route = p.decide(request(p, "Answer in JSON: q", allowed=only_pirate), CLOSE)
    assert (route.path, route.adapter) == (RAG, "") and "no_matching_adapter" in route.reasons
    with pytest.raises(NotFound, match="nope"):
        p.decide(request(p, adapter="nope"), CLOSE)


def test_budgets_move_requests_off_the_slow_path_or_refuse_them():
    p = policy()
    for _ in range(20):
        p.observe("HYBRID", 3000.0, 60)
        p.observe("TUNED", 400.0, 20)
        p.observe("RAG", 2800.0, 50)
    json_q = "Answer in JSON: does aspirin lower fever?"
    assert p.decide(request(p, json_q), CLOSE).path == HYBRID
    tight = p.decide(request(p, json_q, latency_budget_ms=1000), CLOSE)
    assert (tight.path, tight.adapter) == (TUNED, "json-answer")
    assert tight.reasons[-1] == "latency_budget" and "latency budget" in tight.explanation
    assert tight.expected_latency_ms == pytest.approx(400.0)
    cheap = p.decide(request(p, json_q, max_cost_micro_usd=30), CLOSE)
    assert cheap.path == TUNED and cheap.reasons[-1] == "cost_budget"
    # Retrieval is mandatory, or the request named its path: refused, not downgraded.
    with pytest.raises(FailedPrecondition, match="budget of 1000 ms.*HYBRID.*3000 ms"):
        p.decide(request(p, json_q, latency_budget_ms=1000, require_citations=True), CLOSE)
    with pytest.raises(FailedPrecondition, match="asked for RAG"):
        p.decide(request(p, path=RAG, latency_budget_ms=1000), CLOSE)
    with pytest.raises(FailedPrecondition, match="budget"):
        p.decide(request(p, json_q, latency_budget_ms=100), CLOSE)


def test_estimates_start_from_priors_then_follow_traffic():
    p = policy(min_samples=4)
    assert p.decide(request(p), CLOSE).expected_latency_ms == 2500.0  # the RAG prior
    for ms in (100, 110, 120, 130, 900):
        p.observe("RAG", float(ms), 10)
    route = p.decide(request(p), CLOSE)
    assert 130 < route.expected_latency_ms < 900  # p90 of the recent requests
    assert route.expected_cost_micro_usd == 10


def test_explicit_paths_are_validated():
    p = policy()
    with pytest.raises(InvalidArgument) as err:
        p.decide(request(p, path=TUNED), None)
    assert err.value.field == "adapter"
    with pytest.raises(InvalidArgument):
        p.decide(request(p, path=RAG, adapter="pirate"), CLOSE)
    with pytest.raises(NotFound):
        p.decide(request(p, path=RAG), MISSING)
    with pytest.raises(InvalidArgument) as err:
        p.decide(request(p, path=9), CLOSE)
    assert err.value.field == "path"
    route = p.decide(request(p, path=HYBRID, adapter="tldr"), FAR)
    assert (route.path, route.reasons, route.confidence) == (HYBRID, ("explicit_path",), 1.0)


def test_reason_codes_are_a_bounded_set():
    p = policy(fallback_adapter="general")
    questions = ["json?", "pirate!", "tl;dr", "plain question", "summarize this"]
    for q in questions:
        for evidence in (CLOSE, FAR, MISSING, None):
            for citations in (False, True):
                try:
                    route = p.decide(request(p, q, require_citations=citations), evidence)
                except FailedPrecondition:
                    continue
                assert set(route.reasons) <= REASONS and route.explanation.endswith(".")
