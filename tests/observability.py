"""The alert rules and dashboard in infra/observability, and the metric names they use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "infra" / "observability" / "alerts.yaml"
DASHBOARD = ROOT / "infra" / "observability" / "dashboard.json"
METRIC = re.compile(r"\btollgate_[a-z0-9_]+\b")

# What the platform promises to alert on, and the metric each promise rests on.
PROMISED = {
    "consumer lag": "tollgate_consumer_lag",
    "consumer writes failing": "tollgate_consumer_writes_failing",
    "DLQ depth": "tollgate_dlq_depth",
    "DLQ age": "tollgate_dlq_oldest_age_seconds",
    "inference-log failures": "tollgate_scorer_inference_log_failed_total",
    "inference-log spool use": "tollgate_scorer_inference_log_spool_bytes",
    "drift and performance alerts": "tollgate_monitor_alerts_total",
    "damaged audit chain": "tollgate_audit_chain_damaged",
    "scorer p99 against its SLO": "tollgate_scorer_request_duration_seconds_bucket",
    "readiness": "tollgate_readiness_check",
}
# Any exported metric whose name says one of these words must have a rule.
MUST_ALERT = re.compile(
    r"(^|_)lag(_|$)|dlq_depth|oldest_age|spool_bytes|damaged|tamper|readiness|dropped|refused"
)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def rule_metrics() -> set[str]:
    return {name for rule in rules() for name in METRIC.findall(rule["expr"])}


def panel_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def panel_metrics() -> set[str]:
    return {name for expr in panel_exprs() for name in METRIC.findall(expr)}


def exported_names(metrics_text: str) -> set[str]:
    """Every series name a /metrics page offers, including families that have no sample yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.update({family.name + "_total", family.name + "_created"})
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count", "_created"))
        else:
            names.add(family.name)
    return names
