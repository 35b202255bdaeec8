"""The router's per-collection calibration, semantic cues and feedback, without a stack."""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from dataclasses import replace

import numpy as np
import pytest
import sqlalchemy as sa

from ragtune.gateway.calibration import (
    CalibrationStore,
    Calibrator,
    fit,
    pseudo_query,
    shipped_negatives,
)
from ragtune.gateway.config import CalibrationConfig, FeedbackConfig, RouterConfig
from ragtune.gateway.cues import CueIndex, apply_cues, content_vector, question_parts
from ragtune.gateway.feedback import Decision, RouterFeedback, planned
from ragtune.gateway.policy import DefaultPolicy
from ragtune.gateway.routing import AdapterCard, CueMatch, Evidence, Need, RouteRequest
from ragtune.resources import ROUTING_DIR, ROUTING_PYREF_DIR, ROUTING_PYREF_FRESH_DIR
from ragtune.v1 import common_pb2


def engine(tmp_path):
    return sa.create_engine(f"sqlite:///{tmp_path / 'gateway.db'}")


# -- calibration ---------------------------------------------------------------------------------


def test_fit_puts_each_collections_threshold_between_its_own_classes():
    rng = np.random.default_rng(0)
    config = CalibrationConfig()
    narrow = fit(rng.normal(0.62, 0.06, 120), rng.normal(0.15, 0.05, 150), config)
    broad = fit(rng.normal(0.70, 0.06, 120), rng.normal(0.45, 0.05, 150), config)
    assert 0.2 < narrow.threshold < 0.55 < broad.threshold < 0.65
    # The probability is calibrated around the threshold and rises with the score.
    assert narrow.probability(narrow.threshold) == pytest.approx(0.5)
    assert narrow.probability(0.2) < 0.1 < 0.9 < narrow.probability(0.6)
    # Feedback's offset moves the 0.5 point.
    assert narrow.probability(narrow.threshold + 0.05, offset=0.05) == pytest.approx(0.5)


def test_fit_refuses_to_trust_a_collection_whose_text_scores_like_the_negatives():
    config = CalibrationConfig()
    fitted = fit([0.2, 0.21, 0.19] * 5, [0.5, 0.52, 0.48] * 5, config)
    assert fitted.threshold == config.max_threshold  # retrieval only on near-verbatim matches


def test_a_pseudo_query_is_a_sentence_of_the_chunk_without_markup():
    text = "# Warranty\n\nThe **Atlas A2** arm has a warranty of 36 months. Short. "
    text += "Batteries are covered for twelve months from the delivery date."
    query = pseudo_query(text, random.Random(1))
    assert query in {
        "The Atlas A2 arm has a warranty of 36 months.",
        "Batteries are covered for twelve months from the delivery date.",
    }
    assert pseudo_query("# Title\n\nToo short.", random.Random(1)) == ""


def test_the_reservoir_keeps_a_bounded_uniform_sample_and_follows_deletes(tmp_path):
    config = CalibrationConfig(positives=16, min_chunks=8, regrow=0.25)
    store = CalibrationStore(engine(tmp_path), config, seed=3)
    chunk = "Document {d} explains a topic in a sentence of several words. Another one follows."
    chunks = [(f"d{d}#0", f"d{d}", chunk.format(d=d)) for d in range(400)]
    assert store.needs_fit("t", "c") is False
    assert store.add_chunks("t", "c", chunks[:4]) == 4
    assert store.needs_fit("t", "c") is False  # fewer than min_chunks
    assert store.add_chunks("t", "c", chunks[4:]) == 400
    held = store.samples("t", "c")
    assert len(held) == 16
    assert max(int(c.split("#")[0][1:]) for c, _ in held) > 100  # not just the first 16
    assert store.needs_fit("t", "c")
    doc = held[0][0].split("#")[0]
    store.drop_documents("t", "c", [doc])
    assert all(not c.startswith(f"{doc}#") for c, _ in store.samples("t", "c"))
    store.forget("t", "c")
    assert store.samples("t", "c") == [] and store.get("t", "c") is None


