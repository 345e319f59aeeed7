"""Vector matching: the fast path for signatures unique on both sides
against the general matcher."""

import asyncio
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.errors import ExecutionError
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.query import ast
from athens.query.binops import _matched_pairs, _unique_pairs
from athens.query.functions import go_pow
from athens.query.engine import Engine, Evaluator
from athens.query.memquerier import MemQuerier
from athens.query.values import VectorValue

_sigs = st.lists(st.integers(0, 12).map(lambda i: (("instance", f"h{i}"),)), max_size=12)


def _vector(sigs: list) -> VectorValue:
    n = len(sigs)
    return VectorValue([Labels(s) for s in sigs], np.ones((n, 1)), np.ones((n, 1), bool), np.zeros(n, bool))


@given(_sigs, _sigs)
def test_unique_pairs_are_the_general_matchers_pairs(msig, osig):
    pairs = _unique_pairs(msig, osig)
    if len(set(msig)) < len(msig) or len(set(osig)) < len(osig):
        assert pairs is None  # duplicates: the general matcher decides (and raises)
        return
    assert pairs is not None
    pm, po, failure = pairs
    assert failure is None
    ev = Evaluator(Engine(), "a / b", 0, 0, 0)
    want_m, want_o, _ = _matched_pairs(
        ev, ast.Cardinality.ONE_TO_ONE, _vector(msig), _vector(osig), msig, osig, "right", False
    )
    assert pm.tolist() == want_m.tolist()
    assert po.tolist() == want_o.tolist()


def test_the_earliest_failing_step_decides_the_error() -> None:
    """A range query stops at its first failing step, as Prometheus evaluates
    step by step: left series matching one right series at step 0 is
    many-to-one matching, even if the right side has duplicates later."""
    def lb(name: str, i: str) -> Labels:
        return Labels([("__name__", name), ("g", "x"), ("i", i)])

    t = np.array([0, 60_000], np.int64)
    data = [(lb("a", "1"), t, np.ones(2)), (lb("a", "2"), t, np.ones(2)),
            (lb("b", "1"), t, np.ones(2)), (lb("b", "2"), t[1:], np.ones(1))]  # b duplicated from step 1
    store = MemQuerier()
    store.append(WriteBatch.from_series(data))
    with pytest.raises(ExecutionError, match="many-to-one matching must be explicit"):
        asyncio.run(Engine().range(store, "a + on(g) b", 0, 60_000, 60_000))
    with pytest.raises(ExecutionError, match="found duplicate series for the match group"):
        asyncio.run(Engine().range(store, "a + on(g) b", 60_000, 60_000, 60_000))


def test_the_earliest_failing_step_decides_between_one_side_and_result_duplicates() -> None:
    """The same for group_left: results that are not unique at step 0
    fail there, before the right side's duplicates at step 1 (checked
    first within a step); from step 1 on it is the duplicates."""
    t = np.array([0, 60_000], np.int64)
    data = [(Labels([("__name__", n), ("i", "1"), ("j", "x")]), t, np.ones(2)) for n in ("a", "b")]
    data += [(Labels([("__name__", "c"), ("i", "1")]), t, np.ones(2)),
             (Labels([("__name__", "d"), ("i", "1")]), t[1:], np.ones(1))]
    store = MemQuerier()
    store.append(WriteBatch.from_series(data))
    query = '{__name__=~"a|b"} * on(i) group_left() {__name__=~"c|d"}'
    with pytest.raises(ExecutionError, match="grouping labels must ensure unique matches"):
        asyncio.run(Engine().range(store, query, 0, 60_000, 60_000))
    with pytest.raises(ExecutionError, match="found duplicate series for the match group"):
        asyncio.run(Engine().range(store, query, 60_000, 60_000, 60_000))


