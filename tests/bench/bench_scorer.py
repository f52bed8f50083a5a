"""Benchmark: the tollgate scorer against MLServer and a bare Starlette + onnxruntime endpoint, in one run.

Contenders, each its own server process on loopback, all serving the same fitted models (a logistic
regression and a 100-tree random forest trained by the trainer on the 20-feature ``synthetic-risk.v1``
contract; ``tests/bench/scorer/models.py`` proves "the same", and every contender's answers are checked
against in-process onnxruntime before anything is timed):

* ``bare``      -- Starlette + uvicorn (uvloop, httptools, 1 worker) + onnxruntime, no validation, no
                   logging: the limit (``tests/bench/scorer/bare_app.py``). Same request body as tollgate.
* ``mlserver``  -- MLServer 1.7.1 + mlserver-sklearn serving the joblib pipeline, V2 inference protocol
                   (``tests/bench/scorer/mlserver.py``), in its own virtualenv; inference in the server
                   process (``parallel_workers: 0``, see ``--mlserver-workers``), access log off.
* ``mlserver_estimator`` -- a reference row, not a peer for the targets: the same MLServer process serving
                   the pipeline's final estimator alone, fed the preprocessed columns (MLServer's floor).
* ``tollgate``  -- ``python -m tollgate_scorer``, inference logging on (the default), models learnt from a
                   ``models.lifecycle.v1`` promotion event in a fresh topic namespace.
* ``tollgate_nolog`` -- the same with inference logging off (``TOLLGATE_SCORER_INFERENCE_LOG=false``).
* ``tollgate_single`` -- the same with logging on and coalescing off (``TOLLGATE_SCORER_COALESCE=false``):
                   every request scored alone, the scorer before requests arriving together were scored
                   together (``tollgate_scorer/coalesce.py``).
* ``tollgate_unscored`` -- a limit, not a peer: the ``tollgate`` process answering the same body for a model
                   it does not serve (read, parsed, answered 404 without scoring or logging). No server
                   that scores and logs can beat it; where ``tollgate`` falls short of a target, this shows
                   what the HTTP path alone allows on the same core.

Method. Load comes from ``wrk`` (Debian's package): one thread, 8 connections, closed loop, one fixed JSON
body per contender (``tests/bench/scorer/post.lua``). With two cores, every server runs on CPU 1 and wrk on
CPU 0 (``taskset``), the same for every contender (``--server-cpus`` / ``--client-cpus``), so that the load
generator never takes CPU from the server it measures; Kafka and PostgreSQL are not pinned (the inference
log's broker work lands on either core, as it would in production). Servers get single-threaded math
libraries (``OMP_NUM_THREADS=1`` etc.). The contenders run interleaved (bare, MLServer, tollgate, tollgate
without logging; then again), each run preceded by a warm-up, so that drift on a shared machine hits all
alike. Each measurement waits until no tollgate scorer has inference-log events left to deliver
(the servers share one CPU, and a scorer draining its last run's backlog would slow the next contender). Reported: medians over the rounds; ratios are medians of the per-round ratios (each pairs runs made
seconds apart). With every run the server's own CPU time is read from /proc: its share of the core shows
runs that other work disturbed, and requests per server CPU-second (reported with its ratios) is what a
contender does with the CPU it actually got, far steadier than requests/s on a shared machine. Nothing is asserted: targets are
printed as met or not, and everything goes to ``.local/bench/scorer.json``.

Batch: the same 1,000 rows (nulls included) in one request, one connection. The target's figure is the
request alone: the median client-side time of 30 such requests, each followed by a pause so that the
server's background work (the inference log of the previous 1,000 inferences) is not in the way, per row.
Also reported, back to back for ``--batch-duration`` seconds with wrk: per-row time over the answered
requests, with any refusals (a scorer whose inference log cannot keep up answers 503 under its ``refuse``
policy) listed, never counted as answers. The reference: onnxruntime in this process on the same rows,
pinned to the server CPU: one ``run`` on the prepared arrays (the target's reference); also reported,
arrays built from the records plus the run, and 1,000 one-row runs; and the contract check a validating
server cannot skip (the scorer's reader on the same rows, JSON and OIP binary), the batch floor's own limit.

Kafka path (after the HTTP servers are stopped): per round, N scoring requests are pre-loaded into a fresh
namespace's ``scoring.requests.v1`` before a fresh scorer (logging on) starts; its rate is read from the
timestamps of its ``scoring.results.v1`` records (see ``tests/bench/scorer/tollgate.py``). Against it, in
alternating order, raw aiokafka consume → produce loops on the same broker and payloads
(``tests/bench/scorer/raw_loop.py``): at least once (the target's limit), transactional, and transactional
writing an ``inference.log`` record per request as well: the transport of every inference logged exactly
once with nothing parsed, validated or scored, so its ratio to the first loop is the most any path that
keeps the issue's guarantees can reach.

Usage: ``python tests/bench/bench_scorer.py [--duration 10] [--warmup 3] [--repeat 3] [--models lr,rf]
[--skip-mlserver] [--skip-tollgate] [--kafka-events 100000] [--out .local/bench/scorer.json]``. Needs wrk
(``apt-get install -y wrk``) and, for the tollgate contenders, Kafka (``make bench`` starts it). The
MLServer virtualenv is created on first use (a minute or two).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.scorer import mlserver, tollgate  # noqa: E402
from tests.bench.scorer.models import (  # noqa: E402
    FAMILIES,
    BenchModel,
    batch_records,
    build_models,
    contract,
    request_record,
)
from tests.bench.scorer.procs import Server, free_port, http_status  # noqa: E402
from tests.bench.scorer.wrk import WrkMissingError, run_wrk, wrk_path  # noqa: E402
from tollgate_core.settings import DEFAULT_KAFKA_BOOTSTRAP  # noqa: E402
from tollgate_trainer.export import onnx_session  # noqa: E402
from tollgate_trainer.features import FeatureLayout, raw_frame  # noqa: E402

BOOTSTRAP = os.environ.get("TOLLGATE_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
WORK = ROOT / ".local" / "bench" / "scorer"
CONNECTIONS = 8
BATCH_ROWS = 1000
OIP_BINARY = "tollgate_oip_binary"  # batch figure: the tollgate scorer's OIP endpoint, binary tensor data
# Batch figures without the scoring: the same body and client, for a model the scorer does not serve (the
# body is read and parsed, then answered 404; nothing is validated or run). A server answering the batch
# needs at least that plus onnxruntime's own time.
TRANSPORT_JSON = "transport_json"
TRANSPORT_OIP = "transport_oip_binary"
# Each of them: its figure's key, the summary key of its best possible ratio, its label in the report.
TRANSPORTS = (
    (TRANSPORT_JSON, "best_possible_json", "JSON"),
    (TRANSPORT_OIP, "best_possible_oip_binary", "OIP binary"),
)
NO_SUCH_MODEL = "no-such-model"
# Every server gets the same single-threaded math libraries: one pinned core, no spinning thread pools.
SERVER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

COALESCING_OFF = "tollgate_single"
UNSCORED = "tollgate_unscored"
SINGLE_ONLY = {COALESCING_OFF, UNSCORED}  # contenders measured with one-row requests only

TARGETS = {
    "rps_logging_on": 10_000.0,  # tollgate requests/s, logging on, one server core, 8 connections
    "p99_vs_bare": 0.75,  # tollgate p99 over the bare endpoint's p99
    "vs_mlserver": 5.0,  # tollgate requests/s over MLServer's
    "vs_bare": 0.7,  # tollgate requests/s over the bare limit's
    "p99_ms": 2.0,  # tollgate p99 at 8 connections
    "logging_on_vs_off": 0.9,
    "batch_vs_inprocess": 0.9,  # in-process per-row time over tollgate's batch per-row time
    "kafka_events_per_s": 50_000.0,
    "kafka_vs_raw": 0.8,
    # a batch's per-row time over its floor: the same body answered without scoring plus in-process ORT
    "batch_vs_floor": 1.25,  # the Kafka path over a raw consume → produce loop (tests/bench/scorer/raw_loop.py)
}
LABELS = {
    "bare": "bare Starlette+ORT (limit)",
    "mlserver": "MLServer 1.7.1 (sklearn)",
    "mlserver_estimator": "  MLServer, estimator only*",
    "tollgate": "tollgate, logging on",
    "tollgate_nolog": "tollgate, logging off",
    COALESCING_OFF: "tollgate, not coalescing",
    UNSCORED: "  tollgate, not scored (404)*",
}


@dataclass
class Contender:
    key: str
    server: Server
    single_url: Callable[[str], str]
    single_body: dict[str, Path] = field(default_factory=dict)
    batch_body: dict[str, Path] = field(default_factory=dict)
    scores: Callable[[bytes, BenchModel], list[float]] = lambda body, model: []
    owns_server: bool = True  # False for a second contender served by another contender's process
    base_url: str = ""  # the tollgate scorer's, for its other endpoints (/metrics, OIP)


# ------------------------------------------------------------------------------------------------ bodies


def instances_body(rows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"instances": rows})


def instance_scores(response: bytes, model: BenchModel) -> list[float]:
    """Positive-class probability per row: ``predictions`` (bare) or ``results`` (tollgate), field ``score``."""
    body = orjson.loads(response)
    rows = body.get("predictions") or body.get("results") or [body]
    return [float(row["score"]) for row in rows]


# ------------------------------------------------------------------------------------- in-process reference


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the calling thread on ``cpus`` (all CPUs: None) and restore its affinity after."""
    previous = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)  # this thread only: the client stays off the server's CPU
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def settle(contenders: list[Contender], timeout_s: float = 180.0) -> None:
    """Wait until no tollgate scorer still has inference-log events to deliver: all servers share one CPU,
    so a scorer draining the backlog of its last run would take CPU from the next contender's."""
    deadline = time.monotonic() + timeout_s
    for c in contenders:
        if not c.key.startswith("tollgate") or not c.owns_server:
            continue
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{c.base_url}/metrics", timeout=10) as response:
                text = response.read().decode()
            backlog = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("tollgate_scorer_inference_log_backlog{")
            )
            if backlog == 0:
                break
            time.sleep(0.5)


