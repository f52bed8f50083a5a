"""The Kafka scoring path: ``scoring.requests`` → ``scoring.results`` (+ DLQ), exactly once, in batches.

Runs on :class:`~tollgate_core.kafka.TransactionalStage`: a fetched batch is grouped by model and each group
is scored with one onnxruntime call per version; results and dead letters are committed with the consumed
offsets in one transaction. A request that breaks the contract, names an unknown model or finds no version
in production gets a result with ``status: error`` saying why (the client is waiting for an answer); only a
message that is not a scoring request at all goes to the DLQ.

Inference-log events go through the same logger as HTTP, outside the transaction, with event ids derived
from the request's event id, the route and the request message's Kafka position: if a transaction aborts
and the batch is scored again, its log events repeat with the same ids, and the platform's idempotent
consumers keep one of each; a different request that reuses a request id is another message, so its
inferences get ids of their own (the reuse is counted, ``reused_request_ids``), never dropped as duplicates.

A request with ``explain: true`` gets its decision's explanation in the result (``explanation``, the shape
of the HTTP API's ``explain: true`` answer), or ``explanation_error`` saying why this version has none.
Explained requests are scored apart from the others of their model (only they pay for the explainer) and
at most ``explain_max_instances`` (``TOLLGATE_SCORER_EXPLAIN_MAX_INSTANCES``, the HTTP API's per-request
cap) rows go into one explainer run; a Kafka request is one instance, so it is always under that cap.
An ``explain`` that is not a boolean gets an error result (``invalid_request``).

While the inference log refuses new events (spool full, policy ``refuse``) the handler raises, so the stage
backs off and retries the batch from its committed offsets: Kafka requests wait instead of being scored
without a log.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace

from tollgate_core.events import now_iso
from tollgate_core.kafka import OutRecord, dead_letter
from tollgate_core.scoring import Channel
from tollgate_core.telemetry import TRACEPARENT, forward_traceparent
from tollgate_scorer import SERVICE
from tollgate_scorer.core import Part, Scorer, ScoringFailure
from tollgate_scorer.ids import random_uuids

RECENT_REQUEST_IDS = (
    100_000  # default of the request-id reuse window (ScorerSettings.request_id_reuse_window)
)
EXPLAIN_MAX_INSTANCES = 100  # default rows per explainer run (ScorerSettings.explain_max_instances)
_log = logging.getLogger(__name__)
_NO_HEADERS: list[tuple[str, bytes]] = []  # shared by results without a trace: read, never modified


class LogBackpressure(RuntimeError):
    """The inference log is full: the batch is retried later rather than scored unlogged."""


class ScoringStage:
    def __init__(
        self,
        scorer: Scorer,
        *,
        results_topic: str,
        dlq_topic: str,
        request_schema: str,
        result_schema: str,
        producer: str,
        tracer: trace.Tracer | None = None,
        recent_request_ids: int = RECENT_REQUEST_IDS,
        explain_max_instances: int = EXPLAIN_MAX_INSTANCES,
    ) -> None:
        if explain_max_instances < 1:
            raise ValueError("explain_max_instances is at least 1")
        self._scorer = scorer
        self._explain_max = explain_max_instances
        self._window = recent_request_ids
        self._results = results_topic
        self._dlq = dlq_topic
        self._request_schema = request_schema
        self._result_schema = result_schema
        self._producer = producer
        self._tracer = tracer or trace.get_tracer("tollgate.scorer")
        self.dead_lettered = 0
        # Request ids seen lately, with where their request sat in Kafka: a request id that comes back from
        # another position is a reused id (a client's bug or a replay), counted here; its inferences still
        # get event ids of their own (derived from the position), so none is taken for a duplicate.
        self.reused_request_ids = 0
        self._recent: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    async def __call__(self, records: list[ConsumerRecord[bytes, bytes]]) -> Sequence[OutRecord]:
        log = self._scorer.log
        if log is not None and not log.accepting:
            log.refused += 1
            raise LogBackpressure(
                "inference log spool full; Kafka scoring waits for Kafka to take the backlog"
            )
        now = now_iso()
        # Results are committed in the transaction with the offsets, so a result is never seen twice and
        # a fresh id is enough; log events (outside the transaction) get ids derived from the request.
        result_ids = iter(random_uuids(len(records)))
        outputs: list[OutRecord | None] = [None] * len(records)
        groups: defaultdict[tuple[str, bool], list[tuple[int, str, dict[str, Any], bytes | None]]] = (
            defaultdict(list)
        )
        for position, record in enumerate(records):
            try:
                request_id, model, instance, explain = self._parse(record.value)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                outputs[position] = dead_letter(record, self._dlq, SERVICE, f"not a scoring request: {exc}")
                self.dead_lettered += 1
                continue
            traceparent = forward_traceparent(
                self._tracer, "score request", record.headers, {"tollgate.model": model}
            )
            if type(explain) is not bool:
                error = {
                    "code": "invalid_request",
                    "message": f'"explain" is true or false, not {explain!r:.40}',
                }
                payload = {"request_id": request_id, "model": model, "status": "error", "error": error}
                outputs[position] = self._result(record, payload, now, traceparent, next(result_ids))
                continue
            groups[(model, explain)].append((position, request_id, instance, traceparent))
        for (model, explain), group in groups.items():
            step = self._explain_max if explain else len(group)
            for start in range(0, len(group), step):
                self._score_group(
                    model, explain, group[start : start + step], records, outputs, now, result_ids
                )
        return [o for o in outputs if o is not None]

    def _score_group(
        self,
        model: str,
        explain: bool,
        items: list[tuple[int, str, dict[str, Any], bytes | None]],
        records: list[ConsumerRecord[bytes, bytes]],
        outputs: list[OutRecord | None],
        now: str,
        result_ids: Iterator[str],
    ) -> None:
        """Score the requests of one model that ask for an explanation (or all do not), in one call."""
        instances = [item[2] for item in items]
        request_ids = [item[1] for item in items]
        traceparents = [item[3] for item in items]
        seeds = [_position(records[item[0]]) for item in items]
        self._note_reuse(request_ids, seeds)
        try:
            scored, failures = self._scorer.score_each(
                model, instances, request_ids, traceparents, Channel.KAFKA, seeds, explain=explain
            )
        except ScoringFailure as failure:
            scored, failures = None, dict.fromkeys(range(len(items)), failure)
        if scored is not None:
            for part in scored.parts:
                self._answers(part, model, items, records, outputs, now, result_ids, explain=explain)
        for index, failed in failures.items():
            violations = [
                {k: v for k, v in violation.items() if k != "instance"} for violation in failed.violations
            ]
            error: dict[str, Any] = {"code": failed.code, "message": failed.message}
            if violations:
                error["violations"] = violations
            payload = {
                "request_id": request_ids[index],
                "model": model,
                "status": "error",
                "error": error,
            }
            position = items[index][0]
            outputs[position] = self._result(
                records[position], payload, now, traceparents[index], next(result_ids)
            )

    def _answers(
        self,
        part: Part,
        model: str,
        items: list[tuple[int, str, dict[str, Any], bytes | None]],
        records: list[ConsumerRecord[bytes, bytes]],
        outputs: list[OutRecord | None],
        now: str,
        result_ids: Iterator[str],
        *,
        explain: bool = False,
    ) -> None:
        """One result record per answered request of a part (one version); the hot loop of the Kafka path.
        With ``explain``, each carries its ``explanation``, or the ``explanation_error`` saying why not."""
        served, out = part.model, part.outputs
        version, route, class_keys, entity_field = (
            served.version,
            part.route,
            served.class_keys,
            served.reader.entity_field,
        )
        predictions, scores, probabilities = out.predictions, out.scores, out.probabilities
        explanations = part.explanations
        unexplained = part.explain_error or served.explain_error or "this version cannot be explained"
        # Everything but the per-row fields is serialised once per part and spliced around them.
        dumps, join, topic = orjson.dumps, b"".join, self._results
        head = b'{"event_id":"'
        middle = (
            b'","event_type":"scoring_result","schema":'
            + dumps(self._result_schema)
            + b',"occurred_at":'
            + dumps(now)
            + b',"producer":'
            + dumps(self._producer)
            + b',"payload":'
            + dumps(
                {"model": model, "status": "ok", "version": version, "route": route}
                | ({} if served.threshold is None else {"threshold": served.threshold})
            )[:-1]
            + b","
        )
        rows = part.rows if part.rows is not None else range(len(items))
        for i, index in enumerate(rows):
            position, request_id, instance, traceparent = items[index]
            payload: dict[str, Any] = {"request_id": request_id, "prediction": predictions[i]}
            if scores is not None:
                payload["score"] = scores[i]
            if probabilities is not None:
                payload["probabilities"] = dict(zip(class_keys, probabilities[i], strict=True))
            entity = instance.get(entity_field)
            if type(entity) is str:
                payload["entity_id"] = entity
            if explain:
                if explanations is not None:
                    payload["explanation"] = explanations[i].as_dict()
                else:
                    payload["explanation_error"] = unexplained
            value = join((head, next(result_ids).encode(), middle, dumps(payload)[1:], b"}"))
            headers = [(TRACEPARENT, traceparent)] if traceparent else _NO_HEADERS
            outputs[position] = OutRecord(topic, value, records[position].key, headers)

    def _note_reuse(self, request_ids: Sequence[str], seeds: Sequence[str]) -> None:
        recent = self._recent
        for request_id, seed in zip(request_ids, seeds, strict=True):
            seen = recent.get(request_id, ())
            if seen and seed not in seen:  # a redelivery comes back from a position already seen
                self.reused_request_ids += 1
                _log.warning("request id %.64s reused (first at %s, again at %s)", request_id, seen[0], seed)
            if seed not in seen:
                recent[request_id] = (*seen[-3:], seed)
            recent.move_to_end(request_id)
            if len(recent) > self._window:
                recent.popitem(last=False)

    def _parse(self, value: bytes | None) -> tuple[str, str, dict[str, Any], Any]:
        """The request id, model, instance and ``explain`` (false when absent; checked by the caller)."""
        document = orjson.loads(value or b"")
        if type(document) is not dict:
            raise TypeError("the message is not a JSON object")
        schema = document.get("schema")
        if schema != self._request_schema:
            raise ValueError(f"schema {schema!r} is not {self._request_schema}")
        request_id, payload = document["event_id"], document["payload"]
        model, instance = payload["model"], payload["instance"]
        if type(request_id) is not str or type(model) is not str or type(instance) is not dict:
            raise TypeError("event_id and payload.model are strings and payload.instance is an object")
        return request_id, model, instance, payload.get("explain", False)

    def _result(
        self,
        record: ConsumerRecord[bytes, bytes],
        payload: dict[str, Any],
        now: str,
        traceparent: bytes | None,
        event_id: str,
    ) -> OutRecord:
        document = {
            "event_id": event_id,
            "event_type": "scoring_result",
            "schema": self._result_schema,
            "occurred_at": now,
            "producer": self._producer,
            "payload": payload,
        }
        headers = [(TRACEPARENT, traceparent)] if traceparent else []
        return OutRecord(self._results, orjson.dumps(document), record.key, headers)


def _position(record: ConsumerRecord[bytes, bytes]) -> str:
    """Where a request sits in Kafka: the same after a redelivery, different for any other message."""
    return f"{record.topic}:{record.partition}:{record.offset}"