def test_group_left_results_that_differ_only_in_a_dropped_name() -> None:
    """Without delayed name removal (the default) Prometheus drops the name
    before it checks that a group_left/right's results are unique, and says
    so; with it the names stay and the duplicates meet at the end."""
    t = np.array([0], np.int64)
    data = [(Labels([("__name__", n), ("i", "1"), ("j", j)]), t, np.ones(1)) for n in ("a", "b") for j in ("x", "y")]
    data.append((Labels([("__name__", "c"), ("i", "1")]), t, np.ones(1)))
    store = MemQuerier()
    store.append(WriteBatch.from_series(data))
    query = '{__name__=~"a|b"} * on(i) group_left() c'
    with pytest.raises(ExecutionError, match="grouping labels must ensure unique matches"):
        asyncio.run(Engine().instant(store, query, 0))
    with pytest.raises(ExecutionError, match="vector cannot contain metrics with the same labelset"):
        asyncio.run(Engine(delayed_name_removal=True).instant(store, query, 0))
    # a comparison keeps the names: no duplicates either way
    for delayed in (False, True):
        res = asyncio.run(Engine(delayed_name_removal=delayed).instant(store, query.replace("*", "=="), 0))
        assert len(res.value) == 4


def _go_pow_whole(x: float, y: float) -> float:
    """Go's math.Pow for a whole y and finite x, line by line."""
    a1, ae = 1.0, 0
    x1, xe = math.frexp(x)
    i = int(abs(y))
    while i != 0:
        if xe < -(1 << 12) or (1 << 12) < xe:
            ae += xe
            break
        if i & 1 == 1:
            a1 *= x1
            ae += xe
        x1 *= x1
        xe <<= 1
        if x1 < 0.5:
            x1 += x1
            xe -= 1
        i >>= 1
    if y < 0:
        a1, ae = 1 / a1, -ae
    try:
        return math.ldexp(a1, ae)
    except OverflowError:
        return math.copysign(math.inf, a1)


@settings(deadline=None)  # the first example compiles the kernel (JIT in tests)
@given(st.lists(st.tuples(st.floats(allow_nan=False, allow_infinity=False), st.integers(-70, 70)), min_size=1))
def test_pow_of_a_whole_exponent_is_gos_repeated_squaring(pairs):
    x = np.array([p[0] for p in pairs])
    y = np.array([float(p[1]) for p in pairs])
    with np.errstate(all="ignore"):
        got = go_pow(x, y).tolist()
    for a, b, g in zip(x.tolist(), y.tolist(), got):
        if a == 0:
            continue  # a special case, below
        want = 1.0 if b == 0 or a == 1 else a if b == 1 else _go_pow_whole(a, b)
        assert g == want and math.copysign(1, g) == math.copysign(1, want), (a, b)


def test_pow_special_cases_are_gos() -> None:
    inf, nan = math.inf, math.nan
    cases = [  # (x, y, Go's math.Pow)
        (-inf, 0.5, inf), (-0.0, 0.5, 0.0), (4.0, 0.5, 2.0), (-inf, 3.0, -inf), (-inf, -3.0, -0.0),
        (-inf, -2.0, 0.0), (inf, -1.0, 0.0), (0.0, -1.0, inf), (-0.0, -1.0, -inf), (-0.0, -2.0, inf),
        (-0.0, 3.0, -0.0), (-0.0, 2.0, 0.0), (-1.0, inf, 1.0), (0.5, inf, 0.0), (2.0, -inf, 0.0),
        (0.5, -inf, inf), (nan, 0.0, 1.0), (1.0, nan, 1.0), (nan, 1.0, nan), (-8.0, 1 / 3, nan),
        (2.0, 0.0, 1.0),
    ]
    with np.errstate(all="ignore"):
        # two series and one exponent broadcast to both, as in `x ^ 0.5`
        got = [go_pow(np.full((2, 1), a), np.full((1, 1), b))[1, 0] for a, b, _ in cases]
    for (a, b, want), g in zip(cases, got):
        same = g == want and math.copysign(1, g) == math.copysign(1, want)
        assert (math.isnan(g) and math.isnan(want)) or same, (a, b, g)