def isolated_batch_us_per_row(
    url: str,
    body: bytes,
    cpus: set[int] | None,
    requests: int = 30,
    pause_s: float = 0.05,
    headers: dict[str, str] | None = None,
    expect: int = 200,
) -> float:
    """Median time of one 1,000-row request sent alone (one connection, a pause after each so that the
    server's background work, the inference log above all, is done before the next), per row. Any answer
    but ``expect`` aborts: a refused request must never pass for a fast one."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = headers or {"Content-Type": "application/json"}
    times = []
    with pinned(cpus), contextlib.closing(conn):
        for i in range(requests + 3):
            started = time.perf_counter()
            conn.request("POST", parts.path, body, headers)
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            if response.status != expect:
                raise RuntimeError(f"{url} answered {response.status} to a batch request, not {expect}")
            if i >= 3:  # warm-up
                times.append(elapsed)
            time.sleep(pause_s)
    return statistics.median(times) / BATCH_ROWS * 1e6


def inprocess_per_row_us(
    model: BenchModel,
    rows: list[dict[str, Any]],
    cpus: set[int] | None,
    seconds: float,
    oip_body: tuple[bytes, int],
) -> dict[str, float]:
    """Per-row microseconds of onnxruntime in this process, pinned like the servers; and of the contract
    check a validating server cannot skip, with the scorer's own reader (its column-wise fast path) on the
    same rows as the JSON body gives them (``read_json``) and as the OIP binary body does (``read_oip``)."""
    from tollgate_scorer import oip
    from tollgate_scorer.instances import InstanceReader
    from tollgate_scorer.signature import read_signature

    layout = FeatureLayout.from_contract(contract())
    session = onnx_session(model.onnx_path.read_bytes(), threads=1)
    reader = InstanceReader(contract(), read_signature(session))
    _, columns = oip.parse_request(*oip_body)

    def arrays(batch: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {
            "numeric": np.array([[r.get(c) for c in layout.numeric] for r in batch], dtype=np.float64),
            "category": np.array([[r.get(c) or "" for c in layout.category] for r in batch], dtype=object),
        }

    feeds = arrays(rows)
    single = [arrays([r]) for r in rows]

    def timed(work: Callable[[], None], rows_per_call: int) -> float:
        work()
        calls, started = 0, time.perf_counter()
        while True:
            work()
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= seconds and calls >= 5:
                return elapsed / (calls * rows_per_call) * 1e6

    def row_by_row() -> None:
        for f in single:
            session.run(None, f)

    with pinned(cpus):
        return {
            "run": timed(lambda: session.run(None, feeds), len(rows)),
            "build_and_run": timed(lambda: session.run(None, arrays(rows)), len(rows)),
            "row_by_row": timed(row_by_row, len(rows)),
            "read_json": timed(lambda: reader.read(rows), len(rows)),
            "read_oip": timed(lambda: reader.read(columns), len(rows)),
        }


# ------------------------------------------------------------------------------------------------ servers


def start_bare(models: dict[str, BenchModel], cpus: str | None) -> Contender:
    port = free_port()
    command = [sys.executable, str(ROOT / "tests/bench/scorer/bare_app.py"), "--port", str(port)]
    command += [f"{m.name}={m.onnx_path}" for m in models.values()]
    server = Server("bare", command, log=WORK / "logs" / "bare.log", cpus=cpus, env=SERVER_ENV)
    server.wait_until(lambda: http_status(f"http://127.0.0.1:{port}/healthz")[0] == 200, "ready", 60)
    return Contender(
        "bare", server, lambda name: f"http://127.0.0.1:{port}/v1/models/{name}/score", scores=instance_scores
    )


def start_mlserver(models: dict[str, BenchModel], cpus: str | None, workers: int) -> list[Contender]:
    """MLServer serving each pipeline, and (a reference) each pipeline's final estimator alone."""
    executable = mlserver.ensure_venv(ROOT / ".local" / "bench" / "mlserver-venv")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    repo = WORK / "mlserver-repo"
    served = {m.name: m.joblib_path for m in models.values()}
    served.update({f"{m.name}-estimator": m.estimator_joblib_path for m in models.values()})
    mlserver.write_repository(
        repo,
        served,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        parallel_workers=workers,
    )
    run_dir = WORK / "mlserver-run"  # MLServer writes .metrics/ and .envs/ under its working directory
    run_dir.mkdir(parents=True, exist_ok=True)
    server = Server(
        "mlserver",
        [str(executable), "start", str(repo)],
        log=WORK / "logs" / "mlserver.log",
        cpus=cpus,
        env=SERVER_ENV,
        cwd=run_dir,
    )
    base = f"http://127.0.0.1:{http_port}"
    for name in served:
        ready_url = f"{base}/v2/models/{name}/ready"
        server.wait_until(partial(lambda url: http_status(url)[0] == 200, ready_url), "ready", 180)

    def scores(body: bytes, model: BenchModel) -> list[float]:
        return mlserver.positive_scores(body, model.signature.positive_index or 0)

    return [
        Contender("mlserver", server, lambda name: f"{base}/v2/models/{name}/infer", scores=scores),
        Contender(
            "mlserver_estimator",
            server,
            lambda name: f"{base}/v2/models/{name}-estimator/infer",
            scores=scores,
            owns_server=False,
        ),
    ]


