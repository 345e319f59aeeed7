"""The built-in query page in a real headless Chromium: type a query, get a graph, save a screenshot.

Chromium is driven through its DevTools protocol (--remote-debugging-port)
with aiohttp's websocket client. The screenshot is written to
$ATHENS_SCREENSHOT_DIR (default: the test's temporary directory).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2e.harness import Athens, make_write, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1200,900", "--remote-debugging-port=0", "about:blank"]
# The graph draws series in these colours (athens/ui/app.js COLORS).
FIRST_COLOR = (0x15, 0x65, 0xC0)


class DevTools:
    """A minimal DevTools protocol client for one page."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        i = next(self.ids)
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads((await asyncio.wait_for(self.ws.receive(), 30)).data)
            if msg.get("id") == i:
                assert "error" not in msg, msg
                return msg.get("result", {})

    async def js(self, expr: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return res["result"].get("value")

    async def wait_js(self, expr: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = await self.js(expr)
            if v:
                return v
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")


def _devtools_port(user_dir: Path, proc: subprocess.Popen[bytes]) -> int:
    port_file = user_dir / "DevToolsActivePort"

    def ready() -> bool:
        assert proc.poll() is None, "chromium exited"
        return port_file.exists() and port_file.read_text().strip() != ""

    wait_until(ready, 30, "chromium's DevTools port")
    return int(port_file.read_text().split()[0])


async def _drive(port: int, url: str, query: str, shot: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            pages = [t for t in await r.json() if t["type"] == "page"]
        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=64 << 20) as ws:
            dt = DevTools(ws)
            await dt.call("Page.enable")
            await dt.call("Page.navigate", url=url)
            await dt.wait_js("document.readyState === 'complete' && !!document.getElementById('expr')",
                             20, "the page to load")
            await dt.js("document.getElementById('expr').focus()")
            await dt.call("Input.insertText", text=query)
            await dt.call("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter",
                          windowsVirtualKeyCode=13)
            state = await dt.wait_js("document.body.dataset.state", 20, "the query to finish")
            info = await dt.js(f"""(() => {{
                const c = document.getElementById('graph'), ctx = c.getContext('2d');
                const px = ctx.getImageData(0, 0, c.width, c.height).data;
                let line = 0;
                for (let i = 0; i < px.length; i += 4)
                  if (px[i] === {FIRST_COLOR[0]} && px[i+1] === {FIRST_COLOR[1]} && px[i+2] === {FIRST_COLOR[2]}) line++;
                return {{
                  state: document.body.dataset.state,
                  status: document.getElementById('status').textContent,
                  legend: [...document.querySelectorAll('#legend li')].map(li => li.textContent),
                  linePixels: line,
                  graphVisible: !document.getElementById('graph-panel').classList.contains('hidden'),
                  url: location.href,
                }};
            }})()""")
            png = await dt.call("Page.captureScreenshot", format="png")
            shot.write_bytes(base64.b64decode(png["data"]))
            info["state"] = state
            return info


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_query_page_draws_a_graph(tmp_path: Path, prompb: Any) -> None:
    athens = Athens(tmp_path / "data", workers=1).start()
    chrome = None
    user_dir = Path(tempfile.mkdtemp(prefix="athens-chromium-"))
    try:
        now_ms = int(time.time() * 1000) // 15_000 * 15_000
        series = [({"__name__": "ui_wave", "instance": f"i{i}"},
                   [(now_ms - (239 - k) * 15_000, 10 + 5 * math.sin(k / 12 + i)) for k in range(240)])
                  for i in range(3)]
        assert athens.remote_write(make_write(prompb, series))[0] == 204
        # Its own temporary files (org.chromium.Chromium.*) go with user_dir.
        chrome = subprocess.Popen([CHROMIUM, f"--user-data-dir={user_dir}", *CHROMIUM_FLAGS],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "TMPDIR": str(user_dir)})
        port = _devtools_port(user_dir, chrome)
        shot_dir = Path(os.environ.get("ATHENS_SCREENSHOT_DIR", tmp_path))
        shot_dir.mkdir(parents=True, exist_ok=True)
        shot = shot_dir / "athens-query-page-graph.png"
        url = f"{athens.url}/?tab=graph&range=1h&end={now_ms / 1000}"
        info = asyncio.run(_drive(port, url, "ui_wave", shot))
        assert info["state"] == "done", info
        assert info["graphVisible"], info
        assert len(info["legend"]) == 3 and all(x.startswith("ui_wave{") for x in info["legend"]), info
        assert info["linePixels"] > 300, info  # the first series' line is drawn
        assert "expr=ui_wave" in info["url"]
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        if chrome is not None:
            chrome.terminate()
            try:
                chrome.wait(10)
            except subprocess.TimeoutExpired:
                chrome.kill()
                chrome.wait()
        shutil.rmtree(user_dir, ignore_errors=True)
        athens.stop()


def test_query_page_is_served_from_the_package(athens: Athens) -> None:
    from e2e.harness import http

    status, body = http("GET", athens.url + "/")
    assert status == 200 and b'id="expr"' in body
    status, body = http("GET", athens.url + "/ui/app.js")
    assert status == 200 and b"query_range" in body
    assert http("GET", athens.url + "/ui/../../etc/passwd")[0] == 404
    assert http("GET", athens.url + "/ui/nope.js")[0] == 404
