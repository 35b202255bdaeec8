"""The router on corpora it was never tuned on, through the running platform: each collection
calibrates its own probe threshold after ingest, an adapter dropped in with example requests is
found by a phrasing none of its examples uses, and feedback moves a threshold."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import grpc
import pytest

from ragtune import documents
from ragtune.evaluation import beir
from ragtune.generation.adapters import read_adapter_metadata, write_adapter_metadata
from ragtune.v1 import common_pb2, gateway_pb2
from tests.conftest import DEMO_CORPUS

PIRATE = "Talk like a pirate."
OFF_TOPIC = "How do I knit a warm scarf for the winter?"


def calibrated(client, collection: str, timeout_s: float = 120.0) -> common_pb2.RouteDecision:
    """The route of a question once the collection's calibration has landed."""
    deadline = time.monotonic() + timeout_s
    while True:
        route = client.route(OFF_TOPIC, collection=collection)
        if route.probe.calibrated or time.monotonic() > deadline:
            return route
        time.sleep(1.0)


SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "scifact"


def scifact_sample(docs: int = 300) -> tuple[list[gateway_pb2.Document], list[str]]:
    """SciFact abstracts (biomedical; CI has ../shared beside the checkout): the relevant
    documents of the first ten test claims and others up to ``docs``; and those claims."""
    corpus = beir.load(SCIFACT, "test")
    claims = list(corpus.queries.items())[:10]
    wanted = {doc for qid, _ in claims for doc in corpus.qrels[qid]}
    ids = [d for d in corpus.doc_ids if d in wanted]
    ids += [d for d in corpus.doc_ids if d not in wanted][: docs - len(ids)]
    text = dict(zip(corpus.doc_ids, corpus.doc_texts, strict=True))
    documents = [gateway_pb2.Document(doc_id=d, text=text[d]) for d in ids]
    return documents, [claim for _, claim in claims]


@pytest.fixture(scope="module")
def two_collections(platform):
    documents_, claims = scifact_sample()
    with platform.client() as client:
        client.ingest("rt-handbook", list(documents.from_path(DEMO_CORPUS)))
        client.ingest("rt-scifact", documents_)
        yield client, calibrated(client, "rt-handbook"), calibrated(client, "rt-scifact"), claims


def test_two_collections_get_their_own_thresholds_and_both_route_correctly(two_collections):
    client, handbook, scifact, claims = two_collections
    assert handbook.probe.calibrated and scifact.probe.calibrated
    print(
        f"thresholds: handbook {handbook.probe.threshold:.4f}, scifact {scifact.probe.threshold:.4f}"
    )
    # Biomedical abstracts sit closer to everyday questions than a company handbook does
    # (measured 0.348 and 0.284, later 0.325 and 0.284: the reservoir sample depends on the
    # order in which the ingest's concurrent batches land).
    assert scifact.probe.threshold > handbook.probe.threshold + 0.02
    handbook_question = f"How long is the warranty on the Atlas A2 robot arm? {PIRATE}"
    route = client.route(handbook_question, collection="rt-handbook")
    assert common_pb2.Path.Name(route.path) == "PATH_HYBRID", route.explanation
    assert route.probe.probability > 0.5 and route.adapter == "pirate"
    # Claims the sample can answer: most are clearly on-topic, a few are hard for MiniLM
    # itself (the first claim's best cosine to its own abstract is 0.29), so the router must
    # send at least 8 of 10 to retrieval with the adapter.
    hybrid = 0
    for claim in claims:
        route = client.route(f"{claim} {PIRATE}", collection="rt-scifact")
        assert route.adapter == "pirate", route.explanation
        hybrid += common_pb2.Path.Name(route.path) == "PATH_HYBRID"
    print(f"SciFact claims routed HYBRID: {hybrid}/{len(claims)}")
    assert hybrid >= 8
    for collection in ("rt-handbook", "rt-scifact"):
        off = client.route(f"{OFF_TOPIC} {PIRATE}", collection=collection)
        assert common_pb2.Path.Name(off.path) == "PATH_TUNED", (collection, off.explanation)
        assert off.probe.probability < 0.5 and "corpus_cannot_answer" in off.reasons
    # Each collection judges the other's questions as off-topic.
    crossed = client.route(f"{claims[-1]} {PIRATE}", collection="rt-handbook")
    assert common_pb2.Path.Name(crossed.path) == "PATH_TUNED", crossed.explanation


