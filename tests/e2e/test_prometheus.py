"""Real Prometheus remote-writes to Athens; promtool gets the same answers from both."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time

import pytest

from e2e.harness import SELF_SCRAPE_CONFIG, Athens, Prometheus, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian's prometheus package is not installed (apt-get install prometheus)",
)

# Athens follows Prometheus 3.x, the reference Prometheus here is 2.42. Two
# 3.x changes matter for real data: range selectors are left-open (queries
# are evaluated half a scrape interval away from any sample, see below), and
# rate() applies the extrapolation-to-zero rule after the 1.1x threshold, so
# a counter *created* inside the window can get a different rate. The queries
# below avoid such counters; tests/promqltest covers the 3.x behaviour.
QUERIES = [
    "up",
    "rate(process_cpu_seconds_total[10s])",
    "sum by (job) (rate(process_cpu_seconds_total[10s]))",
    "sum by (code) (prometheus_http_requests_total)",
    "max(go_goroutines) * 2 + 1",
    # binary operators between vectors, evaluated by the workers (placement
    # without-name): matched on all other labels, and on() listed ones
    "process_resident_memory_bytes / process_virtual_memory_bytes",
    "sum by (job) (go_memstats_sys_bytes - go_memstats_heap_sys_bytes)",
    "go_memstats_alloc_bytes / on(instance, job) go_memstats_sys_bytes",
]


def promtool(*args: str) -> list | dict:
    out = subprocess.run(["promtool", "query", *args, "-o", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _index(result: list) -> dict:
    out = {}
    for r in result:
        key = tuple(sorted(r["metric"].items()))
        out[key] = [r["value"]] if "value" in r else r["values"]
    return out


def _same(a: list, b: list) -> None:
    ia, ib = _index(a), _index(b)
    assert ia.keys() == ib.keys()
    for k in ia:
        assert [t for t, _ in ia[k]] == [t for t, _ in ib[k]], k
        for (_, va), (_, vb) in zip(ia[k], ib[k]):
            fa, fb = float(va), float(vb)
            assert fa == fb or math.isclose(fa, fb, rel_tol=1e-9) or (math.isnan(fa) and math.isnan(fb)), (k, va, vb)


def test_promtool_same_answers(athens_factory, tmp_path):
    athens: Athens = athens_factory().start()
    prom = Prometheus(tmp_path / "prom", SELF_SCRAPE_CONFIG.format(url=athens.url)).start()
    try:
        time.sleep(15)
        # The newest `up` sample Athens has; evaluate between scrapes, well inside what both hold.
        def newest() -> int:
            _, res = athens.api("/api/v1/query", {"query": "up[1m]", "time": str(time.time())})
            rows = res["data"]["result"]
            return round(float(rows[0]["values"][-1][0]) * 1000) if rows else 0

        wait_until(lambda: newest() > 0, 30, "samples to arrive in Athens")
        t_ms = newest() - 2500
        wait_until(lambda: newest() > t_ms + 3000, 30, "remote write to catch up")
        t = f"{t_ms / 1000:.3f}"
        for q in QUERIES:
            a = promtool("instant", "--time", t, athens.url, q)
            p = promtool("instant", "--time", t, prom.url, q)
            assert p, f"Prometheus returned nothing for {q}"
            _same(a, p)
            start = f"{(t_ms - 8000) / 1000:.3f}"
            a = promtool("range", "--start", start, "--end", t, "--step", "1s", athens.url, q)
            p = promtool("range", "--start", start, "--end", t, "--step", "1s", prom.url, q)
            _same(a, p)
    finally:
        prom.stop()
