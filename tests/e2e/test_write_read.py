"""Remote write in, PromQL out, through a real `athens serve`."""

from __future__ import annotations

import math
import struct

import snappy

from e2e.harness import Athens, make_write

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