async def promote(models: dict[str, BenchModel], namespace: str) -> None:
    """Store each ONNX artifact and publish its promotion to production, as the registry would."""
    events = []
    for m in models.values():
        digest, location = tollgate.store_artifact(WORK / "artifacts", m.onnx_path.read_bytes())
        events.append(
            tollgate.promotion_event(m.name, "1", digest, location, m.onnx_path.stat().st_size, m.signature)
        )
    await tollgate.publish_lifecycle(BOOTSTRAP, namespace, events)


async def start_tollgate(
    key: str,
    models: dict[str, BenchModel],
    cpus: str | None,
    namespace: str,
    logging_on: bool,
    coalesce: bool = True,
) -> Contender:
    """A scorer on a namespace whose lifecycle topic already holds the promotions (it folds it from the start)."""
    port = free_port()
    env = {
        **SERVER_ENV,
        **tollgate.scorer_env(
            port=port,
            namespace=namespace,
            artifacts=WORK / "artifacts",
            logging_on=logging_on,
            bootstrap=BOOTSTRAP,
            instance=key,
        ),
        "TOLLGATE_SCORER_COALESCE": "true" if coalesce else "false",
    }
    server = Server(
        key, [sys.executable, "-m", "tollgate_scorer"], log=WORK / "logs" / f"{key}.log", cpus=cpus, env=env
    )
    base = f"http://127.0.0.1:{port}"
    for m in models.values():
        await asyncio.to_thread(
            server.wait_until, partial(tollgate.model_ready, base, m.name), f"serving {m.name}", 180
        )
    return Contender(
        key, server, lambda name: tollgate.score_url(base, name), scores=instance_scores, base_url=base
    )


# --------------------------------------------------------------------------------------------- measuring


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def best_possible(inprocess: float | None, unscored: float | None) -> float | None:
    """In-process time over the least a server needs: the request answered without scoring, then the run."""
    return inprocess / (unscored + inprocess) if inprocess is not None and unscored is not None else None


def over_floor(
    batch: dict[str, float | None], run_us: float | None, key: str, transport: str
) -> float | None:
    """A batch's per-row time over its floor: the same body answered without scoring, plus in-process ORT."""
    floor = batch.get(transport)
    return ratio(batch.get(key), floor + run_us if floor is not None and run_us is not None else None)


def read_limit(floor: float | None, run_us: float | None, read_us: float | None) -> float | None:
    """The least a batch's per-row time over its floor can be for a server that checks the contract: the
    floor plus the run plus the scorer's reader, in-process, over the floor plus the run (building and
    encoding the answers would only add)."""
    if floor is None or run_us is None or read_us is None:
        return None
    return (floor + run_us + read_us) / (floor + run_us)


def fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def check_answers(
    contenders: list[Contender],
    models: dict[str, BenchModel],
    single_rows: list[dict[str, Any]],
    batch_rows: list[dict[str, Any]],
    oip_batch: tuple[bytes, int] | None = None,
) -> dict[str, dict[str, float]]:
    """Every contender must answer 200 with the in-process model's probabilities (same model, served 3 ways);
    so must tollgate's OIP endpoint for the batch as binary tensors (``oip_batch``: body, header length)."""
    agreement: dict[str, dict[str, float]] = {}
    for model in models.values():
        session = onnx_session(model.onnx_path.read_bytes())
        layout = FeatureLayout.from_contract(contract())
        for rows, kind in ((single_rows, "single"), (batch_rows, "batch")):
            feeds = {
                "numeric": np.array([[r.get(c) for c in layout.numeric] for r in rows], dtype=np.float64),
                "category": np.array([[r.get(c) or "" for c in layout.category] for r in rows], dtype=object),
            }
            expected = session.run(None, feeds)[1][:, model.signature.positive_index]
            for c in contenders:
                body = (c.single_body if kind == "single" else c.batch_body)[model.key].read_bytes()
                status, answer = http_status(c.single_url(model.name), body, timeout=30)
                if status != 200:
                    raise RuntimeError(
                        f"{c.key} answered {status} for {model.name} ({kind}): {answer[:300]!r}"
                    )
                got = c.scores(answer, model)
                if len(got) != len(rows):
                    raise RuntimeError(
                        f"{c.key}: {len(got)} scores for {len(rows)} rows ({model.name}, {kind})"
                    )
                diff = float(np.max(np.abs(np.asarray(got) - expected)))
                agreement.setdefault(c.key, {})[f"{model.key}_{kind}"] = diff
                if diff > 1e-5:
                    raise RuntimeError(
                        f"{c.key} disagrees with onnxruntime on {model.name} ({kind}): max |dp| {diff:.2e}"
                    )
                if c.key == "tollgate" and kind == "batch" and oip_batch is not None:
                    request = urllib.request.Request(
                        tollgate.infer_url(c.base_url, model.name),
                        data=oip_batch[0],
                        headers={"Inference-Header-Content-Length": str(oip_batch[1])},
                    )
                    with urllib.request.urlopen(request, timeout=30) as response:
                        length = int(response.headers["Inference-Header-Content-Length"])
                        got = tollgate.oip_binary_scores(response.read(), length)
                    diff = float(np.max(np.abs(np.asarray(got) - expected)))
                    agreement.setdefault(OIP_BINARY, {})[f"{model.key}_batch"] = diff
                    if diff > 1e-5:
                        raise RuntimeError(f"tollgate OIP binary disagrees on {model.name}: {diff:.2e}")
    return agreement


RAW_LOOPS = {
    "raw": "raw aiokafka loop",
    "raw_eos": "raw aiokafka loop, transactional",
    # The limit of every inference logged as a record of its own: the transactional loop writing, besides
    # each result, one inference.log record as the scorer's inference log does (raw_loop.py --log).
    "raw_eos_log": "raw aiokafka loop, transactional, + an inference.log record per request",
}


