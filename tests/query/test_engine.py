"""Engine behaviour: selectors, staleness, rate, aggregation, matching,
errors, and the property that vectorised range evaluation equals instant
evaluation at every step."""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.errors import BadDataError, ExecutionError, QueryTimeoutError, TooManySamplesError
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher, MatchOp
from athens.model.series import STALE_NAN
from athens.query import ast
from athens.query.engine import QUERY_THREAD_NICE, Engine, lower_thread_priority
from athens.query.memquerier import MemQuerier

M = 60_000


def store(*series: tuple[dict[str, str], list[int], list[float]]) -> MemQuerier:
    q = MemQuerier()
    q.append(
        WriteBatch.from_series(
            [(Labels(lb.items()), np.array(ts, np.int64), np.array(vs)) for lb, ts, vs in series]
        )
    )
    return q


def instant(q: MemQuerier, expr: ast.Expr | str, t: int, engine: Engine | None = None):  # type: ignore[no-untyped-def]
    return asyncio.run((engine or Engine()).instant(q, expr, t))


def vec(res) -> dict[str, float]:  # type: ignore[no-untyped-def]
    assert res.result_type == "vector"
    return {str(lb): v for lb, _, v in res.value}


def sel(name: str) -> ast.VectorSelector:
    return ast.VectorSelector(name, [Matcher(MatchOp.EQ, "__name__", name)])


def test_selector_lookback_is_five_minutes_left_open() -> None:
    q = store(({"__name__": "m"}, [0], [1.0]))
    assert vec(instant(q, sel("m"), 5 * M - 1)) == {"m": 1.0}
    assert vec(instant(q, sel("m"), 5 * M)) == {}


def test_stale_marker_ends_visibility() -> None:
    q = store(({"__name__": "m"}, [0, M], [1.0, float(STALE_NAN)]))
    assert vec(instant(q, sel("m"), 30_000)) == {"m": 1.0}
    assert vec(instant(q, sel("m"), 2 * M)) == {}


def test_rate_extrapolates_like_prometheus() -> None:
    ts = list(range(0, 10 * M + 1, 15_000))
    q = store(({"__name__": "c_total"}, ts, [t / 1000 for t in ts]))
    node = ast.Call("rate", [ast.MatrixSelector(sel("c_total"), 5 * M)])
    assert vec(instant(q, node, 10 * M)) == {"{}": pytest.approx(1.0)}


def test_rate_extrapolation_stops_at_zero() -> None:
    # Samples 0.5, 1.5, ... 4.5 each minute in (0, 5m]: extrapolating 60s to
    # the window start would go below zero; the counter's zero point (30s
    # before the first sample) is used instead, so the increase is 4.5.
    q = store(({"__name__": "c_total"}, [M, 2 * M, 3 * M, 4 * M, 5 * M], [0.5, 1.5, 2.5, 3.5, 4.5]))
    assert vec(instant(q, "increase(c_total[5m])", 5 * M)) == {"{}": pytest.approx(4.5)}
    # A gauge (delta) is extrapolated the full 60s instead.
    assert vec(instant(q, "delta(c_total[5m])", 5 * M)) == {"{}": pytest.approx(5.0)}


def test_sum_by_and_without() -> None:
    q = store(
        ({"__name__": "m", "a": "1", "b": "x"}, [0], [1.0]),
        ({"__name__": "m", "a": "1", "b": "y"}, [0], [2.0]),
        ({"__name__": "m", "a": "2", "b": "x"}, [0], [4.0]),
    )
    assert vec(instant(q, "sum by (a) (m)", 0)) == {'{a="1"}': 3.0, '{a="2"}': 4.0}
    assert vec(instant(q, "sum without (a) (m)", 0)) == {'{b="x"}': 5.0, '{b="y"}': 2.0}
    assert vec(instant(q, "count(m)", 0)) == {"{}": 3.0}


