"""Prometheus API conventions: number and time rendering, parameter parsing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athens.errors import BadDataError
from athens.router import api
from athens.router.api import accepts_gzip, fmt_float, fmt_sample, fmt_ts, parse_time, render_matrix, render_vector
from athens.router.scatter import merge_series
from athens.model.labels import Labels
from athens.model.series import Series, SeriesSet


@pytest.mark.parametrize(
    "v,s",
    [(1.0, "1"), (0.1, "0.1"), (1e-7, "0.0000001"), (1e21, "1000000000000000000000"),
     (-0.0, "-0"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"), (123.456, "123.456")],
)
def test_fmt_float_like_go(v, s):
    assert fmt_float(v) == s


@pytest.mark.parametrize(
    "v,s",
    [(1e-7, "1e-07"), (-1.5e-7, "-1.5e-07"), (1e-6, "0.000001"), (1e21, "1e+21"), (9.99e20, "999000000000000000000"),
     (1.2345678901234567e300, "1.2345678901234567e+300"), (5e-324, "5e-324"), (0.0, "0"), (-0.0, "-0"),
     (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"), (123.456, "123.456")],
)
def test_fmt_sample_like_prometheus_api(v, s):
    # Prometheus' jsonutil.MarshalValue: 'f', but 'e' below 1e-6 and from 1e21 on.
    assert fmt_sample(v) == s


@pytest.mark.parametrize("t,s", [(1500, "1.5"), (2000, "2"), (1, "0.001"), (-1500, "-1.5"), (0, "0")])
def test_fmt_ts(t, s):
    assert fmt_ts(t) == s


_labels = st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3).map(
    lambda d: Labels(sorted(d.items()))
)
_values = st.one_of(st.integers(0, 2**64 - 1).map(lambda b: float(np.array([b], np.uint64).view(np.float64)[0])),
                    st.floats(allow_nan=True, allow_infinity=True))
_points = st.lists(st.tuples(st.integers(-(2**53), 2**53), _values), max_size=6)


def _reference_item(lb: Labels, points: list[tuple[int, float]], vector: bool) -> dict:
    pairs = [[fmt_ts(t), fmt_sample(v)] for t, v in points]
    return {"metric": dict(lb.pairs), "value": pairs[0]} if vector else {"metric": dict(lb.pairs), "values": pairs}


def _as_json_numbers(item: object) -> object:
    # The renderers write timestamps as JSON numbers, values as strings.
    if isinstance(item, dict):
        return {k: _as_json_numbers(v) for k, v in item.items()}
    if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and not isinstance(item[1], list):
        return [json.loads(item[0]), item[1]]
    return [_as_json_numbers(x) for x in item] if isinstance(item, list) else item


@pytest.fixture(params=["compiled", "small"])
def renderer(request, monkeypatch):
    """Both renderers: the compiled one, and the one for answers of a few points."""
    monkeypatch.setattr(api, "SMALL_RENDER_POINTS", -1 if request.param == "compiled" else 10**9)


# The renderer fixture only sets a constant, the same for every example.
_ONE_SETTING = [HealthCheck.function_scoped_fixture]


@settings(deadline=None, suppress_health_check=_ONE_SETTING)  # the first example loads the compiled renderer
@given(st.lists(st.tuples(_labels, _points), max_size=5), st.sampled_from([1, 1000]))
def test_render_matrix_equals_prometheus_formatting(renderer, series, unit):
    # Any bit pattern (NaN payloads, subnormals, huge and tiny values), any
    # float, millisecond and whole-second timestamps, UTF-8 labels.
    rows = [(lb, [(t * unit, v) for t, v in pts]) for lb, pts in series]
    got = json.loads(render_matrix([(lb, np.array([t for t, _ in p], np.int64), np.array([v for _, v in p]))
                                    for lb, p in rows]))
    assert got == {"resultType": "matrix",
                   "result": [_as_json_numbers(_reference_item(lb, p, False)) for lb, p in rows]}


@settings(deadline=None, suppress_health_check=_ONE_SETTING)
@given(st.lists(st.tuples(_labels, st.integers(-(2**53), 2**53), _values), max_size=5))
def test_render_vector_equals_prometheus_formatting(renderer, samples):
    got = json.loads(render_vector(samples))
    assert got == {"resultType": "vector",
                   "result": [_as_json_numbers(_reference_item(lb, [(t, v)], True)) for lb, t, v in samples]}


def _slot(t: int) -> int:
    return ((t * int(api.TS_CACHE_MULT)) % 2**64) >> int(api.TS_CACHE_SHIFT)


def test_compiled_matrix_shares_timestamps_across_series_and_cache_clashes(monkeypatch):
    # The compiled renderer writes each timestamp once into a direct-mapped
    # cache: series sharing steps, distinct timestamps on one slot (0 among
    # them: an unused slot's key), negative ones, all written as one at a time.
    clash = next(t for t in range(1, 10**6) if _slot(t) == _slot(0))
    steps = np.array([0, clash, -1500, 1796365200123, 0, clash, 7], np.int64)
    series = [(Labels([("i", str(i))]), np.roll(steps, i), np.arange(len(steps)) * 0.5 + i)
              for i in range(40)]
    compiled = render_matrix(series)
    monkeypatch.setattr(api, "SMALL_RENDER_POINTS", 10**9)
    assert compiled == render_matrix(series)
    assert compiled.count(b"[%s," % fmt_ts(clash).encode()) == 80


def test_render_writes_prometheus_numbers_exactly(renderer):
    # json.loads would accept other spellings of the same numbers: check the bytes.
    lb = Labels([("a", "é")])
    out = render_matrix([(lb, np.array([1500, -2000, 1]), np.array([2.0, 1e-7, math.nan]))])
    assert out == ('{"resultType":"matrix","result":[{"metric":{"a":"é"},"values":'
                   '[[1.5,"2"],[-2,"1e-07"],[0.001,"NaN"]]}]}').encode()
    assert render_vector([]) == b'{"resultType":"vector","result":[]}'


def test_parse_time():
    assert parse_time("1435781451.781", "time") == 1435781451781
    assert parse_time("2015-07-01T20:10:51.781Z", "time") == 1435781451781
    assert parse_time("2015-07-01T22:10:51+02:00", "time") == 1435781451000
    with pytest.raises(BadDataError, match='invalid parameter "time"'):
        parse_time("yesterday", "time")
    # As Go's parseTime: the fraction rounded to ms half away from zero (the
    # float 1796625052.0015 is just below .0015), a comma before it, and
    # Prometheus' own spellings of its minimum and maximum time.
    assert parse_time("1796625052.0015", "time") == 1796625052001
    assert parse_time("-0.0005", "time") == -1
    assert parse_time("2015-07-01T20:10:51,781Z", "time") == 1435781451781
    assert parse_time("-292273086-05-16T16:47:06Z", "start") == api.TIME_MIN_MS
    assert parse_time("292277025-08-18T07:12:54.999999999Z", "end") == api.TIME_MAX_MS
    assert parse_time("1e300", "end") == api.TIME_MAX_MS and parse_time("-inf", "start") == api.TIME_MIN_MS


def test_merge_series_unions_timestamps():
    lb = Labels([("__name__", "m")])
    a = Series(lb, np.array([1, 3]), np.array([1.0, 3.0]))
    b = Series(lb, np.array([2, 3]), np.array([2.0, 9.0]))
    (m,) = merge_series([SeriesSet.of([a]), SeriesSet.of([b])])
    assert m.ts.tolist() == [1, 2, 3] and m.values.tolist() == [1.0, 2.0, 3.0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 6), st.lists(st.integers(0, 20), max_size=6, unique=True)),
                         max_size=5), max_size=4))
def test_merge_series_equals_a_model(answers: list[list[tuple[int, list[int]]]]) -> None:
    """Answers as workers send them (each sorted by labels, a label set at
    most once per answer); the same series may be in several answers."""
    sets = []
    for a, answer in enumerate(answers):
        by_k = dict(answer)
        sets.append(SeriesSet.of([
            Series(Labels([("__name__", "m"), ("k", str(k))]), np.array(sorted(ts), np.int64),
                   np.array([float(a * 100 + t) for t in sorted(ts)]))
            for k, ts in sorted(by_k.items(), key=lambda kv: str(kv[0]))
        ]))
    series = [s for ss in sets for s in ss]
    want: dict[Labels, dict[int, float]] = {}
    for s in series:
        got = want.setdefault(s.labels, {})
        for t, v in zip(s.ts.tolist(), s.values.tolist()):
            got.setdefault(t, v)  # first value wins
    merged = merge_series(sets)
    assert [m.labels for m in merged] == sorted(want)
    for m in merged:
        assert dict(zip(m.ts.tolist(), m.values.tolist())) == want[m.labels]
        assert m.ts.tolist() == sorted(want[m.labels])


@pytest.mark.parametrize("header,ok", [
    ("gzip", True), ("deflate, gzip;q=1.0, *;q=0.5", True), ("GZIP", True), ("*", True),
    ("", False), ("identity", False), ("gzip;q=0", False), ("gzip;q=0.000", False), ("br, deflate", False),
    ("gzip;q=x", False),
])
def test_accepts_gzip(header, ok):
    assert accepts_gzip(header) is ok
