"""Wires the trainer: training store fed from ``events.validated``, training requests, the debounced
scheduler, the artifact store and the candidate outbox; HTTP for operations. Nothing runs at import."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field

from tollgate_core.apikeys import DATA_SCIENTIST, KeyVerifier, Principal
from tollgate_core.artifacts import DirectoryArtifactStore, sha256_digest
from tollgate_core.auth import READERS, key_verifier, require
from tollgate_core.contracts import ContractRegistry
from tollgate_core.db import create_pool, ping
from tollgate_core.events import dumps, utcnow
from tollgate_core.http import create_http_app, error_response
from tollgate_core.kafka import BatchSink, producer_config
from tollgate_core.lifecycle import (
    Submission,
    TrainingRequestEvent,
    TrainingRequestPayload,
    evaluation_digest,
)
from tollgate_core.limits import TEXT_PATTERN, BodyLimits
from tollgate_core.models import model_catalog
from tollgate_core.registrations import (
    MODEL,
    Applied,
    LiveCatalog,
    model_digest,
    registration_key,
    start_following,
)
from tollgate_core.runtime import CompactedFollower, bind_all, build_sink, per_record
from tollgate_core.submissions import SubmissionAttemptEvent
from tollgate_core.topics import Topics, current_schema_id
from tollgate_trainer import SERVICE
from tollgate_trainer.attempts import FILES_STATE, SubmissionAttempts, submitted_file
from tollgate_trainer.consumers import consumer_specs
from tollgate_trainer.importance import ImportanceSettings
from tollgate_trainer.runner import Scheduler, TrainingRunner
from tollgate_trainer.settings import TrainerSettings
from tollgate_trainer.store import StoredRow, TrainerRepository
from tollgate_trainer.submission import SubmissionRefused

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def _code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"tollgate-trainer {version('tollgate-trainer')}"


# Module level: FastAPI resolves the annotations of route functions from the module's globals.
TrainingRequester = Annotated[Principal, Depends(require("ask for training", DATA_SCIENTIST))]
Submitter = Annotated[Principal, Depends(require("submit a model", DATA_SCIENTIST))]
SUBMISSION_ROUTE = r"/v1/models/[^/]+/submissions"
FORM_FIELDS_BYTES = 1024 * 1024


class TrainRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500, pattern=TEXT_PATTERN)
    requested_by: str | None = Field(
        None,
        max_length=128,
        description="Ignored: the request is recorded as made by the principal of the API key used.",
        json_schema_extra={"deprecated": True},
    )


class Trainer:
    """One trainer process, connected: build it with :meth:`create`."""

    def __init__(
        self,
        *,
        settings: TrainerSettings,
        metrics_registry: CollectorRegistry,
        pool: asyncpg.Pool,
        keys: KeyVerifier,
        repo: TrainerRepository,
        producer: AIOKafkaProducer,
        contracts: ContractRegistry,
        live: LiveCatalog,
        runner: TrainingRunner,
        scheduler: Scheduler,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.metrics_registry = metrics_registry
        self.pool = pool
        self.keys = keys
        self.repo = repo
        self.producer = producer
        self.contracts = contracts
        # The runner and the scheduler hold these very objects, so a registration is in force for the next run.
        self.live = live
        self.specs = live.models
        self.runner = runner
        self.scheduler = scheduler
        self.rows = Counter(
            "tollgate_trainer_rows", "Labeled rows stored", ["contract"], registry=metrics_registry
        )
        self.runs = Counter(
            "tollgate_trainer_runs",
            "Training runs by outcome",
            ["model", "status"],
            registry=metrics_registry,
        )
        self.known_contracts = {s.contract for s in self.specs.values()}
        live.on_change(self._registered)

    @classmethod
    async def create(cls, settings: TrainerSettings) -> TrainerService:
        """Connect to PostgreSQL and Kafka, follow the registrations up to their end (models registered
        live are known before the first row or request is read) and start the consumers; what started is
        stopped again if a later step fails."""
        s = settings
        contracts = ContractRegistry.from_directory(s.contracts_dir)
        # The schemas/ seed, then every registration followed (tollgate_core.registrations).
        live = LiveCatalog(contracts, model_catalog(s.models_path()))
        metrics_registry = CollectorRegistry()
        async with contextlib.AsyncExitStack() as undo:
            pool = await create_pool(s.database_url, SERVICE, MIGRATIONS, max_size=4)
            undo.push_async_callback(pool.close)
            keys = await key_verifier(pool)
            repo = TrainerRepository(pool)
            runner = TrainingRunner(
                repo,
                DirectoryArtifactStore(s.artifact_path()),
                contracts,
                Topics(s.topic_namespace).models_candidates,
                s.code_version or _code_version(),
                ImportanceSettings(s.importance_rows, s.importance_repeats),
            )
            scheduler = Scheduler(repo, runner, live.models, poll_s=s.poll_seconds)
            producer = AIOKafkaProducer(**producer_config(s.kafka_bootstrap, s.client_id(SERVICE)))
            await producer.start()
            undo.push_async_callback(producer.stop)
            trainer = cls(
                settings=s,
                metrics_registry=metrics_registry,
                pool=pool,
                keys=keys,
                repo=repo,
                producer=producer,
                contracts=contracts,
                live=live,
                runner=runner,
                scheduler=scheduler,
            )
            specs = bind_all(
                consumer_specs(s),
                {
                    f"{SERVICE}-store": trainer.store_rows,
                    f"{SERVICE}-requests": per_record(trainer.on_request),
                    f"{SERVICE}-registrations": per_record(live.apply_record),
                },
            )
            registrations = await start_following(
                specs[f"{SERVICE}-registrations"], live, s, registry=metrics_registry
            )
            undo.push_async_callback(registrations.stop)
            sink = build_sink(specs[f"{SERVICE}-store"], s, registry=metrics_registry)
            requests_sink = build_sink(specs[f"{SERVICE}-requests"], s, registry=metrics_registry)
            await sink.start()
            undo.push_async_callback(sink.stop)
            await requests_sink.start()
            undo.push_async_callback(requests_sink.stop)
            service = TrainerService(trainer, registrations, sink, requests_sink)
            undo.pop_all()
        return service

    def _registered(self, applied: Applied) -> None:
        if applied.kind == "model":
            self.known_contracts = {s.contract for s in self.specs.values()}
            self.scheduler.poke()

    async def store_rows(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        rows = []
        for rec in records:  # a record that is not a validated event raises: the runtime dead-letters it
            doc = orjson.loads(rec.value or b"")
            if not isinstance(doc, dict):
                raise TypeError(f"not a validated event: a JSON {type(doc).__name__}")
            if not doc.get("labeled") or doc.get("schema") not in self.known_contracts:
                continue
            rows.append(
                StoredRow(
                    doc["event_id"],
                    doc["schema"],
                    rec.topic,
                    rec.partition,
                    rec.offset,
                    datetime.fromisoformat(doc["occurred_at"]),
                    orjson.dumps(doc["payload"]),
                )
            )
        added = await self.repo.add_rows(rows)
        for contract in {r.contract for r in rows}:
            self.rows.labels(contract).inc(sum(1 for r in rows if r.contract == contract))
        if added:
            self.scheduler.poke()

    async def on_request(self, body: bytes) -> None:
        event = TrainingRequestEvent.model_validate_json(body)
        if event.payload.model not in self.specs:
            raise ValueError(f"training request for unknown model {event.payload.model!r}")
        await self.repo.add_request(
            str(event.event_id), event.payload.model, event.payload.reason, event.payload.requested_by
        )
        self.scheduler.poke()

    async def relay(self) -> None:
        await self.repo.outbox.relay(self.producer)

    async def record_attempt(self, event: SubmissionAttemptEvent) -> None:
        """A submission attempt into the outbox (``models.submissions``), committed before the answer."""
        await self.repo.add_to_outbox(
            self.topics.models_submissions, event.payload.model.encode(), dumps(event)
        )

    async def _db_ready(self) -> None:
        await ping(self.pool)

    def body_limits(self) -> BodyLimits:
        """The service's limits, and room for two model files on the submission route."""
        limits = self.settings.body_limits()
        upload = 2 * self.settings.submission_max_file_bytes + FORM_FIELDS_BYTES
        return BodyLimits(limits.max_body_bytes, limits.max_json_depth, ((SUBMISSION_ROUTE, upload),))

    def http_app(self, kafka_ready: Callable[[], Awaitable[None]]) -> FastAPI:
        app = create_http_app(
            title="tollgate trainer",
            version="1.0.0",
            description="Continuous training to ONNX; operations API. Reading runs needs a read-only role; "
            "asking for training needs the data-scientist role.",
            registry=self.metrics_registry,
            limits=self.body_limits(),
            checks={"kafka": kafka_ready, "postgres": self._db_ready},
            keys=self.keys,
        )
        # Outside the request limits: it records the limits' refusals too (tollgate_trainer.attempts).
        app.add_middleware(
            SubmissionAttempts,
            route=SUBMISSION_ROUTE,
            keys=self.keys,
            record=self.record_attempt,
            producer="trainer-api",
        )
        reader = Depends(require("read training runs", READERS))

        @app.get("/v1/runs", tags=["training"], summary="Recent training runs", dependencies=[reader])
        async def runs(model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
            return await self.repo.runs(model, min(max(limit, 1), 500))

        @app.get(
            "/v1/models",
            tags=["training"],
            summary="The models this trainer trains (the schemas/ seed and every registration applied)",
            dependencies=[reader],
        )
        async def models() -> list[dict[str, Any]]:
            out = []
            for name, spec in sorted(self.specs.items()):
                registered = self.live.registrations.get(registration_key(MODEL, name))
                out.append(
                    {
                        "model": name,
                        "contract": spec.contract,
                        "digest": model_digest(spec),
                        "contract_known": self.contracts.get(spec.contract) is not None,
                        "registered_by": registered.registered_by if registered is not None else None,
                    }
                )
            return out

        @app.post(
            "/v1/models/{model}/train",
            tags=["training"],
            status_code=202,
            summary="Ask for a training run (published on training.requests, debounced)",
            responses={404: error_response("Unknown model")},
        )
        async def train(model: str, body: TrainRequest, who: TrainingRequester) -> dict[str, str]:
            spec = self.specs.get(model)
            if spec is None:
                raise HTTPException(404, f"unknown model {model!r}; known: {', '.join(sorted(self.specs))}")
            event = TrainingRequestEvent(
                event_id=uuid.uuid4(),
                event_type="training_requested",
                schema_=current_schema_id("training.requests"),
                occurred_at=utcnow(),
                producer="trainer-api",
                payload=TrainingRequestPayload(
                    model=model, contract=spec.contract, reason=body.reason, requested_by=who.name
                ),
            )
            await self.producer.send_and_wait(self.topics.training_requests, dumps(event), key=model.encode())
            return {"event_id": str(event.event_id), "status": "requested"}

        file_limit = self.settings.submission_max_file_bytes

        def unprocessable(field: str, problems: list[str]) -> HTTPException:
            return HTTPException(
                422, [{"loc": ["body", field], "msg": p, "type": "value_error"} for p in problems]
            )

        async def read_file(request: Request, upload: UploadFile, field: str, what: str) -> tuple[bytes, str]:
            """The file's bytes and sha256, hashed once: kept for the record of the attempt and for the
            submission."""
            data = await upload.read(file_limit + 1)
            whole = len(data) <= file_limit
            digest = sha256_digest(data) if whole else ""
            files = getattr(request.state, FILES_STATE, None)
            if files is None:
                files = []
                setattr(request.state, FILES_STATE, files)
            files.append(submitted_file(field, data, whole=whole, sha256=digest))
            if not whole:
                raise HTTPException(413, f"the {what} file exceeds {file_limit} bytes")
            return data, digest

        @app.post(
            "/v1/models/{model}/submissions",
            tags=["submissions"],
            status_code=201,
            summary="Submit a model built outside the platform (ONNX, optional skops pipeline); it is checked "
            "against the model's contract, evaluated on the platform's holdout and offered to the registry",
            responses={
                404: error_response("Unknown model"),
                409: error_response("The model's contract or training data is not there to evaluate it"),
                413: error_response("A file over the limit"),
                503: error_response("A refused attempt that could not be recorded in the audit trail"),
                # 422 keeps FastAPI's validation shape (declared for every route): one entry per problem,
                # its loc the form field (onnx, sklearn, parameters) — e.g. each mismatched input or output.
            },
        )
        async def submit(
            request: Request,
            model: str,
            who: Submitter,
            onnx: Annotated[UploadFile, File(description="The ONNX model (what serves).")],
            notes: Annotated[str, Form(min_length=1, max_length=4000, pattern=TEXT_PATTERN)],
            sklearn: Annotated[
                UploadFile | None,
                File(description="Optional scikit-learn pipeline in the skops format (never a pickle)."),
            ] = None,
            code_reference: Annotated[str | None, Form(max_length=500, pattern=TEXT_PATTERN)] = None,
            parameters: Annotated[
                str | None, Form(max_length=65536, description="Declared training parameters (JSON object).")
            ] = None,
            training_data: Annotated[str | None, Form(max_length=2000, pattern=TEXT_PATTERN)] = None,
            family: Annotated[str | None, Form(max_length=100, pattern=TEXT_PATTERN)] = None,
        ) -> dict[str, Any]:
            # Read (and digested for the record of the attempt) first, whatever is refused next.
            onnx_bytes, onnx_digest = await read_file(request, onnx, "onnx", "ONNX")
            sklearn_bytes, sklearn_digest = (
                await read_file(request, sklearn, "sklearn", "skops") if sklearn is not None else (None, None)
            )
            spec = self.specs.get(model)
            if spec is None:
                raise HTTPException(404, f"unknown model {model!r}; known: {', '.join(sorted(self.specs))}")
            declared: dict[str, Any] = {}
            if parameters:
                try:
                    declared = orjson.loads(parameters)
                except orjson.JSONDecodeError as exc:
                    raise unprocessable("parameters", [f"not JSON: {exc}"]) from None
                if not isinstance(declared, dict):
                    raise unprocessable("parameters", ["a JSON object is needed"])
                if "\x00" in parameters or "\\u0000" in parameters:  # PostgreSQL text cannot hold NUL
                    raise unprocessable("parameters", ["a NUL character is not accepted"])
            submission = Submission(
                submission_id=str(uuid.uuid4()),
                submitted_by=who.name,
                notes=notes,
                code_reference=code_reference,
                parameters=declared,
                training_data=training_data,
                family=family,
                onnx_digest=onnx_digest,
                sklearn_digest=sklearn_digest,
            )
            try:
                outcome = await self.runner.submit(spec, onnx_bytes, sklearn_bytes, submission)
            except SubmissionRefused as exc:
                log.info("%s: submission by %s refused: %s", model, who.name, exc)
                if exc.status == 422:
                    raise unprocessable(exc.field, exc.problems) from None
                raise HTTPException(exc.status, str(exc)) from None
            assert outcome.candidate is not None
            candidate = outcome.candidate.payload
            self.runs.labels(model, f"submission_{outcome.status}").inc()
            return {
                "submission_id": submission.submission_id,
                "model": model,
                "version": candidate.version,
                "run_id": outcome.run_id,
                "status": outcome.status,
                "submitted_by": who.name,
                "artifact_digest": candidate.artifact.digest,
                "onnx_digest": submission.onnx_digest,
                "candidate_event_id": str(outcome.candidate.event_id),
                "evaluation_digest": evaluation_digest(candidate.evaluation)
                if candidate.evaluation
                else None,
                "holdout_rows": candidate.evaluation.holdout_rows if candidate.evaluation else None,
                "metrics": candidate.metrics,
                "parity": candidate.evaluation.parity.model_dump(mode="json")
                if candidate.evaluation and candidate.evaluation.parity
                else None,
            }

        return app


class TrainerService:
    """The trainer with its consumers running: what ``__main__`` serves and stops."""

    def __init__(
        self,
        trainer: Trainer,
        registrations: CompactedFollower,
        sink: BatchSink,
        requests_sink: BatchSink,
    ) -> None:
        self.trainer = trainer
        self.registrations = registrations
        self.sink = sink
        self.requests_sink = requests_sink

    def http_app(self) -> FastAPI:
        return self.trainer.http_app(self._kafka_ready)

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [
            self.sink.run,
            self.requests_sink.run,
            self.registrations.run,
            self.trainer.scheduler.loop,
            self.trainer.relay,
        ]

    async def stop(self) -> None:
        await self.registrations.stop()
        await self.requests_sink.stop()
        await self.sink.stop()
        await self.trainer.producer.stop()
        await self.trainer.pool.close()

    async def _kafka_ready(self) -> None:
        if not self.sink.healthy:
            raise RuntimeError("training-store consumer not running")
        if not self.requests_sink.healthy:
            raise RuntimeError("training-request consumer not running")
        if not self.registrations.healthy:
            raise RuntimeError("registrations follower not running")
        await self.trainer.producer.client.fetch_all_metadata()
