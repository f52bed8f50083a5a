"""The dashboard a person looks at, rendered by headless Chromium: drift heatmap, PSI lines, the score
histogram against the training reference, performance as labels arrive, latency, alerts.

The screenshot is checked for being a real picture (size, colours, not blank) and the page's DOM for the
feature names and the raised alert; a copy is kept in ``.local/monitor/dashboard.png`` for people to see.
Chromium is Debian's ``chromium`` package: without it the test skips, unless ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, wait_http_ok
from tests.e2e.monitor_feed import Stream, contract, publish_versions, wait_for
from tests.e2e.png import read_png
from tests.kafka_helpers import produce

WINDOWS = 16
ROWS = 300
DRIFT_FROM = 8
LABEL_DELAY = 8  # labels of window i arrive during window i + 8


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (Debian package 'chromium'); CI must have it")
        pytest.skip("chromium is not installed (apt-get install chromium) and CI is not set")
    return found


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )


async def test_dashboard_in_headless_chromium(
    services: Any, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    binary = chromium()
    stream = Stream.recent(
        WINDOWS, ROWS, DRIFT_FROM, {"credit_utilization": 1.0, "debt_to_income": 0.8, "employment_type": 1.5}
    )
    log_topic = f"{namespace}.inference.log.v1"
    await publish_versions(bootstrap, namespace, stream.model)
    monitor = services(
        "monitor",
        window_seconds="60",
        allowed_lateness_seconds="0",
        min_window_rows="250",
        min_labels="150",
        raise_after="3",
        clear_after="3",
    )
    base = f"http://127.0.0.1:{monitor.port}"
    await wait_http_ok(f"{base}/readyz", proc=monitor)

    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for window in range(LABEL_DELAY):
            await produce(bootstrap, log_topic, stream.log_events(window))
        await wait_for(
            client,
            f"/v1/models/{stream.model}/performance",
            lambda b: b["labels"].get("1", {}).get("predictions") == LABEL_DELAY * ROWS,
        )
        for window in range(LABEL_DELAY):
            await produce(
                bootstrap,
                f"{namespace}.events.validated.v1",
                stream.label_events(window, arrive_in_window=window + LABEL_DELAY),
            )
        await wait_for(
            client,
            f"/v1/models/{stream.model}/performance",
            lambda b: b["labels"]["1"]["labeled"] == LABEL_DELAY * ROWS,
        )
        for window in range(LABEL_DELAY, WINDOWS):
            await produce(bootstrap, log_topic, stream.log_events(window))
        await produce(bootstrap, log_topic, stream.log_events(WINDOWS, count=1))
        await wait_for(client, f"/v1/models/{stream.model}/drift", lambda b: len(b["windows"]) == WINDOWS)
        await wait_for(client, "/v1/alerts?active=true", lambda b: any(a["kind"] == "data_drift" for a in b))
        page = await client.get("/dashboard")
        assert page.status_code == 200 and "<svg" in page.text

    profile = tmp_path / "chromium-profile"
    shot = tmp_path / "dashboard.png"
    run_chromium(binary, profile, f"--screenshot={shot}", "--window-size=1400,1600", f"{base}/dashboard")
    dom = run_chromium(binary, profile, "--dump-dom", f"{base}/dashboard").stdout.decode()

    for feature in contract().feature_names:
        assert feature in dom, feature
    assert "data drift on" in dom and "raised" in dom and "production" in dom
    assert "Score distribution" in dom and "Performance" in dom

    image = read_png(shot.read_bytes())
    assert (image.width, image.height) == (1400, 1600)
    step = 7
    pixels = [image.pixel(x, y) for y in range(0, image.height, step) for x in range(0, image.width, step)]
    colours = {p[:3] for p in pixels}
    background = max(colours, key=pixels.count)
    share_drawn = sum(1 for p in pixels if p != background) / len(pixels)
    reds = sum(1 for r, g, b in (p[:3] for p in pixels) if r > 180 and g < 90 and b < 90)
    assert len(colours) > 200, "the page looks flat: charts did not render"
    assert share_drawn > 0.3, f"mostly blank ({share_drawn:.0%} drawn)"
    assert reds > 0, "no drifted (red) cell in the heatmap"

    keep = ROOT / ".local" / "monitor"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "dashboard.png")
