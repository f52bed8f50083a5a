"""The validator stream stage: ingested → validated | rejected (every failed rule listed) | DLQ."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter

from tollgate_core.contract_rules import CompiledContract, Violation
from tollgate_core.contracts import ContractRegistry
from tollgate_core.events import now_iso
from tollgate_core.kafka import OutRecord, dead_letter
from tollgate_core.reference import ReferenceProfile
from tollgate_core.telemetry import TRACEPARENT, forward_traceparent
from tollgate_validator import SERVICE
from tollgate_validator.rules import Expectations

# A rejection record lists at most this many violations (and counts the rest), so one event with thousands
# of unknown fields still yields a record its topic accepts.
MAX_VIOLATIONS = 100


class ValidatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "tollgate_validator_events",
            "Events by contract and outcome",
            ["contract", "outcome"],
            registry=registry,
        )
        self.violations = Counter(
            "tollgate_validator_violations",
            "Failed contract rules",
            ["contract", "field", "rule"],
            registry=registry,
        )
        self.flags = Counter(
            "tollgate_validator_quality_flags",
            "Values unusual against the training reference",
            ["contract", "field", "check"],
            registry=registry,
        )
        self.dead = Counter("tollgate_validator_dead_lettered", "Messages sent to the DLQ", registry=registry)


class References:
    """The training reference in force per contract (newest candidate's), as statistical expectations."""

    def __init__(self, iqr_factor: float = 3.0) -> None:
        self._iqr_factor = iqr_factor
        self.by_contract: dict[str, Expectations] = {}

    def set(self, contract: str, reference: ReferenceProfile) -> None:
        self.by_contract[contract] = Expectations(reference, self._iqr_factor)


class ValidatorStage:
    def __init__(
        self,
        contracts: ContractRegistry,
        references: References,
        *,
        validated_topic: str,
        rejected_topic: str,
        dlq_topic: str,
        metrics: ValidatorMetrics,
        tracer: trace.Tracer | None = None,
        max_violations: int = MAX_VIOLATIONS,
    ) -> None:
        self._max_violations = max_violations
        self._contracts = contracts
        self._compiled = {c.schema_id: CompiledContract(c) for c in contracts}
        self._references = references
        self._validated = validated_topic
        self._rejected = rejected_topic
        self._dlq = dlq_topic
        self._metrics = metrics
        self._tracer = tracer or trace.get_tracer("tollgate.validator")

    def recompile(self, schema_id: str) -> None:
        """Compile a contract version registered live (new, or replacing the one in force)."""
        contract = self._contracts.get(schema_id)
        if contract is not None:
            self._compiled = {**self._compiled, schema_id: CompiledContract(contract)}

    async def __call__(self, records: list[ConsumerRecord[bytes, bytes]]) -> Sequence[OutRecord]:
        stamp = now_iso()
        outputs: list[OutRecord] = []
        outcomes: Tally[tuple[str, str]] = Tally()
        broken: Tally[tuple[str, str, str]] = Tally()
        flagged: Tally[tuple[str, str, str]] = Tally()
        dead = 0
        for rec in records:
            try:
                doc = orjson.loads(rec.value or b"")
                schema_id = doc["schema"]
                payload: dict[str, Any] = doc["payload"]
                compiled = self._compiled[schema_id]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                reason = f"unknown schema {exc}" if isinstance(exc, KeyError) else str(exc)
                outputs.append(dead_letter(rec, self._dlq, SERVICE, f"not an ingested event: {reason}"))
                dead += 1
                continue
            problems = (
                [v.as_dict() for v in compiled.violations(payload)]
                if isinstance(payload, dict)
                else [Violation("payload", "type", "payload must be an object").as_dict()]
            )
            if problems:
                doc["rejected_at"] = stamp
                doc["violations"] = problems[: self._max_violations]
                if len(problems) > self._max_violations:
                    doc["violations_omitted"] = len(problems) - self._max_violations
                topic = self._rejected
                outcomes[(schema_id, "rejected")] += 1
                for p in problems:
                    broken[(schema_id, compiled.metric_field(p["field"]), p["rule"])] += 1
            else:
                expectations = self._references.by_contract.get(schema_id)
                flags = expectations.flags(payload) if expectations is not None else []
                doc["validated_at"] = stamp
                doc["entity_id"] = str(payload[compiled.entity_field])
                doc["labeled"] = payload.get(compiled.label_field) is not None
                doc["quality_flags"] = flags
                topic = self._validated
                outcomes[(schema_id, "valid")] += 1
                for f in flags:
                    flagged[(schema_id, compiled.metric_field(f["field"]), f["check"])] += 1
            traceparent = forward_traceparent(
                self._tracer, "validate event", rec.headers, {"tollgate.schema": schema_id}
            )
            headers = [(TRACEPARENT, traceparent)] if traceparent else []
            outputs.append(OutRecord(topic, orjson.dumps(doc), rec.key, headers))
        for (contract, outcome), n in outcomes.items():
            self._metrics.events.labels(contract, outcome).inc(n)
        for labels, n in broken.items():
            self._metrics.violations.labels(*labels).inc(n)
        for labels, n in flagged.items():
            self._metrics.flags.labels(*labels).inc(n)
        if dead:
            self._metrics.dead.inc(dead)
        return outputs
