"""Pushdown never changes an answer: planner, shard partials and merge."""

from __future__ import annotations

import asyncio
import functools
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from athens.errors import ExecutionError
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.placement import PLACEMENTS
from athens.query.engine import Engine
from athens.query.memquerier import MemQuerier, ShardedMemQuerier
from athens.query.parser import parse
from athens.query.planner import (
    BINOPS_COLOCATED,
    BINOPS_VERIFIED,
    SIGNATURE_PROBE,
    Partial,
    _combine_moments,
    fold_partials,
    merge_partials,
    names_may_merge,
    pushable,
    series_local,
    signatures_disjoint,
)
from athens.query.promqltest import Runner
from athens.shards import evaluate

TESTDATA = Path(
    os.environ.get(
        "ATHENS_PROMQL_TESTDATA",
        Path(__file__).resolve().parents[2].parent / "shared" / "promql-testdata",
    )
)
FILES = sorted(TESTDATA.glob("*.test")) if TESTDATA.is_dir() else []
EXPECTED = Path(__file__).resolve().parents[1] / "promqltest" / "expected_failures.txt"


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("sum by (job) (rate(x[5m]))", True),
        ("avg without (instance) (x * 2)", True),
        ("topk(3, max_over_time(x[1h]))", True),
        ('count_values("v", round(x))', True),
        ("stddev(abs(x - 1))", True),
        ("sum(rate(x[5m] @ 100 offset 1m))", True),
        ("quantile(0.5, x)", False),
        ("sum(x * y)", False),
        ("sum(label_replace(x, 'a', 'b', 'c', 'd'))", False),
        ("sum(rate(x[5m:1m]))", True),
        ("max by (job) (max_over_time(rate(x[1m])[10m:1m] offset 1m))", True),
        ("sum(avg_over_time(abs(x - 1)[5m:]))", True),
        ("sum(max_over_time(sum(x)[5m:1m]))", False),
        ("sum(max_over_time(label_replace(x, 'a', 'b', 'c', 'd')[5m:1m]))", False),
        ("topk(scalar(y), x)", False),
        ("sum(absent(x))", False),
        ("sum(sum(x))", False),
    ],
)
def test_pushable(query: str, want: bool) -> None:
    assert pushable(parse(query)) is want


@pytest.mark.parametrize(
    ("query", "colocated", "verified"),
    [
        ("sum by (region) (a - b)", True, True),
        ("sum((a / ignoring() b) * 2)", True, True),
        ("avg(rate(a[5m]) / rate(b[5m]))", True, True),
        ("count(a and b or c unless d)", True, True),
        ("max(a > bool b)", True, True),
        ("sum(a * ignoring() group_left b)", True, True),
        ("sum((a - b) / c)", True, True),
        # match groups that may span workers: pushed only to be checked
        ("sum(a / on(instance) b)", False, True),
        ("sum(a / ignoring(cpu) b)", False, True),
        ("sum((a / on(instance) b) / on(job) c)", False, True),
        ("sum(a and on(instance) b)", False, True),
        # ... and whose result is no longer placed like its inputs
        ("sum((a / on(instance) b) - c)", False, False),
        ("sum(a * on(instance) group_left(version) b)", False, False),
        ("sum(a / on() b)", False, False),
        ("sum(a - sum(b))", False, False),
        ("sum(label_replace(a, 'x', 'y', 'z', 'w') - b)", False, False),
    ],
)
def test_pushable_binary_operators(query: str, colocated: bool, verified: bool) -> None:
    assert pushable(parse(query), BINOPS_COLOCATED) is colocated
    assert pushable(parse(query), BINOPS_VERIFIED) is verified
    assert not pushable(parse(query))  # placement by identity: never


def test_series_local_inner_of_nested_aggregation() -> None:
    # The outer sum is not pushable, but its argument's aggregation is.
    node = parse("sum(sum by (job) (x))")
    assert not pushable(node)
    assert pushable(node.expr)  # type: ignore[attr-defined]
    assert series_local(parse("-clamp_min(x, 0)"))


def _expected_failures() -> set[str]:
    return {
        ln.split()[0] for ln in EXPECTED.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }


