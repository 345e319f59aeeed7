"""Aggregation operators (sum, avg, topk, quantile, count_values, limitk, ...).

Series are mapped to group ids once; the numeric work runs for all groups
and all steps in the kernels of functions.py (or in numpy for the k-style
operators, which rank series per step with a stable argsort).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from athens.errors import BadDataError, ExecutionError
from athens.model.labels import METRIC_NAME, Labels, projections
from athens.model.series import StoredLabels
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
    k_topk_heap,
)
from athens.query.values import NAME_LABELS, ScalarValue, StringValue, VectorValue

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


def group_keys(node: ast.AggregateExpr, labels: list[Labels]) -> list[tuple[tuple[str, str], ...]]:
    """The (sorted) label pairs that name each series' group."""
    if node.without:
        return projections(labels, frozenset(node.grouping) | {METRIC_NAME}, keep=False)
    return projections(labels, frozenset(node.grouping), keep=True)


def _groups(vec: VectorValue, node: ast.AggregateExpr) -> tuple[np.ndarray, list[Labels]]:
    """Each series' group (numbered in order of first appearance) and the groups' labels."""
    if not node.without and not node.grouping:  # `sum(x)`, `by ()`: one group
        n = len(vec.labels)
        return np.zeros(n, np.int64), [Labels()] if n else []
    labels = vec.labels
    if isinstance(labels, StoredLabels):
        found = labels.group_ids(node.grouping, node.without)
        if found is not None:
            gid, first = found
            return gid, [Labels.from_sorted(k) for k in group_keys(node, [labels[i] for i in first.tolist()])]
    index: dict[tuple[tuple[str, str], ...], int] = {}
    # setdefault numbers a key it has not seen by the size before inserting it.
    gid = np.array([index.setdefault(k, len(index)) for k in group_keys(node, vec.labels)], np.int64)
    return gid, [Labels.from_sorted(k) for k in index]


def reads_names(node: ast.Expr) -> bool:
    """Whether what node makes of its argument can depend on the argument's
    name labels (values.NAME_LABELS): all but aggregations `by` other labels
    (`without` keeps the type and unit labels of a series that keeps its
    name, and removes them from one that drops it). topk and bottomk pass
    their argument's labels on, with their removal still pending; limitk
    and limit_ratio choose by input order and label hash."""
    if not isinstance(node, ast.AggregateExpr) or node.op in ("limitk", "limit_ratio"):
        return True
    return node.without or not NAME_LABELS.isdisjoint(node.grouping)


def eval_aggregate(ev: Evaluator, node: ast.AggregateExpr, ts: np.ndarray) -> VectorValue:
    op = node.op
    param = None
    if node.param is not None:
        param = ev.eval(node.param, ts)
    vec = ev.eval_vector(node.expr, ts, reads_names(node))
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
        check_k(param.values)
        return _topk(ev, op, vec, gid, n_g, param.values)
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


# The largest float64 that converts to an int64 (Prometheus' convertibleToInt64).
_K_MAX = 9223372036854774784.0


def check_k(k: np.ndarray) -> None:
    """topk/bottomk/limitk's k at every step, refused as Prometheus refuses it."""
    if np.isnan(k).any():
        raise ExecutionError("Parameter value is NaN")
    big = k[(k > _K_MAX) | (k < -(2.0**63))]
    if len(big):
        raise ExecutionError(f"Scalar value {format_go_float(float(big[0]), 'g')} overflows int64")


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
    """topk / bottomk (Prometheus' heap selection) and limitk (the first k)."""
    n_s, n_t = vec.values.shape
    if n_s == 0:
        return vec
    kk = np.clip(np.nan_to_num(k), 0, 9.2e18)
    kk = (np.trunc(kk) if op == "limitk" else np.floor(kk)).astype(np.int64)
    by_group = np.argsort(gid, kind="stable")
    bounds = np.searchsorted(gid[by_group], np.arange(n_g + 1))
    if op == "limitk":
        keep = np.zeros((n_s, n_t), bool)
        for g in range(n_g):
            rows = by_group[bounds[g] : bounds[g + 1]]
            p = vec.present[rows]
            keep[rows] = p & (np.cumsum(p, axis=0) <= kk[None, :])
    else:
        cap = np.minimum(np.diff(bounds), max(int(kk.max(initial=0)), 1)).astype(np.int64)
        keep = k_topk_heap(vec.values, vec.present, gid, n_g, kk, cap, op == "bottomk")
    # Output rows: by group, and within a group in the order an instant
    # query lists them (best first, NaN last; input order for limitk), in
    # one stable sort (ties keep the input order).
    rows = np.flatnonzero(keep.any(axis=1))
    if op == "limitk":
        sort_keys: tuple[np.ndarray, ...] = (gid[rows],)
    else:
        v = vec.values[rows, 0]
        sort_keys = (-v if op == "topk" else v, np.isnan(v), ~keep[rows, 0], gid[rows])
    out_rows = rows[np.lexsort(sort_keys)]
    res = vec.take(out_rows)
    res.present = keep[out_rows]
    return res


