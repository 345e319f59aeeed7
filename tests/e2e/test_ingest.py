"""The write path end to end: retries, series cap, worker restarts, remote write 2.0."""

from __future__ import annotations

import time

import snappy

from e2e.harness import Athens, http, make_write, wait_until
from wire.conftest import compile_v2
from wire.test_remote_write_v2 import build_v2


def count_samples(athens: Athens, selector: str, t_s: float) -> int:
    _, res = athens.api("/api/v1/query", {"query": f"sum(count_over_time({selector}[1d]))", "time": str(t_s)})
    rows = res["data"]["result"]
    return int(float(rows[0]["value"][1])) if rows else 0


def series_write(prompb, names: list[str], t0_ms: int, n: int, step_ms: int = 1000):  # type: ignore[no-untyped-def]
    return make_write(prompb, [({"__name__": "ing", "s": s}, [(t0_ms + k * step_ms, float(k)) for k in range(n)])
                               for s in names])


def test_retried_request_is_204_and_adds_nothing(athens, prompb):
    now = int(time.time() * 1000)
    req = series_write(prompb, [f"r{i}" for i in range(50)], now - 60_000, 10)
    for _ in range(3):
        status, body = athens.remote_write(req)
        assert status == 204, body
    assert count_samples(athens, "ing", now / 1000) == 500
    _, res = athens.api("/api/v1/query", {"query": "count(ing)", "time": str(now / 1000)})
    assert res["data"]["result"][0]["value"][1] == "50"


def test_series_cap_refuses_new_series_with_a_clear_4xx(athens_factory, prompb):
    athens = athens_factory(workers=1, extra=["--max-series-per-shard", "3"]).start()
    now = int(time.time() * 1000)
    assert athens.remote_write(series_write(prompb, ["a", "b"], now - 10_000, 2))[0] == 204
    status, body = athens.remote_write(series_write(prompb, ["a", "b", "c", "d", "e"], now - 5_000, 2))
    assert status == 400 and b"4 series_limit" in body, body  # d and e, 2 samples each
    # Known series keep working, samples of the capped ones are not stored.
    assert athens.remote_write(series_write(prompb, ["a", "b", "c"], now - 1_000, 1))[0] == 204
    _, res = athens.api("/api/v1/query", {"query": "count(ing)", "time": str(now / 1000)})
    assert res["data"]["result"][0]["value"][1] == "3"
    status, metrics = http("GET", athens.url + "/metrics")
    assert status == 200
    rows = [ln for ln in metrics.decode().splitlines() if ln.startswith("athens_samples_rejected_total")]
    assert any('reason="series_limit"' in ln and ln.endswith(" 4") for ln in rows), rows


def test_series_refs_relearned_after_worker_restart(athens_factory, prompb):
    athens = athens_factory(workers=2).start()
    now = int(time.time() * 1000)
    names = [f"w{i}" for i in range(40)]
    assert athens.remote_write(series_write(prompb, names, now - 100_000, 5))[0] == 204
    for w in athens.children("_worker"):
        w.kill()  # kill -9 every worker: new connections, empty ref tables
    statuses = set()

    def write_again() -> bool:
        status, _ = athens.remote_write(series_write(prompb, names, now - 50_000, 5))
        statuses.add(status)
        return status == 204

    wait_until(write_again, 60, "writes to succeed after the workers restart", interval=0.2)
    assert statuses <= {204, 503}
    assert count_samples(athens, "ing", now / 1000) == 400


def test_remote_write_2_end_to_end(athens, tmp_path):
    pb = compile_v2(tmp_path)
    now = int(time.time() * 1000)
    body = build_v2(pb, [({"x": str(i)}, [(now - 2000, 1.0), (now - 1000, 2.0)]) for i in range(5)],
                    metadata=(2, "a gauge", ""))
    status, resp = http("POST", athens.url + "/api/v1/write", snappy.compress(body), {
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        "X-Prometheus-Remote-Write-Version": "2.0.0",
    })
    assert status == 204, resp
    _, res = athens.api("/api/v1/query", {"query": "sum(count_over_time(m[1h]))", "time": str(now / 1000)})
    assert res["data"]["result"][0]["value"][1] == "10"
    status, _ = http("POST", athens.url + "/api/v1/write", snappy.compress(body), {
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v7.Request",
    })
    assert status == 415
