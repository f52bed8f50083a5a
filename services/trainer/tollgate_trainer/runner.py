"""When and how the trainer trains: triggers (new labeled rows, schedule, requests), debounce, one run.

A burst of triggers trains once: the first trigger opens a debounce window of the model's
``debounce_seconds``; when it closes, one run consumes every trigger and request that arrived meanwhile.
Training itself (CPU-bound scikit-learn) runs in a worker thread so Kafka consumers and HTTP stay responsive.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tollgate_core.artifacts import ArtifactStore
from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_core.events import dumps, utcnow
from tollgate_core.lifecycle import (
    Artifact,
    CalibrationBin,
    CandidateEvent,
    CandidatePayload,
    EvaluationReport,
    Experiment,
    Lineage,
    OffsetRange,
    Parity,
    Submission,
    TrialRecord,
)
from tollgate_core.models import ModelSpec
from tollgate_core.topics import current_schema_id
from tollgate_core.waiting import wait_event
from tollgate_trainer.features import TrainingDataError
from tollgate_trainer.importance import DEFAULT_SETTINGS, ImportanceSettings
from tollgate_trainer.store import LabelKey, TrainerRepository, TrainingData
from tollgate_trainer.submission import (
    SubmissionConfig,
    SubmissionRefused,
    contract_mismatches,
    decision_threshold,
    evaluate_submission,
    explanation_reference,
    load_pipeline,
    prepare,
    read_onnx,
    servable_onnx,
)
from tollgate_trainer.train import TrainingConfig, TrainingResult, train_model

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    model: str
    status: str  # offered | not_offered | failed | skipped
    version: int | None = None
    run_id: str | None = None
    result: TrainingResult | None = None
    candidate: CandidateEvent | None = None
    error: str | None = None


def label_key(contract: DatasetContract) -> LabelKey:
    """Rows of the same entity and event time are one observation (see :class:`LabelKey`)."""
    return LabelKey(contract.entity_id.name, contract.event_time)


def training_config(spec: ModelSpec, importance: ImportanceSettings = DEFAULT_SETTINGS) -> TrainingConfig:
    t = spec.training
    return TrainingConfig(
        family=t.family,
        hyperparameters=t.hyperparameters,
        seed=t.seed,
        holdout_fraction=t.holdout_fraction,
        parity_tolerance=t.parity_tolerance,
        min_label_agreement=t.parity_label_agreement,
        decision_threshold=t.decision_threshold,
        selection=t.selection,
        baselines=spec.gates.cost_of_sophistication is not None,
        threads=1,
        importance_rows=importance.rows,
        importance_repeats=importance.repeats,
    )


def experiment_of(result: TrainingResult) -> Experiment | None:
    """The run's champion selection as the candidate records it."""
    selection = result.selection
    if selection is None:
        return None
    return Experiment(
        metric=selection.metric,
        chosen=selection.champion.number,
        trials=[
            TrialRecord(
                number=t.number,
                family=t.family,
                hyperparameters=t.hyperparameters,
                metrics=t.metrics,
                seconds=t.seconds,
                digest=t.digest,
            )
            for t in selection.trials
        ],
        skipped=selection.skipped,
        fit_rows=selection.fit_rows,
        validation_rows=selection.validation_rows,
        budget_seconds=selection.budget_seconds,
        max_rows=selection.max_rows,
    )


def parity_record(result: TrainingResult) -> Parity:
    parity = result.parity
    return Parity(
        passed=parity.passed,
        max_abs_diff=parity.max_abs_diff,
        label_agreement=parity.label_agreement if parity.label_agreement is not None else 1.0,
        rows_checked=parity.rows_checked,
        tolerance=parity.tolerance,
        required_label_agreement=parity.min_label_agreement,
        reason=None
        if parity.passed
        else f"max |onnx - sklearn| {parity.max_abs_diff:.3g} or label agreement "
        f"{parity.label_agreement} outside tolerance",
    )