_M64 = (1 << 64) - 1
_P1, _P2, _P3 = 11400714785074694791, 14029467366897019727, 1609587929392839161
_P4, _P5 = 9650029242287828579, 2870177450012600261


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _xxh_round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _M64, 31) * _P1) & _M64


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64, as Go's cespare/xxhash computes it (Prometheus' label hash)."""
    n = len(data)
    i = 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M64, (seed + _P2) & _M64, seed, (seed - _P1) & _M64]
        while i + 32 <= n:
            for k in range(4):
                v[k] = _xxh_round(v[k], int.from_bytes(data[i + 8 * k : i + 8 * k + 8], "little"))
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M64
        for k in range(4):
            h = ((h ^ _xxh_round(0, v[k])) * _P1 + _P4) & _M64
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while i + 8 <= n:
        h ^= _xxh_round(0, int.from_bytes(data[i : i + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i : i + 4], "little") * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    h ^= h >> 32
    return h


def prometheus_labels_hash(lb: Labels) -> int:
    """Prometheus' Labels.Hash(): XXH64 of name 0xff value 0xff ... .

    Not Athens' identity hash (BLAKE2b): limit_ratio must pick the same
    series Prometheus picks.
    """
    return xxh64(b"".join(n.encode() + b"\xff" + v.encode() + b"\xff" for n, v in lb))


def _limit_ratio(vec: VectorValue, r: np.ndarray) -> VectorValue:
    """Keep a deterministic, hash-chosen fraction of the series (Prometheus'
    HashRatioSampler): r >= 0 keeps offsets below r, r < 0 those >= 1 + r."""
    if not len(vec.labels):
        return vec
    frac = np.array(
        [prometheus_labels_hash(lb) / 18446744073709551615.0 for lb in vec.labels]
    )[:, None]
    rr = r[None, :]
    sel = np.where(rr >= 0, frac < rr, frac >= 1.0 + rr)
    return VectorValue(vec.labels, vec.values, vec.present & sel, vec.drop_name).compact()


def _count_values(vec: VectorValue, node: ast.AggregateExpr, label: str, n_t: int) -> VectorValue:
    if not is_valid_label_name(label):
        raise BadDataError(f"invalid label name {go_quote(label)}")
    # Prometheus sets the value label on each sample and groups after: a
    # series' own value of that label never tells groups apart, and where
    # `without` drops the label (named, or __name__) the value does not either.
    if node.without:
        valued = label not in node.grouping and label != METRIC_NAME
        grouping = [*node.grouping, label] if valued else node.grouping
    else:
        valued = True
        grouping = [g for g in node.grouping if g != label]
    gid, glabels = _groups(vec, dataclasses.replace(node, grouping=grouping))
    rows, cols = np.nonzero(vec.present)
    vals = vec.values[rows, cols]
    if len(vals) == 0:
        return VectorValue.empty(n_t)
    # Distinct by bit pattern: 0 and -0 are different label values (as
    # Prometheus formats them), every NaN is the one "NaN".
    bits = np.where(np.isnan(vals), np.nan, vals).view(np.int64)
    ubits, inv = np.unique(bits, return_inverse=True) if valued else (bits[:1], np.zeros(len(bits), np.int64))
    uniq = ubits.view(np.float64)
    # One output series per (group, value): a combined key, made unique once.
    key = gid[rows] * len(uniq) + inv.ravel()
    keys, cell_out = np.unique(key, return_inverse=True)
    cell_out = cell_out.ravel()
    out_labels = [
        glabels[int(k) // len(uniq)].with_label(label, format_go_float(float(uniq[int(k) % len(uniq)])))
        if valued else glabels[int(k)]
        for k in keys
    ]
    counts = np.zeros((len(out_labels), n_t))
    np.add.at(counts, (cell_out, cols), 1.0)
    return VectorValue(out_labels, counts, counts > 0, np.zeros(len(out_labels), bool))