def test_one_to_one_matching_and_duplicate_error() -> None:
    q = store(
        ({"__name__": "a", "i": "1"}, [0], [1.0]),
        ({"__name__": "b", "i": "1"}, [0], [10.0]),
        ({"__name__": "b", "i": "1", "x": "y"}, [0], [20.0]),
    )
    assert vec(instant(q, "a + on(i) b{x=''}", 0)) == {'{i="1"}': 11.0}
    with pytest.raises(ExecutionError, match="found duplicate series for the match group"):
        instant(q, "a + on(i) b", 0)


def test_range_query_matrix_shape() -> None:
    q = store(({"__name__": "m"}, [0, M, 2 * M], [1.0, 2.0, 3.0]))
    res = asyncio.run(Engine().range(q, "m * 2", 0, 2 * M, M))
    assert res.result_type == "matrix"
    (lb, ts, vs), = res.value
    assert lb == Labels() and ts.tolist() == [0, M, 2 * M] and vs.tolist() == [2.0, 4.0, 6.0]


def test_range_query_rejects_range_vector() -> None:
    q = store(({"__name__": "m"}, [0], [1.0]))
    with pytest.raises(BadDataError, match="invalid expression type"):
        asyncio.run(Engine().range(q, "m[5m]", 0, M, M))


def test_too_many_samples() -> None:
    q = store(({"__name__": "m"}, list(range(0, 100 * M, M)), [1.0] * 100))
    with pytest.raises(TooManySamplesError):
        asyncio.run(Engine(max_samples=10).range(q, "m", 0, 99 * M, M))


def test_timeout() -> None:
    q = store(({"__name__": "m"}, [0], [1.0]))
    with pytest.raises(QueryTimeoutError):
        instant(q, "m", 0, Engine(timeout_s=-1))


def test_scalar_and_string_results() -> None:
    q = MemQuerier()
    res = instant(q, "1 + 2", 1000)
    assert res.result_type == "scalar" and res.value == (1000, 3.0)
    res = instant(q, '"hi"', 1000)
    assert res.result_type == "string" and res.value == (1000, "hi")


def test_subquery_steps_are_aligned_to_the_epoch() -> None:
    q = store(({"__name__": "m"}, list(range(0, 20 * M, 10_000)), [1.0] * 120))
    # Steps at multiples of 1m inside (t-5m, t]: 5 points whatever t is.
    for t in (5 * M, 5 * M + 17_000, 7 * M + 59_999):
        assert vec(instant(q, "count_over_time(m[5m:1m])", t)) == {"{}": 5.0}


# ---------------------------------------------------------- the property

QUERIES = [
    "a",
    "a offset 2m",
    "rate(a[3m])",
    "increase(b[5m])",
    "delta(a[2m])",
    "irate(b[4m])",
    "idelta(a[4m])",
    "deriv(a[5m])",
    "predict_linear(a[5m], 60)",
    "changes(a[10m])",
    "resets(b[10m])",
    "avg_over_time(a[5m])",
    "max_over_time(b[3m]) - min_over_time(b[3m])",
    "quantile_over_time(0.3, a[6m])",
    "stddev_over_time(a[5m])",
    "last_over_time(a[5m])",
    "sum by (job) (rate(b[5m]))",
    "avg without (inst) (a)",
    "count(a > 0)",
    "max by (job) (a) / on(job) group_left min by (job) (b)",
    "a + on(inst, job) b",
    "a > bool 0",
    "a and b > 0",
    "a or b",
    "a unless b < 0",
    "topk(2, a)",
    "bottomk(1, b)",
    "quantile(0.5, a)",
    "stdvar by (job) (b)",
    "count_values('v', round(a))",
    "abs(a) + 1",
    "clamp(a, -1, 1)",
    "timestamp(a)",
    "scalar(sum(a)) * b",
    "vector(time())",
    "absent(nope)",
    "max_over_time(rate(b[2m])[5m:1m])",
    "sum_over_time(a[7m:2m] offset 1m)",
    "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
    "label_replace(a, 'x', '$1', 'inst', '(.*)')",
    "-a",
    "a ^ 2 % 3",
    "double_exponential_smoothing(a[5m], 0.5, 0.5)",
]