@pytest.mark.skipif(not FILES, reason=f"{TESTDATA} is absent")
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_corpus_with_pushdown(shards: int) -> None:
    """The conformance corpus on one shard (its partials without their
    groups' first series) and on several through planner and merge."""
    allowed = _expected_failures()
    pushed = []
    orig = evaluate.evaluate_partial

    async def counting(req, slices):  # type: ignore[no-untyped-def]
        p = await orig(req, slices)
        pushed.append(p.op)
        return p

    factory = functools.partial(ShardedMemQuerier, shards, True)
    bad = []
    try:
        evaluate.evaluate_partial = counting  # type: ignore[assignment]
        for path in FILES:
            rep = Runner(factory, range_check=True, at_check=True).run_file(str(path))
            bad += [f"{path.name}:{ln}: {m}" for ln, m in rep.failed if f"{path.name}:{ln}" not in allowed]
    finally:
        evaluate.evaluate_partial = orig  # type: ignore[assignment]
    assert not bad, "\n".join(bad[:20])
    # The corpus really exercised pushdown, of aggregations and of
    # series-local expressions.
    assert len(pushed) > 1000 and pushed.count("series") > 1000, (len(pushed), pushed.count("series"))


def _store(factory, data):  # type: ignore[no-untyped-def]
    store = factory()
    store.append(WriteBatch.from_series(data))
    return store


def _values(res):  # type: ignore[no-untyped-def]
    return {lb: (ts.tolist(), vs) for lb, ts, vs in res.value}


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    for x, y in zip(a.tolist(), b.tolist()):
        if math.isnan(x) or math.isnan(y):
            if not (math.isnan(x) and math.isnan(y)):
                return False
        elif x != y and abs(x - y) > 1e-9 * max(abs(x), abs(y)) + 1e-300:
            if not (math.isinf(x) or math.isinf(y)) or x != y:
                return False
    return True


def _by_step(res):  # type: ignore[no-untyped-def]
    out: dict[int, list[str]] = {}
    for ts, vs in res.values():
        for t, v in zip(ts, vs.tolist()):
            out.setdefault(t, []).append(repr(v))
    return {t: sorted(v) for t, v in out.items()}


AGGS = ["sum", "count", "min", "max", "avg", "group", "stddev", "stdvar",
        "topk(2,", "bottomk(1,", 'count_values("v",', ""]  # "": the inner expression alone
GROUPINGS = ["", " by (job)", " without (instance)", " by (__name__, job)"]
INNERS = ["x", "rate(x[2m])", "max_over_time(x[3m])", "abs(x) * 2", "x > 0.5",
          "max_over_time(rate(x[2m])[4m:1m])", "rate(x[3m:30s])", "avg_over_time((x * 2)[5m:45s] offset 1m)",
          "sum_over_time((x - y)[3m:1m])",
          "{__name__=~\"x|y\"}", "deriv({__name__=~\"x|y\"}[5m])",
          "x - y", "timestamp(x)", "timestamp((x)) + x",
          # between two vectors: pushed when colocated (the default placement), else not
          "x / ignoring() y", "x and y", "x or y", "x unless y", "x > bool y", "rate(x[2m]) / y",
          "(x - y) * x", "x * ignoring() group_left y", "x / on(job) group_left y",
          "x - ignoring(instance) y", "x / on(instance, job) y", "x and on(job) y",
          "x / on(job) group_left y"]  # selectors pushed whole (range), or read as they are
VALUES = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, 1.0, 1e100, -1e100, math.nan, math.inf, 1e308]),
)


@st.composite
def datasets(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(1, 12))
    out = []
    seen = set()
    for _ in range(n):
        name = draw(st.sampled_from(["x", "y"]))
        job = draw(st.sampled_from(["a", "b", "c"]))
        inst = draw(st.integers(0, 5))
        lb = Labels.from_dict({"__name__": name, "job": job, "instance": str(inst)})
        if lb in seen:
            continue
        seen.add(lb)
        k = draw(st.integers(1, 15))
        ts = np.unique(np.array(draw(st.lists(st.integers(0, 40), min_size=k, max_size=k)))) * 15_000
        vs = np.array([draw(VALUES) for _ in ts], np.float64)
        out.append((lb, ts.astype(np.int64), vs))
    return out