def test_concurrent_ingests_into_a_new_collection_all_count(database_url):
    """`ragtune ingest` keeps two batches in flight: both reach a new collection's sample at
    once. Neither may fail (it did: IntegrityError on the collection's first row, an INTERNAL
    Ingest), and every chunk counts once."""
    import concurrent.futures

    from ragtune.common.database import connect

    store = CalibrationStore(connect(database_url), CalibrationConfig(positives=16), seed=1)
    text = "Batch {b} chunk {n} says something in a sentence of several words."
    batches = [
        [(f"b{b}-{n}#0", f"b{b}-{n}", text.format(b=b, n=n)) for n in range(10)] for b in range(8)
    ]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda batch: store.add_chunks("t", "new", batch), batches))
    assert store.add_chunks("t", "new", []) == 80
    assert len(store.samples("t", "new")) == 16


def test_the_shipped_negatives_are_no_evaluation_question():
    """Calibration must not see what the routing sets score the router on."""
    negatives = {q.lower() for q in shipped_negatives()}
    assert len(negatives) >= 100
    evaluated = {json.loads(line)["question"].lower() for folder in (ROUTING_DIR, ROUTING_PYREF_DIR, ROUTING_PYREF_FRESH_DIR)
                 for line in (folder / "requests.jsonl").read_text().splitlines()}  # fmt: skip
    evaluated |= {
        q.lower() for q in (ROUTING_DIR / "off-corpus-questions.txt").read_text().splitlines()
    }
    assert not {n for n in negatives if any(n in q for q in evaluated)}


# -- semantic cues ---------------------------------------------------------------------------------


def test_question_parts_find_an_instruction_inside_a_clause():
    parts = question_parts("Talk like a buccaneer and tell me how Python finds a local name")
    assert any(p.startswith("Talk like a buccaneer") for p in parts)
    assert question_parts("What is X? Reply in JSON.") == ["What is X?", "Reply in JSON."]
    assert question_parts("short question") == []


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_a_counter_example_keeps_a_mention_from_selecting_the_adapter():
    axis = np.eye(4, dtype=np.float32)
    card = AdapterCard("json-answer", output_format="json", examples=("Answer in JSON.",),
                       counter_examples=("What is JSON?",))  # fmt: skip
    index = CueIndex(
        [card, AdapterCard("plain")],  # an adapter without examples is not indexed
        {"Answer in JSON.": axis[0], "What is JSON?": axis[1]},
    )
    assert index.names == ["json-answer"]
    asked = index.match(np.stack([axis[3], unit([1, 0.2, 0, 0])]))[0]
    mention = index.match(np.stack([axis[3], unit([0.7, 0.72, 0, 0])]))[0]
    assert asked.part == 1 and asked.similarity > asked.counter_similarity
    assert mention.counter_similarity > mention.similarity


def test_one_look_alike_counter_example_does_not_outvote_several_examples():
    """ "In the voice of Blackbeard, explain X": the part is closest to the counter-example
    "who was Blackbeard" (one look-alike) but close to two examples too; averaging each
    side's two closest neighbours lets the examples win, where the single closest did not."""
    axis = np.eye(4, dtype=np.float32)
    examples = ("answer as Blackbeard", "in the voice of a sea dog", "use JSON")
    card = AdapterCard("pirate", tone="pirate", examples=examples[:2],
                       counter_examples=("who was Blackbeard", "piracy law"))  # fmt: skip
    vectors = {
        "answer as Blackbeard": unit([1, 0.8, 0, 0]),
        "in the voice of a sea dog": unit([1, 0.5, 0, 0]),
        "who was Blackbeard": unit([1, 1, 0, 0.05]),
        "piracy law": axis[2],
    }
    part = unit([1, 1, 0, 0])
    question = np.stack([axis[3], part])
    single = CueIndex([card], vectors).match(question, neighbours=1)[0]
    pair = CueIndex([card], vectors).match(question, neighbours=2)[0]
    assert single.only_mentioned  # the one closest counter-example wins alone
    assert not pair.only_mentioned and pair.example_support > pair.counter_similarity
    assert pair.similarity == single.similarity  # the threshold still reads the closest example
    policy = DefaultPolicy(RouterConfig())
    assert policy.decide(request([pair]), Evidence(True, 0.05, 0.0, 8)).adapter == "pirate"
    assert policy.decide(request([single]), Evidence(True, 0.05, 0.0, 8)).adapter == ""


