"""Benchmark: the scorer of this tree against the scorer of an earlier git revision, same run, same machine.

Usage::

    python tests/bench/bench_scorer_ab.py [--baseline-ref 90d64fe] [--rounds 5] [--duration 8] [--warmup 2]
        [--logging on|both] [--current-env KEY=VALUE ...] [--baseline-env KEY=VALUE ...]
        [--target 0.97] [--out .local/bench/scorer_ab.json]

needs wrk, Kafka and PostgreSQL (``make bench`` starts them; by hand: ``infra/stack.sh as admin
.venv/bin/python tests/bench/bench_scorer_ab.py ...``). ``make bench`` runs it with the default
``--baseline-ref 90d64fe`` (the tree before the live registrations and the one contract compiler).

Contenders, each ``python -m tollgate_scorer`` on loopback, each with its own tree's default settings:

* ``current``  -- this working tree's scorer (the project's environment, working directory the repository).
* ``baseline`` -- the scorer of ``--baseline-ref``: its ``services/scorer``, ``libs/core`` and ``schemas``
                  extracted with ``git archive`` into a temporary directory (removed afterwards), run by the
                  same interpreter with ``PYTHONPATH=<tmp>/services/scorer:<tmp>/libs/core`` (which wins over
                  the environment's editable installs) and its working directory in that tree, so it reads that
                  tree's ``schemas/``. Before any load, each contender's ``tollgate_scorer.__file__`` and
                  ``tollgate_core.__file__`` are printed and checked to lie in its own tree.

Both serve the same model (the test suite's ``credit-default-risk`` logistic regression, exported by this tree's
trainer, stored once in one artifact directory), announced with one ``models.lifecycle`` promotion in a fresh
topic namespace; that namespace's topics are created by each tree's own ``ensure_topics`` (the baseline's catalog
may name topics this tree does not). Both check API keys on every request (one ``scorer-client`` key created in
``TOLLGATE_DATABASE_URL``; the revision must have API keys) and, by default, log every inference to Kafka as the
scorer serves in production. ``--logging both`` adds the pair with the inference log off (four servers).
``--current-env`` / ``--baseline-env`` set a scorer setting of one side only (e.g.
``--current-env TOLLGATE_SCORER_COALESCE=false``: this tree's scorer with every request scored alone, as a
revision without coalescing scores them). After the last round each logging server's ``/metrics`` inference-log
counters (logged, acked, spooled, failed, dropped) are read and reported, so a log that fell back to its spool
shows; the servers' own logs stay in ``.local/bench/scorer_ab-logs/``.

Method: wrk, one thread, 8 connections, closed loop, one-row JSON body; servers on CPU 1, wrk on CPU 0
(``taskset``, when there are two CPUs); ``OMP_NUM_THREADS=1`` for both. Each round measures every pair with
the order alternating (current, baseline; then baseline, current) after a warm-up of each. Reported per pair:
median requests/s of each, p50/p99 medians, the median of per-round ratios current/baseline and the median
per server CPU-second ratio (steadier on a shared machine), and ``target >= 0.97x: met / not met`` -- printed,
never asserted. Results: ``.local/bench/scorer_ab.json`` (``--out`` to change).

Tools that compare with another revision (another issue's "before this change") pass ``--baseline-ref REF``
and ``--out``; ``--target`` sets the ratio printed as met or not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1].parent
sys.path.insert(0, str(ROOT))

from tests.bench.bench_scorer_edges import cpus  # noqa: E402
from tests.bench.scorer.procs import Server, free_port  # noqa: E402
from tests.bench.scorer.tollgate import model_ready, prepare_namespace, score_url, scorer_env  # noqa: E402
from tests.bench.scorer.wrk import run_wrk  # noqa: E402
from tests.kafka_helpers import produce  # noqa: E402
from tests.unit.scorer.support import MODEL, instances, lifecycle_event, store_all  # noqa: E402
from tollgate_core.artifacts import DirectoryArtifactStore  # noqa: E402
from tollgate_core.settings import DEFAULT_KAFKA_BOOTSTRAP  # noqa: E402

DEFAULT_REF = "90d64fe"
DEFAULT_TARGET = 0.97
TREE_PATHS = ("services/scorer", "libs/core", "schemas")  # what the baseline's scorer needs of its tree
CONNECTIONS = 8


@dataclass(frozen=True)
class Tree:
    """Where a contender's code runs from: its working directory and the PYTHONPATH it is given."""

    label: str
    root: Path
    pythonpath: str | None  # None: the project's environment (editable installs of this tree)

    def env(self) -> dict[str, str]:
        return {} if self.pythonpath is None else {"PYTHONPATH": self.pythonpath}

    def run(self, code: str, *args: str, extra_env: Mapping[str, str] | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=self.root,
            env={"TOLLGATE_ENV": "test", **os.environ, **(extra_env or {}), **self.env()},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.label} tree: python -c failed:\n{done.stderr.strip()}")
        return done.stdout.strip()