@settings(max_examples=int(os.environ.get("ATHENS_HYPOTHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=datasets(),
    agg=st.sampled_from(AGGS),
    grouping=st.sampled_from(GROUPINGS),
    inner=st.sampled_from(INNERS),
    shards=st.integers(1, 4),
    placement=st.sampled_from(PLACEMENTS),
    delayed=st.booleans(),
)
# The "one" side's duplicates on a shard without "many" series: an error
# over all series, which that shard alone cannot see (binops._vector_vector).
@example(
    data=[
        (Labels.from_dict({"__name__": "y", "instance": "1", "job": "c"}), np.array([0]), np.array([0.0])),
        (Labels.from_dict({"__name__": "y", "instance": "0", "job": "c"}), np.array([0]), np.array([0.0])),
        (Labels.from_dict({"__name__": "x", "instance": "0", "job": "a"}), np.array([0]), np.array([0.0])),
    ],
    agg="sum", grouping="", inner="x / on(job) group_left y", shards=2, placement="without-name", delayed=True,
)
# A worker's slices (two series each here) folded into one partial: the
# compensation of 1e100 + 1 - 1e100 must survive the fold as it does the merge.
@example(
    data=[
        (Labels.from_dict({"__name__": "x", "instance": "0", "job": "a"}), np.array([0]), np.array([0.0])),
        (Labels.from_dict({"__name__": "x", "instance": "1", "job": "b"}), np.array([0]), np.array([1.0])),
        (Labels.from_dict({"__name__": "x", "instance": "4", "job": "a"}), np.array([0]), np.array([1e100])),
        (Labels.from_dict({"__name__": "x", "instance": "1", "job": "a"}), np.array([0]), np.array([-1e100])),
    ],
    agg="sum", grouping="", inner="x", shards=2, placement="without-name", delayed=True,
)
def test_pushdown_matches_unpushed(data, agg, grouping, inner, shards, placement, delayed) -> None:  # type: ignore[no-untyped-def]
    if not agg:
        query = inner
    elif agg.endswith(","):
        query = f"{agg.split('(')[0]}{grouping} ({agg.split('(', 1)[1]} {inner})"
    else:
        query = f"{agg}{grouping} ({inner})"
    engine = Engine(max_samples=1_000_000, delayed_name_removal=delayed)

    async def run(store, instant=False):  # type: ignore[no-untyped-def]
        try:
            if instant:
                return await engine.instant(store, query, 450_000)
            return await engine.range(store, query, 0, 600_000, 30_000)
        except ExecutionError as e:
            return str(e)

    ref = asyncio.run(run(_store(MemQuerier, data)))
    ref_instant = asyncio.run(run(_store(MemQuerier, data), True))
    chunk = evaluate.CHUNK_POINTS
    evaluate.CHUNK_POINTS = 2 * 21  # two series per slice: exercise the sliced, interruptible evaluation
    try:
        sharded = functools.partial(ShardedMemQuerier, shards, True, placement)
        got = asyncio.run(run(_store(sharded, data)))
        got_instant = asyncio.run(run(_store(sharded, data), True))
    finally:
        evaluate.CHUNK_POINTS = chunk
    if not agg and not isinstance(ref_instant, str):
        # Series-local pushdown: the same rows in the same order.
        assert not isinstance(got_instant, str), (query, got_instant)
        assert [lb for lb, *_ in ref_instant.value] == [lb for lb, *_ in got_instant.value], query
        assert _close(np.array([v for *_, v in ref_instant.value]), np.array([v for *_, v in got_instant.value]))
    elif not agg:
        assert ref_instant == got_instant, query
    if isinstance(ref, str) or isinstance(got, str):
        assert ref == got, query
        return
    a, b = _values(ref), _values(got)
    if agg.startswith(("topk", "bottomk")):
        # Which of several equal values is kept depends on the order the
        # selection sees series in (as in Prometheus): compare values per step.
        assert _by_step(a) == _by_step(b), query
        return
    assert a.keys() == b.keys(), query
    for lb in a:
        assert a[lb][0] == b[lb][0], (query, lb)
        assert _close(a[lb][1], b[lb][1]), (query, lb, a[lb][1], b[lb][1])
    assert sorted(ref.warnings) == sorted(got.warnings)
    assert sorted(ref.infos) == sorted(got.infos)


def test_kahan_compensation_survives_the_merge() -> None:
    """1e100 + 1 - 1e100 split over shards still sums to 1 (as Prometheus' Kahan sum)."""
    data = [
        (Labels.from_dict({"__name__": "x", "i": str(i)}), np.array([0], np.int64), np.array([v]))
        for i, v in enumerate([1e100, 1.0, -1e100, 2.0])
    ]
    for shards in (1, 2, 3, 4):
        store = _store(functools.partial(ShardedMemQuerier, shards, True), data)
        res = asyncio.run(Engine().instant(store, "sum(x)", 0))
        assert res.value[0][2] == 3.0


_SUM_PART = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_SUM_PART, _SUM_PART, st.integers(0, 3)), min_size=1, max_size=12))
def test_a_lone_partials_sums_merge_as_the_grouped_kahan_sum(cells) -> None:  # type: ignore[no-untyped-def]
    """One shard's sum partial is merged without the grouping kernel: the
    same values, bit for bit, as k_group_agg's Kahan sum of (sum, compensation)."""
    from athens.query.functions import AG_SUM, k_group_agg
    from athens.query.parser import parse

    n_g = len(cells)
    s = np.array([[x] for x, _, _ in cells])
    c = np.array([[y] for _, y, _ in cells])
    cnt = np.array([[float(k)] for *_, k in cells])
    rows = [Labels.from_dict({"g": str(i)}) for i in range(n_g)]
    part = Partial("sum", rows, [], np.zeros(n_g, bool), [s, c, cnt])
    got = merge_partials(None, parse("sum by (g) (x)"), [part], np.zeros(1, np.int64))  # type: ignore[arg-type]
    present = cnt > 0
    gid = np.arange(n_g, dtype=np.int64)
    want, _ = k_group_agg(np.concatenate([s, c]), np.concatenate([present, present]), np.concatenate([gid, gid]),
                          n_g, AG_SUM)
    keep = present[:, 0]
    assert [lb.get("g") for lb in got.labels] == [str(i) for i in np.flatnonzero(keep)]
    assert got.values[:, 0].view(np.uint64).tolist() == want[keep, 0].view(np.uint64).tolist()


