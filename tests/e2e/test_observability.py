"""The alert rules and the dashboard name only metrics the running services export, and every metric that
must be alerted on has a rule: checked against the live /metrics of all seven services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.auth_support import RoleKeys, header
from tests.conftest import ServiceProcess, wait_http_ok
from tests.observability import MUST_ALERT, PROMISED, exported_names, panel_metrics, rule_metrics
from tollgate_core.topics import SERVICES

Launch = Callable[..., ServiceProcess]


@pytest.mark.timeout(900)  # seven service processes start at once; on a loaded machine that takes minutes
async def test_rules_and_panels_name_only_exported_metrics(
    services: Launch, tmp_path: Path, api_keys: RoleKeys
) -> None:
    env = {
        "audit-log": {"TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem")},
        "scorer": {"TOLLGATE_SCORER_LOG_SPOOL_DIR": str(tmp_path / "spool")},
    }
    started = {name: services(name, env_extra=env.get(name)) for name in SERVICES}
    bases = {name: f"http://127.0.0.1:{proc.port}" for name, proc in started.items()}  # type: ignore[attr-defined]
    # Seven interpreters importing their stacks at once on a shared machine: allow them time.
    await asyncio.gather(
        *(wait_http_ok(f"{bases[name]}/healthz", proc=proc, timeout=600) for name, proc in started.items())
    )
    exported: dict[str, set[str]] = {}
    async with httpx.AsyncClient(timeout=30, headers=header(api_keys["operator"])) as http:
        for name, base in bases.items():
            await http.get(f"{base}/readyz")  # the readiness gauges report the last probe
            exported[name] = exported_names((await http.get(f"{base}/metrics")).text)
    everything = set().union(*exported.values())

    unknown_in_rules = sorted(rule_metrics() - everything)
    unknown_in_panels = sorted(panel_metrics() - everything)
    assert not unknown_in_rules, f"alert rules name metrics no service exports: {unknown_in_rules}"
    assert not unknown_in_panels, f"dashboard panels name metrics no service exports: {unknown_in_panels}"

    assert set(PROMISED.values()) <= everything, "a promised metric is no longer exported"
    needs_rule = {n for n in everything if MUST_ALERT.search(n) and not n.endswith("_created")}
    without_rule = sorted(
        n
        for n in needs_rule
        if n not in rule_metrics() and n.removesuffix("_total") + "_total" not in rule_metrics()
    )
    assert not without_rule, f"exported metrics that must be alerted on have no rule: {without_rule}"
    # Every service reports its readiness checks.
    assert all("tollgate_readiness_check" in names for names in exported.values())