def test_a_part_the_collection_matches_better_than_the_example_is_the_topic():
    """ "What does dict.setdefault return when the key exists?" reads like json-answer's
    "return a key-value object" (0.61), and the Python reference's own text matches that part
    better: the topic, not a request. The decision says so; a part the collection matches
    worse still picks the adapter, and the check can be turned off."""
    found = Evidence(True, 0.56, 0.1, 8)
    topical = CueMatch("json-answer", 0.61, "return a key-value object", 0.2, topic_similarity=0.7)
    route = DefaultPolicy(RouterConfig()).decide(request([topical]), found)
    assert route.path_name == "RAG" and route.adapter == ""
    assert "matches the collection better (0.70): it is what the question is about" in (
        route.explanation
    )
    assert route.cue.topic_similarity == pytest.approx(0.7)
    asked = replace(topical, topic_similarity=0.3)
    assert DefaultPolicy(RouterConfig()).decide(request([asked]), found).path_name == "HYBRID"
    off = RouterConfig(semantic_cues={"topic_check": False})
    assert DefaultPolicy(off).decide(request([topical]), found).path_name == "HYBRID"


def test_only_a_part_about_to_pick_an_adapter_is_searched():
    """The topic search costs one search per cue that would select an adapter by similarity;
    a question with no such part, or one a phrase already decides, searches nothing."""
    axis = np.eye(4, dtype=np.float32)
    card = AdapterCard("pirate", tone="pirate", examples=("Talk like a pirate.",))
    index = CueIndex([card], {"Talk like a pirate.": axis[0]})
    policy = DefaultPolicy(RouterConfig())
    searched: list[list[int]] = []

    async def topic(parts: list[int]) -> list[float | None]:
        searched.append(parts)
        return [0.9 for _ in parts]  # the collection matches every part better

    def route(vectors, need=None):
        asked = replace(request(need=need), registered={"pirate": card})
        matched, vector = asyncio.run(apply_cues(policy, asked, index, vectors, topic=topic))
        return policy.decide(matched, Evidence(True, 0.2, 0.0, 8)), vector

    plain = np.stack([axis[3], axis[2]])
    assert route(plain)[0].adapter == "" and searched == []  # nothing close to an example
    cue = np.stack([axis[3], unit([1, 1, 0, 0])])  # similarity 0.71, the collection 0.9
    decided, vector = route(cue)
    assert searched == [[1]] and decided.adapter == ""  # searched, and the topic
    assert np.array_equal(vector, cue[0])  # the probe searches the whole question
    searched.clear()
    assert route(cue, need=Need(tone="pirate"))[0].adapter == "pirate" and searched == []


def test_the_probe_searches_the_question_without_its_instruction():
    question, instruction = unit([1, 1, 0]), unit([0, 1, 0])
    content = content_vector(np.stack([question, instruction]), part=1)
    assert float(content @ instruction) == pytest.approx(0.0, abs=1e-6)
    assert float(np.linalg.norm(content)) == pytest.approx(1.0)
    assert np.array_equal(content_vector(np.stack([question, instruction]), part=0), question)


CARDS = {
    "pirate": AdapterCard("pirate", tone="pirate", examples=("Talk like a pirate.",)),
    "json-answer": AdapterCard("json-answer", output_format="json", examples=("In JSON.",)),
}


def request(cues=(), need: Need | None = None, **fields) -> RouteRequest:
    return RouteRequest(
        question="q", path=common_pb2.PATH_AUTO, adapter="", collection="docs",
        collection_named=False, need=need or Need(), registered=CARDS, cues=tuple(cues),
        **fields,
    )  # fmt: skip


def test_an_adapter_is_chosen_by_similarity_and_the_decision_says_so():
    policy = DefaultPolicy(RouterConfig())
    cue = CueMatch("pirate", 0.62, "Talk like a pirate.", 0.1)
    route = policy.decide(request([cue]), Evidence(True, 0.05, 0.0, 8))
    assert route.path_name == "TUNED" and route.adapter == "pirate"
    assert "similar_request" in route.reasons and "Talk like a pirate." in route.explanation
    assert route.cue.adapter == "pirate" and route.cue.threshold == pytest.approx(0.47)
    # Below the threshold: no adapter; a phrase cue for the same adapter lowers the bar.
    weak = CueMatch("pirate", 0.42, "Talk like a pirate.", 0.1)
    assert policy.decide(request([weak]), Evidence(True, 0.9, 0.2, 8)).path_name == "RAG"
    phrase = Need(tone="pirate")
    assert (
        policy.decide(request([weak], need=phrase), Evidence(True, 0.9, 0.2, 8)).adapter == "pirate"
    )
    # Feedback raised this adapter's bar.
    raised = CueMatch("pirate", 0.62, "Talk like a pirate.", 0.1, offset=0.2)
    assert policy.decide(request([raised]), Evidence(True, 0.05, 0.0, 8)).path_name == "RAG"


