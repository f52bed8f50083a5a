"""The alert rules and dashboard are well formed: every alert has a severity, a summary and a runbook,
every promise has a rule, every panel has a query. (Their metric names are checked against the live
services in tests/e2e/test_observability.py.)"""

from __future__ import annotations

import json

from tests.observability import DASHBOARD, PROMISED, panel_exprs, rule_metrics, rules


def test_every_alert_has_severity_summary_and_runbook() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) and len(names) >= 15
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["runbook"]) > 60, rule["alert"]
        assert rule["expr"].strip()


def test_every_promised_metric_has_a_rule() -> None:
    missing = {promise: metric for promise, metric in PROMISED.items() if metric not in rule_metrics()}
    assert not missing


def test_the_dashboard_is_grafana_json_with_a_query_per_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    assert len(panel_exprs()) >= len(dashboard["panels"])
