"""Differential test: the engine against a real Prometheus on the same data.

Random counters and gauges are remote-written to Debian's Prometheus (2.42)
and loaded into a MemQuerier; a set of queries is evaluated by both, as
instant and range queries, and the results must agree.

Prometheus 2.42 predates 3.x in a few places; the test avoids them rather
than papering over them: sample timestamps carry random milliseconds so no
sample sits exactly on a window, subquery step or lookback boundary (2.x
windows are closed on the left, 3.x ones open), and the queries use no 3.x-only
functions or name-removal corner cases (2.42 keeps the metric name on
`vector atan2 scalar`, 3.x drops it as for every arithmetic operator).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import snappy

from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.query.engine import Engine
from athens.query.memquerier import MemQuerier
from bench.rwencode import encode_series

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")

QUERIES = [
    "req_total",
    "temp",
    "temp offset 3m",
    "rate(req_total[5m])",
    "increase(req_total[3m])",
    "irate(req_total[2m])",
    "delta(temp[4m])",
    "idelta(temp[2m])",
    "deriv(temp[6m])",
    "predict_linear(temp[6m], 120)",
    "changes(temp[10m])",
    "resets(req_total[15m])",
    "sum_over_time(temp[5m])",
    "avg_over_time(temp[5m])",
    "min_over_time(temp[7m])",
    "max_over_time(temp[7m])",
    "count_over_time(temp[5m])",
    "stddev_over_time(temp[5m])",
    "quantile_over_time(0.25, temp[8m])",
    "last_over_time(temp[5m])",
    "present_over_time(temp[1m])",
    "sum by (job) (rate(req_total[5m]))",
    "avg without (instance) (temp)",
    "max by (job) (temp) - min by (job) (temp)",
    "count(temp > 0)",
    "stddev by (job) (temp)",
    "quantile by (job) (0.75, temp)",
    "topk(3, temp)",
    "bottomk(2, rate(req_total[5m]))",
    "count_values by (job) ('bucket', floor(temp))",
    "temp * on(job, instance) group_left rate(req_total[5m])",
    "temp / ignoring(instance) group_left sum by (job) (temp)",
    "temp > bool 1",
    "temp and on(instance) (rate(req_total[5m]) > 0.33)",
    "temp or on(job) req_total",
    "req_total unless on(instance) temp < 0",
    "abs(temp) ^ 0.5 % 3",
    "clamp(temp, -1, 1)",
    "round(temp, 0.3)",
    "timestamp(temp)",
    "scalar(sum(temp)) + vector(1)",
    "absent(nope{job='x'})",
    "max_over_time(rate(req_total[2m])[10m:1m])",
    "avg_over_time(temp[9m:45s] offset 2m)",
    "rate(req_total[5m] @ end())",
    "histogram_quantile(0.9, sum by (le) (rate(lat_bucket[5m])))",
    "label_replace(temp, 'host', '$1', 'instance', 'i-(.*)')",
    "label_join(temp, 'both', '/', 'job', 'instance')",
    "sort_desc(temp)",
    "exp(temp / 10) + ln(abs(temp) + 1)",
    "sin(temp) + cos(temp) * tanh(temp) - sgn(temp)",
    "-temp % -2",
    "stdvar(temp) + group(temp)",
    "hour(timestamp(temp)) * 60 + minute(timestamp(temp))",
    # Go's float arithmetic to the last bit, which `== bool`, a reciprocal
    # or the low bits a modulo keeps show (a tolerance would not).
    "deg(temp) == bool temp * 180 / pi()",
    "rad(temp) == bool temp * pi() / 180",
    "1 / sgn(-(temp * 0))",
    "(temp * 0 - 1 / 0) ^ 0.5",
    "temp ^ 2 == bool temp * temp",
    "temp ^ 3 * 2 ^ 33 % 8",
    "ln(temp) * 2 ^ 50 % 8",
    "log2(temp) * 2 ^ 50 % 8",
    "log10(temp) * 2 ^ 51 % 8",
    "sin(temp) * 2 ^ 53 % 8",
    "cos(temp) * 2 ^ 53 % 8",
    "tan(temp) * 2 ^ 50 % 8",
    "cos(timestamp(temp)) * 2 ^ 53 % 8",  # past 2^29: Payne-Hanek's reduction
    "sin(temp * 1e12) * 2 ^ 53 % 8",
    "tan(timestamp(temp) * 1e6) * 2 ^ 50 % 8",
    "atan(temp) * 2 ^ 52 % 8",  # all three of satan's ranges
    "asin(clamp(temp / 8, -1, 1)) * 2 ^ 52 % 8",  # both of Asin's branches, and +-1
    "acos(clamp(temp / 8, -1, 1)) * 2 ^ 52 % 8",
    "absent(nope{job=~'a.*', job='api'})",
    "day_of_week() + days_in_month() + month() + year() + day_of_year()",
    "time() - timestamp(temp)",
    "absent_over_time(nope[5m])",
    "increase(lat_bucket[5m])",
    "rate(req_total[5m:30s])",
    "deriv(rate(req_total[1m])[5m:])",
    "sum_over_time(temp[3m] offset -1m)",
    "last_over_time(temp[10m:1m] @ start())",
    "sort(temp)",
    ("double_exponential_smoothing(temp[6m], 0.3, 0.6)", "holt_winters(temp[6m], 0.3, 0.6)"),
]


def make_data(rng: np.random.Generator, start: int, end: int) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
    out = []

    def times() -> np.ndarray:
        # Whole seconds plus 1..499 ms: never on a subquery step (whole
        # seconds) nor on a window edge of the queries (which end in .700).
        base = np.arange(start, end, 15_000)
        ts = base + rng.integers(0, 14, len(base)) * 1000 + rng.integers(1, 500, len(base))
        keep = rng.random(len(ts)) > 0.1  # some missed scrapes
        return np.sort(ts[keep]).astype(np.int64)

    for job in ("api", "web"):
        for inst in ("i-1", "i-2", "i-3"):
            ts = times()
            inc = rng.exponential(5.0, len(ts))
            vs = np.cumsum(inc)
            cut = rng.integers(0, len(ts))
            vs[cut:] -= vs[cut] - inc[cut]  # one counter reset
            out.append((Labels([("__name__", "req_total"), ("job", job), ("instance", inst)]), ts, vs))
            ts = times()
            out.append((Labels([("__name__", "temp"), ("job", job), ("instance", inst)]), ts, np.round(rng.normal(0, 4, len(ts)), 3)))
    ts = np.arange(start, end, 15_000).astype(np.int64) + 7  # start is whole seconds
    counts = np.cumsum(rng.integers(0, 10, (len(ts), 4)), axis=0).astype(float)
    counts = np.cumsum(counts, axis=1)  # buckets are cumulative
    for j, le in enumerate(("0.1", "0.5", "2.5", "+Inf")):
        out.append((Labels([("__name__", "lat_bucket"), ("le", le)]), ts, counts[:, j]))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("prom")
    cfg = d / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    port = _free_port()
    log = open(d / "log", "wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={d / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"],
        stdout=log, stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.skip("prometheus did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def loaded(prometheus: str) -> tuple[str, MemQuerier, int, int]:
    rng = np.random.default_rng(20261125)
    end = (int(time.time()) - 120) * 1000
    start = end - 50 * 60_000
    data = make_data(rng, start, end)
    req = urllib.request.Request(
        prometheus + "/api/v1/write",
        data=snappy.compress(encode_series(data)),
        method="POST",
        headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                 "X-Prometheus-Remote-Write-Version": "0.1.0"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status in (200, 204)
    q = MemQuerier()
    q.append(WriteBatch.from_series(data))
    return prometheus, q, start, end


def _prom_value(v: str) -> float:
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(v, None) or float(v)


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("query", QUERIES, ids=[q if isinstance(q, str) else q[0] for q in QUERIES])
def test_instant_and_range_agree_with_prometheus(loaded, query: str | tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    # A pair is (our spelling, Prometheus 2.42's) of the same function.
    query, theirs = (query, query) if isinstance(query, str) else query
    url, q, start, end = loaded
    engine = Engine()
    rng = np.random.default_rng(zlib.crc32(query.encode()))
    for t in rng.integers(start // 1000 + 12 * 60, end // 1000, 4):
        t = int(t) * 1000 + 700
        body = _get(url + "/api/v1/query?" + urllib.parse.urlencode({"query": theirs, "time": f"{t / 1000:.3f}"}))
        assert body["status"] == "success", body
        ours = asyncio.run(engine.instant(q, query, t))
        data = body["data"]
        if data["resultType"] == "scalar":
            assert ours.result_type == "scalar" and _same(ours.value[1], _prom_value(data["result"][1]))
            continue
        want = {Labels(r["metric"].items()): _prom_value(r["value"][1]) for r in data["result"]}
        got = {lb: v for lb, _, v in ours.value}
        assert set(got) == set(want), (query, t)
        for lb, v in want.items():
            assert _same(got[lb], v), (query, t, str(lb), got[lb], v)
    s = start + 15 * 60_000 + 700
    e = s + 20 * 60_000
    body = _get(url + "/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": theirs, "start": f"{s / 1000:.3f}", "end": f"{e / 1000:.3f}", "step": "37"}))
    assert body["status"] == "success", body
    ours = asyncio.run(engine.range(q, query, s, e, 37_000))
    want_m = {
        Labels(r["metric"].items()): [(round(float(t) * 1000), _prom_value(v)) for t, v in r["values"]]
        for r in body["data"]["result"]
    }
    got_m = {lb: list(zip(ts.tolist(), vs.tolist())) for lb, ts, vs in ours.value}
    assert set(got_m) == set(want_m), query
    for lb, pts in want_m.items():
        assert [t for t, _ in got_m[lb]] == [t for t, _ in pts], (query, str(lb))
        for (_, a), (_, b) in zip(got_m[lb], pts):
            assert _same(a, b), (query, str(lb), a, b)