def evaluation_report(result: TrainingResult, parity: Parity | None) -> EvaluationReport:
    """The platform's evaluation of ``result`` on its out-of-time holdout, as the version stores it."""
    return EvaluationReport(
        holdout_rows=result.holdout_rows,
        holdout_fraction=result.holdout_fraction,
        ordered_by=result.split_ordered_by,
        data_hash=result.data_hash,
        metrics=result.metrics,
        segment_metrics=result.segment_metrics,
        fairness_gap=result.fairness_gap,
        calibration=[
            CalibrationBin(
                low=b["low"],
                high=b["high"],
                count=int(b["count"]),
                mean_score=b["mean_score"],
                observed_rate=b["observed_rate"],
            )
            for b in result.calibration
        ],
        parity=parity,
        baselines=result.baselines,
        feature_importance=result.feature_importance,
    )


def candidate_event(
    spec: ModelSpec,
    version: int,
    run_id: str,
    result: TrainingResult,
    store: ArtifactStore,
    offsets: list[OffsetRange],
    trigger: str,
    code_version: str,
    request_id: str | None,
    requested_by: list[str] | None = None,
    submission: Submission | None = None,
    parity_checked: bool = True,
) -> CandidateEvent:
    """The candidate of a run; ``submission`` when the model was submitted (``parity_checked`` False when
    no scikit-learn pipeline came with it, so no parity was measured)."""
    signature = result.signature
    lineage = Lineage(
        contract=result.contract,
        contract_digest=result.contract_digest,
        offsets=offsets,
        row_count=result.row_count,
        data_hash=result.data_hash,
        holdout={
            "fraction": result.holdout_fraction,
            "ordered_by": result.split_ordered_by,
            "train_rows": result.train_rows,
            "holdout_rows": result.holdout_rows,
        },
        family=result.family,
        hyperparameters=result.hyperparameters,
        seed=result.seed,
        code_version=code_version,
        libraries=result.library_versions,
        trigger=trigger,
        training_request_id=request_id,
        requested_by=requested_by or [],
    )
    parity = parity_record(result)
    payload = CandidatePayload(
        model=spec.model,
        version=str(version),
        run_id=run_id,
        task=result.task,
        artifact=Artifact(
            digest=result.digest,
            location=store.location(result.digest),
            size_bytes=len(result.onnx),
            inputs=[i.model_dump() for i in signature.inputs],
            outputs=[o.model_dump() for o in signature.outputs],
        ),
        metrics=result.metrics,
        parity=parity,
        offered=result.parity.passed,
        reference=result.reference,
        lineage=lineage,
        timings_s=result.timings,
        trained_at=utcnow(),
        experiment=experiment_of(result),
        baselines=result.baselines,
        evaluation=evaluation_report(result, parity if parity_checked else None),
        submission=submission,
    )
    return CandidateEvent(
        event_id=uuid.uuid4(),
        event_type="candidate",
        schema_=current_schema_id("models.candidates"),
        occurred_at=utcnow(),
        producer="trainer",
        payload=payload,
    )