def test_a_phrase_that_only_mentions_the_behaviour_does_not_select_the_adapter():
    """ "What's the difference between JSON and YAML?" matches the json phrase; its closest
    part is nearer the adapter's counter-examples than its examples, so the phrase does not
    decide and the decision says why; a phrase in a part that asks still does."""
    policy = DefaultPolicy(RouterConfig())
    phrase, found = Need(tone="pirate"), Evidence(True, 0.9, 0.2, 8)
    mention = CueMatch("pirate", 0.44, "Talk like a pirate.", 0.58)
    route = policy.decide(request([mention], need=phrase), found)
    assert route.path_name == "RAG" and route.adapter == ""
    assert "tone 'pirate' is only mentioned" in route.explanation
    asked = CueMatch("pirate", 0.44, "Talk like a pirate.", 0.30)
    assert policy.decide(request([asked], need=phrase), found).adapter == "pirate"
    # A field is never second-guessed: the caller said what it wants.
    field = Need(tone="pirate", explicit=True)
    assert policy.decide(request([mention], need=field), found).adapter == "pirate"


def test_the_collections_calibrated_threshold_decides_and_is_reported():
    policy = DefaultPolicy(RouterConfig())
    cue = CueMatch("pirate", 0.9, "Talk like a pirate.", 0.1)
    # 0.42 passes the default threshold (0.3865) but not this collection's own (0.45).
    fitted = Evidence(True, 0.42, 0.1, 8, threshold=0.45, slope=25.0)
    route = policy.decide(request([cue]), fitted)
    assert route.path_name == "TUNED"
    assert route.probe.calibrated and route.probe.threshold == pytest.approx(0.45)
    assert route.probe.probability < 0.5 and route.confidence == pytest.approx(
        1 - route.probe.probability
    )
    default = policy.decide(request([cue]), Evidence(True, 0.42, 0.1, 8))
    assert default.path_name == "HYBRID" and not default.probe.calibrated
    moved = policy.decide(
        request([cue]), Evidence(True, 0.42, 0.1, 8, threshold=0.45, slope=25.0, offset=-0.05)
    )
    assert moved.path_name == "HYBRID" and moved.probe.feedback_offset == pytest.approx(-0.05)


# -- feedback --------------------------------------------------------------------------------------


def decision(path="RAG", by_probe=True, cue="") -> Decision:
    return Decision("r1", "t", path, "docs", by_probe, cue)


def test_feedback_moves_only_what_the_decision_depended_on():
    config = FeedbackConfig(step=0.02)
    assert planned(decision(), 5, "", config) == []  # praise changes nothing
    assert planned(decision(), 1, "", config)[0][:3] == ("collection", "docs", 0.01)
    assert planned(decision(), 4, "TUNED", config)[0][:3] == ("collection", "docs", 0.02)
    assert planned(decision("TUNED"), 2, "RAG", config)[0][:3] == ("collection", "docs", -0.02)
    assert planned(decision(by_probe=False), 1, "TUNED", config) == []  # a rule retrieved
    assert planned(decision(), 2, "HYBRID", config) == []  # retrieval was right
    assert planned(decision("TUNED", False, "pirate"), 1, "RAG", config) == [
        ("adapter", "pirate", 0.02, "chosen by similarity, but the client preferred RAG")
    ]


def test_feedback_is_bounded_logged_and_reversible(tmp_path):
    store = RouterFeedback(engine(tmp_path), FeedbackConfig(step=0.04, max_offset=0.1))
    for n in range(5):
        store.remember(Decision(f"r{n}", "t", "RAG", "docs", True, ""))
    store.remember(Decision("other", "u", "RAG", "docs", True, ""))
    changes = [store.apply("t", f"r{n}", 1, "TUNED") for n in range(5)]
    assert [round(c[0].after, 3) for c in changes[:3]] == [0.04, 0.08, 0.1]
    assert changes[3] == [] and changes[4] == []  # at the bound: nothing more, nothing logged
    assert store.offsets("t") == {("collection", "docs"): pytest.approx(0.1)}
    assert store.apply("t", "r0", 1, "TUNED") == []  # rated again: counted once
    assert store.apply("t", "other", 1, "TUNED") == []  # another tenant's request
    assert store.offsets("u") == {}
    undone = store.reset("t", "collection", "docs")
    assert undone[0].after == 0.0 and undone[0].request_id == ""
    history = store.adjustments("t")
    assert len(history) == 4 and history[0].reason == "reset by an operator"
    with pytest.raises(ValueError, match="scope"):
        store.reset("t", "tenant", "docs")