def result_template(model: BenchModel) -> bytes:
    """One ok result event as the scorer writes it for ``model``: what the raw loops write per request."""
    from tollgate_core.scoring import ScoringResultEvent

    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "scoring_result",
        "schema": "scoring.results.v1",
        "occurred_at": "2026-01-01T00:00:00.000000Z",
        "producer": "scorer",
        "payload": {
            "request_id": str(uuid.uuid4()),
            "model": model.name,
            "status": "ok",
            "version": "1",
            "route": "champion",
            "entity_id": "C-000001",
            "prediction": 0,
            "score": 0.123456789,
            "threshold": 0.5,
        },
    }
    ScoringResultEvent.model_validate(event)
    return orjson.dumps(event)


def log_template(model: BenchModel, instance: dict[str, Any]) -> bytes:
    """One ``inference.log.v1`` event as the scorer writes it for ``model`` and ``instance`` (a Kafka-path
    inference of a binary classifier): what the raw loop with log records writes per request."""
    from tollgate_core.scoring import InferenceLogEvent

    event = {
        "event_type": "inference",
        "schema": "inference.log.v1",
        "producer": "scorer",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-01-01T00:00:00.000000Z",
        "payload": {
            "model": model.name,
            "version": "1",
            "route": "champion",
            "channel": "kafka",
            "contract": contract().schema_id,
            "request_id": str(uuid.uuid4()),
            "entity_id": str(next(iter(instance.values()))),
            "inputs": instance,
            "outputs": {"prediction": 0, "score": 0.123456789, "threshold": 0.5},
            "latency_ms": 0.123,
            "trace_id": None,
        },
    }
    InferenceLogEvent.model_validate(event)
    return orjson.dumps(event)


async def _kafka_round(
    key: str,
    m: BenchModel,
    cpus: str | None,
    events: int,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """One contender on a fresh namespace holding ``events`` pre-loaded requests: its results/s."""
    namespace = await tollgate.prepare_namespace(BOOTSTRAP)
    try:
        await tollgate.preload_requests(BOOTSTRAP, namespace, m.name, rows, events)
        if key == "tollgate":
            await promote({m.key: m}, namespace)
            contender = await start_tollgate(
                f"tollgate_kafka_{m.key}", {m.key: m}, cpus, namespace, logging_on=True
            )
            server = contender.server
        else:
            template = WORK / f"result_{m.key}.json"
            template.write_bytes(result_template(m))
            argv = [sys.executable, str(ROOT / "tests" / "bench" / "scorer" / "raw_loop.py")]
            argv += ["--bootstrap", BOOTSTRAP, "--namespace", namespace, "--result", str(template)]
            if key in ("raw_eos", "raw_eos_log"):
                argv.append("--transactional")
            if key == "raw_eos_log":
                log = WORK / f"log_{m.key}.json"
                log.write_bytes(log_template(m, rows[0]))
                argv += ["--log", str(log), "--log-key", m.name]
            server = Server(f"{key}_{m.key}", argv, log=WORK / "logs" / f"{key}_{m.key}.log", cpus=cpus)
        try:
            return await tollgate.count_results(
                BOOTSTRAP, namespace, events, timeout=max(120.0, events / 1000)
            )
        finally:
            server.stop()
    finally:
        await tollgate.delete_namespace(BOOTSTRAP, namespace)


def limit_line(kafka: dict[str, Any]) -> str:
    """The Kafka path's limit from the same run: the raw loop that also keeps exactly once and writes an
    inference.log record per request, against the target's raw loop."""
    return (
        f"\n    limit: the transactional raw loop writing an inference.log record per request (the transport "
        f"of every inference logged, exactly once, nothing else) reaches {fmt(kafka.get('logged_limit_vs_raw'), '.3f')} "
        f"of the raw loop; the Kafka path reaches {fmt(kafka.get('vs_raw_eos_log'), '.3f')} of that loop"
    )


def _paired(runs: list[dict[str, Any]], limits: list[dict[str, Any]]) -> list[float]:
    """Round by round: the contender's results/s over the limit's."""
    return [
        t["events_per_s"] / r["events_per_s"]
        for t, r in zip(runs, limits, strict=True)
        if t["events_per_s"] and r["events_per_s"]
    ]


async def kafka_path(
    models: dict[str, BenchModel], cpus: str | None, events: int, rows: list[dict[str, Any]], rounds: int
) -> dict[str, Any]:
    """Per model and round: the scorer's Kafka path and its limit, raw aiokafka consume → produce loops
    (``tests/bench/scorer/raw_loop.py``: at least once, and transactional), each on a fresh namespace with
    ``events`` pre-loaded requests, pinned to the same CPUs; the order alternates between rounds."""
    reason = tollgate.kafka_path_missing()
    if reason:
        return {"skipped": reason}
    out: dict[str, Any] = {}
    for m in models.values():
        runs: dict[str, list[dict[str, Any]]] = {"tollgate": [], **{k: [] for k in RAW_LOOPS}}
        for rnd in range(1, rounds + 1):
            order = list(runs) if rnd % 2 else list(reversed(runs))
            for key in order:
                result = await _kafka_round(key, m, cpus, events, rows)
                runs[key].append(result)
                rate = result["events_per_s"]
                label = "Kafka path" if key == "tollgate" else RAW_LOOPS[key]
                print(
                    f"  round {rnd} {m.key} {label}: "
                    + (
                        f"{rate:,.0f} results/s ({result['writes']} transactions)"
                        if rate
                        else f"not measured ({result['results']:,} of {events:,} results in "
                        f"{result['writes']} write(s); needs at least 2)"
                    )
                    + (
                        f", {result['results'] - result['ok']:,} error results"
                        if result["ok"] < result["results"]
                        else ""
                    ),
                    flush=True,
                )

        rates = {k: median([r["events_per_s"] for r in v if r["events_per_s"]]) for k, v in runs.items()}
        out[m.key] = {
            "events_per_s": rates["tollgate"],
            "raw_events_per_s": rates["raw"],
            "raw_eos_events_per_s": rates["raw_eos"],
            "raw_eos_log_events_per_s": rates["raw_eos_log"],
            "vs_raw": median(_paired(runs["tollgate"], runs["raw"])),
            "vs_raw_eos": median(_paired(runs["tollgate"], runs["raw_eos"])),
            "vs_raw_eos_log": median(_paired(runs["tollgate"], runs["raw_eos_log"])),
            # The most any path logging every inference as a record of its own can reach against the
            # target's loop: the transport alone, with exactly once (round by round).
            "logged_limit_vs_raw": median(_paired(runs["raw_eos_log"], runs["raw"])),
            "runs": runs["tollgate"],
            "raw_runs": {k: runs[k] for k in RAW_LOOPS},
        }
    return out


# ------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured wrk run")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of the wrk run before each measured one"
    )
    parser.add_argument(
        "--batch-duration", type=float, default=5.0, help="seconds of each 1,000-row batch run"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are over rounds")
    parser.add_argument("--models", default="lr,rf", help=f"comma-separated, from {','.join(FAMILIES)}")
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument("--skip-tollgate", action="store_true")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument(
        "--kafka-events", type=int, default=100_000, help="requests pre-loaded per Kafka-path round (0: skip)"
    )
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        default=0,
        help="MLServer parallel_workers (0: inference in the server process, its fastest here)",
    )
    default_pin = os.cpu_count() is not None and (os.cpu_count() or 1) >= 2
    parser.add_argument(
        "--server-cpus", default="1" if default_pin else None, help="taskset list for servers"
    )
    parser.add_argument("--client-cpus", default="0" if default_pin else None, help="taskset list for wrk")
    parser.add_argument("--no-pin", action="store_true", help="run servers and wrk unpinned")
    parser.add_argument("--out", default=str(ROOT / ".local" / "bench" / "scorer.json"))
    parser.add_argument(
        "--kafka-only",
        action="store_true",
        help="measure only the Kafka path and its raw loops (printed; nothing written to --out)",
    )
    args = parser.parse_args()
    args.load_at_start = os.getloadavg()
    if args.no_pin:
        args.server_cpus = args.client_cpus = None
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in FAMILIES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    return args


