"""The default routing policy: the decision framework teams apply by hand, made explicit.

- Knowledge that must be cited or is fresh → a retrieving path (RAG, or HYBRID with an adapter).
- A fixed format, tone or narrow task → the adapter that declares it (TUNED, or HYBRID when
  the collection can also answer).
- Whether the collection can answer is the probe's call: the best similarity of the question to
  the collection and its margin, against thresholds calibrated on training data.
- Under a latency or cost budget, a path expected to miss it gives way to a cheaper one that
  still serves the request; when none does, the request is refused, never silently degraded.
"""

from __future__ import annotations

import re

from ragtune.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from ragtune.gateway.calibration import probability
from ragtune.gateway.config import RouterConfig
from ragtune.gateway.pathstats import PathEstimate, PathStats
from ragtune.gateway.routing import (
    PATH_NAMES,
    AdapterCard,
    CueMatch,
    Evidence,
    Need,
    Route,
    RouteRequest,
)
from ragtune.v1 import common_pb2

RAG: int = common_pb2.PATH_RAG
TUNED: int = common_pb2.PATH_TUNED
HYBRID: int = common_pb2.PATH_HYBRID


class DefaultPolicy:
    def __init__(self, config: RouterConfig, stats: PathStats | None = None) -> None:
        self.config = config
        self.stats = stats or PathStats(config)
        self._cues = [(re.compile(c.pattern, re.IGNORECASE), c) for c in config.cues]

    # -- reading the request ---------------------------------------------------------------------

    def read_need(self, question: str, output_format: str, task: str, tone: str) -> Need:
        """The behaviour asked for: the request's fields, else phrases in the question."""
        if output_format or task or tone:
            return Need(output_format.lower(), task.lower(), tone.lower(), explicit=True)
        found: dict[str, str] = {}
        for pattern, cue in self._cues:
            if pattern.search(question):
                for key in ("output_format", "task", "tone"):
                    if getattr(cue, key):
                        found.setdefault(key, getattr(cue, key).lower())
        return Need(found.get("output_format", ""), found.get("task", ""), found.get("tone", ""))

    def observe(self, path: str, latency_ms: float, cost_micro_usd: int) -> None:
        self.stats.observe(path, latency_ms, cost_micro_usd)

    def wants_evidence(self, request: RouteRequest) -> bool:
        if request.path == TUNED:
            return False
        return request.path != common_pb2.PATH_AUTO or self.config.probe.enabled

    def _card(self, request: RouteRequest, name: str) -> AdapterCard:
        if not request.may_use(name):
            raise PermissionDenied(f"this tenant may not use adapter {name!r}")
        if name not in request.registered:
            raise NotFound(f"adapter {name!r} is not registered")
        return request.registered[name]

    def _probe_pb(self, evidence: Evidence | None) -> common_pb2.RetrievalProbe | None:
        if evidence is None or not evidence.collection_exists:
            return None
        return common_pb2.RetrievalProbe(
            top_score=evidence.top_score,
            margin=evidence.margin,
            confident=self.confident(evidence),
            ms=evidence.ms,
            probability=self.probability(evidence),
            threshold=self.threshold(evidence),
            calibrated=evidence.threshold is not None,
            feedback_offset=evidence.offset,
        )

    def _fallback(self, request: RouteRequest) -> AdapterCard | None:
        name = self.config.fallback_adapter
        if name and name in request.registered and request.may_use(name):
            return request.registered[name]
        return None

    def threshold(self, evidence: Evidence) -> float:
        """The best score at which the collection is as likely as not to answer: its own
        calibrated threshold (else the default), moved by feedback."""
        base = self.config.probe.min_top_score if evidence.threshold is None else evidence.threshold
        return base + evidence.offset

    def probability(self, evidence: Evidence) -> float:
        """Calibrated probability that the collection can answer (logistic in the score)."""
        if evidence.hits == 0:
            return 0.0
        fitted = evidence.threshold is not None and evidence.slope
        slope = evidence.slope if fitted else self.config.calibration.default_slope
        return probability(evidence.top_score, self.threshold(evidence), slope)

    def confident(self, evidence: Evidence) -> bool:
        return (
            evidence.hits > 0
            and evidence.top_score >= self.threshold(evidence)
            and evidence.margin >= self.config.probe.min_margin
        )

    def _probe_confidence(self, evidence: Evidence) -> float:
        p = self.probability(evidence)
        return max(p, 1.0 - p)

    def cue_threshold(self, cue: CueMatch) -> float:
        """Similarity an adapter's examples need, moved by feedback on the adapter."""
        return self.config.semantic_cues.min_similarity + cue.offset

    def _similar(self, request: RouteRequest, cue: CueMatch) -> bool:
        """Whether ``cue`` reads like a request for its adapter: close enough to an example,
        closer to the examples than to the counter-examples, and (when it was searched) not
        closer to the collection's text than to the example."""
        return (
            cue.adapter in request.registered
            and request.may_use(cue.adapter)
            and cue.similarity >= self.cue_threshold(cue)
            and cue.example_support - cue.counter_similarity >= self.config.semantic_cues.min_margin
            and not (self.config.semantic_cues.topic_check and cue.topical)
        )

    def _by_cue(self, request: RouteRequest) -> tuple[AdapterCard | None, CueMatch | None]:
        """The usable adapter the question reads like, if any passes its threshold; and the
        closest usable match either way (reported in the decision)."""
        closest = None
        for cue in request.cues:
            if cue.adapter not in request.registered or not request.may_use(cue.adapter):
                continue
            closest = closest or cue
            if self._similar(request, cue):
                return request.registered[cue.adapter], cue
        return None, closest

    def _asked(self, request: RouteRequest) -> tuple[AdapterCard | None, CueMatch | None, bool]:
        """The usable adapter the request's fields or a phrase ask for, its cue, and whether
        the phrase is only mentioned: it names the thing ("JSON", "pirate") in a part of the
        question closer to the adapter's counter-examples than to its examples."""
        need = request.need
        card = next((c for c in request.usable if need.met_by(c)), None) if need else None
        cue = next((c for c in request.cues if card and c.adapter == card.name), None)
        return card, cue, cue is not None and not need.explicit and cue.only_mentioned

    def topic_candidates(self, request: RouteRequest) -> list[CueMatch]:
        """The cues that would pick an adapter by similarity if the collection did not match
        their part better (``CueMatch.topical``): the parts worth one search of the
        collection. Empty when the semantic cues will not be read (a field, a named adapter
        or path, a phrase that decides)."""
        if (
            not self.config.semantic_cues.topic_check
            or request.path != common_pb2.PATH_AUTO
            or request.adapter
            or request.need.explicit
        ):
            return []
        card, _, mentioned = self._asked(request)
        if card is not None and not mentioned:
            return []  # a phrase decides
        return [c for c in request.cues if c.topic_similarity is None and self._similar(request, c)]

    def _behaviour(
        self, request: RouteRequest
    ) -> tuple[AdapterCard | None, CueMatch | None, list[str], list[str]]:
        """The adapter a behaviour asked for selects when none is named: by the request's
        fields or a phrase first (the fast path), else by the question's similarity to the
        adapters' example requests. Returns (adapter, cue, reason codes, explanations); the
        cue is the chosen adapter's, or the closest one when none was chosen."""
        need, notes = request.need, []
        if need:
            card, cue, mentioned = self._asked(request)
            if card is not None and cue is not None and mentioned:
                # Talked about, not asked for: the semantic cues decide instead.
                notes.append(
                    f"{need.describe()} is only mentioned (closer to {card.name!r}'s "
                    f"counter-examples, {cue.counter_similarity:.2f}, than to its examples, "
                    f"{cue.example_support:.2f})"
                )
                need = Need()
            elif card is not None:
                return (
                    card,
                    cue,
                    need.reasons(),
                    [f"{need.describe()} was asked for, which {card.name!r} gives"],
                )
            elif need.explicit:
                raise FailedPrecondition(
                    f"no adapter this tenant may use declares {need.describe()}"
                )
        found, cue = self._by_cue(request)
        topic = next((c for c in request.cues if c.topical), None) if found is None else None
        if topic is not None and topic.similarity >= self.cue_threshold(topic):
            notes.append(
                f"the part that reads like {topic.adapter!r}'s example {topic.example!r} "
                f"({topic.similarity:.2f}) matches the collection better "
                f"({topic.topic_similarity:.2f}): it is what the question is about"
            )
        if found is not None and cue is not None:
            return (
                found,
                cue,
                ["similar_request"],
                [
                    *notes,
                    f"the question reads like an example request of {found.name!r}, "
                    f"{cue.example!r} (similarity {cue.similarity:.2f})",
                ],
            )
        if need:
            return (
                None,
                cue,
                ["no_matching_adapter"],
                [f"no usable adapter gives {need.describe()}"],
            )
        return None, cue, [], notes

    def probe_cue(self, request: RouteRequest) -> CueMatch | None:
        """The cue of the adapter an AUTO decision of ``request`` picks for a behaviour asked
        in the question, if any: the probe then searches the question without that
        instruction (``cues.content_vector``)."""
        if request.path != common_pb2.PATH_AUTO or request.adapter or request.need.explicit:
            return None
        card, cue, _, _ = self._behaviour(request)
        return cue if card is not None and cue is not None and cue.adapter == card.name else None

    # -- deciding --------------------------------------------------------------------------------

    def decide(self, request: RouteRequest, evidence: Evidence | None) -> Route:
        if request.path not in (common_pb2.PATH_AUTO, *PATH_NAMES):
            raise InvalidArgument(f"unknown path value {request.path}", field="path")
        if request.path != common_pb2.PATH_AUTO:
            return self._explicit(request, evidence)
        return self._auto(request, evidence)

    def _explicit(self, request: RouteRequest, evidence: Evidence | None) -> Route:
        path, name = request.path, PATH_NAMES[request.path]
        if path in (TUNED, HYBRID) and not request.adapter:
            raise InvalidArgument(f"{name} needs an adapter", field="adapter")
        if path == RAG and request.adapter:
            raise InvalidArgument(
                "RAG uses the base model; ask for HYBRID to combine an adapter with retrieval",
                field="adapter",
            )
        if request.adapter:
            self._card(request, request.adapter)
        if path != TUNED and evidence is not None and not evidence.collection_exists:
            raise NotFound(f"collection {request.collection!r} not found")
        collection = "" if path == TUNED else request.collection
        estimate = self._fitting(request, [path], mandatory=f"the request asked for {name}")[0]
        return Route(
            path,
            request.adapter,
            collection,
            ("explicit_path",),
            f"The request asked for {name}.",
            1.0,
            estimate.latency_ms,
            estimate.cost_micro_usd,
            self._probe_pb(evidence),
        )

    def _auto(self, request: RouteRequest, evidence: Evidence | None) -> Route:
        reasons: list[str] = []
        why: list[str] = []
        card: AdapterCard | None = None
        cue_pb: common_pb2.CueMatch | None = None
        if request.adapter:
            card = self._card(request, request.adapter)
            reasons.append("adapter_named")
            why.append(f"adapter {card.name!r} was named")
        elif request.need or request.cues:
            card, cue, codes, texts = self._behaviour(request)
            reasons += codes
            why += texts
            cue_pb = cue.to_pb(self.cue_threshold(cue)) if cue is not None else None

        must = [
            (request.require_citations, "citations_required", "citations are required"),
            (request.freshness_sensitive, "freshness_sensitive", "the facts may have changed"),
        ]
        mandatory = [(code, text) for flag, code, text in must if flag]
        if evidence is not None and not evidence.collection_exists and request.collection_named:
            raise NotFound(f"collection {request.collection!r} not found")
        has_collection = evidence is None or (evidence.collection_exists and evidence.hits > 0)
        confidence = 1.0
        if mandatory and not has_collection:
            raise FailedPrecondition(
                f"{mandatory[0][1]}, but collection {request.collection!r} is missing or empty"
            )
        if mandatory:
            retrieve = True
            reasons += [code for code, _ in mandatory]
            why += [text for _, text in mandatory]
        elif not has_collection:
            retrieve = False
            reasons.append("no_collection")
            why.append(f"collection {request.collection!r} is missing or empty")
        elif evidence is None:
            retrieve = True
            reasons.append("probe_off")
            why.append("the probe is off, so retrieval is assumed to help")
        else:
            retrieve = self.confident(evidence)
            confidence = self._probe_confidence(evidence)
            reasons.append("corpus_can_answer" if retrieve else "corpus_cannot_answer")
            verb = "found close matches" if retrieve else "found nothing close"
            why.append(f"the probe {verb} (top score {evidence.top_score:.2f})")

        fallback = self._fallback(request)
        if not retrieve and card is None:
            if fallback is not None:
                card = fallback
                reasons.append("fallback_adapter")
                why.append(f"general adapter {fallback.name!r} answers instead")
            elif has_collection:
                retrieve = True
                confidence = max(0.1, 1.0 - confidence)  # likely ungrounded: say so
                reasons.append("no_adapter")
                why.append("no adapter applies, so the base model answers from what was found")
            else:
                raise FailedPrecondition(
                    f"collection {request.collection!r} is missing or empty and no adapter "
                    "applies: nothing can answer this request"
                )

        preferred = (HYBRID if card else RAG) if retrieve else TUNED
        options: list[int] = [preferred]
        if not mandatory and preferred == HYBRID:
            options.append(TUNED)  # drop retrieval, keep the behaviour asked for
        if not mandatory and preferred == RAG and fallback is not None and not request.need:
            options.append(TUNED)  # the general adapter, without retrieval
        estimate, chosen, moved = self._fitting(request, options, mandatory=None)
        if moved:
            reasons.append(moved)
            why.append(f"{PATH_NAMES[preferred]} would miss the {moved.replace('_', ' ')}")
            card = card or fallback
        adapter = card.name if card and chosen != RAG else ""
        return Route(
            chosen,
            adapter,
            request.collection if chosen != TUNED else "",
            tuple(reasons),
            f"{PATH_NAMES[chosen]}: " + "; ".join(why) + ".",
            confidence,
            estimate.latency_ms,
            estimate.cost_micro_usd,
            self._probe_pb(evidence),
            cue_pb,
        )

    def _fitting(
        self, request: RouteRequest, options: list[int], *, mandatory: str | None
    ) -> tuple[PathEstimate, int, str]:
        """The first of ``options`` expected to fit the budgets: (estimate, path, the reason
        code of the budget that moved it off ``options[0]``, or "")."""
        misses: list[str] = []
        moved = ""
        for path in options:
            estimate = self.stats.estimate(PATH_NAMES[path])
            over = []
            if request.latency_budget_ms and estimate.latency_ms > request.latency_budget_ms:
                over.append(("latency_budget", f"{estimate.latency_ms:.0f} ms"))
            if request.max_cost_micro_usd and estimate.cost_micro_usd > request.max_cost_micro_usd:
                over.append(("cost_budget", f"{estimate.cost_micro_usd} micro-USD"))
            if not over:
                return estimate, path, moved
            moved = moved or over[0][0]
            expected = " and ".join(value for _, value in over)
            misses.append(f"{PATH_NAMES[path]} is expected to take {expected}")
        budget = []
        if request.latency_budget_ms:
            budget.append(f"{request.latency_budget_ms} ms")
        if request.max_cost_micro_usd:
            budget.append(f"{request.max_cost_micro_usd} micro-USD")
        suffix = f" ({mandatory})" if mandatory else ""
        raise FailedPrecondition(
            f"no path can meet the budget of {' and '.join(budget)}: {'; '.join(misses)}{suffix}"
        )
