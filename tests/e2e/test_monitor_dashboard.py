"""The dashboard a person looks at, rendered by headless Chromium: drift heatmap, PSI lines, the score
histogram against the training reference, performance as labels arrive, latency, alerts.

The browser first meets the login: without a session the dashboard sends it to the sign-in form; a wrong
key is refused there; a viewer's key is exchanged for an HttpOnly, SameSite=Strict session cookie that the
page's scripts cannot read. The screenshot is checked for being a real picture (size, colours, not blank)
and the page's DOM for the feature names and the raised alert; a copy is kept in
``.local/monitor/dashboard.png`` for people to see. Chromium is Debian's ``chromium`` package: without it
the test skips, unless ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from tests.auth_support import RoleKeys, header
from tests.conftest import ROOT, wait_http_ok
from tests.e2e.browser import Browser, chromium
from tests.e2e.monitor_feed import Stream, contract, publish_versions, trained_importance
from tests.e2e.png import read_png
from tests.kafka_helpers import produce
from tests.polling import get_until
from tollgate_monitor.dashboard import IMPORTANCE_FEATURES

WINDOWS = 16
ROWS = 300
DRIFT_FROM = 8
LABEL_DELAY = 8  # labels of window i arrive during window i + 8


def section_of(html: str, model: str) -> str:
    """The dashboard's section of ``model`` (sections are not nested)."""
    start = html.index(f'<section class="model" id="model-{model}">')
    return html[start : html.index("</section>", start)]


async def test_dashboard_in_headless_chromium(
    services: Any, namespace: str, bootstrap: str, api_keys: RoleKeys, tmp_path: Path
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

    async with httpx.AsyncClient(base_url=base, timeout=10, headers=header(api_keys["viewer"])) as client:
        for window in range(LABEL_DELAY):
            await produce(bootstrap, log_topic, stream.log_events(window))
        await get_until(
            client,
            f"/v1/models/{stream.model}/performance",
            lambda b: b["labels"].get("1", {}).get("predictions") == LABEL_DELAY * ROWS,
            timeout=90,
        )
        for window in range(LABEL_DELAY):
            await produce(
                bootstrap,
                f"{namespace}.events.validated.v1",
                stream.label_events(window, arrive_in_window=window + LABEL_DELAY),
            )
        await get_until(
            client,
            f"/v1/models/{stream.model}/performance",
            lambda b: b["labels"]["1"]["labeled"] == LABEL_DELAY * ROWS,
            timeout=90,
        )
        for window in range(LABEL_DELAY, WINDOWS):
            await produce(bootstrap, log_topic, stream.log_events(window))
        await produce(bootstrap, log_topic, stream.log_events(WINDOWS, count=1))
        await get_until(
            client, f"/v1/models/{stream.model}/drift", lambda b: len(b["windows"]) == WINDOWS, timeout=90
        )
        await get_until(
            client,
            "/v1/alerts?active=true",
            lambda b: b if any(a["kind"] == "data_drift" and a["model"] == stream.model for a in b) else None,
            timeout=90,
        )
        page = await client.get("/dashboard")
        assert page.status_code == 200 and "<svg" in page.text

    # Without a key or session: the JSON API answers 401, a sign-in with a bad or unfit key is refused.
    async with httpx.AsyncClient(base_url=base, timeout=10) as anonymous:
        assert (await anonymous.get(f"/v1/models/{stream.model}/drift")).status_code == 401
        to_login = await anonymous.get("/dashboard")
        assert to_login.status_code == 303 and to_login.headers["location"] == "/login"
        unfit = await anonymous.post("/login", data={"key": api_keys["producer"]})
        assert (
            unfit.status_code == 403
            and "no read-only role" in unfit.text
            and "set-cookie" not in unfit.headers
        )
        signed_in = await anonymous.post("/login", data={"key": api_keys["viewer"]})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and api_keys["viewer"] not in cookie

    browser = await Browser.launch(binary, tmp_path / "chromium-profile")
    try:
        await browser.goto(f"{base}/dashboard", "/login")  # no session yet: sent to the sign-in form
        assert "Score distribution" not in await browser.html()
        fill = "document.getElementById('key').value = {}; document.querySelector('form').submit(); true"
        await browser.evaluate(fill.format(json.dumps("tgk_not-a-key")))
        await browser.wait_for("document.querySelector('.error') !== null")
        assert "Invalid, revoked or rotated API key" in await browser.html()
        assert await browser.cookies() == []

        await browser.evaluate(fill.format(json.dumps(api_keys["viewer"])))
        await browser.wait_for("location.pathname === '/dashboard' && document.readyState === 'complete'")
        # The monitor shows every model it knows (other tests' too, in the session's database): what is
        # checked is this test's own model's section.
        dom = section_of(await browser.html(), stream.model)
        assert await browser.evaluate("document.cookie") == ""  # HttpOnly: invisible to the page's scripts
        [session] = await browser.cookies()
        assert (
            session["name"] == "tollgate_session" and session["httpOnly"] and session["sameSite"] == "Strict"
        )
        assert api_keys["viewer"] not in session["value"]
        # The picture is of this model alone: other models' sections are taken out of the page first.
        mine = json.dumps(f"model-{stream.model}")
        await browser.evaluate(
            f"document.querySelectorAll('section.model').forEach(s => {{ if (s.id !== {mine}) s.remove(); }}); true"
        )
        shot = await browser.screenshot(1400, 1600)
    finally:
        await browser.close()

    for feature in contract().feature_names:
        assert feature in dom, feature
    assert "data drift on" in dom and "raised" in dom and "production" in dom
    assert "Score distribution" in dom and "Performance" in dom
    # The production version's global feature importance, from its candidate event: a bar per feature,
    # most important first, as the trainer ranked them.
    assert "Feature importance <span>v1 production" in dom
    ranked = [f.feature for f in trained_importance().features]
    drawn = dom[dom.index("Feature importance <span>v1 production") :]
    bars = re.findall(r'class="bar-importance"><title>([^:<]+):', drawn)
    assert bars == ranked[: len(bars)] and len(bars) == min(len(ranked), IMPORTANCE_FEATURES)

    image = read_png(shot)
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
    (keep / "dashboard.png").write_bytes(shot)