def cpu_set(spec: str | None) -> set[int] | None:
    if spec is None:
        return None
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


async def main() -> int:
    args = parse_args()
    # aiokafka logs errors and retries while a just-created topic gets its leader; the retries succeed.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        wrk = wrk_path()
    except WrkMissingError as exc:
        print(f"bench_scorer: {exc}", file=sys.stderr)
        return 2
    started_at = datetime.now(UTC)
    notes: list[str] = []
    WORK.mkdir(parents=True, exist_ok=True)

    print(f"training {', '.join(args.models)} with the trainer (synthetic-risk.v1) ...", flush=True)
    models = build_models(args.models, WORK / "models")
    for m in models.values():
        print(
            f"  {m.name}: {m.family}, ONNX {m.onnx_path.stat().st_size / 1024:,.0f} KiB, sha256 {m.digest[:12]}, "
            f"holdout AUC {m.result.metrics.get('roc_auc', float('nan')):.3f}",
            flush=True,
        )

    spec = contract()
    layout = FeatureLayout.from_contract(spec)
    request_fields = [spec.entity_id.name, *spec.feature_names]
    single_rows = [{k: request_record(spec)[k] for k in request_fields}]
    batch_rows = [{k: r[k] for k in request_fields} for r in batch_records(spec, BATCH_ROWS)]
    bodies = WORK / "bodies"
    bodies.mkdir(exist_ok=True)
    (bodies / "instances-1.json").write_bytes(instances_body(single_rows))
    (bodies / f"instances-{BATCH_ROWS}.json").write_bytes(instances_body(batch_rows))
    boolean = set(layout.boolean)
    (bodies / "v2-1.json").write_bytes(
        mlserver.v2_body(single_rows, layout.numeric, boolean, layout.category)
    )
    (bodies / f"v2-{BATCH_ROWS}.json").write_bytes(
        mlserver.v2_body(batch_rows, layout.numeric, boolean, layout.category)
    )
    oip_batch, oip_header_length = tollgate.oip_binary_body(batch_rows, spec)
    oip_headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(oip_header_length),
    }

    if args.kafka_only:
        kafka = await kafka_path(models, args.server_cpus, args.kafka_events, batch_rows, args.repeat)
        print(json.dumps({k: {f: v for f, v in r.items() if "runs" not in f} for k, r in kafka.items()}))
        for key, r in kafka.items():
            if isinstance(r, dict):
                print(f"  {key}: {limit_line(r).strip()}")
        return 0

    contenders: list[Contender] = []
    namespace: str | None = None
    try:
        print("starting the contenders ...", flush=True)
        bare = start_bare(models, args.server_cpus)
        contenders.append(bare)
        if args.skip_mlserver:
            notes.append("MLServer skipped (--skip-mlserver)")
        else:
            contenders.extend(start_mlserver(models, args.server_cpus, args.mlserver_workers))
        missing = "skipped (--skip-tollgate)" if args.skip_tollgate else tollgate.scorer_available()
        if missing:
            notes.append(f"tollgate scorer not measured: {missing}")
            print(f"  tollgate scorer not measured: {missing}", flush=True)
        else:
            namespace = await tollgate.prepare_namespace(BOOTSTRAP)
            await promote(models, namespace)
            contenders.append(
                await start_tollgate("tollgate", models, args.server_cpus, namespace, logging_on=True)
            )
            contenders.append(
                await start_tollgate("tollgate_nolog", models, args.server_cpus, namespace, logging_on=False)
            )
            contenders.append(
                await start_tollgate(
                    COALESCING_OFF, models, args.server_cpus, namespace, logging_on=True, coalesce=False
                )
            )
            scorer = next(c for c in contenders if c.key == "tollgate")
            contenders.append(
                Contender(
                    UNSCORED,
                    scorer.server,
                    partial(lambda base, name: tollgate.score_url(base, NO_SUCH_MODEL), scorer.base_url),
                    owns_server=False,
                    base_url=scorer.base_url,
                )
            )
        for m in models.values():
            for rows, suffix in ((single_rows, "1"), (batch_rows, f"{BATCH_ROWS}")):
                frame = layout.model_frame(raw_frame(spec, rows))
                (bodies / f"v2-estimator-{m.key}-{suffix}.json").write_bytes(
                    mlserver.tensor_body(m.preprocessed(frame))
                )
        for c in contenders:
            for m in models.values():
                if c.key == "mlserver":
                    single, batch = "v2-1.json", f"v2-{BATCH_ROWS}.json"
                elif c.key == "mlserver_estimator":
                    single, batch = f"v2-estimator-{m.key}-1.json", f"v2-estimator-{m.key}-{BATCH_ROWS}.json"
                else:
                    single, batch = "instances-1.json", f"instances-{BATCH_ROWS}.json"
                c.single_body[m.key] = bodies / single
                c.batch_body[m.key] = bodies / batch
        agreement = check_answers(
            [c for c in contenders if c.key != UNSCORED],
            models,
            single_rows,
            batch_rows,
            (oip_batch, oip_header_length),
        )
        worst = max((d for per in agreement.values() for d in per.values()), default=0.0)
        print(f"  all contenders answer with the same probabilities (max |dp| {worst:.1e})", flush=True)

        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            m: {c.key: [] for c in contenders} for m in models
        }
        batch_runs: dict[str, dict[str, list[float]]] = {
            m: {c.key: [] for c in contenders if c.key not in SINGLE_ONLY} for m in models
        }
        if any(c.key == "tollgate" for c in contenders):
            for m in models:
                batch_runs[m][OIP_BINARY] = []
                for key, _, _ in TRANSPORTS:
                    batch_runs[m][key] = []
        sustained_runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            m: {c.key: [] for c in contenders if c.key not in SINGLE_ONLY} for m in models
        }
        inproc: dict[str, list[dict[str, float]]] = {m: [] for m in models}
        # A 1,000-row request timed alone, from the client's CPU.
        alone = partial(isolated_batch_us_per_row, cpus=cpu_set(args.client_cpus))
        for rnd in range(1, args.repeat + 1):
            for m in models.values():
                for c in contenders:
                    await asyncio.to_thread(settle, contenders)
                    url = c.single_url(m.name)
                    run_wrk(
                        url,
                        c.single_body[m.key],
                        seconds=args.warmup,
                        connections=CONNECTIONS,
                        cpus=args.client_cpus,
                    )
                    cpu_before = c.server.cpu_seconds()
                    res = run_wrk(
                        url,
                        c.single_body[m.key],
                        seconds=args.duration,
                        connections=CONNECTIONS,
                        cpus=args.client_cpus,
                    )
                    share = (c.server.cpu_seconds() - cpu_before) / res.seconds if res.seconds else 0.0
                    runs[m.key][c.key].append(
                        {
                            **res.as_dict(),
                            "load1": os.getloadavg()[0],
                            "server_cpu_share": share,
                            "rps_per_cpu_second": res.rps / share if share > 0 else None,
                        }
                    )
                    print(
                        f"  round {rnd} {m.key} {c.key:<18} {res.rps:>9,.0f} req/s  p50 {res.p50_ms:6.2f} ms  "
                        f"p99 {res.p99_ms:6.2f} ms  server CPU {share:4.0%}"
                        + (f"  ERRORS {res.errors}" if res.failed else ""),
                        flush=True,
                    )
                if args.skip_batch:
                    continue
                inproc[m.key].append(
                    inprocess_per_row_us(
                        m,
                        batch_rows,
                        cpu_set(args.server_cpus),
                        args.batch_duration / 2,
                        (oip_batch, oip_header_length),
                    )
                )
                for c in contenders:
                    if c.key in SINGLE_ONLY:
                        continue
                    await asyncio.to_thread(settle, contenders)
                    url = c.single_url(m.name)
                    body = c.batch_body[m.key]
                    body_bytes = body.read_bytes()
                    # Alone: the request's own time, the figure the target is about.
                    per_row = await asyncio.to_thread(alone, url, body_bytes)
                    batch_runs[m.key][c.key].append(per_row)
                    if c.key == "tollgate":
                        # The same rows as OIP binary tensors, the way tritonclient sends numpy arrays.
                        per_row_oip = await asyncio.to_thread(
                            alone, tollgate.infer_url(c.base_url, m.name), oip_batch, headers=oip_headers
                        )
                        batch_runs[m.key][OIP_BINARY].append(per_row_oip)
                        floor_json = await asyncio.to_thread(
                            alone, tollgate.score_url(c.base_url, NO_SUCH_MODEL), body_bytes, expect=404
                        )
                        floor_oip = await asyncio.to_thread(
                            alone,
                            tollgate.infer_url(c.base_url, NO_SUCH_MODEL),
                            oip_batch,
                            headers=oip_headers,
                            expect=404,
                        )
                        batch_runs[m.key][TRANSPORT_JSON].append(floor_json)
                        batch_runs[m.key][TRANSPORT_OIP].append(floor_oip)
                        print(
                            f"  round {rnd} {m.key} {'tollgate OIP binary':<18} batch {BATCH_ROWS}: "
                            f"{per_row_oip:8.2f} us/row alone; the same bodies not scored (404): "
                            f"JSON {floor_json:.2f}, OIP binary {floor_oip:.2f} us/row",
                            flush=True,
                        )
                    # Back to back for a while: throughput, where the inference log's delivery rate shows.
                    run_wrk(url, body, seconds=min(args.warmup, 2), connections=1, cpus=args.client_cpus)
                    res = run_wrk(
                        url,
                        body,
                        seconds=args.batch_duration,
                        connections=1,
                        cpus=args.client_cpus,
                        timeout_s=30,
                    )
                    ok = res.requests - res.errors.get("status", 0)
                    sustained = 1e6 * res.seconds / (ok * BATCH_ROWS) if ok > 0 else float("nan")
                    sustained_runs[m.key][c.key].append(
                        {"us_per_row": sustained, "requests": res.requests, "errors": res.errors}
                    )
                    print(
                        f"  round {rnd} {m.key} {c.key:<18} batch {BATCH_ROWS}: {per_row:8.2f} us/row alone, "
                        f"{sustained:8.2f} us/row back to back (answered requests only)"
                        + (f"  ERRORS {res.errors}" if res.failed else ""),
                        flush=True,
                    )
                print(
                    f"  round {rnd} {m.key} in-process onnxruntime: "
                    + ", ".join(f"{k} {v:.2f} us/row" for k, v in inproc[m.key][-1].items()),
                    flush=True,
                )

    finally:
        for c in contenders:
            if c.owns_server:
                c.server.stop()
        if namespace is not None:
            await tollgate.delete_namespace(BOOTSTRAP, namespace)

    # The Kafka path runs after the HTTP servers are gone: its scorer has the server CPU to itself.
    kafka: dict[str, Any]
    if namespace is None:
        kafka = {"skipped": "no tollgate scorer"}
    elif args.kafka_events <= 0:
        kafka = {"skipped": "--kafka-events 0"}
    else:
        kafka = await kafka_path(models, args.server_cpus, args.kafka_events, batch_rows, args.repeat)

    summary = summarise(args, models, contenders, runs, batch_runs, inproc, kafka, agreement)
    for mk, per_contender in sustained_runs.items():
        if mk in summary["results"]:
            summary["results"][mk]["batch_us_per_row"]["back_to_back_runs"] = per_contender
    summary.update(
        {
            "started_at": started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "notes": notes,
            "machine": machine_info(wrk, args),
        }
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print_report(summary)
    print(f"\nwritten to {out}")
    return 0


def summarise(
    args: argparse.Namespace,
    models: dict[str, BenchModel],
    contenders: list[Contender],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
    batch_runs: dict[str, dict[str, list[float]]],
    inproc: dict[str, list[dict[str, float]]],
    kafka: dict[str, Any],
    agreement: dict[str, dict[str, float]],
) -> dict[str, Any]:
    keys = [c.key for c in contenders]
    results: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    for mk, model in models.items():
        per = runs[mk]
        medians = {
            k: {
                "rps": median([r["rps"] for r in per[k]]),
                "p50_ms": median([r["p50_ms"] for r in per[k]]),
                "p99_ms": median([r["p99_ms"] for r in per[k]]),
                "server_cpu_share": median([r["server_cpu_share"] for r in per[k]]),
                "rps_per_cpu_second": median(
                    [r["rps_per_cpu_second"] for r in per[k] if r["rps_per_cpu_second"]]
                ),
                "errors": sum(sum(r["errors"].values()) for r in per[k]),
            }
            for k in keys
        }

        def paired(per: dict[str, list[dict[str, Any]]], a: str, b: str, field: str = "rps") -> float | None:
            if a not in per or b not in per:
                return None
            pairs = zip(per[a], per[b], strict=True)
            return median([x[field] / y[field] for x, y in pairs if x[field] and y[field]])

        ratios = {
            "tollgate_vs_mlserver": paired(per, "tollgate", "mlserver"),
            "tollgate_vs_bare": paired(per, "tollgate", "bare"),
            "logging_on_vs_off": paired(per, "tollgate", "tollgate_nolog"),
            "mlserver_vs_bare": paired(per, "mlserver", "bare"),
            "mlserver_estimator_vs_bare": paired(per, "mlserver_estimator", "bare"),
            # Coalescing: the same scorer with logging on, requests arriving together scored together or not.
            "coalescing_on_vs_off": paired(per, "tollgate", COALESCING_OFF),
            "coalescing_off_vs_bare": paired(per, COALESCING_OFF, "bare"),
            # The limit: the same process answering the same request without scoring it.
            "tollgate_vs_unscored": paired(per, "tollgate", UNSCORED),
            # Latency: p99 over the bare endpoint's p99, and the scorer not coalescing against the bare one.
            "p99_vs_bare": paired(per, "tollgate", "bare", "p99_ms"),
            "p99_coalescing_off_vs_bare": paired(per, COALESCING_OFF, "bare", "p99_ms"),
        }
        # The same ratios per server CPU-second: what each contender does with the CPU it actually got, which
        # other work on a shared machine disturbs far less than requests/s (the broker's share of the
        # inference log is not in the scorer's CPU time).
        per_cpu = {
            name: paired(per, a, b, "rps_per_cpu_second")
            for name, (a, b) in {
                "tollgate_vs_mlserver": ("tollgate", "mlserver"),
                "tollgate_vs_bare": ("tollgate", "bare"),
                "logging_on_vs_off": ("tollgate", "tollgate_nolog"),
                "mlserver_vs_bare": ("mlserver", "bare"),
                "coalescing_on_vs_off": ("tollgate", COALESCING_OFF),
            }.items()
        }
        batch = {k: median(v) for k, v in batch_runs[mk].items()} if any(batch_runs[mk].values()) else {}
        inproc_med = (
            {
                k: median([r[k] for r in inproc[mk]])
                for k in ("run", "build_and_run", "row_by_row", "read_json", "read_oip")
            }
            if inproc[mk]
            else {}
        )
        batch_ratio = ratio(inproc_med.get("run"), batch.get("tollgate"))
        oip_ratio = ratio(inproc_med.get("run"), batch.get(OIP_BINARY))
        json_floor_ratio = over_floor(batch, inproc_med.get("run"), "tollgate", TRANSPORT_JSON)
        oip_floor_ratio = over_floor(batch, inproc_med.get("run"), OIP_BINARY, TRANSPORT_OIP)
        json_read_limit = read_limit(
            batch.get(TRANSPORT_JSON), inproc_med.get("run"), inproc_med.get("read_json")
        )
        oip_read_limit = read_limit(
            batch.get(TRANSPORT_OIP), inproc_med.get("run"), inproc_med.get("read_oip")
        )
        kafka_rate = kafka.get(mk, {}).get("events_per_s") if isinstance(kafka.get(mk), dict) else None
        kafka_vs_raw = kafka.get(mk, {}).get("vs_raw") if isinstance(kafka.get(mk), dict) else None
        kafka_limit = (
            kafka.get(mk, {}).get("logged_limit_vs_raw") if isinstance(kafka.get(mk), dict) else None
        )
        tg = medians.get("tollgate", {})
        checks = [
            ("tollgate requests/s, logging on", ">=", TARGETS["rps_logging_on"], tg.get("rps")),
            ("tollgate p99 / bare endpoint p99", "<=", TARGETS["p99_vs_bare"], ratios["p99_vs_bare"]),
            ("tollgate / MLServer requests/s", ">=", TARGETS["vs_mlserver"], ratios["tollgate_vs_mlserver"]),
            ("tollgate / bare limit requests/s", ">=", TARGETS["vs_bare"], ratios["tollgate_vs_bare"]),
            ("tollgate p99 at 8 connections (ms)", "<=", TARGETS["p99_ms"], tg.get("p99_ms")),
            ("logging on / off requests/s", ">=", TARGETS["logging_on_vs_off"], ratios["logging_on_vs_off"]),
            (
                f"{BATCH_ROWS}-row batch: in-process ORT / tollgate per-row time",
                ">=",
                TARGETS["batch_vs_inprocess"],
                batch_ratio,
            ),
            (
                f"{BATCH_ROWS}-row batch as OIP binary tensors: in-process ORT / tollgate",
                ">=",
                TARGETS["batch_vs_inprocess"],
                oip_ratio,
            ),
            (
                f"{BATCH_ROWS}-row JSON batch / floor (not scored + in-process ORT)",
                "<=",
                TARGETS["batch_vs_floor"],
                json_floor_ratio,
            ),
            (
                "  limit: floor + in-process contract check, over the floor (JSON)",
                "<=",
                TARGETS["batch_vs_floor"],
                json_read_limit,
            ),
            (
                f"{BATCH_ROWS}-row OIP binary batch / floor (not scored + in-process ORT)",
                "<=",
                TARGETS["batch_vs_floor"],
                oip_floor_ratio,
            ),
            (
                "  limit: floor + in-process contract check, over the floor (OIP binary)",
                "<=",
                TARGETS["batch_vs_floor"],
                oip_read_limit,
            ),
            ("Kafka path events/s per process", ">=", TARGETS["kafka_events_per_s"], kafka_rate),
            ("Kafka path / raw aiokafka loop results/s", ">=", TARGETS["kafka_vs_raw"], kafka_vs_raw),
            (
                "  limit: transactional raw loop + a log record per request / raw loop",
                ">=",
                TARGETS["kafka_vs_raw"],
                kafka_limit,
            ),
        ]
        for name, op, target, measured in checks:
            met = None if measured is None else (measured >= target if op == ">=" else measured <= target)
            targets.append(
                {"model": mk, "name": name, "op": op, "target": target, "measured": measured, "met": met}
            )
        results[mk] = {
            "model": model.name,
            "family": model.family,
            "onnx_sha256": model.digest,
            "onnx_bytes": model.onnx_path.stat().st_size,
            "hyperparameters": model.result.hyperparameters,
            "holdout_metrics": model.result.metrics,
            "median": medians,
            "ratios": ratios,
            "ratios_per_server_cpu_second": per_cpu,
            "runs": per,
            "batch_us_per_row": {
                "http_median": batch,
                "inprocess_median": inproc_med,
                "http_runs": batch_runs[mk],
                "inprocess_runs": inproc[mk],
                "inprocess_run_vs_tollgate": batch_ratio,
                "inprocess_run_vs_tollgate_oip_binary": oip_ratio,
                # The best ratio a server could reach over this transport: in-process time over the time of
                # the same request answered without scoring, plus the in-process time.
                **{
                    best_key: best_possible(inproc_med.get("run"), batch.get(key))
                    for key, best_key, _ in TRANSPORTS
                },
                "inprocess_build_and_run_vs_tollgate": ratio(
                    inproc_med.get("build_and_run"), batch.get("tollgate")
                ),
                "inprocess_row_by_row_vs_tollgate": ratio(
                    inproc_med.get("row_by_row"), batch.get("tollgate")
                ),
            },
            "kafka": kafka.get(mk, kafka),
        }
    headline: dict[str, float | None] = {}
    for mk, res in results.items():
        for key, med in res["median"].items():
            headline[f"{mk}.{key}.requests_per_second_median"] = med["rps"]
        headline.update({f"{mk}.ratio_{k}": v for k, v in res["ratios"].items() if v is not None})
        headline.update(
            {
                f"{mk}.ratio_{k}_per_cpu": v
                for k, v in res["ratios_per_server_cpu_second"].items()
                if v is not None
            }
        )
        if res["batch_us_per_row"]["inprocess_run_vs_tollgate"] is not None:
            headline[f"{mk}.ratio_batch_inprocess_vs_tollgate"] = res["batch_us_per_row"][
                "inprocess_run_vs_tollgate"
            ]
        if res["batch_us_per_row"]["inprocess_run_vs_tollgate_oip_binary"] is not None:
            headline[f"{mk}.ratio_batch_inprocess_vs_tollgate_oip_binary"] = res["batch_us_per_row"][
                "inprocess_run_vs_tollgate_oip_binary"
            ]
        kafka_rate = res["kafka"].get("events_per_s") if isinstance(res["kafka"], dict) else None
        if kafka_rate is not None:
            headline[f"{mk}.kafka_events_per_second_median"] = kafka_rate
    return {
        "headline": headline,
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "batch_duration_s": args.batch_duration,
            "repeat": args.repeat,
            "connections": CONNECTIONS,
            "batch_rows": BATCH_ROWS,
            "server_cpus": args.server_cpus,
            "client_cpus": args.client_cpus,
            "mlserver_parallel_workers": args.mlserver_workers,
            "kafka_events": args.kafka_events,
            "contenders": keys,
        },
        "answers_max_abs_diff": agreement,
        "results": results,
        "targets": targets,
    }


