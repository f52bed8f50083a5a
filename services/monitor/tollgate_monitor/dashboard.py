"""The dashboard: one self-contained HTML page with server-rendered SVG charts (no script, no download).

Per model: the versions in service, headline tiles, a heatmap of drift per feature over windows (colour is
the effect size relative to its threshold, so every feature reads on the same scale), the PSI of the most
drifted features over time, the live score histogram against the training reference, performance and
latency against their limits, the global feature importance of each version in service (from its
evaluation report on models.candidates: permutation importance on the holdout, with its spread), and the
alert history.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PALETTE = ("#2563eb", "#d97706", "#7c3aed", "#059669", "#db2777", "#0891b2")
STAGE_COLOURS = {
    "production": "#059669",
    "staging": "#d97706",
    "candidate": "#64748b",
    "archived": "#94a3b8",
    "rejected": "#b91c1c",
}


@dataclass
class ModelView:
    model: str
    versions: list[dict[str, Any]]
    windows: list[dict[str, Any]]  # reports of the version shown, oldest first
    shown_version: str | None
    alerts: list[dict[str, Any]]
    active: list[dict[str, Any]]
    labels: dict[str, dict[str, int]] = field(default_factory=dict)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "&ndash;" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%H:%M")


def _lerp(a: str, b: str, t: float) -> str:
    ca = [int(a[i : i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))


def heat_colour(ratio: float | None) -> str:
    """Effect / threshold to colour: pale green (nothing) through amber (at the threshold) to red (2x)."""
    if ratio is None or not math.isfinite(ratio):
        return "#eef1f5"
    stops = [(0.0, "#ecfdf5"), (0.5, "#a7f3d0"), (0.85, "#fde68a"), (1.0, "#f59e0b"), (2.0, "#dc2626")]
    r = max(0.0, min(ratio, 2.0))
    for (x0, c0), (x1, c1) in itertools.pairwise(stops):
        if r <= x1:
            return _lerp(c0, c1, (r - x0) / (x1 - x0))
    return stops[-1][1]


def headline_metric(metrics: dict[str, Any]) -> str | None:
    """The live metric a model is summarised by: ROC AUC for classifiers, MAE for regressors."""
    return "roc_auc" if "roc_auc" in metrics else ("mae" if "mae" in metrics else None)


# ----------------------------------------------------------------------------------------------- charts


HEATMAP_ROWS = 15  # features shown open; the rest are one click away, so 100 features stay readable


def _drift_ratio(feature: dict[str, Any]) -> float:
    effect = feature.get("effect")
    return (
        -1.0 if effect is None or not math.isfinite(effect) else float(effect) / float(feature["threshold"])
    )


def ranked_features(windows: Sequence[dict[str, Any]], match: str = "") -> list[str]:
    """Feature names of the last window, most drifted first (drifted ones, then by effect / threshold),
    keeping those whose name contains ``match`` (case-insensitive)."""
    if not windows:
        return []
    needle = match.strip().lower()
    last = [f for f in windows[-1]["features"] if needle in f["feature"].lower()]
    last.sort(key=lambda f: (not f["drifted"], -_drift_ratio(f), f["feature"]))
    return [f["feature"] for f in last]


def heatmap(windows: Sequence[dict[str, Any]], match: str = "", rows: int = HEATMAP_ROWS) -> str:
    """The drift heat map: the ``rows`` most drifted features open, the others folded under a summary."""
    if not windows:
        return '<p class="empty">No window judged yet.</p>'
    names = ranked_features(windows, match)
    if not names:
        return f'<p class="empty">No feature name contains {esc(match)!s}.</p>'
    shown, rest = names[:rows], names[rows:]
    html = heatmap_svg(windows, shown)
    if rest:
        html += (
            f'<details class="more"><summary>{len(rest)} more feature{"s" if len(rest) != 1 else ""}, '
            f"less drifted</summary>{heatmap_svg(windows, rest)}</details>"
        )
    return html


def heatmap_svg(
    windows: Sequence[dict[str, Any]], features: Sequence[str] | None = None, width: int = 1100
) -> str:
    if not windows:
        return '<p class="empty">No window judged yet.</p>'
    features = list(features) if features is not None else [f["feature"] for f in windows[-1]["features"]]
    last_of = {f["feature"]: f for f in windows[-1]["features"]}
    label_w, top, cell_h = 200, 22, 20
    n = len(windows)
    cell_w = max(4.0, (width - label_w - 70) / n)
    height = top + cell_h * len(features) + 26
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="drift per feature over windows">'
    ]
    for row, name in enumerate(features):
        y = top + row * cell_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end" class="axis">{esc(name)}</text>'
        )
        for col, w in enumerate(windows):
            f = next((x for x in w["features"] if x["feature"] == name), None)
            ratio = None if f is None or f["effect"] is None else f["effect"] / f["threshold"]
            x = label_w + col * cell_w
            title = f"{name} @ {_time(w['end'])}: " + (
                "no data"
                if f is None or f["effect"] is None
                else f"{'PSI' if f['test'] == 'psi' else 'JS'} {f['effect']:.3f} (threshold {f['threshold']})"
            )
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{cell_w - 1:.1f}" height="{cell_h - 2}" rx="2" '
                f'fill="{heat_colour(ratio)}"><title>{esc(title)}</title></rect>'
            )
            if f is not None and f["drifted"] and cell_w >= 7:
                parts.append(
                    f'<circle cx="{x + cell_w / 2 - 0.5:.1f}" cy="{y + cell_h / 2 - 1}" r="2.2" fill="#7f1d1d"/>'
                )
        value = last_of[name]["effect"] if name in last_of else None
        parts.append(
            f'<text x="{label_w + n * cell_w + 6:.1f}" y="{y + 13}" class="axis value">{_fmt(value)}</text>'
        )
    step = max(1, n // 8)
    for col in range(0, n, step):
        x = label_w + col * cell_w
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" class="axis">{_time(windows[col]["end"])}</text>')
    parts.append(f'<text x="{label_w}" y="14" class="axis">windows →</text>')
    parts.append(f'<text x="{label_w + n * cell_w + 6:.1f}" y="14" class="axis">last</text>')
    parts.append("</svg>")
    return "".join(parts)


def _scale(values: Sequence[float], lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low = min(finite, default=0.0) if lo is None else lo
    high = max(finite, default=1.0) if hi is None else hi
    if high - low < 1e-9:
        high = low + 1.0
    return low, high


def line_chart_svg(
    times: Sequence[float],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    limit: float | None = None,
    limit_label: str = "",
    reference: float | None = None,
    reference_label: str = "",
    width: int = 420,
    height: int = 190,
    floor: float | None = None,
    digits: int = 2,
) -> str:
    if not times:
        return '<p class="empty">No data yet.</p>'
    left, right, top, bottom = 44, 12, 12, 26
    values = [v for _, vs in series for v in vs if v is not None]
    extra = [x for x in (limit, reference) if x is not None]
    low, high = _scale(values + extra, lo=floor)
    high += (high - low) * 0.08
    pw, ph = width - left - right, height - top - bottom

    def px(i: int) -> float:
        return left + (pw * i / max(len(times) - 1, 1))

    def py(v: float) -> float:
        return top + ph * (1 - (v - low) / (high - low))

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img">']
    for k in range(5):
        v = low + (high - low) * k / 4
        y = py(v)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{v:.{digits}f}</text>'
        )
    if limit is not None:
        y = py(limit)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="limit"/>'
            f'<text x="{width - right}" y="{y - 4:.1f}" text-anchor="end" class="axis limit-label">'
            f"{esc(limit_label)}</text>"
        )
    if reference is not None:
        y = py(reference)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="reference"/>'
            f'<text x="{left + 4}" y="{y - 4:.1f}" class="axis">{esc(reference_label)}</text>'
        )
    for idx, (name, vs) in enumerate(series):
        colour = PALETTE[idx % len(PALETTE)]
        points = [(px(i), py(v)) for i, v in enumerate(vs) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" '
                f'stroke-linejoin="round"><title>{esc(name)}</title></polyline>'
            )
        for x, y in points[-1:]:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
    step = max(1, len(times) // max(2, width // 90))
    for i in range(0, len(times), step):
        anchor = "end" if i == len(times) - 1 else ("start" if i == 0 else "middle")
        parts.append(
            f'<text x="{px(i):.1f}" y="{height - 8}" text-anchor="{anchor}" class="axis">{_time(times[i])}</text>'
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>{esc(n)}</span>'
        for i, (n, _) in enumerate(series)
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def histogram_svg(prediction: dict[str, Any] | None, width: int = 420, height: int = 190) -> str:
    if not prediction or not prediction.get("rows"):
        return '<p class="empty">No scores yet.</p>'
    ref, live = prediction["reference"], prediction["live"]
    edges = [e for e in prediction["edges"] if e is not None]
    used = len(edges) + 1
    ref, live = ref[:used], live[:used]
    left, right, top, bottom = 40, 10, 12, 30
    pw, ph = width - left - right, height - top - bottom
    high = max(max(ref, default=0), max(live, default=0), 1e-6) * 1.15
    bw = pw / max(used, 1)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img">']
    for k in range(4):
        v = high * k / 3
        y = top + ph * (1 - v / high)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{v:.0%}</text>'
        )
    for i in range(used):
        x = left + i * bw
        h_live = ph * live[i] / high
        h_ref = ph * ref[i] / high
        parts.append(
            f'<rect x="{x + 3:.1f}" y="{top + ph - h_live:.1f}" width="{bw - 6:.1f}" height="{h_live:.1f}" '
            f'rx="2" class="bar-live"><title>live {live[i]:.1%}</title></rect>'
        )
        parts.append(
            f'<rect x="{x + 3:.1f}" y="{top + ph - h_ref:.1f}" width="{bw - 6:.1f}" height="{h_ref:.1f}" '
            f'rx="2" class="bar-ref"><title>reference {ref[i]:.1%}</title></rect>'
        )
    for i, e in enumerate(edges):
        if i % max(1, len(edges) // 5) == 0:
            parts.append(
                f'<text x="{left + (i + 1) * bw:.1f}" y="{height - 12}" text-anchor="middle" class="axis">'
                f"{e:.2f}</text>"
            )
    parts.append("</svg>")
    psi_text = _fmt(prediction.get("psi"))
    return (
        "".join(parts) + '<div class="legend"><span class="key"><i class="live"></i>live (last window)</span>'
        f'<span class="key"><i class="ref"></i>training reference</span><span class="key">PSI {psi_text}</span></div>'
    )


# ------------------------------------------------------------------------------------------------- page


CSS = """
:root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --card:#ffffff; --bg:#f1f5f9; }
* { box-sizing: border-box; }
body { margin:0; font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color:var(--ink); background:var(--bg); }
header.top { background:#0f172a; color:#f8fafc; padding:14px 28px; display:flex; align-items:center; gap:18px; }
header.top h1 { font-size:19px; margin:0; letter-spacing:.3px; }
header.top .sub { color:#94a3b8; font-size:13px; }
header.top .pill { margin-left:auto; }
main { padding:20px 28px 40px; display:flex; flex-direction:column; gap:22px; }
section.model { background:var(--card); border-radius:12px; box-shadow:0 1px 3px rgba(15,23,42,.08); padding:18px 22px; }
.model-head { display:flex; align-items:center; gap:12px; flex-wrap:wrap; }
.model-head h2 { margin:0; font-size:20px; }
.chip { display:inline-flex; align-items:center; gap:6px; border-radius:999px; padding:3px 11px; font-size:12.5px;
        color:#fff; font-weight:600; }
.chip.outline { background:#fff; color:var(--ink); border:1px solid var(--line); font-weight:500; }
.pill { border-radius:999px; padding:4px 12px; font-size:12.5px; font-weight:600; }
.pill.ok { background:#dcfce7; color:#166534; } .pill.bad { background:#fee2e2; color:#991b1b; }
.tiles { display:grid; grid-template-columns: repeat(6, 1fr); gap:12px; margin:16px 0 6px; }
.tile { border:1px solid var(--line); border-radius:10px; padding:10px 12px; }
.tile .k { color:var(--muted); font-size:12px; } .tile .v { font-size:21px; font-weight:700; margin-top:3px; }
.tile .v small { font-size:12px; color:var(--muted); font-weight:500; }
.tile.alarm { border-color:#fca5a5; background:#fef2f2; } .tile.alarm .v { color:#b91c1c; }
.grid2 { display:grid; grid-template-columns: 1fr 1fr; gap:18px; }
.grid3 { display:grid; grid-template-columns: 1fr 1fr 1fr; gap:18px; }
h3 { font-size:14px; margin:18px 0 6px; color:#334155; font-weight:700; }
h3 span { color:var(--muted); font-weight:400; }
svg.chart text.axis { font-size:11px; fill:#64748b; } svg.chart text.value { fill:#0f172a; font-weight:600; }
svg.chart .grid { stroke:#eef2f7; } svg.chart .limit { stroke:#dc2626; stroke-dasharray:5 4; stroke-width:1.5; }
svg.chart .limit-label { fill:#dc2626; } svg.chart .reference { stroke:#059669; stroke-dasharray:2 3; stroke-width:1.5; }
svg.chart .bar-importance { fill:#6366f1; } svg.chart .whisker { stroke:#0f172a; stroke-width:1.2; }
svg.chart .bar-live { fill:#93c5fd; } svg.chart .bar-ref { fill:none; stroke:#0f172a; stroke-width:1.4; }
.legend { display:flex; gap:14px; flex-wrap:wrap; font-size:12px; color:var(--muted); margin-top:2px; }
.legend .key { display:inline-flex; align-items:center; gap:5px; }
.legend i { width:12px; height:4px; border-radius:2px; display:inline-block; }
.legend i.live { background:#93c5fd; height:10px; } .legend i.ref { border:1.5px solid #0f172a; height:10px; }
.scale { display:flex; align-items:center; gap:6px; font-size:12px; color:var(--muted); }
.filter { display:flex; gap:8px; align-items:center; margin:6px 0; font-size:13px; color:var(--muted); }
.filter input { font:inherit; padding:2px 6px; width:220px; }
details.more summary { cursor:pointer; font-size:13px; color:var(--muted); margin:4px 0; }
.scale b { width:110px; height:10px; border-radius:3px;
           background:linear-gradient(90deg,#ecfdf5,#a7f3d0 25%,#fde68a 42%,#f59e0b 50%,#dc2626); display:inline-block; }
table { width:100%; border-collapse:collapse; font-size:13px; }
th { text-align:left; color:var(--muted); font-weight:600; border-bottom:1px solid var(--line); padding:6px 8px; }
td { border-bottom:1px solid #f1f5f9; padding:6px 8px; vertical-align:top; }
td.state-raised { color:#b91c1c; font-weight:700; } td.state-cleared { color:#15803d; font-weight:600; }
.sev { border-radius:6px; padding:1px 7px; font-size:11.5px; font-weight:700; }
.sev.critical { background:#fee2e2; color:#991b1b; } .sev.warning { background:#fef3c7; color:#92400e; }
.sev.info { background:#e0f2fe; color:#075985; }
.empty { color:var(--muted); font-size:13px; }
"""


def _tiles(view: ModelView) -> str:
    last = view.windows[-1] if view.windows else None
    tiles: list[tuple[str, str, bool]] = []
    if last:
        drifted = sum(1 for f in last["features"] if f["drifted"])
        tiles.append(("Windows judged", str(len(view.windows)), False))
        tiles.append(("Rows, last window", f"{last['rows']:,}", False))
        tiles.append(
            ("Drifted features", f"{drifted} <small>of {len(last['features'])}</small>", drifted > 0)
        )
        psi_v = last["prediction"].get("psi")
        tiles.append(
            ("Prediction PSI", _fmt(psi_v), psi_v is not None and psi_v >= last["prediction"]["threshold"])
        )
        p99 = last["latency"].get("p99_ms")
        tiles.append(
            (
                "p99 latency",
                f"{_fmt(p99, 1)} <small>ms / SLO {last['latency']['slo_ms']:.0f}</small>",
                p99 is not None and p99 > last["latency"]["slo_ms"],
            )
        )
        perf = last.get("performance", {})
        metrics = perf.get("metrics", {})
        name = headline_metric(metrics)
        if name:
            tiles.append(
                (
                    f"Live {name.upper().replace('_', ' ')}",
                    f"{_fmt(metrics[name], 3)} <small>holdout {_fmt(perf['holdout'].get(name), 3)}</small>",
                    bool(perf.get("breaches")),
                )
            )
        else:
            labeled = sum(v["labeled"] for v in view.labels.values())
            tiles.append(("Labels joined", f"{labeled:,}", False))
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile{" alarm" if bad else ""}"><div class="k">{esc(k)}</div><div class="v">{v}</div></div>'
            for k, v, bad in tiles
        )
        + "</div>"
    )


def _versions(view: ModelView) -> str:
    chips = []
    for v in view.versions:
        if v["stage"] not in ("production", "staging"):
            continue
        colour = STAGE_COLOURS.get(v["stage"], "#64748b")
        extra = f" · {v['canary_weight']:.0%}" if v["stage"] == "staging" and v.get("canary_weight") else ""
        chips.append(
            f'<span class="chip" style="background:{colour}">v{esc(v["version"])} {esc(v["stage"])}{extra}</span>'
        )
    others = [v for v in view.versions if v["stage"] not in ("production", "staging")]
    if others:
        chips.append(
            f'<span class="chip outline">{len(others)} other version{"s" if len(others) != 1 else ""}</span>'
        )
    return "".join(chips) or '<span class="chip outline">no version in service</span>'


IMPORTANCE_FEATURES = 10  # bars per version: the most important features


def importance_svg(
    importance: dict[str, Any] | None, top: int = IMPORTANCE_FEATURES, width: int = 640
) -> str:
    """Horizontal bars of a version's global feature importance (mean loss increase when the feature is
    shuffled), most important first, with a whisker of +/- its spread over the repeats."""
    if not importance or not importance.get("features"):
        return '<p class="empty">Not measured for this version.</p>'
    features = importance["features"][:top]
    row, top_pad, left, right = 18, 6, 150, 64
    height = top_pad * 2 + row * len(features)
    high = max(max(f["importance"] + f["spread"] for f in features), 1e-12)
    pw = width - left - right
    parts = [f'<svg class="chart importance" viewBox="0 0 {width} {height}" width="100%" role="img">']
    for i, f in enumerate(features):
        y = top_pad + i * row
        value = max(f["importance"], 0.0)
        w = pw * value / high
        lo = left + pw * max(f["importance"] - f["spread"], 0.0) / high
        hi = left + pw * (f["importance"] + f["spread"]) / high
        name = esc(f["feature"])
        label = name if len(f["feature"]) <= 22 else esc(f["feature"][:21]) + "…"
        parts.append(
            f'<text x="{left - 6}" y="{y + row * 0.65:.1f}" text-anchor="end" class="axis">{label}</text>'
            f'<rect x="{left}" y="{y + 3:.1f}" width="{w:.1f}" height="{row - 6}" rx="2" class="bar-importance">'
            f"<title>{name}: {f['importance']:.4g} ± {f['spread']:.2g}</title></rect>"
            f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + row / 2:.1f}" y2="{y + row / 2:.1f}" class="whisker"/>'
            f'<text x="{max(left + w, hi) + 5:.1f}" y="{y + row * 0.65:.1f}" class="axis">'
            f"{f['importance']:.3g}</text>"
        )
    parts.append("</svg>")
    more = len(importance["features"]) - len(features)
    note = f" · {more} more feature{'s' if more != 1 else ''}" if more > 0 else ""
    return "".join(parts) + (
        f'<div class="legend"><span class="key">increase of {esc(importance["metric"])} when shuffled '
        f"(baseline {importance['baseline']:.3g}; {importance['rows']} holdout rows &times; {importance['repeats']} "
        f"repeats){note}</span></div>"
    )


def _importance(view: ModelView) -> str:
    """Global feature importance of the versions in service (production first), side by side."""
    serving = sorted(
        (v for v in view.versions if v["stage"] in ("production", "staging")),
        key=lambda v: v["stage"] != "production",
    )
    if not serving:
        return ""
    cells = "".join(
        f"<div><h3>Feature importance <span>v{esc(v['version'])} {esc(v['stage'])} · permutation on the "
        f"holdout</span></h3>{importance_svg(v.get('importance'))}</div>"
        for v in serving
    )
    return f'<div class="grid2">{cells}</div>'


def _alerts_table(alerts: Sequence[dict[str, Any]]) -> str:
    if not alerts:
        return '<p class="empty">No alert so far.</p>'
    rows = []
    for a in alerts[:12]:
        when = (
            a["window_end"].strftime("%Y-%m-%d %H:%M")
            if isinstance(a["window_end"], datetime)
            else a["window_end"]
        )
        rows.append(
            f"<tr><td>{esc(when)}</td><td>v{esc(a['version'])}</td><td>{esc(a['kind'].replace('_', ' '))}</td>"
            f'<td class="state-{esc(a["state"])}">{esc(a["state"])}</td>'
            f'<td><span class="sev {esc(a["severity"])}">{esc(a["severity"])}</span></td>'
            f"<td>{esc(a['summary'])}</td></tr>"
        )
    return (
        "<table><thead><tr><th>window end</th><th>version</th><th>kind</th><th>state</th><th>severity</th>"
        "<th>summary</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _filter_form(view: ModelView, match: str) -> str:
    """A plain GET form (no script): the page reloads with ``?feature=`` and the heat maps keep matching rows."""
    return (
        f'<form class="filter" method="get" action="/dashboard#model-{esc(view.model)}">'
        f'<label>Filter features <input type="search" name="feature" value="{esc(match)}" maxlength="64"></label>'
        '<button type="submit">Filter</button></form>'
    )


def model_section(view: ModelView, top_features: int = 4, match: str = "") -> str:
    w = view.windows
    times = [x["end"] for x in w]
    active = len(view.active)
    status = (
        f'<span class="pill bad">{active} active alert{"s" if active != 1 else ""}</span>'
        if active
        else '<span class="pill ok">healthy</span>'
    )
    ranked = (
        sorted(w[-1]["features"], key=lambda f: -(f["effect"] or 0) / f["threshold"])[:top_features]
        if w
        else []
    )

    def history(feature: str, stat: str) -> list[float | None]:
        return [next((x[stat] for x in r["features"] if x["feature"] == feature), None) for r in w]

    psi_series = [(f["feature"], history(f["feature"], "psi")) for f in ranked if f["test"] == "psi"]
    js_series = [(f["feature"], history(f["feature"], "js")) for f in ranked if f["test"] != "psi"]
    threshold_psi = next((f["threshold"] for f in w[-1]["features"] if f["test"] == "psi"), 0.2) if w else 0.2
    threshold_js = next((f["threshold"] for f in w[-1]["features"] if f["test"] != "psi"), 0.1) if w else 0.1
    pred_psi = [r["prediction"].get("psi") for r in w]
    perf_name = None
    for r in reversed(w):
        perf_name = headline_metric(r.get("performance", {}).get("metrics", {}))
        if perf_name:
            break
    perf_chart = '<p class="empty">Waiting for labels.</p>'
    if perf_name:
        values = [r.get("performance", {}).get("metrics", {}).get(perf_name) for r in w]
        holdout = next(
            (
                r["performance"]["holdout"].get(perf_name)
                for r in reversed(w)
                if r.get("performance", {}).get("holdout")
            ),
            None,
        )
        limit = next(
            (
                r["performance"]["limits"].get(perf_name)
                for r in reversed(w)
                if r.get("performance", {}).get("limits")
            ),
            None,
        )
        perf_chart = line_chart_svg(
            times,
            [(f"live {perf_name}", values)],
            reference=holdout,
            reference_label="holdout",
            digits=3,
            limit=limit,
            limit_label="alert limit",
        )
    latency = [r["latency"].get("p99_ms") for r in w]
    slo = w[-1]["latency"]["slo_ms"] if w else None
    version_note = f"version {esc(view.shown_version)}" if view.shown_version else ""
    return f"""
<section class="model" id="model-{esc(view.model)}">
  <div class="model-head"><h2>{esc(view.model)}</h2>{_versions(view)}{status}</div>
  {_tiles(view)}
  <h3>Drift per feature over windows <span>{version_note} · colour = effect size / threshold (PSI for numbers,
  Jensen-Shannon for categories) · dot = drifted</span></h3>
  <div class="scale">0 <b></b> 2&times; threshold</div>
  {_filter_form(view, match) if w else ""}
  {heatmap(w, match)}
  <div class="grid3">
    <div><h3>PSI of the most drifted numbers</h3>{line_chart_svg(times, [*psi_series, ("prediction", pred_psi)], limit=threshold_psi, limit_label=f"threshold {threshold_psi}", floor=0.0)}</div>
    <div><h3>Score distribution <span>last window vs training</span></h3>{histogram_svg(w[-1]["prediction"] if w else None)}</div>
    <div><h3>Performance <span>as labels arrive</span></h3>{perf_chart}</div>
  </div>
  <div class="grid2">
    <div><h3>Jensen-Shannon of the most drifted categories</h3>{line_chart_svg(times, js_series, limit=threshold_js, limit_label=f"threshold {threshold_js}", floor=0.0, width=640) if js_series else '<p class="empty">No category among the most drifted features.</p>'}</div>
    <div><h3>p99 latency <span>ms</span></h3>{line_chart_svg(times, [("p99", latency)], limit=slo, limit_label=f"SLO {slo:.0f} ms" if slo else "", floor=0.0, digits=0, width=640)}</div>
  </div>
  {_importance(view)}
  <h3>Alerts</h3>
  {_alerts_table(view.alerts)}
</section>"""


def render_page(
    views: Sequence[ModelView], generated_at: datetime, refresh_s: int = 30, feature_filter: str = ""
) -> str:
    active = sum(len(v.active) for v in views)
    sections = "".join(model_section(v, match=feature_filter) for v in views) or (
        '<section class="model"><p class="empty">No model version known yet: the monitor learns versions from '
        "models.candidates and their stages from models.lifecycle.</p></section>"
    )
    status = (
        f'<span class="pill bad">{active} active alert{"s" if active != 1 else ""}</span>'
        if active
        else '<span class="pill ok">all healthy</span>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tollgate monitor</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh_s}">
<style>{CSS}</style></head>
<body><header class="top"><h1>tollgate monitor</h1>
<span class="sub">{len(views)} model{"s" if len(views) != 1 else ""} · updated {generated_at.strftime("%Y-%m-%d %H:%M:%S")} UTC</span>
{status}</header>
<main>{sections}</main></body></html>"""