class TrainingRunner:
    def __init__(
        self,
        repo: TrainerRepository,
        store: ArtifactStore,
        contracts: ContractRegistry,
        candidates_topic: str,
        code_version: str,
        importance: ImportanceSettings = DEFAULT_SETTINGS,
    ) -> None:
        self.repo = repo
        self.importance = importance  # rows and repeats; the seed is each catalog entry's
        self.store = store
        self.contracts = contracts
        self.candidates_topic = candidates_topic
        self.code_version = code_version
        self._lock = asyncio.Lock()  # one run at a time per process: training saturates a core

    async def run(self, spec: ModelSpec, trigger: str, request_ids: list[str]) -> RunOutcome:
        async with self._lock:
            contract = self.contracts.get(spec.contract)
            if contract is None:
                return RunOutcome(spec.model, "failed", error=f"unknown contract {spec.contract}")
            data = await self.repo.load_newest(spec.contract, spec.training.max_rows, label_key(contract))
            if data.superseded:
                log.info("%s: %d labeled row(s) superseded by a newer label", spec.model, data.superseded)
            run_id, version = await self.repo.start_run(spec.model, trigger, data.last_seq)
            return await self._train(spec, contract, data, run_id, version, trigger, request_ids)

    async def _train(
        self,
        spec: ModelSpec,
        contract: Any,
        data: TrainingData,
        run_id: uuid.UUID,
        version: int,
        trigger: str,
        request_ids: list[str],
    ) -> RunOutcome:
        try:
            result = await asyncio.to_thread(
                train_model, contract, data.records, training_config(spec, self.importance)
            )
        except (TrainingDataError, ValueError) as exc:
            await self.repo.finish_run(
                run_id, status="failed", row_count=len(data.records), error=str(exc), request_ids=request_ids
            )
            log.warning("%s v%d: training failed: %s", spec.model, version, exc)
            return RunOutcome(spec.model, "failed", version, str(run_id), error=str(exc))
        self.store.put(result.onnx)
        event = candidate_event(
            spec,
            version,
            str(run_id),
            result,
            self.store,
            data.offsets,
            trigger,
            self.code_version,
            request_ids[0] if request_ids else None,
            await self.repo.requesters(request_ids),
        )
        status = "offered" if event.payload.offered else "not_offered"
        await self.repo.finish_run(
            run_id,
            status=status,
            row_count=result.row_count,
            metrics=result.metrics,
            lineage=event.payload.lineage.model_dump(mode="json"),
            request_ids=request_ids,
            candidate=(self.candidates_topic, spec.model.encode(), dumps(event)),
            candidate_event_id=str(event.event_id),
            experiment=event.payload.experiment.model_dump(mode="json") if event.payload.experiment else None,
        )
        log.info(
            "%s v%d: %s (%s rows, %s)",
            spec.model,
            version,
            status,
            result.row_count,
            {k: round(v, 4) for k, v in result.metrics.items()},
        )
        return RunOutcome(spec.model, status, version, str(run_id), result, event)

    async def submit(
        self,
        spec: ModelSpec,
        onnx_bytes: bytes,
        sklearn_bytes: bytes | None,
        submission: Submission,
    ) -> RunOutcome:
        """Take a model built outside the platform: check it against the contract, evaluate it on the
        platform's holdout and offer it to the registry as a candidate (version numbers shared with training
        runs). Raises :class:`SubmissionRefused` naming every problem; a refused submission stores nothing."""
        contract = self.contracts.get(spec.contract)
        if contract is None:
            raise SubmissionRefused([f"dataset contract {spec.contract} is not known to the trainer"], 409)
        model = await asyncio.to_thread(read_onnx, onnx_bytes)
        pipeline = (
            await asyncio.to_thread(load_pipeline, sklearn_bytes) if sklearn_bytes is not None else None
        )
        async with self._lock:
            data = await self.repo.load_newest(spec.contract, spec.training.max_rows, label_key(contract))
            try:
                raw, encoding = prepare(contract, data.records)
            except TrainingDataError as exc:
                raise SubmissionRefused([str(exc)], 409) from None
            problems = contract_mismatches(model, contract, encoding.classes if encoding else None)
            if problems:
                raise SubmissionRefused(problems)
            t = spec.training
            reference = explanation_reference(contract, raw, t.holdout_fraction)
            choice = await asyncio.to_thread(
                decision_threshold,
                contract,
                raw,
                encoding,
                onnx_bytes,
                t.decision_threshold,
                t.holdout_fraction,
            )
            servable, signature = servable_onnx(
                model, contract, encoding, reference, choice.threshold if choice is not None else None
            )
            config = SubmissionConfig(
                holdout_fraction=t.holdout_fraction,
                parity_tolerance=t.parity_tolerance,
                min_label_agreement=t.parity_label_agreement,
                family=submission.family,
                parameters=submission.parameters,
                seed=t.seed,
                threshold=choice,
                importance=ImportanceSettings(self.importance.rows, self.importance.repeats, t.seed),
            )
            try:
                result = await asyncio.to_thread(
                    evaluate_submission, contract, raw, encoding, servable, signature, pipeline, config
                )
            except TrainingDataError as exc:
                raise SubmissionRefused([str(exc)], 409) from None
            last = await self.repo.last_run(spec.model)
            # The run does not consume the new rows: the count trigger of training runs goes on as before.
            run_id, version = await self.repo.start_run(
                spec.model, "submission", int(last["last_seq"]) if last is not None else 0
            )
            self.store.put(result.onnx)
            event = candidate_event(
                spec,
                version,
                str(run_id),
                result,
                self.store,
                data.offsets,
                "submission",
                submission.code_reference or "not declared",
                None,
                [submission.submitted_by],
                submission=submission,
                parity_checked=pipeline is not None,
            )
            status = "offered" if event.payload.offered else "not_offered"
            await self.repo.finish_run(
                run_id,
                status=status,
                row_count=result.row_count,
                metrics=result.metrics,
                lineage=event.payload.lineage.model_dump(mode="json"),
                candidate=(self.candidates_topic, spec.model.encode(), dumps(event)),
                candidate_event_id=str(event.event_id),
            )
        log.info(
            "%s v%d: submission %s by %s %s (%s)",
            spec.model,
            version,
            submission.submission_id,
            submission.submitted_by,
            status,
            {k: round(v, 4) for k, v in result.metrics.items()},
        )
        return RunOutcome(spec.model, status, version, str(run_id), result, event)

    async def retrain(self, spec: ModelSpec, lineage: Lineage) -> TrainingResult:
        """Train again from a recorded lineage: the same rows (by offsets), parameters and seed."""
        contract = self.contracts.get(lineage.contract)
        if contract is None:
            raise LookupError(f"unknown contract {lineage.contract}")
        data = await self.repo.load_lineage(lineage.contract, lineage.offsets, label_key(contract))
        config = training_config(spec, self.importance).model_copy(
            update={
                "family": lineage.family,
                "hyperparameters": lineage.hyperparameters,
                "seed": lineage.seed,
                "holdout_fraction": float(lineage.holdout.get("fraction", spec.training.holdout_fraction)),
            }
        )
        return await asyncio.to_thread(train_model, contract, data.records, config)