def test_groups_keep_the_order_of_their_first_series_on_any_number_of_shards() -> None:
    """An aggregation's groups come in the order their first series appear
    (label order), not their own labels' order: from one shard's rows as
    they are (sent without first series), from several by those series."""
    data = [
        (Labels.from_dict({"__name__": "x", "i": str(i), "job": job}), np.array([0], np.int64), np.array([1.0]))
        for i, job in enumerate("bac")
    ]
    want = asyncio.run(Engine().instant(_store(MemQuerier, data), "sum by (job) (x)", 0)).value
    assert [lb.get("job") for lb, *_ in want] == ["b", "a", "c"]
    for shards in (1, 2, 3):
        store = _store(functools.partial(ShardedMemQuerier, shards, True), data)
        assert asyncio.run(Engine().instant(store, "sum by (job) (x)", 0)).value == want


def _moments_row_by_row(parts: list[Partial], gids: list[np.ndarray], n_g: int, n_t: int):  # type: ignore[no-untyped-def]
    """The oracle: Chan et al.'s combination one row at a time, in NumPy."""
    n, mean, m2 = np.zeros((n_g, n_t)), np.zeros((n_g, n_t)), np.zeros((n_g, n_t))
    with np.errstate(all="ignore"):
        for p, g in zip(parts, gids):
            for i, k in enumerate(g.tolist()):
                nb, mb, m2b = p.arrays[0][i], p.arrays[1][i], p.arrays[2][i]
                na = n[k]
                tot = na + nb
                safe = np.where(tot > 0, tot, 1)
                delta = mb - mean[k]
                new_mean = np.where(na > 0, mean[k] + delta * (nb / safe), mb)
                new_m2 = np.where(na > 0, m2[k] + m2b + delta * delta * (na * nb / safe), m2b)
                mean[k] = np.where(nb > 0, new_mean, mean[k])
                m2[k] = np.where(nb > 0, new_m2, m2[k])
                n[k] = tot
    return n, mean, m2


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_moments_combine_as_row_by_row(data) -> None:  # type: ignore[no-untyped-def]
    # stddev/stdvar partials from several workers (or a worker's slices),
    # a group's rows in any of them, a group twice in one as well.
    n_g = data.draw(st.integers(1, 6))
    n_t = data.draw(st.integers(1, 4))
    values = st.floats(allow_nan=True, allow_infinity=True, width=64)
    parts, gids = [], []
    for _ in range(data.draw(st.integers(1, 4))):
        rows = data.draw(st.integers(0, 5))
        g = np.array(data.draw(st.lists(st.integers(0, n_g - 1), min_size=rows, max_size=rows)), np.int64)
        cnt = np.array(data.draw(st.lists(st.integers(0, 3), min_size=rows * n_t, max_size=rows * n_t)), np.float64)
        mean = np.array(data.draw(st.lists(values, min_size=rows * n_t, max_size=rows * n_t)), np.float64)
        m2 = np.abs(np.array(data.draw(st.lists(values, min_size=rows * n_t, max_size=rows * n_t)), np.float64))
        arrays = [a.reshape(rows, n_t) for a in (cnt, mean, m2)]
        parts.append(Partial("stddev", [], [], np.zeros(rows, bool), arrays))
        gids.append(g)
    # A part without rows may carry no arrays (an unverifiable partial).
    parts.append(Partial("stddev", [], [], np.zeros(0, bool), []))
    gids.append(np.zeros(0, np.int64))
    got = _combine_moments(parts, gids, n_g, n_t)
    want = _moments_row_by_row(parts, gids, n_g, n_t)
    for a, b in zip(got, want):
        # Bit for bit, but a NaN's sign: which NaN operand an addition passes
        # on is the compiler's choice (and every NaN renders as NaN).
        a, b = (np.where(np.isnan(x), np.nan, x) for x in (a, b))
        assert np.array_equal(a.view(np.uint64), b.view(np.uint64))


