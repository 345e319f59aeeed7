"""Aggregation operators (sum, avg, topk, quantile, count_values, limitk, ...).

Series are mapped to group ids once; the numeric work runs for all groups
and all steps in the kernels of functions.py (or in numpy for the k-style
operators, which rank series per step with a stable argsort).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from athens.errors import BadDataError, ExecutionError
from athens.model.labels import METRIC_NAME, Labels, series_hash
from athens.query import ast
from athens.query.functions import (
    AG_AVG,
    AG_COUNT,
    AG_GROUP,
    AG_MAX,
    AG_MIN,
    AG_STDDEV,
    AG_STDVAR,
    AG_SUM,
    format_go_float,
    go_quote,
    is_valid_label_name,
    k_group_agg,
    k_group_quantile,
)
from athens.query.values import ScalarValue, StringValue, VectorValue

if TYPE_CHECKING:
    from athens.query.engine import Evaluator

_SIMPLE = {
    "sum": AG_SUM,
    "avg": AG_AVG,
    "min": AG_MIN,
    "max": AG_MAX,
    "count": AG_COUNT,
    "group": AG_GROUP,
    "stddev": AG_STDDEV,
    "stdvar": AG_STDVAR,
}


def group_key(node: ast.AggregateExpr):  # type: ignore[no-untyped-def]
    names = list(node.grouping)
    if node.without:
        drop = names + [METRIC_NAME]
        return lambda lb: lb.without(drop)
    return lambda lb: lb.only(names)


def _groups(vec: VectorValue, node: ast.AggregateExpr) -> tuple[np.ndarray, list[Labels]]:
    key = group_key(node)
    index: dict[Labels, int] = {}
    gid = np.empty(len(vec.labels), np.int64)
    for i, lb in enumerate(vec.labels):
        k = key(lb)
        g = index.get(k)
        if g is None:
            g = index[k] = len(index)
        gid[i] = g
    return gid, list(index)


def eval_aggregate(ev: Evaluator, node: ast.AggregateExpr, ts: np.ndarray) -> VectorValue:
    op = node.op
    param = None
    if node.param is not None:
        param = ev.eval(node.param, ts)
    vec = ev.eval_vector(node.expr, ts)
    n_t = len(ts)
    if op == "count_values":
        assert isinstance(param, StringValue)
        return _count_values(vec, node, param.value, n_t)
    gid, glabels = _groups(vec, node)
    n_g = len(glabels)
    if op in _SIMPLE:
        vals, ok = k_group_agg(vec.values, vec.present, gid, n_g, _SIMPLE[op])
        return VectorValue(glabels, vals, ok, _group_drop(vec, gid, n_g, node)).compact()
    if op == "quantile":
        assert isinstance(param, ScalarValue)
        q = param.values
        bad = q[(q < 0) | (q > 1) | np.isnan(q)]
        if len(bad) and len(vec.labels):
            ev.warn(f"quantile value should be between 0 and 1, got {format_go_float(bad[0], 'g')}", node.param)
        vals, ok = k_group_quantile(vec.values, vec.present, gid, n_g, q.astype(np.float64))
        return VectorValue(glabels, vals, ok, _group_drop(vec, gid, n_g, node)).compact()
    if op in ("topk", "bottomk", "limitk"):
        assert isinstance(param, ScalarValue)
        k = param.values
        if np.isnan(k).any():
            raise ExecutionError("Parameter value is NaN")
        return _topk(ev, op, vec, gid, n_g, k)
    if op == "limit_ratio":
        assert isinstance(param, ScalarValue)
        r = param.values
        if np.isnan(r).any():
            raise ExecutionError("Ratio value is NaN")
        if ((r < -1) | (r > 1)).any():
            ev.warn(
                "ratio value should be between -1 and 1, got "
                f"{format_go_float(r[(r < -1) | (r > 1)][0], 'g')}, capping to "
                f"{format_go_float(float(np.clip(r[(r < -1) | (r > 1)][0], -1, 1)), 'g')}",
                node.param,
            )
        r = np.clip(r, -1, 1)
        return _limit_ratio(vec, r)
    raise BadDataError(f"unknown aggregation {op!r}")


def _group_drop(vec: VectorValue, gid: np.ndarray, n_g: int, node: ast.AggregateExpr) -> np.ndarray:
    """A group keeps its name only if all members keep theirs (delayed removal)."""
    drop = np.zeros(n_g, bool)
    if node.without or METRIC_NAME not in node.grouping:
        return drop
    if len(gid):
        np.logical_or.at(drop, gid, vec.drop_name)
    return drop


def _topk(
    ev: Evaluator, op: str, vec: VectorValue, gid: np.ndarray, n_g: int, k: np.ndarray
) -> VectorValue:
    n_s, n_t = vec.values.shape
    if n_s == 0:
        return vec
    kk = np.where(k >= 9.2e18, 9.2e18, k)
    kk = np.floor(np.where(kk < 0, 0, kk)).astype(np.int64) if op != "limitk" else np.trunc(kk).astype(np.int64)
    cols = np.arange(n_t)
    keep = np.zeros((n_s, n_t), bool)
    out_rows: list[int] = []
    by_group = np.argsort(gid, kind="stable")
    bounds = np.searchsorted(gid[by_group], np.arange(n_g + 1))
    for g in range(n_g):
        rows = by_group[bounds[g] : bounds[g + 1]]
        v = vec.values[rows]
        p = vec.present[rows]
        if op == "limitk":
            rank = np.cumsum(p, axis=0) - 1
        else:
            key = -v if op == "topk" else v  # NaN sorts last either way
            o1 = np.argsort(key, axis=0, kind="stable")
            absent = ~p[o1, cols]
            o2 = np.argsort(absent, axis=0, kind="stable")
            order = np.take_along_axis(o1, o2, axis=0)
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(len(rows))[:, None].repeat(n_t, 1), axis=0)
        sel = p & (rank < kk[None, :])
        keep[rows] = sel
        # Instant results come out in rank order within each group.
        r0 = rank[:, 0]
        for i in np.argsort(r0, kind="stable"):
            if sel[i].any():
                out_rows.append(int(rows[i]))
    res = vec.take(out_rows)
    res.present = keep[out_rows]
    return res


def _limit_ratio(vec: VectorValue, r: np.ndarray) -> VectorValue:
    if not len(vec.labels):
        return vec
    frac = np.array(
        [series_hash(lb.pairs) / 18446744073709551615.0 for lb in vec.labels]
    )[:, None]
    rr = r[None, :]
    sel = np.where(rr >= 0, frac < rr, frac >= 1.0 + rr)
    return VectorValue(vec.labels, vec.values, vec.present & sel, vec.drop_name).compact()


def _count_values(vec: VectorValue, node: ast.AggregateExpr, label: str, n_t: int) -> VectorValue:
    if not is_valid_label_name(label):
        raise BadDataError(f"invalid label name {go_quote(label)}")
    gid, glabels = _groups(vec, node)
    rows, cols = np.nonzero(vec.present)
    vals = vec.values[rows, cols]
    if len(vals) == 0:
        return VectorValue.empty(n_t)
    uniq, inv = np.unique(vals, return_inverse=True)
    # One output series per (group, value): a combined key, made unique once.
    key = gid[rows] * len(uniq) + inv.ravel()
    keys, cell_out = np.unique(key, return_inverse=True)
    cell_out = cell_out.ravel()
    out_labels = [
        glabels[int(k) // len(uniq)].with_label(label, format_go_float(float(uniq[int(k) % len(uniq)])))
        for k in keys
    ]
    counts = np.zeros((len(out_labels), n_t))
    np.add.at(counts, (cell_out, cols), 1.0)
    return VectorValue(out_labels, counts, counts > 0, np.zeros(len(out_labels), bool))

