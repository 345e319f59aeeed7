"""POST /api/v1/admin/tsdb/delete_series next to Prometheus 2.42's, on the same remote-written series."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import snappy

from e2e.harness import WRITE_HEADERS, Athens, beside_prometheus, http, make_write

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus package is not installed (apt-get install prometheus)")

def _series(end: int, job: str, n: int = 8) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    return [({"__name__": "del_metric", "job": job, "instance": f"i{k}"},
             [(end - (20 - t) * 15_000, float(t * k)) for t in range(20)]) for k in range(n)]


@pytest.fixture
def both(tmp_path: Path, prompb: Any) -> Iterator[tuple[Athens, str, int]]:
    end = int(time.time() * 1000) // 1000 * 1000 - 60_000
    body = snappy.compress(make_write(prompb, _series(end, "a") + _series(end, "b")).SerializeToString())
    with beside_prometheus(tmp_path, body, ["--admin-api", "on"], ["--web.enable-admin-api"]) as (athens, prom):
        yield athens, prom.url, end


def _post(url: str, path: str, params: list[tuple[str, str]]) -> tuple[int, Any]:
    status, body = http("POST", url + path, urllib.parse.urlencode(params).encode(),
                        {"Content-Type": "application/x-www-form-urlencoded"})
    return status, json.loads(body) if body else None


def _answers(url: str, end: int) -> list[Any]:
    _, q = _post(url, "/api/v1/query", [("query", "count by (job) (count_over_time(del_metric[1h]))"),
                                        ("time", str(end / 1000 + 1))])
    return sorted(map(json.dumps, q["data"]["result"]))


def _series_listed(url: str) -> int:
    return len(_post(url, "/api/v1/series", [("match[]", "del_metric")])[1]["data"])


def test_delete_series_answers_as_prometheus(both: tuple[Athens, str, int]) -> None:
    athens, prom, end = both
    assert _answers(athens.url, end) == _answers(prom, end)
    matches = [("match[]", 'del_metric{job="a",instance=~"i[0-3]"}'), ("match[]", '{instance="i7"}')]
    for url in (athens.url, prom):
        assert _post(url, "/api/v1/admin/tsdb/delete_series", matches) == (204, None)
    got = _answers(athens.url, end)
    assert got == _answers(prom, end)
    assert [json.loads(r)["value"][1] for r in got] == ["3", "7"]  # a: i4-i6 left of eight, b: all but i7
    # Prometheus 2.42 lists the series in its head until their block is
    # compacted; Athens' are gone from the series API too.
    assert (_series_listed(athens.url), _series_listed(prom)) == (10, 16)
    # The same again, and a range that holds all their samples, delete nothing more.
    for url in (athens.url, prom):
        assert _post(url, "/api/v1/admin/tsdb/delete_series",
                     [("match[]", 'del_metric{job="a",instance=~"i[0-3]"}'), ("start", "0"),
                      ("end", str(end // 1000 + 60))])[0] == 204
    assert _answers(athens.url, end) == got


@pytest.mark.parametrize("params", [[], [("match[]", "del_metric{")], [("match[]", "x"), ("start", "soon")]])
def test_delete_series_bad_input_as_prometheus(both: tuple[Athens, str, int], params: list) -> None:
    athens, prom, _ = both
    (sa, ba), (sp, bp) = (_post(url, "/api/v1/admin/tsdb/delete_series", params) for url in (athens.url, prom))
    assert sa == sp == 400
    assert ba["errorType"] == bp["errorType"] == "bad_data"


def _raw(url: str, at_ms: int) -> list[Any]:
    """Every sample of del_metric in the last hour, as the API lists them."""
    _, q = _post(url, "/api/v1/query", [("query", "del_metric[1h]"), ("time", str(at_ms / 1000))])
    return sorted(map(json.dumps, q["data"]["result"]))


def _tombstones(url: str) -> list[int]:
    """athens_tombstones of each worker."""
    _, text = http("GET", url + "/metrics")
    return [int(line.split()[-1]) for line in text.decode().splitlines() if line.startswith("athens_tombstones{")]


def test_time_ranges_are_deleted_as_in_prometheus(both: tuple[Athens, str, int], prompb: Any) -> None:
    athens, prom, end = both
    before = _raw(athens.url, end)
    assert before == _raw(prom, end)
    ranges = [
        [("match[]", 'del_metric{job="b"}'), ("start", str((end - 12 * 15_000) / 1000)),
         ("end", str((end - 5 * 15_000) / 1000))],
        [("match[]", 'del_metric{instance="i2"}'), ("end", str((end - 16 * 15_000) / 1000))],  # from the first
        [("match[]", '{job="a",instance=~"i[34]"}'), ("start", str((end - 2 * 15_000) / 1000))],  # to the last
        [("match[]", '{job="a",instance="i5"}'), ("start", "0"), ("end", "1")],  # before any sample
    ]
    for params in ranges:
        for url in (athens.url, prom):
            assert _post(url, "/api/v1/admin/tsdb/delete_series", params) == (204, None)
    got = _raw(athens.url, end)
    assert got == _raw(prom, end) != before
    assert sum(len(json.loads(r)["values"]) for r in got) == 16 * 20 - 8 * 8 - 2 * 5 - 2 * 2
    assert _series_listed(athens.url) == _series_listed(prom) == 16  # each keeps samples
    # One range per series (two for job="b"'s i2), none for the range before i5's samples.
    assert sum(_tombstones(athens.url)) == 8 + 1 + 1 + 2
    for url in (athens.url, prom):  # removed from disk now, the answers as they were
        assert _post(url, "/api/v1/admin/tsdb/clean_tombstones", []) == (204, None)
    assert _raw(athens.url, end) == _raw(prom, end) == got
    assert _tombstones(athens.url) == [0, 0]
    # Samples written later past a series' newest are not hidden, in either:
    # the deleted ranges are clamped to the series' samples.
    later = [(lb, [(end + 30_000, 1.0)]) for lb, _ in _series(end, "a")]
    body = snappy.compress(make_write(prompb, later).SerializeToString())
    assert http("POST", prom + "/api/v1/write", body, WRITE_HEADERS)[0] == 204
    assert athens.post_raw(body)[0] == 204
    assert _raw(athens.url, end + 31_000) == _raw(prom, end + 31_000)


def test_a_series_deleted_whole_and_written_again_is_new(both: tuple[Athens, str, int], prompb: Any) -> None:
    athens, _, end = both
    assert _post(athens.url, "/api/v1/admin/tsdb/delete_series", [("match[]", 'del_metric{job="b"}')])[0] == 204
    later = [(lb, [(end + 30_000, 1.0)]) for lb, _ in _series(end, "b")]
    assert athens.post_raw(snappy.compress(make_write(prompb, later).SerializeToString()))[0] == 204
    _, q = _post(athens.url, "/api/v1/query", [("query", 'count_over_time(del_metric{job="b"}[1h])'),
                                               ("time", str(end / 1000 + 31))])
    assert [r["value"][1] for r in q["data"]["result"]] == ["1"] * 8