def random_store(rng: np.random.Generator) -> MemQuerier:
    items = []
    for name in ("a", "b"):
        for job in ("x", "y"):
            for inst in ("1", "2", "3"):
                n = int(rng.integers(0, 60))
                ts = np.sort(rng.choice(40 * 60, n, replace=False)) * 1000
                if name == "b":
                    vs = np.cumsum(rng.integers(0, 5, n)).astype(float)
                    if n:
                        vs[rng.random(n) < 0.05] = 0.0  # counter resets
                else:
                    vs = np.round(rng.normal(0, 3, n), 1)
                if n and rng.random() < 0.3:
                    vs[rng.integers(0, n)] = STALE_NAN
                items.append((Labels([("__name__", name), ("job", job), ("inst", inst)]), ts, vs))
    for le in ("0.5", "1", "+Inf"):
        ts = np.arange(0, 40 * 60_000, 15_000)
        base = {"0.5": 1, "1": 3, "+Inf": 4}[le]
        items.append((Labels([("__name__", "h_bucket"), ("le", le)]), ts, base * np.arange(len(ts), dtype=float)))
    q = MemQuerier()
    q.append(WriteBatch.from_series(items))
    return q


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(QUERIES), st.integers(0, 30), st.sampled_from([15_000, 60_000, 100_000]))
def test_range_equals_instant_at_every_step(seed: int, query: str, start_min: int, step: int) -> None:
    rng = np.random.default_rng(seed)
    q = random_store(rng)
    engine = Engine()
    start = start_min * M
    end = start + 12 * step
    rres = asyncio.run(engine.range(q, query, start, end, step))
    by_step: dict[int, dict[Labels, float]] = {}
    for lb, ts, vs in rres.value:
        for t, v in zip(ts.tolist(), vs.tolist()):
            by_step.setdefault(t, {})[lb] = v
    for t in range(start, end + 1, step):
        ires = asyncio.run(engine.instant(q, query, t))
        if ires.result_type == "scalar":
            want = {Labels(): ires.value[1]}
        else:
            want = {lb: v for lb, _, v in ires.value}
        got = by_step.get(t, {})
        assert set(got) == set(want), (query, t)
        for lb, v in want.items():
            assert same(got[lb], v), (query, t, lb, got[lb], v)


def test_evaluation_can_run_in_an_executor() -> None:
    from concurrent.futures import ThreadPoolExecutor

    q = store(({"__name__": "m"}, [0, M], [1.0, 2.0]))
    with ThreadPoolExecutor(2) as pool:
        res = asyncio.run(Engine(executor=pool).range(q, "sum(rate(m[2m]))", M, 2 * M, M))
    assert res.result_type == "matrix" and len(res.value) == 1


def test_sort_puts_nan_last_both_ways() -> None:
    q = store(
        ({"__name__": "m", "i": "a"}, [0], [2.0]),
        ({"__name__": "m", "i": "b"}, [0], [float("nan")]),
        ({"__name__": "m", "i": "c"}, [0], [1.0]),
    )
    asc = [lb.get("i") for lb, _, _ in instant(q, "sort(m)", 0).value]
    desc = [lb.get("i") for lb, _, _ in instant(q, "sort_desc(m)", 0).value]
    assert asc == ["c", "a", "b"]
    assert desc == ["a", "c", "b"]


def test_topk_instant_result_is_ranked() -> None:
    q = store(*[({"__name__": "m", "i": str(i)}, [0], [float(v)]) for i, v in enumerate([5, 1, 9, 7])])
    res = instant(q, "topk(3, m)", 0)
    assert [v for _, _, v in res.value] == [9.0, 7.0, 5.0]
    res = instant(q, "bottomk(2, m)", 0)
    assert [v for _, _, v in res.value] == [1.0, 5.0]


