"""Benchmark: what the hardened HTTP edges cost the scorer, against the scorer on the server from before.

Contenders, each ``python``-started scorer process on loopback, same settings, same model (the test
suite's ``credit-default-risk`` logistic regression, announced on ``models.lifecycle`` in a fresh topic
namespace), inference logging off (what changed is the HTTP server; the log's Kafka traffic would only
add noise):

* ``hardened`` -- ``python -m tollgate_scorer``: header deadline, caps counted as bytes arrive, the
                  connection limit (``tollgate_scorer/server.py``).
* ``before``   -- ``tests/bench/scorer/scorer_before.py``: the same service on the server as it was before
                  (``tests/bench/scorer/server_before.py``, kept verbatim).

Method: wrk, one thread, 8 connections, closed loop, one-row JSON body; the server on CPU 1 and wrk on
CPU 0 (``taskset``, when the machine has two CPUs). Rounds alternate the contenders (hardened, before;
before, hardened; ...) so drift on a shared machine hits both alike. Reported: median requests/s of each,
the median of the per-round ratios hardened/before, and the same ratio per server CPU-second (steadier on
a shared machine). The target (hardened >= 0.97x before) is printed as met or not, never asserted; results
go to ``.local/bench/scorer_edges.json``.

``--secured``: the hardened scorer as production runs it -- API keys checked on every request (a
``scorer-client`` key created in ``TOLLGATE_DATABASE_URL``, sent by wrk) and the inference log on, written to
Kafka over SASL/SCRAM as the ``scorer`` principal -- against the server from before with neither keys nor
the log. Results go to ``.local/bench/scorer_secured.json``.

``--authenticated``: the hardened scorer with API keys checked on every request and the inference log off,
against the server from before without keys: the issue's "authentication and the hardened server" alone,
without the log's cost (``bench_scorer`` measures that: logging on / off). Results go to
``.local/bench/scorer_authenticated.json``.

Usage: ``python tests/bench/bench_scorer_edges.py [--rounds 5] [--duration 8] [--warmup 2] [--secured |
--authenticated]``;
needs wrk and Kafka (``make bench`` starts it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1].parent
sys.path.insert(0, str(ROOT))

from tests.bench.scorer.procs import Server, free_port  # noqa: E402
from tests.bench.scorer.tollgate import model_ready, prepare_namespace, score_url, scorer_env  # noqa: E402
from tests.bench.scorer.wrk import run_wrk  # noqa: E402
from tests.conftest import local_secrets  # noqa: E402
from tests.kafka_helpers import produce  # noqa: E402
from tests.unit.scorer.support import MODEL, instances, lifecycle_event, store_all  # noqa: E402
from tollgate_core import kafka_auth  # noqa: E402
from tollgate_core.artifacts import DirectoryArtifactStore  # noqa: E402
from tollgate_core.settings import DEFAULT_KAFKA_BOOTSTRAP  # noqa: E402

TARGET = 0.97
COMMANDS = {
    "hardened": [sys.executable, "-m", "tollgate_scorer"],
    "before": [sys.executable, str(ROOT / "tests" / "bench" / "scorer" / "scorer_before.py")],
}


async def scorer_client_key() -> str:
    """A new ``scorer-client`` key in the database the scorer checks keys against."""
    import asyncpg

    from tollgate_core import apikeys
    from tollgate_core.settings import DEFAULT_DATABASE_URL

    pool = await asyncpg.create_pool(
        os.environ.get("TOLLGATE_DATABASE_URL", DEFAULT_DATABASE_URL), min_size=1, max_size=1
    )
    try:
        await apikeys.ensure_schema(pool)
        return await apikeys.create_key(pool, f"bench-scorer-{os.getpid()}", apikeys.SCORER_CLIENT)
    finally:
        await pool.close()


def scorer_principal() -> dict[str, str]:
    """The scorer's own Kafka principal of the local stack (its password from .local/secrets.env)."""
    password = local_secrets().get("TOLLGATE_KAFKA_PASSWORD_SCORER")
    if not password:
        return {}
    return {
        kafka_auth.ENV_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
        kafka_auth.ENV_SASL_MECHANISM: kafka_auth.DEFAULT_MECHANISM,
        kafka_auth.ENV_USERNAME: "scorer",
        kafka_auth.ENV_PASSWORD: password,
    }