def print_report(summary: dict[str, Any]) -> None:
    cfg = summary["config"]
    machine = summary.get("machine", {})
    if machine:
        start, end = machine["load_average_at_start"][0], machine["load_average_at_end"][0]
        print(
            f"\nmachine: {machine['cpus']} CPUs ({machine['cpu_model']}), 1-min load average {start:.1f} at "
            f"start, {end:.1f} at end"
            + ("  (other work shared the CPUs: read the ratios)" if max(start, end) > 2.5 else "")
        )
    for res in summary["results"].values():
        print(
            f"\n{res['model']} ({res['family']}, ONNX {res['onnx_bytes'] / 1024:,.0f} KiB): median of {cfg['repeat']} "
            f"rounds, {cfg['duration_s']:.0f} s each, {cfg['connections']} connections, server on CPU "
            f"{cfg['server_cpus']}, wrk on CPU {cfg['client_cpus']}"
        )
        print(
            f"  {'contender':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'server CPU':>12}{'req/CPU-s':>11}"
            f"{'batch us/row':>14}"
        )
        for key, med in res["median"].items():
            batch = res["batch_us_per_row"]["http_median"].get(key)
            print(
                f"  {LABELS.get(key, key):<28}{fmt(med['rps']):>10}{fmt(med['p50_ms'], '.2f'):>9}"
                f"{fmt(med['p99_ms'], '.2f'):>9}{fmt(med['server_cpu_share'], '.0%'):>12}"
                f"{fmt(med['rps_per_cpu_second']):>11}{fmt(batch, '.2f'):>14}"
                + (f"  errors {med['errors']}" if med["errors"] else "")
            )
        oip = res["batch_us_per_row"]["http_median"].get(OIP_BINARY)
        if oip is not None:
            print(f"  {'tollgate, OIP binary tensors':<28}{'':>51}{fmt(oip, '.2f'):>14}")
        for key, best_key, label in TRANSPORTS:
            floor = res["batch_us_per_row"]["http_median"].get(key)
            if floor is not None:
                best = res["batch_us_per_row"][best_key]
                print(
                    f"  {'  ' + label + ', not scored':<28}{'':>51}{fmt(floor, '.2f'):>14}  (read, parsed, 404; "
                    f"best possible ratio in-process / (this + in-process) {fmt(best, '.2f')})"
                )
        inproc = res["batch_us_per_row"]["inprocess_median"]
        if inproc:
            print(
                f"  {'in-process onnxruntime':<28}{'':>51}{fmt(inproc['run'], '.2f'):>14}  (one run on prepared "
                f"arrays; with array building {fmt(inproc['build_and_run'], '.2f')}, row by row "
                f"{fmt(inproc['row_by_row'], '.2f')})"
            )
            print(
                f"  {'in-process contract check':<28}{'':>51}{fmt(inproc.get('read_json'), '.2f'):>14}  (the scorer's "
                f"reader on the JSON rows; on the OIP binary columns {fmt(inproc.get('read_oip'), '.2f')})"
            )
        r = res["ratios"]
        print(
            f"  ratios (median of per-round ratios): tollgate/MLServer {fmt(r['tollgate_vs_mlserver'], '.2f', 'x')}, "
            f"tollgate/bare {fmt(r['tollgate_vs_bare'], '.2f')}, logging on/off {fmt(r['logging_on_vs_off'], '.2f')}, "
            f"MLServer/bare {fmt(r['mlserver_vs_bare'], '.3f')}"
        )
        print(
            f"  coalescing: on/off {fmt(r['coalescing_on_vs_off'], '.2f')} (off/bare "
            f"{fmt(r['coalescing_off_vs_bare'], '.2f')}); p99/bare p99 {fmt(r['p99_vs_bare'], '.2f')} (not "
            f"coalescing {fmt(r['p99_coalescing_off_vs_bare'], '.2f')}); tollgate/not scored (the HTTP path's "
            f"limit) {fmt(r['tollgate_vs_unscored'], '.2f')}"
        )
        c = res["ratios_per_server_cpu_second"]
        print(
            f"  per server CPU-second:               tollgate/MLServer {fmt(c['tollgate_vs_mlserver'], '.2f', 'x')}, "
            f"tollgate/bare {fmt(c['tollgate_vs_bare'], '.2f')}, logging on/off {fmt(c['logging_on_vs_off'], '.2f')}, "
            f"MLServer/bare {fmt(c['mlserver_vs_bare'], '.3f')}"
        )
        if UNSCORED in res["median"]:
            print(
                "  * a limit, not a peer: the logging-on scorer answering the same body for a model it does not "
                "serve (read, parsed, 404; nothing scored or logged; wrk counts the 404s as errors)"
            )
        if "mlserver_estimator" in res["median"]:
            print(
                "  * reference, not a target peer: MLServer serving the pipeline's final estimator alone, the "
                "client sending the pipeline's preprocessed columns as one FP64 tensor (MLServer's floor for "
                f"this model; vs bare {fmt(r['mlserver_estimator_vs_bare'], '.3f')})"
            )
        kafka = res["kafka"]
        print(
            "  Kafka path: "
            + (
                f"{kafka['events_per_s']:,.0f} results/s; raw loop {fmt(kafka.get('raw_events_per_s'))}, "
                f"transactional {fmt(kafka.get('raw_eos_events_per_s'))}; per-round median ratio "
                f"{fmt(kafka.get('vs_raw'), '.3f')} (vs transactional {fmt(kafka.get('vs_raw_eos'), '.3f')}, "
                f"vs transactional + a log record per request {fmt(kafka.get('vs_raw_eos_log'), '.3f')})"
                + limit_line(kafka)
                if kafka.get("events_per_s") is not None
                else f"not measured ({kafka.get('skipped', 'n/a')})"
            )
        )
    print("\ntargets")
    for t in summary["targets"]:
        state = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        measured = "n/a" if t["measured"] is None else f"{t['measured']:,.2f}"
        print(
            f"  {t['model']:<3} {t['name']:<58} {t['op']} {t['target']:<8g} measured {measured:>10}  {state}"
        )
    for note in summary.get("notes", []):
        print(f"note: {note}")


def machine_info(wrk: str, args: argparse.Namespace) -> dict[str, Any]:
    model_name = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wrk_version = subprocess.run(
        [wrk, "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model_name,
        "load_average_at_start": args.load_at_start,
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "wrk": wrk_version.strip(),
    }


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
