"""``make demo``: the closed loop on the local stack, watched live.

A client of the platform like any other: it sends data to ingest's HTTP gateway, scoring traffic to the
scorer, reads the registry, monitor and audit-log APIs, and follows the platform's topics to draw the
timeline. The services themselves run as separate processes (``make up``).

1. One API key per role is created (shown once, stored hashed); each call below uses the key of the role
   it needs (producer for ingest, data-scientist for a training request, scorer-client for scoring ...).
2. The ISLP ``Default`` credit data (a real data set shipped in the ``ISLP`` package, contract
   ``credit-default.v1``) is replayed as a live labeled event stream; a few bad records show the validator.
3. The trainer trains a first model, converts it to ONNX and checks parity; the registry gates it and, as
   the first version, puts it in production; the scorer loads it.
4. Scoring traffic starts. Part-way, the population shifts (low incomes and students over-represented):
   the monitor sees drift for several consecutive windows, raises an alert and asks for retraining.
5. The trainer retrains on the newest data; the registry gates the candidate, stages it as a canary and
   promotes it after the canary period.
6. Summary: timeline, figures, the dashboard URL, the audit trail's verification, the API keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from tollgate_core.apikeys import ROLES, create_key, ensure_schema
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.settings import DEFAULT_DATABASE_URL, DEFAULT_KAFKA_BOOTSTRAP
from tollgate_core.topics import Topics

MODEL = "credit-default-risk"
SCHEMA = "credit-default.v1"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How the scenario runs (``tollgate demo --help``)."""

    initial_rows: int = 4000  # records replayed before scoring starts
    shifted_rows: int = 3000  # records of the shifted population
    rate: float = 150.0  # scoring requests per second
    calm_seconds: float = 40.0  # scoring before the shift
    timeout: float = 300.0  # longest wait for each step


@dataclass
class Endpoints:
    ingest: str = "http://127.0.0.1:8081"
    scorer: str = "http://127.0.0.1:8080"
    registry: str = "http://127.0.0.1:8082"
    monitor: str = "http://127.0.0.1:8083"
    audit: str = "http://127.0.0.1:8084"
    trainer: str = "http://127.0.0.1:8086"


@dataclass
class State:
    started: float = field(default_factory=time.monotonic)
    phase: str = "starting"
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    sent: int = 0
    rejected_sent: int = 0
    scored: int = 0
    score_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    production: str | None = None
    staging: str | None = None
    drift_on: bool = False
    alerts: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    candidates: list[tuple[float, str, bool]] = field(default_factory=list)  # (t, version, offered)
    rejected_versions: set[str] = field(default_factory=set)
    alert_at: float | None = None

    def mark(self, kind: str, text: str) -> None:
        self.timeline.append((time.monotonic() - self.started, kind, text))


def _render(state: State) -> Group:
    status = Table.grid(padding=(0, 2))
    status.add_row("phase", f"[bold]{state.phase}[/]")
    status.add_row("events sent", f"{state.sent:,} (+{state.rejected_sent} invalid on purpose)")
    p50 = statistics.median(state.latencies_ms[-2000:]) if state.latencies_ms else 0.0
    status.add_row("scored", f"{state.scored:,}  errors {state.score_errors}  client p50 {p50:.2f} ms")
    status.add_row("serving", f"production v{state.production or '-'}  staging v{state.staging or '-'}")
    status.add_row("population", "[red]shifted[/]" if state.drift_on else "[green]as in training[/]")
    events = Table(show_header=True, header_style="bold", expand=True)
    events.add_column("t+s", justify="right", width=7)
    events.add_column("what", width=12)
    events.add_column("detail")
    for t, kind, text in state.timeline[-14:]:
        events.add_row(f"{t:6.1f}", kind, text)
    return Group(Panel(status, title="tollgate demo"), events)


async def _wait_ready(client: httpx.AsyncClient, url: str, within: float = 120) -> None:
    deadline = time.monotonic() + within
    last = ""
    while time.monotonic() < deadline:
        try:
            r = await client.get(url, timeout=3)
            if r.status_code == 200:
                return
            last = r.text[:200]
        except httpx.HTTPError as exc:
            last = str(exc)
        await asyncio.sleep(0.5)
    raise SystemExit(f"{url} is not ready after {within:.0f}s: {last} (is the stack up? `make up`)")


