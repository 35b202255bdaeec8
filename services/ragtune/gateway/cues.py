"""Semantic cues: does the question ask for what an adapter does, judged by similarity to the
example requests its ``ragtune-adapter.yaml`` declares.

Phrase lists (``router.cues``) miss ordinary ways of asking ("boil it down to a sentence")
and cannot grow with new adapters without config edits; examples can. An instruction is
usually one part of a question ("What is X? Keep it short."), and a whole question's
embedding is mostly its topic, so the question is split into parts at sentence and clause
boundaries and each part is compared with every example. The parts are embedded in the same
embedding call as the probe's query (``answer.py``): no second call, no second model.
Counter-examples (requests that mention the thing without asking for it: "What is JSON?")
keep a look-alike from selecting the adapter.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ragtune.gateway.routing import AdapterCard, CueMatch, RouteRequest

# Sentence ends, clause punctuation and dashes; parentheses set a part apart too.
PART_BREAK = re.compile(r"(?<=[.!?;:])\s+|,\s+|\s+[-\u2013\u2014]+\s+|[()\[\]\n]+")
MAX_PARTS = 10
WINDOW, STRIDE = 6, 3  # words; a clause longer than WINDOW is also read in windows


def question_parts(question: str) -> list[str]:
    """The question's parts worth comparing with example requests, the whole question not
    among them (the probe's vector stands for it): its clauses, and windows of ``WINDOW``
    words over clauses longer than that (an instruction inside a clause, "talk like X and
    tell me Y"). At most ``MAX_PARTS``, clauses first."""
    clauses = [p.strip(" \t\"'") for p in PART_BREAK.split(question)]
    clauses = [p for p in clauses if any(c.isalpha() for c in p)]
    parts = clauses if len(clauses) > 1 else []
    for clause in clauses:
        words = clause.split()
        if len(words) > WINDOW:
            for start in range(0, len(words) - WINDOW + STRIDE, STRIDE):
                parts.append(" ".join(words[start : start + WINDOW]))
    return list(dict.fromkeys(parts))[:MAX_PARTS]  # unique, in order


def content_vector(vectors: np.ndarray, part: int) -> np.ndarray:
    """The question's vector with the direction of its instruction ``part`` taken out (unit
    length): what the probe searches once an adapter's cue was found, so "answer like a
    pirate" does not pull the question away from the collection. Mean-pooled sentence
    embeddings are close to additive, so removing the projection keeps the topic."""
    question = vectors[0]
    if part <= 0:
        return question
    instruction = vectors[part] / (np.linalg.norm(vectors[part]) or 1.0)
    rest = question - float(question @ instruction) * instruction
    norm = float(np.linalg.norm(rest))
    return rest / norm if norm > 1e-6 else question


class CueIndex:
    """Example and counter-example vectors of the adapters that declare them."""

    def __init__(self, cards: Sequence[AdapterCard], vectors: dict[str, np.ndarray]) -> None:
        self.names: list[str] = []
        rows, counter_rows, owners, counter_owners, texts = [], [], [], [], []
        for card in cards:
            if not card.examples:
                continue
            n = len(self.names)
            self.names.append(card.name)
            for text in card.examples:
                rows.append(vectors[text])
                owners.append(n)
                texts.append(text)
            for text in card.counter_examples:
                counter_rows.append(vectors[text])
                counter_owners.append(n)
        dims = len(next(iter(vectors.values()))) if vectors else 1
        self.examples = np.asarray(rows, dtype=np.float32).reshape(-1, dims)
        self.counters = np.asarray(counter_rows, dtype=np.float32).reshape(-1, dims)
        self.owners = np.asarray(owners, dtype=np.int64)
        self.counter_owners = np.asarray(counter_owners, dtype=np.int64)
        self.texts = texts
        # Per adapter, its columns of the example and counter-example matrices.
        self._mine = [np.flatnonzero(self.owners == n) for n in range(len(self.names))]
        self._theirs = [np.flatnonzero(self.counter_owners == n) for n in range(len(self.names))]

    def __bool__(self) -> bool:
        return bool(self.names)

    def match(
        self,
        vectors: np.ndarray,
        offsets: dict[str, float] | None = None,
        neighbours: int = 1,
    ) -> tuple[CueMatch, ...]:
        """Per adapter, the part of ``vectors`` (the question and its parts, unit-normalised)
        closest to one of its examples, with that part's mean similarity to its
        ``neighbours`` closest examples and to as many closest counter-examples; best first.
        Comparing a few neighbours on each side keeps one look-alike counter-example ("who was
        Blackbeard") from outvoting several examples ("answer as Blackbeard", "in the voice
        of a salty sea dog"), and one look-alike example from outvoting the counter-examples."""
        if not self.names or len(vectors) == 0:
            return ()
        sims = vectors @ self.examples.T  # parts x examples
        counter = vectors @ self.counters.T if len(self.counters) else np.zeros((len(vectors), 0))
        found = []
        for n, name in enumerate(self.names):
            mine = sims[:, self._mine[n]]
            part = int(mine.max(axis=1).argmax())
            row = mine[part]
            theirs = counter[part, self._theirs[n]]
            found.append(
                CueMatch(
                    name,
                    float(row.max()),
                    self.texts[int(self._mine[n][int(row.argmax())])],
                    _mean_of_closest(theirs, neighbours),
                    (offsets or {}).get(name, 0.0),
                    part,
                    support=_mean_of_closest(row, neighbours),
                )
            )
        return tuple(sorted(found, key=lambda m: -m.similarity))


def _mean_of_closest(similarities: np.ndarray, k: int) -> float:
    if len(similarities) == 0:
        return 0.0
    k = min(k, len(similarities))
    return float(np.partition(similarities, len(similarities) - k)[-k:].mean())


def example_texts(cards: Iterable[AdapterCard]) -> list[str]:
    """Every example and counter-example of ``cards``, once each: what ``CueIndex`` needs
    embedded."""
    return sorted({t for card in cards for t in (*card.examples, *card.counter_examples)})


# The collection's best score for each of these parts (indices into the embedded texts);
# None where there is no collection to search.
TopicScores = Callable[[list[int]], Awaitable[list[float | None]]]


async def apply_cues(
    policy: Any,
    request: RouteRequest,
    index: CueIndex,
    vectors: np.ndarray,
    offsets: dict[str, float] | None = None,
    topic: TopicScores | None = None,
) -> tuple[RouteRequest, np.ndarray]:
    """``request`` with its cues matched from ``vectors`` (the question's, then its parts'),
    and the vector the probe searches: the question without the instruction the policy will
    follow (its ``probe_cue``), so the gateway, the evaluation and the benchmark agree.

    ``topic`` searches the collection with some of the parts and returns each one's best
    score. The parts that would select an adapter by similarity alone
    (``policy.topic_candidates``) are searched, all in one round: a part the collection matches
    better than the example is the question's topic ("What does dict.setdefault return" reads
    like "return a key-value object" to MiniLM, and more like the reference's own text), and
    does not select the adapter (``CueMatch.topical``)."""
    cue_config = getattr(getattr(policy, "config", None), "semantic_cues", None)
    neighbours = cue_config.neighbours if cue_config is not None else 1
    request = replace(request, cues=index.match(vectors, offsets, neighbours))
    find = getattr(policy, "topic_candidates", None)
    candidates = find(request) if topic is not None and find is not None else []
    if topic is not None and candidates:
        parts = sorted({c.part for c in candidates})
        scores = dict(zip(parts, await topic(parts), strict=True))
        request = replace(
            request,
            cues=tuple(
                replace(c, topic_similarity=scores[c.part]) if c in candidates else c
                for c in request.cues
            ),
        )
    probe_cue = getattr(policy, "probe_cue", None)
    cue = probe_cue(request) if probe_cue is not None else None
    return request, content_vector(vectors, cue.part) if cue is not None else vectors[0]