def test_an_adapter_with_example_requests_is_found_by_a_new_phrasing(platform, devmodel):
    adapters = devmodel.base_dir.parent / "adapters"
    poet = adapters / "poet"
    question = "How long is the Atlas A2 warranty? Put it in rhyming lines for me."
    with platform.client() as client:
        client.ingest("rt-poetry", list(documents.from_path(DEMO_CORPUS)))
        assert client.route(question, collection="rt-poetry").adapter != "poet"
        # A new adapter is a folder with its weights and metadata, examples included: no
        # code or config change (the generation service registers it on its next scan).
        shutil.copytree(adapters / "tldr", poet)
        meta = read_adapter_metadata(poet)
        meta.update(
            name="poet",
            description="Answers as a short rhyming poem.",
            tasks=["poetry"],
            tone="poetic",
            examples=["Answer as a poem.", "Write the reply in verse.", "Make it rhyme.",
                      "Respond with a short poem.", "Give me the answer as a limerick."],
            counter_examples=["What is a sonnet?", "Who wrote the Odyssey?"],
        )  # fmt: skip
        write_adapter_metadata(poet, meta)
        try:
            deadline = time.monotonic() + 30  # the gateway rereads the listing every 5 s
            while (route := client.route(question, collection="rt-poetry")).adapter != "poet":
                assert time.monotonic() < deadline, route.explanation
                time.sleep(1.0)
            assert common_pb2.Path.Name(route.path) == "PATH_HYBRID"
            assert "similar_request" in route.reasons
            assert route.cue.adapter == "poet" and route.cue.similarity >= route.cue.threshold
            assert route.cue.example in meta["examples"]
        finally:
            with contextlib.suppress(grpc.RpcError):  # it may never have been loaded
                client.unload_adapter("poet")
            shutil.rmtree(poet, ignore_errors=True)


EXPORT_DOCS = {
    "export-format": "The export endpoint returns a key-value object for each device: its "
    "serial number, firmware version and last check-in time.",
    "export-merge": "When the key already exists in the export, the newer value replaces the "
    "older one and the response says which keys were replaced.",
    "export-retention": "Exports are kept for 30 days. The export endpoint needs an admin token.",
}


def test_a_question_about_what_an_adapter_does_is_not_a_request_for_it(platform):
    """On a collection about an API that returns key-value objects, "What does the export
    endpoint return when the key already exists?" reads like json-answer's example "return a
    key-value object" (about 0.53); the collection's own text matches that part better, so
    it is the topic: RAG, and the decision says why. Asking for the format still selects it."""
    docs = [gateway_pb2.Document(doc_id=d, text=t) for d, t in EXPORT_DOCS.items()]
    with platform.client() as client:
        client.ingest("rt-export", docs)
        about = client.route(
            "What does the export endpoint return when the key already exists?",
            collection="rt-export",
        )
        assert common_pb2.Path.Name(about.path) == "PATH_RAG", about.explanation
        assert about.adapter == "" and "it is what the question is about" in about.explanation
        assert about.cue.adapter == "json-answer"
        assert about.cue.topic_similarity > about.cue.similarity >= about.cue.threshold
        asked = client.route(
            "How long are exports kept? Reply with a key-value object.", collection="rt-export"
        )
        assert asked.adapter == "json-answer", asked.explanation
        assert 0 < asked.cue.topic_similarity < asked.cue.similarity


def test_feedback_moves_the_collections_threshold_and_says_so(two_collections):
    client, *_ = two_collections
    question = f"How long is the warranty on the Atlas A2 robot arm? {PIRATE}"
    reply = client.answer(question, collection="rt-handbook", sampling={"max_tokens": 8})
    assert common_pb2.Path.Name(reply.route.path) == "PATH_HYBRID"
    before = client.route(question, collection="rt-handbook").probe
    rated = client.feedback(reply.request_id, 1, "wanted the adapter alone", preferred_path="tuned")
    assert len(rated.adjustments) == 1 and "rt-handbook" in rated.adjustments[0]
    after = client.route(question, collection="rt-handbook").probe
    assert after.feedback_offset == pytest.approx(before.feedback_offset + 0.01, abs=1e-4)
    assert after.threshold == pytest.approx(before.threshold + 0.01, abs=1e-4)