def _instance(record: dict[str, Any]) -> dict[str, Any]:
    """What a scoring client sends for a replayed record: its fields without the label and the demo's tags."""
    return {k: v for k, v in record.items() if k != "default" and not k.startswith("_")}


def _shifted(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The drifted population: students and low incomes over-represented (a covariate shift)."""
    out = dict(record)
    if rng.random() < 0.6:
        out["student"] = "Yes"
    out["income"] = round(float(record["income"]) * rng.uniform(0.25, 0.55), 2)
    return out


async def _follow(bootstrap: str, topics: Topics, state: State) -> None:
    """Draw the timeline from the platform's own topics."""
    consumer = AIOKafkaConsumer(
        topics.models_candidates,
        topics.models_lifecycle,
        topics.monitor_alerts,
        topics.training_requests,
        **kafka_security(),
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
    )
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    _on_event(rec.topic, orjson.loads(rec.value or b"{}"), state)
    finally:
        await consumer.stop()


def _on_event(topic: str, doc: dict[str, Any], state: State) -> None:
    p = doc.get("payload", {})
    if topic.endswith("models.candidates.v1"):
        state.candidates.append((time.monotonic(), str(p.get("version")), bool(p.get("offered"))))
        m = p.get("metrics", {})
        state.mark(
            "candidate",
            f"v{p.get('version')} trained ({p.get('lineage', {}).get('trigger')}): "
            f"AUC {m.get('roc_auc', 0):.3f}, parity {'ok' if p.get('parity', {}).get('passed') else 'FAILED'}, "
            f"{p.get('lineage', {}).get('row_count')} rows",
        )
    elif topic.endswith("models.lifecycle.v1"):
        state.production = p.get("production_version") or state.production
        state.staging = p.get("staging_version")
        if p.get("transition") in ("rejected", "refused"):
            state.rejected_versions.add(str(p.get("version")))
        weight = p.get("canary_weight")
        extra = f" (canary {weight:.0%})" if weight else ""
        state.mark(
            "lifecycle",
            f"v{p.get('version')} {p.get('transition')} → {p.get('to_stage')}{extra}: "
            f"{(p.get('reason') or '')[:90]}",
        )
    elif topic.endswith("monitor.alerts.v1"):
        feats = ", ".join(
            f"{f['feature']} {f['test']} {f['effect']:.2f}" for f in p.get("features", []) if f.get("drifted")
        )[:90]
        state.alerts.append(f"{p.get('kind')} {p.get('state')}")
        if p.get("state") == "raised" and state.alert_at is None:
            state.alert_at = time.monotonic()
        state.mark(
            "alert",
            f"{p.get('kind')} {p.get('state')} on v{p.get('version')} after "
            f"{p.get('windows')} windows: {feats}",
        )
    elif topic.endswith("training.requests.v1"):
        state.mark("retrain", f"requested by {p.get('requested_by')}: {(p.get('reason') or '')[:90]}")


async def _send_events(
    client: httpx.AsyncClient,
    ep: Endpoints,
    records: list[dict[str, Any]],
    state: State,
    batch: int = 250,
    pause: float = 0.05,
) -> None:
    for i in range(0, len(records), batch):
        chunk = records[i : i + batch]
        events = [
            {
                "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo/{r['customer_id']}/{r.get('_n', 0)}")),
                "schema": SCHEMA,
                "producer": "demo-replay",
                "payload": {k: v for k, v in r.items() if not k.startswith("_")},
            }
            for r in chunk
        ]
        r = await client.post(
            f"{ep.ingest}/v1/events",
            json={"events": events},
            headers={"x-api-key": state.keys["producer"]},
            timeout=30,
        )
        r.raise_for_status()
        state.sent += len(chunk)
        await asyncio.sleep(pause)