def test_a_fold_of_slices_with_disjoint_groups_keeps_their_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker's slices take a group's series together: the fold's sums (and
    # their temporaries, several times the partial) are then not needed.
    from athens.query import planner

    def row(job: str, s: float, c: float, n: float) -> Partial:
        lb = Labels.from_dict({"job": job})
        return Partial("sum", [lb], [lb.flat()], np.zeros(1, bool), [np.array([[x]]) for x in (s, c, n)])

    a, b = row("a", 1.5, 1e-17, 2.0), row("b", -3.0, 0.0, 1.0)
    monkeypatch.setattr(planner, "k_group_partial", None)  # no sums
    got = fold_partials([a, b], 1)
    assert got.rows == a.rows + b.rows and got.first == a.first + b.first
    assert [x.tolist() for x in got.arrays] == [[[1.5], [-3.0]], [[1e-17], [0.0]], [[2.0], [1.0]]]
    monkeypatch.undo()
    both = fold_partials([a, row("a", 2.0, 0.0, 1.0)], 1)  # one group twice: summed
    assert len(both.rows) == 1 and both.arrays[0][0, 0] + both.arrays[1][0, 0] == 3.5 + 1e-17
    assert both.arrays[2].tolist() == [[3.0]]


def test_binary_operator_between_colocated_vectors_is_pushed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sum by (job) (x - y)` pre-aggregated by the shards, `x / y` sent as
    rows; on()-matched operators pushed once their match groups check out."""
    data = [
        (Labels.from_dict({"__name__": name, "job": job, "instance": str(i)}),
         np.arange(0, 600_001, 15_000, dtype=np.int64), np.arange(41, dtype=np.float64) * (i + 1) + off)
        for name, off in (("x", 100.0), ("y", 1.0)) for job in "ab" for i in range(6)
    ] + [(Labels.from_dict({"__name__": "z", "job": job}), np.array([0], np.int64), np.array([2.0]))
         for job in "ab"]
    ops: list[str] = []
    orig = evaluate.evaluate_partial

    async def recording(req, slices):  # type: ignore[no-untyped-def]
        p = await orig(req, slices)
        ops.append(p.op)
        return p

    monkeypatch.setattr(evaluate, "evaluate_partial", recording)
    engine = Engine()
    cases = [
        ("sum by (job) (x - y)", ["sum"] * 3),
        ("x / y", ["series"] * 3),
        # on() labels that hold whole match groups on one worker: checked, kept
        ("sum by (job) (x / on(instance, job) y)", ["sum"] * 3),
        # a match group per job spans workers: checked, then the router
        # evaluates the operator over x's and y's rows
        ("x / on(job) group_left z", ["series"] * 3 + ["series"] * 6),
    ]
    # The next run of a query whose check failed does not push it again.
    cases.append(("x / on(job) group_left z", ["series"] * 6))
    assert engine.checks.failed == 0
    for query, pushed in cases:
        ops.clear()
        want = asyncio.run(engine.range(_store(MemQuerier, data), query, 0, 600_000, 30_000))
        got = asyncio.run(engine.range(_store(functools.partial(ShardedMemQuerier, 3, True), data),
                                       query, 0, 600_000, 30_000))
        assert ops == pushed, (query, ops)
        a, b = _values(want), _values(got)
        assert a.keys() == b.keys() and all(_close(a[k][1], b[k][1]) for k in a), query
    assert engine.checks.failed == 1


@pytest.mark.parametrize(("query", "merge"), [
    ("sum(rate(x[5m]))", False),
    ("sum by (job) (x{job=~'a.*'} - y)", False),
    ('sum(rate({__name__=~"x|y"}[5m]))', True),
    ('max_over_time({job="a"}[5m])', True),
    ("rate((x or y)[5m:1m])", True),
])
def test_names_may_merge(query: str, merge: bool) -> None:
    assert names_may_merge(parse(query)) is merge


def test_without_delayed_name_removal_nodes_whose_names_may_merge_stay_in_the_router() -> None:
    """Only the router holds every series that can collide when names go."""
    data = [(Labels.from_dict({"__name__": n, "i": str(i)}), np.array([0, 60_000]), np.array([0.0, 6.0 * (i + 1)]))
            for n in ("x", "y") for i in range(4)]
    pushed = []
    orig = evaluate.evaluate_partial

    async def counting(req, slices):  # type: ignore[no-untyped-def]
        pushed.append(req.delayed_name_removal)
        return await orig(req, slices)

    evaluate.evaluate_partial = counting  # type: ignore[assignment]
    try:
        for delayed in (True, False):
            engine = Engine(delayed_name_removal=delayed)
            for query in ('sum(rate({__name__=~"x|y"}[2m]))', "sum(rate(x[2m]))"):
                store = _store(functools.partial(ShardedMemQuerier, 2, True), data)
                try:
                    asyncio.run(engine.instant(store, query, 60_000))
                except ExecutionError:
                    assert not delayed  # the names collide once rate drops them
    finally:
        evaluate.evaluate_partial = orig  # type: ignore[assignment]
    # delayed: both pushed (on each of 2 shards); off: only the one-name query
    assert pushed == [True] * 4 + [False] * 2


def test_signatures_disjoint() -> None:
    def part(*sigs: list[int], probe: int = SIGNATURE_PROBE) -> Partial:
        return Partial("series", [], [], np.zeros(0, bool), [], sigs=[np.array(s, np.int64) for s in sigs],
                       probe=probe)

    assert signatures_disjoint([part([1, 2], [5]), part([3], [6])])
    assert not signatures_disjoint([part([1, 2], [5]), part([3], [5])])  # the second operator's group 5
    assert not signatures_disjoint([part([1]), part([2], probe=SIGNATURE_PROBE + 1)])  # hashes differently
    assert signatures_disjoint([Partial("sum", [], [], np.zeros(0, bool), [])] * 2)  # nothing to verify


def test_pushed_subqueries_step_as_the_routers_engine() -> None:
    """A subquery without a step is evaluated by the workers at the router's
    default subquery step (it travels with the request), not their own."""
    data = [(Labels.from_dict({"__name__": "x", "job": j, "instance": str(i)}),
             np.arange(0, 600_000, 15_000, dtype=np.int64), np.arange(40, dtype=np.float64) * (i + 1))
            for j in "ab" for i in range(3)]
    query = "sum by (job) (count_over_time(x[4m:]))"
    engine = Engine(default_subquery_step_ms=20_000)
    ref = asyncio.run(engine.range(_store(MemQuerier, data), query, 300_000, 600_000, 60_000))
    got = asyncio.run(engine.range(_store(functools.partial(ShardedMemQuerier, 3, True), data),
                                   query, 300_000, 600_000, 60_000))

    def plain(res):  # type: ignore[no-untyped-def]
        return {lb: (ts, vs.tolist()) for lb, (ts, vs) in _values(res).items()}

    assert plain(ref) == plain(got)
    assert {tuple(vs) for _, vs in plain(ref).values()} == {(36.0,) * 6}  # 4m / 20s x 3 series