@pytest.mark.parametrize("expr,error", [
    ("topk(1e20, m)", "Scalar value 1e+20 overflows int64"),
    ("bottomk(-1e19, m)", "Scalar value -1e+19 overflows int64"),
    ("limitk(Inf, m)", "Scalar value +Inf overflows int64"),
    ("topk(NaN, m)", "Parameter value is NaN"),
])
def test_topk_refuses_a_k_no_int64_holds(expr: str, error: str) -> None:
    q = store(({"__name__": "m", "i": "1"}, [0], [1.0]))
    with pytest.raises(ExecutionError, match=re.escape(error)):
        instant(q, expr, 0)
    assert [v for _, _, v in instant(q, "topk(9223372036854774784, m)", 0).value] == [1.0]


def test_delayed_name_removal_lets_label_replace_read_the_name() -> None:
    q = store(({"__name__": "x_total", "a": "1"}, [0, M], [0.0, 60.0]))
    delayed = Engine(delayed_name_removal=True)
    res = vec(instant(q, 'label_replace(rate(x_total[2m]), "n", "$1", "__name__", "(.*)")', M, delayed))
    assert res == {'{a="1", n="x_total"}': pytest.approx(0.5)}  # 60 over a 2m window


def test_names_go_where_dropped_without_delayed_removal() -> None:
    """--query-delayed-name-removal off (the default): Prometheus 3's default (and 2.x)."""
    q = store(
        ({"__name__": "a", "i": "1"}, [0, M], [0.0, 60.0]),
        ({"__name__": "b", "i": "1"}, [0, M], [0.0, 120.0]),
        ({"__name__": "a", "i": "2"}, [0, M], [0.0, 30.0]),
    )
    eager, delayed = Engine(), Engine(delayed_name_removal=True)
    # label_replace no longer sees the name rate dropped
    res = vec(instant(q, 'label_replace(rate(a[2m]), "n", "$1", "__name__", "(.*)")', M, eager))
    assert res == {'{i="1"}': pytest.approx(0.5), '{i="2"}': pytest.approx(0.25)}
    # series that differ only in their name collide where the name goes
    with pytest.raises(ExecutionError, match="vector cannot contain metrics with the same labelset"):
        instant(q, 'sum(rate({__name__=~"a|b"}[2m]))', M, eager)
    assert vec(instant(q, 'sum(rate({__name__=~"a|b"}[2m]))', M, delayed)) == {"{}": pytest.approx(1.75)}
    # ... and, in a subquery, become one series when they alternate between
    # steps (delayed, they stay two, and collide at the end)
    q = store(({"__name__": "a", "i": "1"}, [0, 45_000], [1.0, -1.0]), ({"__name__": "b", "i": "1"}, [50_000], [2.0]))
    expr = "count_over_time(((a > 0 or b > 0) * 1)[2m:30s])"
    assert vec(instant(q, expr, M + 1000, eager)) == {'{i="1"}': 3.0}
    with pytest.raises(ExecutionError, match="vector cannot contain metrics with the same labelset"):
        instant(q, expr, M + 1000, delayed)


def test_holt_winters_is_double_exponential_smoothing_by_its_2x_name() -> None:
    q = store(({"__name__": "x"}, [0, 15_000, 30_000, 45_000, 60_000], [1.0, 3.0, 2.0, 5.0, 4.0]))
    for sf, tf in ((0.5, 0.5), (0.1, 0.9)):
        want = vec(instant(q, f"double_exponential_smoothing(x[1m], {sf}, {tf})", M))
        assert want and vec(instant(q, f"holt_winters(x[1m], {sf}, {tf})", M)) == want