def cpus() -> tuple[str | None, str | None]:
    return ("1", "0") if (os.cpu_count() or 1) >= 2 else (None, None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--secured",
        action="store_true",
        help="hardened scorer with API keys checked and the inference log on over SASL, vs before without",
    )
    mode.add_argument(
        "--authenticated",
        action="store_true",
        help="hardened scorer with API keys checked, inference log off, vs before without keys",
    )
    args = parser.parse_args()
    keyed = args.secured or args.authenticated
    name = (
        "scorer_secured" if args.secured else "scorer_authenticated" if args.authenticated else "scorer_edges"
    )
    args.out = args.out or ROOT / ".local" / "bench" / f"{name}.json"
    api_key = asyncio.run(scorer_client_key()) if keyed else None
    bootstrap = os.environ.get("TOLLGATE_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
    server_cpus, client_cpus = cpus()
    work = Path(tempfile.mkdtemp(prefix="bench-scorer-edges-"))
    artifacts = work / "artifacts"
    store_all(DirectoryArtifactStore(artifacts), "1")
    namespace = asyncio.run(prepare_namespace(bootstrap))
    if args.secured:  # the scorer runs as its own principal: the catalog's ACLs for this namespace
        from tollgate_core.acls import apply_acls

        asyncio.run(apply_acls(bootstrap, namespace))
    topic = f"{namespace}.models.lifecycle.v1"
    asyncio.run(produce(bootstrap, topic, [(MODEL.encode(), lifecycle_event("1", production="1"))]))
    body = work / "body.json"
    body.write_bytes(orjson.dumps({"instance": instances(1)[0]}))

    servers: dict[str, Server] = {}
    bases: dict[str, str] = {}
    try:
        for name, command in COMMANDS.items():
            port = free_port()
            secured = args.secured and name == "hardened"
            checks_keys = keyed and name == "hardened"
            env = scorer_env(
                port=port,
                namespace=namespace,
                artifacts=artifacts,
                logging_on=secured,
                bootstrap=bootstrap,
                instance=f"edges-{name}",
            )
            env["OMP_NUM_THREADS"] = "1"
            # What differs is the HTTP server: requests scored alone on both (the server from before cannot
            # hold a place for an answer made with the others of its event-loop turn).
            env["TOLLGATE_SCORER_COALESCE"] = "false"
            if checks_keys:
                env["TOLLGATE_SCORER_AUTH_REQUIRED"] = "true"
            if secured:
                env.update(scorer_principal())
            servers[name] = Server(
                name, command, log=work / f"{name}.log", cpus=server_cpus, env=env, cwd=ROOT
            )
            bases[name] = f"http://127.0.0.1:{port}"
        for name, server in servers.items():
            server.wait_until(lambda b=bases[name]: model_ready(b, MODEL), "serving the model")

        rounds: list[dict[str, Any]] = []
        for i in range(args.rounds):
            order = list(COMMANDS) if i % 2 == 0 else list(reversed(COMMANDS))
            row: dict[str, Any] = {}
            for name in order:
                url = score_url(bases[name], MODEL)
                key = api_key if name == "hardened" else None
                run_wrk(url, body, seconds=args.warmup, connections=8, cpus=client_cpus, api_key=key)
                cpu_before = servers[name].cpu_seconds()
                result = run_wrk(
                    url, body, seconds=args.duration, connections=8, cpus=client_cpus, api_key=key
                )
                cpu = servers[name].cpu_seconds() - cpu_before
                row[name] = {
                    "rps": result.rps,
                    "p50_ms": result.p50_ms,
                    "p99_ms": result.p99_ms,
                    "failed": result.failed,
                    "server_cpu_s": cpu,
                    "requests_per_cpu_s": result.requests / cpu if cpu else 0.0,
                }
            row["ratio"] = row["hardened"]["rps"] / row["before"]["rps"]
            row["ratio_per_cpu"] = row["hardened"]["requests_per_cpu_s"] / row["before"]["requests_per_cpu_s"]
            rounds.append(row)
            print(
                f"round {i + 1}: hardened {row['hardened']['rps']:,.0f} req/s, before "
                f"{row['before']['rps']:,.0f} req/s, ratio {row['ratio']:.3f} "
                f"(per CPU-second {row['ratio_per_cpu']:.3f})",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()

    ratio = statistics.median(r["ratio"] for r in rounds)
    ratio_cpu = statistics.median(r["ratio_per_cpu"] for r in rounds)
    result = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(),
        "method": "wrk -t1 -c8, one-row JSON body, server CPU 1 / wrk CPU 0, rounds alternating the "
        "contenders; "
        + (
            "hardened: API key checked per request, inference log on over SASL/SCRAM; before: neither"
            if args.secured
            else "hardened: API key checked per request, inference log off; before: no API keys, log off"
            if args.authenticated
            else "inference log off, no API keys"
        ),
        "rounds": rounds,
        "median_rps": {n: statistics.median(r[n]["rps"] for r in rounds) for n in COMMANDS},
        "median_ratio_hardened_to_before": ratio,
        "median_ratio_per_cpu_second": ratio_cpu,
        "failed_requests": sum(r[n]["failed"] for r in rounds for n in COMMANDS),
        "targets": [
            {
                "name": f"hardened server >= {TARGET}x requests/s of the server before",
                "value": ratio,
                "met": ratio >= TARGET,
            }
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        f"scorer edges: hardened {result['median_rps']['hardened']:,.0f} req/s, before "
        f"{result['median_rps']['before']:,.0f} req/s; median ratio {ratio:.3f} "
        f"(per CPU-second {ratio_cpu:.3f}); target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'}"
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
