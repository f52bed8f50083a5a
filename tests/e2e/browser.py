"""Headless Chromium driven over the DevTools protocol: a real browser (forms, redirects, cookies with their
HttpOnly/SameSite rules, rendering), with no driver package beyond ``websockets``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.polling import eventually

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (Debian package 'chromium'); CI must have it")
        pytest.skip("chromium is not installed (apt-get install chromium) and CI is not set")
    return found


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process, ws: ClientConnection) -> None:
        self.proc = proc
        self.ws = ws
        self._ids = itertools.count(1)

    @classmethod
    async def launch(cls, binary: str, profile: Path, timeout: float = 60) -> Browser:
        """Chromium with a fresh profile (``profile`` must not exist yet), one blank page."""
        profile.mkdir(parents=True)
        proc = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1400,1600",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"

        def devtools_port() -> str:
            if proc.returncode is not None:
                raise AssertionError(f"chromium exited ({proc.returncode}) before opening its DevTools port")
            return port_file.read_text().strip() if port_file.exists() else ""

        try:
            port = int(
                (
                    await eventually(
                        devtools_port, timeout=timeout, interval=0.1, what="chromium's DevTools port"
                    )
                ).split()[0]
            )
            async with httpx.AsyncClient(timeout=10) as client:

                async def page_targets() -> list[dict[str, Any]]:
                    targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
                    return [t for t in targets if t.get("type") == "page"]

                pages = await eventually(
                    page_targets, timeout=timeout, interval=0.1, what="a page opened by chromium"
                )
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            raise
        ws = await connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
        return cls(proc, ws)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> None:
        """Until ``expression`` is truthy in the page; on timeout the error names where the page is."""
        await eventually(
            lambda: self.evaluate(expression),
            timeout=timeout,
            interval=0.1,
            what=expression,
            seen=lambda: self.evaluate("location.href"),
        )

    async def goto(self, url: str, path: str) -> None:
        """Open ``url`` and wait until the page at ``path`` (after redirects) has loaded."""
        await self.send("Page.navigate", url=url)
        await self.wait_for(f"location.pathname === {json.dumps(path)} && document.readyState === 'complete'")

    async def html(self) -> str:
        return str(await self.evaluate("document.documentElement.outerHTML"))

    async def cookies(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.send("Network.getCookies"))["cookies"]
        return found

    async def screenshot(self, width: int, height: int) -> bytes:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