def test_concurrent_feedback_moves_the_threshold_once_per_request(database_url):
    """Feedback arrives on any gateway replica at any time: ratings of different requests on
    one collection all count, the same request rated twice at once counts once, and none of
    them fails."""
    import concurrent.futures

    from ragtune.common.database import connect

    store = RouterFeedback(connect(database_url), FeedbackConfig(step=0.01, max_offset=0.1))
    for n in range(6):
        store.remember(Decision(f"r{n}", "t", "RAG", "docs", True, ""))
    ratings = [f"r{n}" for n in range(6)] + ["r0", "r1"]  # two repeated
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        changes = list(pool.map(lambda r: store.apply("t", r, 1, "TUNED"), ratings))
    assert sum(len(c) for c in changes) == 6
    assert store.offsets("t") == {("collection", "docs"): pytest.approx(0.06)}


# -- the calibrator against fake services ----------------------------------------------------------


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A stand-in embedder: hashed word counts, unit length (shared words -> similar)."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().replace(".", " ").replace("?", " ").split():
            out[row, zlib.crc32(word.encode()) % 256] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class Collections:
    """In-memory collections searched by vector, like the retrieval service's dense search."""

    def __init__(self) -> None:
        self.chunks: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}

    def add(self, tenant: str, name: str, chunks: list[tuple[str, str, str]]) -> None:
        vectors = bag_of_words([text for _, _, text in chunks])
        held = self.chunks.setdefault((tenant, name), [])
        held += [(chunk_id, v) for (chunk_id, _, _), v in zip(chunks, vectors, strict=True)]

    def search_for(self, tenant: str, name: str):
        async def search(vector, k):
            held = self.chunks.get((tenant, name), [])
            scored = sorted(((float(v @ vector), c) for c, v in held), reverse=True)[:k]
            return [(chunk_id, score) for score, chunk_id in scored]

        return search


def robot_chunks(start: int, n: int) -> list[tuple[str, str, str]]:
    topics = ["battery", "warranty", "gripper", "payload", "firmware", "sensor", "charger"]
    return [
        (f"d{i}#0", f"d{i}", f"The Atlas robot arm {topics[i % 7]} model {i} is covered by "
         f"the robot arm {topics[(i + 1) % 7]} policy for the robot fleet. Robot arm "
         f"{topics[i % 7]} parts ship from the robot depot.")
        for i in range(start, start + n)
    ]  # fmt: skip


def test_the_calibrator_fits_after_ingest_and_every_replica_reads_the_fit(tmp_path):
    config = CalibrationConfig(positives=32, min_chunks=8, regrow=0.5, debounce_s=0)
    db, data = engine(tmp_path), Collections()

    async def embed(texts):
        return bag_of_words(texts)

    def replica():
        return Calibrator(CalibrationStore(db, config), embed, data.search_for)

    async def scenario():
        first, second = replica(), replica()
        chunks = robot_chunks(0, 40)
        data.add("t", "robots", chunks)
        await first.ingested("t", "robots", chunks)
        await first.wait()
        fitted = await second.get("t", "robots")  # another replica, or a restart: the DB's
        assert fitted is not None and fitted.chunks == 40 and fitted.positives >= 8
        # The collection's own text sits above its threshold, everyday questions below it.
        robot = bag_of_words(["Which robot arm battery parts ship from the depot?"])[0]
        cooking = bag_of_words(["How long should I rest a steak after grilling it?"])[0]
        best = data.search_for("t", "robots")
        assert (await best(robot, 1))[0][1] > fitted.threshold > (await best(cooking, 1))[0][1]
        # Growing by less than `regrow` keeps the fit; by more, it is fitted again.
        more = robot_chunks(40, 10)
        data.add("t", "robots", more)
        await first.ingested("t", "robots", more)
        await first.wait()
        assert (await first.get("t", "robots")).chunks == 40
        more = robot_chunks(50, 20)
        data.add("t", "robots", more)
        await first.ingested("t", "robots", more)
        await first.wait()
        assert (await first.get("t", "robots")).chunks == 70
        await first.forget("t", "robots")
        assert await replica().get("t", "robots") is None

    asyncio.run(scenario())
