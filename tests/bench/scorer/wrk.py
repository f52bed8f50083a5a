"""Running wrk (Debian's package) against one URL with one fixed POST body, and reading its result line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("post.lua")
MARKER = "WRK_RESULT "


class WrkMissingError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissingError(
            "wrk (the HTTP load generator) is not installed: run `apt-get install -y wrk` (Debian package "
            "'wrk') and start the benchmark again"
        )
    return path


def run_wrk(
    url: str,
    body_file: Path,
    *,
    seconds: float,
    connections: int,
    cpus: str | None,
    timeout_s: int = 5,
    api_key: str | None = None,
) -> WrkResult:
    """One closed-loop wrk run: ``connections`` connections, one wrk thread, pinned to ``cpus`` when given."""
    command = [
        wrk_path(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(SCRIPT),
        url,
    ]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    env = {**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_API_KEY": api_key or ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    raw = json.loads(line[len(MARKER) :])
    latency = raw["latency_us"]
    seconds_run = raw["duration_us"] / 1e6
    return WrkResult(
        requests=raw["requests"],
        seconds=seconds_run,
        rps=raw["requests"] / seconds_run if seconds_run else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        p999_ms=latency["p999"] / 1000,
        mean_ms=latency["mean"] / 1000,
        max_ms=latency["max"] / 1000,
        errors=raw["errors"],
    )