def extract(ref: str, into: Path) -> str:
    """``git archive REF`` of the scorer's paths into ``into``; returns the full commit id."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.Popen(["git", "archive", commit, *TREE_PATHS], cwd=ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return commit


def code_paths(tree: Tree) -> dict[str, str]:
    """Where ``tollgate_scorer`` and ``tollgate_core`` are imported from when run as this contender is;
    refuses a contender that would run another tree's code."""
    out = tree.run(
        "import json, tollgate_core, tollgate_scorer; "
        "print(json.dumps({'tollgate_scorer': tollgate_scorer.__file__, 'tollgate_core': tollgate_core.__file__}))"
    )
    paths: dict[str, str] = json.loads(out.splitlines()[-1])
    for module, path in paths.items():
        if not Path(path).resolve().is_relative_to(tree.root.resolve()):
            raise RuntimeError(f"{tree.label}: {module} imported from {path}, outside {tree.root}")
        print(f"{tree.label}: {module}.__file__ = {path}", flush=True)
    return paths


ENSURE_TOPICS = (
    "import asyncio, sys\n"
    "from tollgate_core.topics import ensure_topics\n"
    "asyncio.run(ensure_topics(sys.argv[1], sys.argv[2]))\n"
)


def measure(server: Server, url: str, body: Path, args: argparse.Namespace, key: str) -> dict[str, Any]:
    client_cpus = cpus()[1]
    run_wrk(url, body, seconds=args.warmup, connections=CONNECTIONS, cpus=client_cpus, api_key=key)
    cpu_before = server.cpu_seconds()
    result = run_wrk(url, body, seconds=args.duration, connections=CONNECTIONS, cpus=client_cpus, api_key=key)
    cpu = server.cpu_seconds() - cpu_before
    return {
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "failed": result.failed,
        "server_cpu_s": cpu,
        "requests_per_cpu_s": result.requests / cpu if cpu else 0.0,
    }


async def bench_key() -> str:
    """A new key with the ``scorer-client`` role (to score) and ``operator`` (to read ``/metrics``), in the
    database both contenders check keys against."""
    import asyncpg

    from tollgate_core import apikeys
    from tollgate_core.settings import DEFAULT_DATABASE_URL

    pool = await asyncpg.create_pool(
        os.environ.get("TOLLGATE_DATABASE_URL", DEFAULT_DATABASE_URL), min_size=1, max_size=1
    )
    try:
        await apikeys.ensure_schema(pool)
        key: str = await apikeys.create_key(
            pool, f"bench-scorer-ab-{os.getpid()}", apikeys.SCORER_CLIENT, apikeys.OPERATOR
        )
        return key
    finally:
        await pool.close()


