"""Remote write in, PromQL out, through a real `athens serve`."""

from __future__ import annotations

import math
import struct

import pytest
import snappy

from e2e.harness import Athens, http, make_write

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
T0 = 1_700_000_000_000  # ms


def _values(result: dict) -> dict[tuple, list[tuple[float, str]]]:
    return {tuple(sorted(r["metric"].items())): [tuple(v) for v in r["values"]] for r in result["data"]["result"]}


def test_write_then_query_range_exact(athens: Athens, prompb):
    series = []
    for i in range(50):
        labels = {"__name__": "e2e_metric", "job": "j", "instance": f"host-{i}"}
        series.append((labels, [(T0 + k * 15_000, i * 1000 + k + 0.25) for k in range(40)]))
    status, body = athens.remote_write(make_write(prompb, series))
    assert status == 204, body
    params = {"query": "e2e_metric", "start": str(T0 / 1000), "end": str((T0 + 39 * 15_000) / 1000), "step": "15"}
    for method in ("GET", "POST"):
        status, res = athens.api("/api/v1/query_range", params, method)
        assert status == 200, res
        assert res["data"]["resultType"] == "matrix"
        got = _values(res)
        assert len(got) == 50
        for labels, samples in series:
            key = tuple(sorted(labels.items()))
            assert [float(v) for _, v in got[key]] == [v for _, v in samples]
            assert [t for t, _ in got[key]] == [t / 1000 for t, _ in samples]


def test_rate_and_sum_by(athens: Athens, prompb):
    series = [
        ({"__name__": "reqs_total", "job": "a", "instance": str(i)}, [(T0 + k * 15_000, float(10 * k)) for k in range(41)])
        for i in range(4)
    ]
    assert athens.remote_write(make_write(prompb, series))[0] == 204
    t = (T0 + 40 * 15_000) / 1000
    status, res = athens.api("/api/v1/query", {"query": "sum by (job) (rate(reqs_total[5m]))", "time": str(t)})
    assert status == 200, res
    (sample,) = res["data"]["result"]
    assert sample["metric"] == {"job": "a"}
    assert math.isclose(float(sample["value"][1]), 4 * 10 / 15, rel_tol=1e-12)


def test_staleness_marker_ends_series(athens: Athens, prompb):
    series = [({"__name__": "gone"}, [(T0, 1.0), (T0 + 15_000, STALE)])]
    assert athens.remote_write(make_write(prompb, series))[0] == 204
    _, res = athens.api("/api/v1/query", {"query": "gone", "time": str(T0 / 1000 + 1)})
    assert len(res["data"]["result"]) == 1
    _, res = athens.api("/api/v1/query", {"query": "gone", "time": str(T0 / 1000 + 20)})
    assert res["data"]["result"] == []


def test_malformed_writes_are_rejected_whole(athens: Athens, prompb):
    good = ({"__name__": "half", "a": "1"}, [(T0, 1.0)])
    bad = ({"job": "no-name"}, [(T0, 1.0)])
    status, body = athens.remote_write(make_write(prompb, [good, bad]))
    assert status == 400 and b"__name__" in body
    status, body = athens.post_raw(b"\x20not snappy at all")
    assert status == 400 and b"snappy" in body
    status, body = athens.post_raw(snappy.compress(b"\x0a\xff\xff\xff\x0f"))
    assert status == 400
    _, res = athens.api("/api/v1/query", {"query": "half", "time": str(T0 / 1000)})
    assert res["data"]["result"] == []


def test_query_errors_in_prometheus_format(athens: Athens):
    status, res = athens.api("/api/v1/query", {"query": "sum(", "time": "1"})
    assert status == 400 and res["status"] == "error" and res["errorType"] == "bad_data"
    status, res = athens.api("/api/v1/query_range", {"query": "up", "start": "10", "end": "1", "step": "1"})
    assert status == 400 and res["errorType"] == "bad_data"
    status, res = athens.api("/api/v1/query_range", {"query": "up", "start": "0", "end": "100000", "step": "1"})
    assert status == 400 and "11,000 points" in res["error"]
    status, res = athens.api("/api/v1/query", {"query": "up", "time": "not-a-time"})
    assert status == 400 and 'invalid parameter "time"' in res["error"]


def test_force_flush_seals_heads_and_data_stays_readable(athens: Athens, prompb):
    from e2e.harness import http

    series = [({"__name__": "flushed", "i": str(i)}, [(T0 + k * 15_000, float(k)) for k in range(10)]) for i in range(20)]
    assert athens.remote_write(make_write(prompb, series))[0] == 204
    assert http("POST", athens.url + "/internal/force_flush")[0] == 200
    segments = list(athens.data_dir.glob("shard-*/segments/*"))
    assert segments, "no segment file after force_flush"
    _, res = athens.api("/api/v1/query", {"query": "count(flushed)", "time": str(T0 / 1000 + 140)})
    assert res["data"]["result"][0]["value"][1] == "20"


@pytest.mark.parametrize("placement", ["without-name", "identity"])
def test_binary_operators_across_workers(athens_factory, prompb, placement: str):
    """Operators between two metrics answer the same whatever the data
    directory's placement: pushed down (without-name; a match group spread
    over workers is caught and evaluated by the router) or not (identity:
    a version-1 directory)."""
    athens: Athens = athens_factory(workers=2)
    if placement == "identity":
        athens.data_dir.mkdir(parents=True)
        (athens.data_dir / "athens.json").write_text('{"version": 1, "workers": 2}\n')
    athens.start()
    ts = [T0 + k * 15_000 for k in range(41)]
    series = []
    for i in range(24):
        base = {"job": f"j{i % 3}", "instance": f"h{i}"}
        series.append(({"__name__": "used", **base}, [(t, float(i + k)) for k, t in enumerate(ts)]))
        series.append(({"__name__": "size", **base}, [(t, 100.0 + i) for t in ts]))
    for j in range(3):
        series.append(({"__name__": "weight", "job": f"j{j}"}, [(t, float(j + 1)) for t in ts]))
    assert athens.remote_write(make_write(prompb, series))[0] == 204
    t = ts[-1] / 1000
    want = {
        "sum by (job) (used / size)": {f"j{j}": sum((i + 40) / (100 + i) for i in range(j, 24, 3)) for j in range(3)},
        "sum by (job) (used / on(instance, job) size)": {
            f"j{j}": sum((i + 40) / (100 + i) for i in range(j, 24, 3)) for j in range(3)},
        # each job's match group spans both workers: evaluated by the router
        "sum by (job) (used * on(job) group_left weight)": {
            f"j{j}": sum((i + 40) * (j + 1) for i in range(j, 24, 3)) for j in range(3)},
    }
    for query, by_job in want.items():
        for _ in range(2):  # the second run of a query whose check failed is planned without it
            status, res = athens.api("/api/v1/query", {"query": query, "time": str(t)})
            assert status == 200, res
            got = {r["metric"]["job"]: float(r["value"][1]) for r in res["data"]["result"]}
            assert got.keys() == by_job.keys(), query
            for job, v in by_job.items():
                assert math.isclose(got[job], v, rel_tol=1e-12), (query, job, got[job], v)
    status, body = http("GET", athens.url + "/metrics")
    failed = [ln for ln in body.decode().splitlines() if ln.startswith("athens_query_pushdown_checks_failed_total")]
    assert failed == [f"athens_query_pushdown_checks_failed_total {1 if placement == 'without-name' else 0}"], failed
    meta = (athens.data_dir / "athens.json").read_text()
    assert f'"placement": "{placement}"' in meta or placement == "identity" and "placement" not in meta