@dataclass
class _Window:
    due: float
    triggers: set[str] = field(default_factory=set)


class Scheduler:
    """Watches every model of the catalog and starts debounced runs."""

    def __init__(
        self,
        repo: TrainerRepository,
        runner: TrainingRunner,
        specs: dict[str, ModelSpec],
        poll_s: float = 1.0,
    ) -> None:
        self.repo = repo
        self.runner = runner
        self.specs = specs
        self.poll_s = poll_s
        self._windows: dict[str, _Window] = {}
        self._wake = asyncio.Event()
        self._last_finished: dict[str, float] = {}
        self.outcomes: list[RunOutcome] = []

    def poke(self) -> None:
        self._wake.set()

    async def due_triggers(self, spec: ModelSpec) -> tuple[set[str], list[str]]:
        """The triggers that hold for ``spec`` now, and the ids of its pending training requests."""
        triggers: set[str] = set()
        last = await self.repo.last_run(spec.model)
        last_seq = int(last["last_seq"]) if last is not None else 0
        fresh = await self.repo.rows_since(spec.contract, last_seq)
        policy = spec.training
        if (last is None and fresh >= policy.min_rows) or (
            last is not None and fresh >= policy.retrain_after_new_rows
        ):
            triggers.add("count")
        if policy.schedule_seconds and last is not None and fresh > 0:
            finished = last["finished_at"] or last["started_at"]
            if time.time() - finished.timestamp() >= policy.schedule_seconds:
                triggers.add("schedule")
        requests = await self.repo.pending_requests(spec.model)
        if requests:
            triggers.add("request")
        return triggers, requests

    async def tick(self) -> list[RunOutcome]:
        now = time.monotonic()
        ran: list[RunOutcome] = []
        for spec in list(self.specs.values()):  # a registration may add one meanwhile
            triggers, requests = await self.due_triggers(spec)
            window = self._windows.get(spec.model)
            if triggers and window is None:
                window = self._windows[spec.model] = _Window(now + spec.training.debounce_seconds)
            if window is None:
                continue
            window.triggers |= triggers
            if now < window.due:
                continue
            del self._windows[spec.model]
            # Every replica runs this scheduler over every model, on one shared store: the run needs the
            # model's training lease, and what is due is read again under it (a run another replica just
            # ended may have consumed the requests and the new rows).
            async with self.repo.training_lease(spec.model) as held:
                if not held:
                    log.info("%s: another replica is training it; no run here", spec.model)
                    continue
                triggers, requests = await self.due_triggers(spec)
                if not triggers:
                    continue
                outcome = await self.runner.run(spec, "+".join(sorted(triggers)), requests)
            ran.append(outcome)
            self.outcomes.append(outcome)
        return ran

    async def loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a failed check is retried at the next poll; the process keeps serving
                log.exception("trainer scheduler tick failed")
            self._wake.clear()
            await wait_event(self._wake, self.poll_s)
