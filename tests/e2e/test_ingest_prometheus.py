"""A real Prometheus remote-writes to Athens through 503s and a restart: no sample lost.

Prometheus scrapes itself every second and remote-writes to Athens. While
it runs, every Athens worker is killed (the router answers 503 until the
supervisor has restarted them) and then the whole of Athens is stopped and
started again on the same port (connection refused meanwhile). Prometheus
retries, as remote write 1.0 asks; afterwards Athens must hold exactly the
samples Prometheus itself scraped over the window (the comparison starts
when Prometheus started, so it also covers what was written before the
trouble).
"""

from __future__ import annotations

import shutil
import time

import pytest

from e2e.harness import SELF_SCRAPE_CONFIG, Athens, Prometheus, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="Debian's prometheus package is not installed"
)

QUERY = 'up{job="prometheus"}'


def timestamps(url_api, t_end: float, window_s: int) -> list[float]:  # type: ignore[no-untyped-def]
    _, res = url_api("/api/v1/query", {"query": f"{QUERY}[{window_s}s]", "time": f"{t_end:.3f}"})
    rows = res["data"]["result"]
    return [float(t) for t, _ in rows[0]["values"]] if rows else []


def prom_api(prom: Prometheus):  # type: ignore[no-untyped-def]
    import json
    import urllib.parse

    from e2e.harness import http

    def api(path: str, params: dict[str, str]):  # type: ignore[no-untyped-def]
        status, body = http("GET", prom.url + path + "?" + urllib.parse.urlencode(params))
        assert status == 200, body
        return status, json.loads(body)

    return api


def test_no_sample_lost_through_503s_and_restart(athens_factory, tmp_path):
    athens: Athens = athens_factory(workers=2).start()
    prom = Prometheus(tmp_path / "prom", SELF_SCRAPE_CONFIG.format(url=athens.url)).start()
    try:
        t_start = time.time()
        wait_until(lambda: timestamps(athens.api, time.time(), 60), 60, "remote write to start", interval=0.5)
        time.sleep(2)
        # A period of 503s: the workers are killed again and again for 8 s
        # (longer than the router waits for a worker to come back).
        until = time.monotonic() + 8
        while time.monotonic() < until:
            for w in athens.children("_worker"):
                w.kill()
            time.sleep(0.05)
        wait_until(athens.ready, 90, "workers to restart")
        time.sleep(3)
        # A forced restart of the whole node (SIGKILL: nothing is flushed politely).
        athens.kill_all()
        time.sleep(4)
        athens.start()
        time.sleep(4)
        t_end = time.time() - 2
        window = int(t_end - t_start) + 5
        papi = prom_api(prom)
        want = timestamps(papi, t_end, window)
        assert len(want) >= 15, "Prometheus scraped too little"

        def caught_up() -> bool:
            return timestamps(athens.api, t_end, window) == want

        wait_until(caught_up, 90, "Athens to hold every sample Prometheus scraped", interval=1.0)
        assert "write failed" in athens.log_path.read_text(), "the test never saw a 503"
    finally:
        prom.stop()