async def _score_loop(
    client: httpx.AsyncClient,
    ep: Endpoints,
    pool: list[dict[str, Any]],
    state: State,
    key: str,
    stop: asyncio.Event,
    rate: float,
) -> None:
    rng = random.Random(7)
    headers = {"x-api-key": key}
    interval = 1.0 / rate
    while not stop.is_set():
        base = pool[rng.randrange(len(pool))]
        instance = _instance(_shifted(base, rng) if state.drift_on else base)
        t0 = time.perf_counter()
        try:
            r = await client.post(
                f"{ep.scorer}/v1/models/{MODEL}/score",
                json={"instance": instance},
                headers=headers,
                timeout=10,
            )
            if r.status_code == 200:
                state.scored += 1
                state.latencies_ms.append((time.perf_counter() - t0) * 1000)
            else:
                state.score_errors += 1
        except httpx.HTTPError:
            state.score_errors += 1
        await asyncio.sleep(interval)


async def _await_version_in_production(state: State, after: float, within: float) -> str:
    """The newest candidate trained after ``after`` must pass the gates and reach production."""
    await _until(lambda: any(t >= after for t, _, _ in state.candidates), within, "a trained candidate")
    deadline = time.monotonic() + within
    while True:
        newest = [v for t, v, _ in state.candidates if t >= after][-1]
        if state.production == newest:
            return newest
        if newest in state.rejected_versions:
            raise SystemExit(
                f"demo: version {newest} was rejected by the registry's gates (see the timeline)"
            )
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: version {newest} did not reach production within {within:.0f}s")
        await asyncio.sleep(0.5)


async def _scorer_accepts(client: httpx.AsyncClient, ep: Endpoints, key: str, record: dict[str, Any]) -> None:
    """New keys reach the scorer at its next key refresh; wait until it knows ours."""
    instance = _instance(record)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = await client.post(
            f"{ep.scorer}/v1/models/{MODEL}/score",
            json={"instance": instance},
            headers={"x-api-key": key},
            timeout=10,
        )
        if r.status_code == 200:
            return
        if r.status_code != 401:
            raise SystemExit(f"demo: the scorer answered {r.status_code}: {r.text[:300]}")
        await asyncio.sleep(1)
    raise SystemExit("demo: the scorer did not accept the new API key within 90 s")


async def _until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def _live(state: State, console: Console) -> AsyncIterator[None]:
    with Live(_render(state), console=console, refresh_per_second=4, transient=False) as live:

        async def refresh() -> None:
            while True:
                live.update(_render(state))
                await asyncio.sleep(0.25)

        task = asyncio.create_task(refresh())
        try:
            yield
        finally:
            task.cancel()
            live.update(_render(state))