def log_counters(base: str, key: str) -> dict[str, float]:
    """The ``tollgate_scorer_inference_log_*`` counters of a scorer's ``/metrics`` (empty when it has none)."""
    import urllib.request

    request = urllib.request.Request(f"{base}/metrics", headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text: bytes = response.read()
    except OSError as exc:
        print(f"{base}/metrics: {exc}", flush=True)
        return {}
    counters: dict[str, float] = {}
    prefix = "tollgate_scorer_inference_log_"
    for line in text.decode(errors="replace").splitlines():
        if line.startswith(prefix) and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            counters[name.removeprefix(prefix).removesuffix("_total")] = float(value)
    return counters


def settings_from(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        settings[key] = value
    return settings


def summarise(rounds: list[dict[str, Any]], pair: str, target: float) -> dict[str, Any]:
    rows = [r[pair] for r in rounds]
    ratio = statistics.median(r["ratio"] for r in rows)
    return {
        "median_rps": {n: statistics.median(r[n]["rps"] for r in rows) for n in ("current", "baseline")},
        "median_p50_ms": {
            n: statistics.median(r[n]["p50_ms"] for r in rows) for n in ("current", "baseline")
        },
        "median_p99_ms": {
            n: statistics.median(r[n]["p99_ms"] for r in rows) for n in ("current", "baseline")
        },
        "median_ratio": ratio,
        "median_ratio_per_cpu_second": statistics.median(r["ratio_per_cpu"] for r in rows),
        "failed_requests": sum(r[n]["failed"] for r in rows for n in ("current", "baseline")),
        "target_met": ratio >= target,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--baseline-ref", default=DEFAULT_REF, help=f"git revision to compare with ({DEFAULT_REF})"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--duration", type=float, default=8.0, help="seconds measured per contender and round"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measurement")
    parser.add_argument(
        "--logging",
        choices=("on", "both"),
        default="on",
        help="inference log on for both (default), or also the pair with it off",
    )
    parser.add_argument(
        "--current-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="setting of this tree's scorer",
    )
    parser.add_argument(
        "--baseline-env", action="append", default=[], metavar="KEY=VALUE", help="setting of the baseline's"
    )
    parser.add_argument("--target", type=float, default=DEFAULT_TARGET, help="ratio printed as met or not")
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench" / "scorer_ab.json")
    args = parser.parse_args()
    overrides = {"current": settings_from(args.current_env), "baseline": settings_from(args.baseline_env)}
    logs = args.out.parent / f"{args.out.stem}-logs"
    shutil.rmtree(logs, ignore_errors=True)

    work = Path(tempfile.mkdtemp(prefix="bench-scorer-ab-"))
    servers: dict[str, Server] = {}
    try:
        baseline_root = work / "baseline"
        baseline_root.mkdir()
        commit = extract(args.baseline_ref, baseline_root)
        trees = {
            "current": Tree("current", ROOT, None),
            "baseline": Tree(
                f"baseline {commit[:10]}",
                baseline_root,
                f"{baseline_root / 'services' / 'scorer'}{os.pathsep}{baseline_root / 'libs' / 'core'}",
            ),
        }
        imported = {name: code_paths(tree) for name, tree in trees.items()}

        api_key = asyncio.run(bench_key())
        bootstrap = os.environ.get("TOLLGATE_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
        server_cpus = cpus()[0]
        artifacts = work / "artifacts"
        store_all(DirectoryArtifactStore(artifacts), "1")
        namespace = asyncio.run(prepare_namespace(bootstrap))  # this tree's topics
        trees["baseline"].run(ENSURE_TOPICS, bootstrap, namespace)  # and any the baseline's catalog adds
        asyncio.run(
            produce(
                bootstrap,
                f"{namespace}.models.lifecycle.v1",
                [(MODEL.encode(), lifecycle_event("1", production="1"))],
            )
        )
        body = work / "body.json"
        body.write_bytes(orjson.dumps({"instance": instances(1)[0]}))

        pairs = {"log_on": True} | ({"log_off": False} if args.logging == "both" else {})
        bases: dict[str, str] = {}
        for pair, logging_on in pairs.items():
            for side, tree in trees.items():
                name = f"{side}-{pair}"
                port = free_port()
                env = scorer_env(
                    port=port,
                    namespace=namespace,
                    artifacts=artifacts,
                    logging_on=logging_on,
                    bootstrap=bootstrap,
                    instance=f"ab-{name}",
                )
                env |= {"OMP_NUM_THREADS": "1", "TOLLGATE_SCORER_AUTH_REQUIRED": "true", **tree.env()}
                env |= overrides[side]
                servers[name] = Server(
                    name,
                    [sys.executable, "-m", "tollgate_scorer"],
                    log=logs / f"{name}.log",
                    cpus=server_cpus,
                    env=env,
                    cwd=tree.root,
                )
                bases[name] = f"http://127.0.0.1:{port}"
        for name, server in servers.items():
            server.wait_until(partial(model_ready, bases[name], MODEL), f"serving {MODEL}")
        print(f"every contender serves {MODEL}; {args.rounds} rounds", flush=True)

        rounds: list[dict[str, Any]] = []
        for i in range(args.rounds):
            row: dict[str, Any] = {}
            for pair in pairs:
                sides = ["current", "baseline"] if i % 2 == 0 else ["baseline", "current"]
                measured = {
                    side: measure(
                        servers[f"{side}-{pair}"],
                        score_url(bases[f"{side}-{pair}"], MODEL),
                        body,
                        args,
                        api_key,
                    )
                    for side in sides
                }
                measured["ratio"] = measured["current"]["rps"] / measured["baseline"]["rps"]
                measured["ratio_per_cpu"] = (
                    measured["current"]["requests_per_cpu_s"] / measured["baseline"]["requests_per_cpu_s"]
                )
                row[pair] = measured
                print(
                    f"round {i + 1} {pair}: current {measured['current']['rps']:,.0f} req/s "
                    f"(p99 {measured['current']['p99_ms']:.2f} ms), baseline "
                    f"{measured['baseline']['rps']:,.0f} req/s (p99 {measured['baseline']['p99_ms']:.2f} ms), "
                    f"ratio {measured['ratio']:.3f} (per CPU-second {measured['ratio_per_cpu']:.3f})",
                    flush=True,
                )
            rounds.append(row)
        counters = {name: log_counters(bases[name], api_key) for name in servers if name.endswith("log_on")}
        for name, values in counters.items():
            shown = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(values.items()))
            print(f"{name} inference log: {shown or 'no counters on /metrics'}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = {pair: summarise(rounds, pair, args.target) for pair in pairs}
    result = {
        "benchmark": "scorer_ab",
        "at": datetime.now(UTC).isoformat(),
        "baseline_ref": args.baseline_ref,
        "baseline_commit": commit,
        "imported_from": imported,
        "method": f"wrk -t1 -c{CONNECTIONS}, one-row JSON body, servers CPU {server_cpus} / wrk the other, "
        "rounds alternating the contenders; both check an API key per request; each tree's default "
        "settings; log_on: every inference logged to Kafka, log_off: the log off",
        "settings": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup},
        "overrides": overrides,
        "inference_log_counters": counters,
        "load_average": os.getloadavg(),
        "rounds": rounds,
        "pairs": summary,
        "headline": {
            f"{pair}.{key}": value
            for pair, s in summary.items()
            for key, value in (
                ("current_rps", s["median_rps"]["current"]),
                ("baseline_rps", s["median_rps"]["baseline"]),
                ("median_ratio", s["median_ratio"]),
                ("median_ratio_per_cpu_second", s["median_ratio_per_cpu_second"]),
            )
        },
        "targets": [
            {
                "name": f"current >= {args.target}x requests/s of {args.baseline_ref} ({pair})",
                "op": ">=",
                "target": args.target,
                "measured": s["median_ratio"],
                "met": s["target_met"],
            }
            for pair, s in summary.items()
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for pair, s in summary.items():
        print(
            f"scorer A/B {pair} vs {args.baseline_ref} ({commit[:10]}): current "
            f"{s['median_rps']['current']:,.0f} req/s (p99 {s['median_p99_ms']['current']:.2f} ms), baseline "
            f"{s['median_rps']['baseline']:,.0f} req/s (p99 {s['median_p99_ms']['baseline']:.2f} ms); "
            f"median ratio {s['median_ratio']:.3f}, per CPU-second {s['median_ratio_per_cpu_second']:.3f}; "
            f"target >= {args.target}x: {'met' if s['target_met'] else 'not met'}"
            + (f"; {s['failed_requests']} failed requests" if s["failed_requests"] else "")
        )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
