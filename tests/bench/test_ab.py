"""bench.ab's request list and its summary of alternated rounds."""

from __future__ import annotations

import math
import urllib.parse

import pytest

from bench import ab, queries
from bench.systems import Athens

RUN = {
    "query_window": {"instant": 1_800_003_600.0, "start": 1_800_000_600, "end": 1_800_003_600, "step": 30},
    "dataset": {"start_ms": 1_800_000_000_000, "end_ms": 1_800_003_600_000},
}


def test_requests_are_the_benchmark_list_at_the_runs_window() -> None:
    reqs = dict(ab.requests_of(RUN))
    assert len(reqs) == sum(2 if q.kind == "promql" else 1 for q in queries.QUERIES)
    path, _, qs = reqs["single_series range"].partition("?")
    params = dict(urllib.parse.parse_qsl(qs))
    assert path == "/api/v1/query_range"
    assert params == {"query": 'node_load5{instance="host-0001:9100"}', "start": "1800000600",
                      "end": "1800003600", "step": "30"}
    assert reqs["labels api"] == "/api/v1/labels?start=1800000000.000&end=1800003600.000"


def test_requests_can_be_narrowed_by_name() -> None:
    reqs = ab.requests_of(RUN)
    got = ab.select_requests(reqs, "labels api, single_series range")
    assert [n for n, _ in got] == ["single_series range", "labels api"]  # the list's order
    assert ab.select_requests(reqs, None) == reqs
    with pytest.raises(SystemExit, match="no request named single_series"):
        ab.select_requests(reqs, "single_series")


def test_summary_gives_b_over_a_overall_and_per_starting_order() -> None:
    # Build B is 20% faster on q1 and as fast on q2; whichever starts second gains 10%.
    rounds, a_first = [], []
    for i in range(4):
        first_a = i % 2 == 0
        a = {"q1": 10.0 * (1.0 if first_a else 0.9), "q2": 4.0 * (1.0 if first_a else 0.9)}
        b = {"q1": 8.0 * (0.9 if first_a else 1.0), "q2": 4.0 * (0.9 if first_a else 1.0)}
        rounds.append({"a": a, "b": b})
        a_first.append(first_a)
    s = ab.summarise(rounds, a_first)
    assert s["requests"]["q1"]["a"] == pytest.approx(9.5) and s["requests"]["q1"]["b"] == pytest.approx(7.6)
    assert s["requests"]["q1"]["b_over_a"] == pytest.approx(0.8)
    assert s["geomean_b_over_a"] == pytest.approx(math.sqrt(0.8))
    assert s["geomean_b_over_a_a_first"] == pytest.approx(math.sqrt(0.8 * 0.9 * 0.9))
    assert s["geomean_b_over_a_b_first"] == pytest.approx(math.sqrt(0.8 / 0.9 / 0.9))


def test_athens_runs_the_given_checkout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert Athens(checkout=tmp_path).env()["PYTHONPATH"].split(":")[0] == str(tmp_path)