def test_count_values_and_absent() -> None:
    q = store(
        ({"__name__": "m", "i": "a"}, [0], [2.0]),
        ({"__name__": "m", "i": "b"}, [0], [2.0]),
        ({"__name__": "m", "i": "c"}, [0], [0.5]),
    )
    assert vec(instant(q, 'count_values("v", m)', 0)) == {'{v="2"}': 2.0, '{v="0.5"}': 1.0}
    assert vec(instant(q, 'absent(nope{job="j", x=~"y"})', 0)) == {'{job="j"}': 1.0}
    assert vec(instant(q, "absent(m)", 0)) == {}
    # A label's matchers in order: the first equality sets it, any later
    # matcher of the name takes it away again, an earlier one does not.
    assert vec(instant(q, 'absent(nope{env=~"p.*", env="prod", a="1"})', 0)) == {'{a="1", env="prod"}': 1.0}
    assert vec(instant(q, 'absent(nope{env="prod", env=~"p.*", a="1"})', 0)) == {'{a="1"}': 1.0}
    assert vec(instant(q, 'absent_over_time(nope{env="a", env="a", x=""}[1m])', 0)) == {"{}": 1.0}


def test_count_values_groups_after_setting_the_value_label() -> None:
    """As Prometheus: the value label is set on each sample first, so a
    series' own value of that label never splits a group, and `without`
    naming it leaves it out of the answer."""
    q = store(
        ({"__name__": "m", "v": "a", "i": "1"}, [0], [2.0]),
        ({"__name__": "m", "v": "b", "i": "1"}, [0], [2.0]),
        ({"__name__": "m", "v": "c", "i": "2"}, [0], [0.5]),
    )
    for expr, want in (
        ('count_values without (i) ("v", m)', {'{v="2"}': 2.0, '{v="0.5"}': 1.0}),
        ('count_values by (v, i) ("v", m)', {'{i="1", v="2"}': 2.0, '{i="2", v="0.5"}': 1.0}),
        ('count_values without (v) ("v", m)', {'{i="1"}': 2.0, '{i="2"}': 1.0}),
        ('count_values("i", m)', {'{i="2"}': 2.0, '{i="0.5"}': 1.0}),
    ):
        res = instant(q, expr, 0)
        assert len(res.value) == len(want) and vec(res) == want, expr


def test_histogram_quantile_classic_buckets() -> None:
    q = store(
        ({"__name__": "h_bucket", "le": "1"}, [0], [50.0]),
        ({"__name__": "h_bucket", "le": "2"}, [0], [100.0]),
        ({"__name__": "h_bucket", "le": "+Inf"}, [0], [100.0]),
    )
    assert vec(instant(q, "histogram_quantile(0.75, h_bucket)", 0)) == {"{}": 1.5}


def test_rate_of_a_non_counter_name_gives_one_info_per_name() -> None:
    q = store(
        ({"__name__": "temp", "i": "1"}, [0, 30_000], [1.0, 2.0]),
        ({"__name__": "temp", "i": "2"}, [0, 30_000], [1.0, 3.0]),
        ({"__name__": "reqs_total", "i": "3"}, [0, 30_000], [1.0, 3.0]),
        ({"__name__": "load", "i": "4"}, [0], [1.0]),  # no rate: no info for it
    )
    warned = "metric might not be a counter"
    for expr, names in (
        ("rate(temp[1m])", ['"temp"']),
        ('rate({__name__=~"temp|reqs_total"}[1m])', ['"temp"']),
        ('rate({__name__=~"temp|load"}[1m])', ['"temp"']),
        ("rate(reqs_total[1m])", []),
        ("rate(load[1m])", []),
    ):
        infos = [s for s in instant(q, expr, 30_000).infos if warned in s]
        assert [s.split(": ")[-1].split(" (")[0] for s in infos] == names, expr


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux scheduling policies")
def test_query_threads_run_below_the_event_loop():
    """An evaluation thread neither takes CPU from the loop (nice) nor
    preempts it when woken (SCHED_BATCH); the calling thread is untouched."""
    got = []

    def run() -> None:
        lower_thread_priority()
        got.append((os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))

    before = os.sched_getscheduler(0)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert got == [(os.SCHED_BATCH, QUERY_THREAD_NICE)]
    assert os.sched_getscheduler(0) == before
