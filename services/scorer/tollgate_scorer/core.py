"""Scoring, whatever the transport: route, validate, run, log. HTTP, OIP and Kafka only translate.

One call scores the instances of one request against one model. The route is read once at the start and
used throughout, so a version swap in the middle of a request cannot mix versions inside it. Every
instance is validated before anything runs, so a request is answered completely or refused with every
broken rule; a shadow run can never change or fail the answer.

Each answered instance is one inference-log entry (a :class:`~tollgate_scorer.inference_log.LogEntry`
appended to a queue); a shadow run adds one more per instance, with the same request id and route
``shadow``.

The three entry points (:meth:`Scorer.score` for a request, :meth:`Scorer.score_each` for Kafka requests
that fail alone, :meth:`Scorer.score_rows` for one-row requests scored together) share their steps: plan
(which version answers which rows), run, shadow, and conclude (latency observed, inferences counted, log
entries appended), which every answered request ends with.

Single-row requests that arrive together (parsed in one event-loop turn, see ``tollgate_scorer.coalesce``)
are scored together by :meth:`Scorer.score_rows`: one onnxruntime run per version for all of them, each
request otherwise scored, answered, counted and logged exactly as :meth:`Scorer.score` would one alone
(its own request id, route, failure, one log entry).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from tollgate_core.models import ModelSpec
from tollgate_core.scoring import Route
from tollgate_scorer.explain import Explanation
from tollgate_scorer.ids import RequestIds, derived_event_id
from tollgate_scorer.inference_log import InferenceLog, LogEntry
from tollgate_scorer.instances import ColumnBatch, Feeds, InvalidInstances, Violation
from tollgate_scorer.model import Predictions, ServingModel
from tollgate_scorer.routing import ModelRoute, ModelTable

log = logging.getLogger(__name__)

LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)


class ScoringFailure(Exception):
    """A request that cannot be answered; ``status`` is the HTTP status it maps to."""

    def __init__(self, status: int, code: str, message: str, violations: Sequence[Violation] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.violations = list(violations)


@dataclass(slots=True)
class Part:
    """The rows of a request that one version answered, and its outputs for them."""

    model: ServingModel
    route: str
    rows: list[int] | None  # None: all rows of the request, in order
    outputs: Predictions
    feeds: Feeds  # the input arrays, reused by a shadow version with the same input layout
    # Explanations, when the request asked or the catalog logs reason codes: one per row of the part, or
    # None with the reason in explain_error; ``reasons``: reason codes logged per inference (0: none).
    explanations: list[Explanation] | None = None
    explain_error: str | None = None
    reasons: int = 0


@dataclass(slots=True)
class ShadowRun:
    """What the shadow version answered for a request: ``outputs`` for the request's rows ``rows`` (None:
    all of them, in order). A request the shadow version could not score has none."""

    model: ServingModel
    rows: list[int] | None
    outputs: Predictions


@dataclass(slots=True)
class Scored:
    request_ids: list[str]
    parts: list[Part]
    latency_ms: float


@dataclass
class ScoringStats:
    """Counters read by the metrics collector at scrape time; updating one is a dict increment."""

    inferences: defaultdict[tuple[str, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    invalid: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    failures: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    shadow_failures: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    # (model, channel) -> [count, sum of ms, count per bucket ..., +Inf]
    latency: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # Requests scored by score_rows, and the calls (batches) they came in: their ratio is the mean batch.
    coalesced_requests: int = 0
    coalesced_batches: int = 0

    def observe(self, model: str, channel: str, latency_ms: float) -> None:
        cell = self.latency.get((model, channel))
        if cell is None:
            cell = self.latency[(model, channel)] = [0.0] * (len(LATENCY_BUCKETS_MS) + 3)
        cell[0] += 1
        cell[1] += latency_ms
        cell[2 + bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1


class Scorer:
    def __init__(
        self,
        table: ModelTable,
        inference_log: InferenceLog | None,
        stats: ScoringStats,
        catalog: Mapping[str, ModelSpec] | None = None,
    ) -> None:
        self.table = table
        self.log = inference_log
        self.stats = stats
        self.new_request_id = RequestIds()
        # The model catalog as the scorer follows it (updated in place): which models log reason codes.
        self.catalog = catalog

    def route(self, name: str) -> ModelRoute:
        route = self.table.get(name)
        if route is None:
            raise ScoringFailure(404, "unknown_model", f"no model named {name!r} is served here")
        return route

    def check_accepting(self, name: str) -> None:
        if self.log is not None and not self.log.accepting:
            self.log.refused += 1
            self.stats.failures[(name, "unavailable")] += 1
            raise ScoringFailure(
                503,
                "unavailable",
                "the inference log cannot keep more events (Kafka unreachable and the local spool full); "
                "scoring resumes when Kafka is back",
            )

    def score(
        self,
        name: str,
        instances: Sequence[Any],
        channel: str,
        *,
        traceparent: bytes | None = None,
        version: str | None = None,
        one_route: bool = False,
        explain: bool = False,
    ) -> Scored:
        """Score a request's instances; raises :class:`ScoringFailure` (nothing is logged then).

        ``version`` pins an explicit version (route ``direct``, no shadow); ``one_route`` routes the whole
        request by its first instance, for protocols that report one version per response; ``explain``
        explains every answered instance (each part's ``explanations``).
        """
        start = time.perf_counter()
        route = self.route(name)
        self.check_accepting(name)
        if not instances:
            raise ScoringFailure(400, "invalid_request", "the request has no instances")
        request_ids = self.new_request_id.many(len(instances))
        plan = self._plan(route, instances, request_ids, version, one_route)
        parts = self._run(name, channel, plan, instances)
        self._explain(name, parts, explain)
        shadow = self._shadow(route.shadow_model, instances, parts) if version is None else None
        return self._conclude(
            name, channel, _since(start), parts, instances, request_ids, traceparent, shadow
        )

    def score_each(
        self,
        name: str,
        instances: Sequence[Any],
        request_ids: Sequence[str],
        traceparents: Sequence[bytes | None],
        channel: str,
        id_seeds: Sequence[str] | None = None,
        *,
        explain: bool = False,
    ) -> tuple[Scored | None, dict[int, ScoringFailure]]:
        """Score requests that stand alone (Kafka): an invalid one fails by itself, not the batch;
        ``explain`` explains every answered request (each part's ``explanations``).

        Log events get event ids derived from the request id, the route and ``id_seeds`` (one per request:
        where its message sits in Kafka), so scoring a redelivered request again produces the same events,
        which consumers deduplicate, while another request that reuses a request id gets events of its own.
        Without seeds the request id alone is the seed.
        """
        try:
            route = self.route(name)
        except ScoringFailure as failure:
            return None, dict.fromkeys(range(len(instances)), failure)
        start = time.perf_counter()
        plan = self._plan(route, instances, request_ids, None, False)
        failures: dict[int, ScoringFailure] = {}
        parts, kept = self._run_isolating(name, channel, plan, instances, failures)
        if not parts:
            return None, failures
        self._explain(name, parts, explain)
        shadow = self._shadow(route.shadow_model, instances, parts, kept)
        scored = self._conclude(
            name,
            channel,
            _since(start),
            parts,
            instances,
            list(request_ids),
            traceparents,
            shadow,
            id_seeds if id_seeds is not None else request_ids,
        )
        return scored, failures

    def score_rows(
        self, name: str, instances: Sequence[Any], traceparents: Sequence[bytes | None], channel: str
    ) -> list[Scored | ScoringFailure]:
        """Score one-instance requests together: entry ``i`` is what ``score(name, [instances[i]], channel,
        traceparent=traceparents[i])`` returns or raises.

        The route is read once for all of them; rows are grouped by the version that answers each (canary
        routing stays per row) and each group is read and run at once. A row that breaks the contract
        fails its own request only (the group is read again without it), and a failed run falls back to
        one run per row, so that only the row the model cannot score fails. A shadow version scores the
        answered rows together, one by one if that fails, so each request gets its shadow output or not
        exactly as alone.
        """
        n = len(instances)
        self.stats.coalesced_requests += n
        self.stats.coalesced_batches += 1
        if n == 1:
            try:
                return [self.score(name, instances, channel, traceparent=traceparents[0])]
            except ScoringFailure as failure:
                return [failure]
        start = time.perf_counter()
        try:
            route = self.route(name)
        except ScoringFailure as failure:
            return [failure] * n
        if self.log is not None and not self.log.accepting:
            refused: list[Scored | ScoringFailure] = []
            for _ in range(n):  # counted per request, as each would be alone
                try:
                    self.check_accepting(name)
                except ScoringFailure as failure:
                    refused.append(failure)
            return refused
        request_ids = self.new_request_id.many(n)
        try:  # each row is a request of its own: routed by its own entity (or request) id
            plan = self._plan(route, instances, request_ids, None, False)
        except ScoringFailure as failure:  # no version serves: the same for every row
            return [failure] * n
        results: list[Scored | ScoringFailure | None] = [None] * n
        parts: list[Part | None] = [None] * n
        reasons = self._reasons(name)
        for model, why, rows in plan:
            group = list(range(n)) if rows is None else rows
            self._run_rows(name, channel, model, why, group, instances, parts, results, reasons)
        answered = [i for i in range(n) if parts[i] is not None]
        shadow = route.shadow_model
        shadows: list[Predictions | None] = (
            self._shadow_rows(shadow, [instances[i] for i in answered])
            if shadow is not None and answered
            else []
        )
        latency_ms = _since(start)
        for position, index in enumerate(answered):
            part = parts[index]
            assert part is not None
            out = shadows[position] if shadows else None
            results[index] = self._conclude(
                name,
                channel,
                latency_ms,
                [part],
                [instances[index]],
                [request_ids[index]],
                traceparents[index],
                ShadowRun(shadow, None, out) if shadow is not None and out is not None else None,
            )
        done: list[Scored | ScoringFailure] = []
        for result in results:
            assert result is not None
            done.append(result)
        return done

    # ---- the steps every entry point takes: plan, run, shadow, then conclude (count and log)

    def _plan(
        self,
        route: ModelRoute,
        instances: Sequence[Any],
        request_ids: Sequence[str],
        version: str | None,
        one_route: bool,
    ) -> list[tuple[ServingModel, str, list[int] | None]]:
        """Which version answers which rows (None: all of them, in order)."""
        if version is not None:
            model = route.version(version)
            if model is None:
                served = ", ".join(m.version for m in route.models()) or "none"
                raise ScoringFailure(
                    404,
                    "unknown_model",
                    f"version {version!r} of {route.name} is not served (served: {served})",
                )
            return [(model, Route.DIRECT, None)]
        some = route.production or route.staging
        if some is None:
            raise ScoringFailure(503, "no_version", f"no version of {route.name} is in production yet")
        field_name = some.reader.entity_field
        if len(instances) == 1 or one_route or not route.canary_buckets:
            picked = route.pick(_entity(instances[0], field_name) or request_ids[0])
            if picked is None:
                raise ScoringFailure(503, "no_version", f"no version of {route.name} is in production yet")
            return [(picked[0], picked[1], None)]
        sides: dict[str, tuple[ServingModel, list[int]]] = {}
        for index, instance in enumerate(instances):
            picked = route.pick(_entity(instance, field_name) or request_ids[index])
            assert picked is not None  # a live canary implies a staging version
            model, why = picked
            side = sides.get(why)
            if side is None:
                side = sides[why] = (model, [])
            side[1].append(index)
        if len(sides) == 1:
            ((only, (model, _)),) = sides.items()
            return [(model, only, None)]
        return [(model, why, rows) for why, (model, rows) in sides.items()]

    def _run(
        self,
        name: str,
        channel: str,
        plan: list[tuple[ServingModel, str, list[int] | None]],
        instances: Sequence[Any],
    ) -> list[Part]:
        """Read every part's rows, then run them; any invalid row fails the whole request."""
        ready: list[tuple[ServingModel, str, list[int] | None, Feeds]] = []
        violations: list[Violation] = []
        for model, why, rows in plan:
            subset = instances if rows is None else [instances[i] for i in rows]
            try:
                ready.append((model, why, rows, model.reader.read(subset, rows)))
            except InvalidInstances as invalid:
                violations.extend(invalid.violations)
        if violations:
            self.stats.invalid[(name, channel)] += 1
            violations.sort(key=lambda v: v["instance"])
            raise ScoringFailure(422, "invalid_instance", _summary(violations), violations)
        parts = []
        for model, why, rows, feeds in ready:
            try:
                outputs = model.run(feeds)
            except Exception as exc:  # onnxruntime's own error types; the request fails, the process lives
                self.stats.failures[(name, "model_error")] += 1
                log.exception("%s %s failed to run", model.name, model.version)
                raise ScoringFailure(
                    500, "model_error", f"{model.name} {model.version} failed: {exc}"
                ) from exc
            parts.append(Part(model, why, rows, outputs, feeds))
        return parts

    def _run_isolating(
        self,
        name: str,
        channel: str,
        plan: list[tuple[ServingModel, str, list[int] | None]],
        instances: Sequence[Any],
        failures: dict[int, ScoringFailure],
    ) -> tuple[list[Part], list[int] | None]:
        """:meth:`_run` for requests that stand alone: an invalid one gets its own failure in ``failures``
        and the others run without it. Returns the parts (none when every row failed) and the rows they
        answer (None: all)."""
        kept = list(range(len(instances)))
        while True:
            try:
                return self._run(name, channel, plan, instances), (
                    None if len(kept) == len(instances) else kept
                )
            except ScoringFailure as failure:
                if failure.code != "invalid_instance":
                    raise
                bad = {v["instance"] for v in failure.violations}
                for index in bad:
                    mine = [v for v in failure.violations if v["instance"] == index]
                    failures[index] = ScoringFailure(422, "invalid_instance", _summary(mine), mine)
                kept = [i for i in kept if i not in bad]
                if not kept:
                    return [], kept
                plan = [
                    (m, r, [i for i in (rows if rows is not None else range(len(instances))) if i not in bad])
                    for m, r, rows in plan
                ]
                plan = [(m, r, rows) for m, r, rows in plan if rows]

    def _run_rows(
        self,
        name: str,
        channel: str,
        model: ServingModel,
        why: str,
        rows: list[int],
        instances: Sequence[Any],
        parts: list[Part | None],
        results: list[Scored | ScoringFailure | None],
        reasons: int = 0,
    ) -> None:
        """Read and run the rows one version answers (see :meth:`score_rows`); each row gets a part of its
        own in ``parts``, or its failure in ``results``. With ``reasons``, the rows are explained together
        (one explainer run) and each part gets its own explanation."""
        reader = model.reader
        subset = [instances[i] for i in rows]
        try:
            feeds = reader.read(subset)
        except InvalidInstances:
            kept = []
            for index in rows:  # alone, each row gets the very error its request would get alone
                try:
                    reader.read([instances[index]])
                    kept.append(index)
                except InvalidInstances as invalid:
                    self.stats.invalid[(name, channel)] += 1
                    results[index] = ScoringFailure(
                        422, "invalid_instance", _summary(invalid.violations), invalid.violations
                    )
            rows = kept
            if not rows:
                return
            subset = [instances[i] for i in rows]
            feeds = reader.read(subset)
        try:
            outputs = model.run(feeds)
        except Exception:  # one run per row finds the row(s) the model cannot score
            for index in rows:
                try:
                    row_feeds = reader.read([instances[index]])
                    out = model.run(row_feeds)
                except Exception as exc:
                    self.stats.failures[(name, "model_error")] += 1
                    log.exception("%s %s failed to run", model.name, model.version)
                    results[index] = ScoringFailure(
                        500, "model_error", f"{model.name} {model.version} failed: {exc}"
                    )
                    continue
                part = parts[index] = Part(model, why, None, out, row_feeds)
                if reasons:
                    part.reasons = reasons
                    self._explain_part(name, part)
            return
        if not reasons:
            for index, out in zip(rows, outputs.split(), strict=True):
                parts[index] = Part(model, why, None, out, feeds)
            return
        group = Part(model, why, None, outputs, feeds, reasons=reasons)
        self._explain_part(name, group)
        explained = group.explanations
        for position, (index, out) in enumerate(zip(rows, outputs.split(), strict=True)):
            parts[index] = Part(
                model,
                why,
                None,
                out,
                feeds,
                [explained[position]] if explained is not None else None,
                group.explain_error,
                reasons,
            )

    def _shadow(
        self,
        shadow: ServingModel | None,
        instances: Sequence[Any],
        parts: list[Part],
        rows: list[int] | None = None,
    ) -> ShadowRun | None:
        """The shadow version's outputs for the answered ``rows`` of a request (None: all), or None when
        there is no shadow or it cannot score them."""
        if shadow is None:
            return None
        try:
            if rows is not None:
                feeds = shadow.reader.read([instances[i] for i in rows])
            elif (
                len(parts) == 1
                and parts[0].rows is None
                and parts[0].model.reader.layout == shadow.reader.layout
            ):
                feeds = parts[0].feeds
            else:
                feeds = shadow.reader.read(instances)
            return ShadowRun(shadow, rows, shadow.run(feeds))
        except Exception as exc:  # a shadow must never affect the answer
            self.stats.shadow_failures[shadow.name] += 1
            log.warning("shadow %s %s could not score: %s", shadow.name, shadow.version, exc)
            return None

    def _shadow_rows(self, shadow: ServingModel, instances: list[Any]) -> list[Predictions | None]:
        """Shadow outputs per row (None where the shadow version cannot score the row)."""
        try:
            return list(shadow.run(shadow.reader.read(instances)).split())
        except Exception:  # scored one by one, each row's shadow fails (and is counted) as it would alone
            alone = [self._shadow(shadow, [instance], []) for instance in instances]
            return [run.outputs if run is not None else None for run in alone]

    def _reasons(self, name: str) -> int:
        """Reason codes the catalog asks to log per inference of model ``name`` (0: none)."""
        catalog = self.catalog
        spec = catalog.get(name) if catalog is not None else None
        policy = spec.explanations if spec is not None else None
        return policy.top_k if policy is not None else 0

    def _explain(self, name: str, parts: list[Part], requested: bool) -> None:
        """Explain the parts' rows when the request asks or the catalog logs reason codes for the model."""
        reasons = self._reasons(name)
        if not requested and not reasons:
            return
        for part in parts:
            part.reasons = reasons
            self._explain_part(name, part)

    def _explain_part(self, name: str, part: Part) -> None:
        """One explainer run for a part's rows; a failure leaves the answer as it is and says why."""
        model = part.model
        explainer = model.explainer
        if explainer is None:
            part.explain_error = model.explain_error
            return
        try:
            part.explanations = explainer.explain(part.feeds)
        except Exception as exc:  # onnxruntime's own error types: the score stands without its explanation
            self.stats.failures[(name, "explain_error")] += 1
            log.exception("%s %s failed to explain", model.name, model.version)
            part.explain_error = f"{model.name} {model.version} failed to explain: {exc}"

    def _conclude(
        self,
        name: str,
        channel: str,
        latency_ms: float,
        parts: list[Part],
        instances: Sequence[Any],
        request_ids: list[str],
        traceparent: bytes | Sequence[bytes | None] | None,
        shadow: ShadowRun | None,
        id_seeds: Sequence[str] | None = None,
    ) -> Scored:
        """What every answered request ends with: its latency observed, its inferences counted, and one log
        entry per inference. A one-row request appends its entry now (the cheapest step on the hot path);
        any other request hands the log a deferred item, whose entries the sender builds after the answer
        has gone."""
        self.stats.observe(name, channel, latency_ms)
        count = self._count(parts, channel, shadow)
        scored = Scored(request_ids, parts, latency_ms)
        inference_log = self.log
        if inference_log is None:
            return scored
        now = time.time()
        if count == 1 and len(instances) == 1:
            (part,) = parts
            tp = (
                traceparent
                if traceparent is None or type(traceparent) is bytes
                else cast("Sequence[bytes | None]", traceparent)[0]
            )
            inference_log.append(
                _entry(
                    now,
                    request_ids[0],
                    part.model,
                    part.route,
                    channel,
                    instances[0],
                    part.outputs,
                    0,
                    latency_ms,
                    tp,
                    id_seeds[0] if id_seeds is not None else None,
                    _reason_codes(part, 0) if part.reasons else None,
                )
            )
        else:
            inference_log.defer(
                count,
                partial(
                    _log_entries,
                    now,
                    scored,
                    instances,
                    channel,
                    traceparent,
                    shadow,
                    id_seeds,
                ),
            )
        return scored

    def _count(self, parts: list[Part], channel: str, shadow: ShadowRun | None) -> int:
        """Count the inferences of a scored request (whether or not they are logged); returns how many."""
        counts = self.stats.inferences
        total = 0
        for part in parts:
            n = len(part.outputs)
            counts[(part.model.name, part.model.version, part.route, channel)] += n
            total += n
        if shadow is not None:
            n = len(shadow.outputs)
            counts[(shadow.model.name, shadow.model.version, Route.SHADOW, channel)] += n
            total += n
        return total


def _since(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - start) * 1000.0


def _entry(
    now: float,
    request_id: str,
    model: ServingModel,
    route: str,
    channel: str,
    instance: Any,
    out: Predictions,
    position: int,
    latency_ms: float,
    traceparent: bytes | None,
    id_seed: str | None,
    explanation: dict[str, Any] | None = None,
) -> LogEntry:
    """The log entry of the inference at ``position`` of ``out``."""
    scores, probabilities = out.scores, out.probabilities
    return LogEntry(
        now,
        request_id,
        model,
        route,
        channel,
        instance,
        out.predictions[position],
        scores[position] if scores is not None else None,
        probabilities[position] if probabilities is not None else None,
        latency_ms,
        traceparent,
        derived_event_id(request_id, route, id_seed) if id_seed is not None else None,
        explanation,
    )


def _reason_codes(part: Part, position: int) -> dict[str, Any] | None:
    """The logged explanation of the part's row at ``position``: its top ``part.reasons`` reason codes."""
    explanations = part.explanations
    if explanations is None:
        return None
    return explanations[position].reason_codes(part.reasons)


def _log_entries(
    now: float,
    scored: Scored,
    instances: Sequence[Any],
    channel: str,
    traceparent: bytes | Sequence[bytes | None] | None,
    shadow: ShadowRun | None,
    id_seeds: Sequence[str] | None,
) -> list[LogEntry]:
    """The log entries of one request: each part's rows, then the shadow's (see :meth:`Scorer._conclude`)."""
    request_ids, latency_ms = scored.request_ids, scored.latency_ms
    entries: list[LogEntry] = []
    append = entries.append
    per_row_trace = not (traceparent is None or isinstance(traceparent, bytes))
    # ``traceparent`` as each case reads it (per_row_trace says which): typed once, not per row.
    row_traceparents = cast("Sequence[bytes | None]", traceparent)
    request_traceparent = cast("bytes | None", traceparent)
    rows_of = instances.rows() if isinstance(instances, ColumnBatch) else instances

    def log_rows(
        model: ServingModel,
        why: str,
        rows: Sequence[int] | None,
        out: Predictions,
        part: Part | None = None,
    ) -> None:
        explained = part is not None and part.reasons > 0 and part.explanations is not None
        for position, index in enumerate(rows if rows is not None else range(len(instances))):
            tp = row_traceparents[index] if per_row_trace else request_traceparent
            append(
                _entry(
                    now,
                    request_ids[index],
                    model,
                    why,
                    channel,
                    rows_of[index],
                    out,
                    position,
                    latency_ms,
                    tp,
                    id_seeds[index] if id_seeds is not None else None,
                    _reason_codes(part, position) if explained and part is not None else None,
                )
            )

    for part in scored.parts:
        log_rows(part.model, part.route, part.rows, part.outputs, part)
    if shadow is not None:
        log_rows(shadow.model, Route.SHADOW, shadow.rows, shadow.outputs)
    return entries


def _entity(instance: Any, field_name: str) -> str | None:
    if type(instance) is dict:
        value = instance.get(field_name)
        if type(value) is str:
            return value
    return None


def _summary(violations: Sequence[Violation]) -> str:
    first = violations[0]
    where = f"instance {first['instance']}: " if first.get("instance") is not None else ""
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"{where}{first['message']}{more}"