async def run(args: DemoOptions) -> int:
    from tollgate_demo.datasets import load_islp_default

    console = Console()
    ep = Endpoints()
    bootstrap = os.environ.get("TOLLGATE_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
    dsn = os.environ.get("TOLLGATE_DATABASE_URL", DEFAULT_DATABASE_URL)
    topics = Topics(os.environ.get("TOLLGATE_TOPIC_NAMESPACE", "tollgate"))
    state = State()
    records = load_islp_default()
    rng = random.Random(11)
    rng.shuffle(records)
    run_tag = uuid.uuid4().hex[:6]
    for record in records:
        record["_n"] = run_tag  # a fresh replay each run: event ids differ from earlier demo runs

    async with httpx.AsyncClient() as client:
        for url in (ep.ingest, ep.trainer, ep.registry, ep.monitor, ep.audit, ep.scorer):
            await _wait_ready(client, f"{url}/readyz")
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            await ensure_schema(pool)
            for role in ROLES:
                state.keys[role] = await create_key(pool, f"demo-{role}-{run_tag}", role)
        finally:
            await pool.close()
        follower = asyncio.create_task(_follow(bootstrap, topics, state))
        stop_scoring = asyncio.Event()
        async with _live(state, console):
            state.mark("keys", f"API keys created, one per role: {', '.join(ROLES)}")

            state.phase = "replaying the credit data as a live event stream"
            bad = [{**records[i], "balance": -50.0, "_n": f"{run_tag}-bad"} for i in range(3)] + [
                {**records[3], "student": "Sometimes", "_n": f"{run_tag}-bad"}
            ]
            await _send_events(client, ep, bad, state)
            state.rejected_sent, state.sent = len(bad), state.sent - len(bad)
            state.mark("ingest", f"{len(bad)} records breaking the contract sent: the validator rejects them")
            first, later = records[: args.initial_rows], records[args.initial_rows :]
            await _send_events(client, ep, first, state)
            state.mark("ingest", f"{len(first):,} labeled records streamed through the gateway")
            # On a fresh stack the count trigger trains the first model; on a stack that already trained on
            # earlier data it may not fire, so an operator's training request starts the same story.
            streamed_at = time.monotonic()
            with contextlib.suppress(SystemExit):
                await _until(lambda: any(t >= streamed_at for t, _, _ in state.candidates), 15, "a candidate")
            if not any(t >= streamed_at for t, _, _ in state.candidates):
                r = await client.post(
                    f"{ep.trainer}/v1/models/{MODEL}/train",
                    json={"reason": "first model on the replayed data"},
                    headers={"x-api-key": state.keys["data-scientist"]},
                )
                r.raise_for_status()

            state.phase = "waiting for the first model in production"
            await _await_version_in_production(state, after=streamed_at, within=args.timeout)
            await _wait_ready(client, f"{ep.scorer}/v2/models/{MODEL}/ready", within=60)
            state.phase = "waiting for the scorer to load the new API keys"
            await _scorer_accepts(client, ep, state.keys["scorer-client"], records[0])

            state.phase = "scoring traffic (population as in training)"
            scorer = asyncio.create_task(
                _score_loop(client, ep, later, state, state.keys["scorer-client"], stop_scoring, args.rate)
            )
            await asyncio.sleep(args.calm_seconds)

            state.phase = "population shifted: waiting for the monitor"
            state.drift_on = True
            state.mark("drift", "scoring traffic and new labeled data now come from a shifted population")
            shifted = [{**_shifted(r, rng), "_n": f"{run_tag}-shift"} for r in later[: args.shifted_rows]]
            await _send_events(client, ep, shifted, state, pause=0.2)
            await _until(
                lambda: any(
                    a.startswith("data_drift raised") or a.startswith("prediction_drift raised")
                    for a in state.alerts
                ),
                args.timeout,
                "a drift alert",
            )

            state.phase = "retraining, gating and canary"
            assert state.alert_at is not None
            await _await_version_in_production(state, after=state.alert_at, within=args.timeout)
            state.phase = "done"
            await asyncio.sleep(2)
            stop_scoring.set()
            await scorer
        follower.cancel()

        audit_headers = {"x-api-key": state.keys["auditor"]}
        verify = await client.get(f"{ep.audit}/v1/audit/verify", headers=audit_headers, timeout=120)
    _summary(console, state, ep, verify)
    return 0


def _summary(console: Console, state: State, ep: Endpoints, verify: httpx.Response) -> None:
    timeline = Table(title="timeline", show_header=True, header_style="bold")
    timeline.add_column("t+s", justify="right")
    timeline.add_column("what")
    timeline.add_column("detail")
    for t, kind, text in state.timeline:
        timeline.add_row(f"{t:.1f}", kind, text)
    console.print(timeline)
    lat = sorted(state.latencies_ms)
    figures = Table(title="figures", show_header=False)
    figures.add_row("events sent", f"{state.sent:,} valid + {state.rejected_sent} invalid")
    figures.add_row("scoring requests", f"{state.scored:,} ok, {state.score_errors} failed")
    if lat:
        figures.add_row(
            "client latency", f"p50 {lat[len(lat) // 2]:.2f} ms, p99 {lat[int(len(lat) * 0.99)]:.2f} ms"
        )
    figures.add_row("serving now", f"production v{state.production}")
    figures.add_row("dashboard", f"{ep.monitor}/  (log in with the viewer key below)")
    body = (
        verify.json()
        if verify.headers.get("content-type", "").startswith("application/json")
        else verify.text
    )
    figures.add_row("audit verification", orjson.dumps(body).decode()[:200])
    console.print(figures)
    keys = Table(title="API keys (shown once; stored hashed)", show_header=True)
    keys.add_column("role")
    keys.add_column("key")
    for role, key in state.keys.items():
        keys.add_row(role, key)
    console.print(keys)
    console.print(
        f"[bold]The stack keeps running[/] ({datetime.now(UTC):%H:%M:%S} UTC): `make down` stops it."
    )
