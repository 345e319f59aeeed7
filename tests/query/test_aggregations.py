"""Aggregation internals beyond what the conformance corpus pins down."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.model.labels import Labels
from athens.model.series import StoredLabels
from athens.query.aggregations import _groups, _topk
from athens.query.ast import AggregateExpr, VectorSelector
from athens.query.values import VectorValue
from athens.shards.index import SeriesIndex


def _order_group_by_group(op: str, vec: VectorValue, keep: np.ndarray, gid: np.ndarray, n_g: int) -> list[int]:
    """The oracle: each group's kept rows, sorted on their own, groups in order."""
    out: list[int] = []
    by_group = np.argsort(gid, kind="stable")
    bounds = np.searchsorted(gid[by_group], np.arange(n_g + 1))
    for g in range(n_g):
        rows = by_group[bounds[g] : bounds[g + 1]]
        rows = rows[keep[rows].any(axis=1)]
        if op != "limitk" and len(rows) > 1:
            v = vec.values[rows, 0]
            key = -v if op == "topk" else v
            rows = rows[np.lexsort((key, np.isnan(v), ~keep[rows, 0]))]
        out.extend(int(r) for r in rows)
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_topk_lists_each_group_best_first(data) -> None:  # type: ignore[no-untyped-def]
    # Ties, NaNs, series absent at the first step and groups left empty.
    n_s = data.draw(st.integers(1, 12))
    n_t = data.draw(st.integers(1, 3))
    n_g = data.draw(st.integers(1, 4))
    op = data.draw(st.sampled_from(["topk", "bottomk", "limitk"]))
    value = st.sampled_from([0.0, 1.0, 1.0, -2.5, float("nan"), float("inf")])
    values = np.array(data.draw(st.lists(value, min_size=n_s * n_t, max_size=n_s * n_t))).reshape(n_s, n_t)
    present = np.array(data.draw(st.lists(st.booleans(), min_size=n_s * n_t, max_size=n_s * n_t))).reshape(n_s, n_t)
    gid = np.array(data.draw(st.lists(st.integers(0, n_g - 1), min_size=n_s, max_size=n_s)), np.int64)
    k = np.full(n_t, float(data.draw(st.integers(0, 4))))
    labels = [Labels.from_dict({"i": str(i)}) for i in range(n_s)]
    vec = VectorValue(labels, values, present, np.zeros(n_s, bool))
    got = _topk(None, op, vec, gid, n_g, k)  # type: ignore[arg-type]
    keep = np.zeros((n_s, n_t), bool)
    rows = [int(lb.get("i")) for lb in got.labels]
    keep[rows] = got.present
    assert rows == _order_group_by_group(op, vec, keep, gid, n_g)


_NAMES = ("__name__", "a", "b", "instance", "zz")


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(_NAMES), st.sampled_from(["", "x", "y", "ü", "1"]), max_size=5),
        min_size=1, max_size=40,
    ),
    picks=st.lists(st.integers(0, 39), max_size=60),
    grouping=st.lists(st.sampled_from(_NAMES + ("absent",)), max_size=4),
    without=st.booleans(),
)
def test_groups_of_stored_series_equal_those_of_their_label_sets(
    rows: list[dict[str, str]], picks: list[int], grouping: list[str], without: bool
) -> None:
    # A worker's series carry their ids and the index's value codes
    # (StoredLabels): grouping by codes must number the groups and name them
    # exactly as grouping by the label sets does, whatever rows a query keeps.
    index = SeriesIndex()
    for lb in dict.fromkeys(Labels(r.items()) for r in rows):
        index.add(lb, lb.identity_hash())
    ids = np.array([p % len(index) for p in picks], np.int64)
    stored = StoredLabels([index.labels[i] for i in ids.tolist()], ids, index)
    node = AggregateExpr("sum", VectorSelector("m", []), None, list(grouping), without)
    n = len(ids)
    plain = VectorValue(list(stored), np.zeros((n, 1)), np.ones((n, 1), bool), np.zeros(n, bool))
    fast = VectorValue(stored, plain.values, plain.present, plain.drop_name)
    for rows_kept in (np.arange(n), np.arange(n)[::-1][: n // 2]):
        want_gid, want_labels = _groups(plain.take(rows_kept), node)
        got_gid, got_labels = _groups(fast.take(rows_kept), node)
        assert got_gid.tolist() == want_gid.tolist()
        assert got_labels == want_labels


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 4), st.integers(1, 5),
       st.sampled_from([0.0, 0.1, 0.5, 0.75, 1.0, -1.0, 2.0, float("nan")]))
def test_group_quantile_selects_as_sorting_each_group_would(seed, n_s, n_t, n_g, q) -> None:  # type: ignore[no-untyped-def]
    # Duplicates, infinities, NaNs, absent series and empty groups; the
    # kernel selects the two values it reads instead of sorting.
    from athens.query.functions import k_group_quantile
    from tests.query.test_functions import ref_quantile

    rng = np.random.default_rng(seed)
    choices = np.array([0.0, 1.0, 1.0, 2.5, -3.0, np.inf, -np.inf, np.nan])
    values = rng.choice(choices, (n_s, n_t))
    present = rng.random((n_s, n_t)) < 0.8
    gid = rng.integers(0, n_g, n_s)
    qs = np.full(n_t, q)
    res, ok = k_group_quantile(values, present, gid, n_g, qs)
    for g in range(n_g):
        for t in range(n_t):
            got = values[(gid == g) & present[:, t], t]
            assert ok[g, t] == (len(got) > 0)
            if len(got):
                np.testing.assert_array_equal(res[g, t], ref_quantile(q, got.tolist()))
