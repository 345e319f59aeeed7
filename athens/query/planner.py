"""What the router can push down to shards, and how it merges their answers.

Series are spread over workers by hash, so a worker sees a subset of every
metric. An aggregation whose argument is computed series by series (a
selector, a range function over a selector or over a subquery of such an
expression, element-wise math with number literals) can be evaluated by
every worker on its own series; the worker then aggregates its groups
into a *partial* (sum with its Kahan
compensation, count, mean and sum of squared deviations, local top-k, ...)
and only those partials cross the process boundary. The router merges the
partials of all workers into exactly what the aggregation over all series
would have given (to floating point rounding of the merge step).

Where the data directory places series by their labels without the metric
name (athens.model.placement.WITHOUT_NAME), a binary operator between two
such expressions matched on all labels but the name (no `on`, no
`ignoring` list) is shard-local too: every pair it can match, and every
series it leaves unmatched, lives on one worker. Its result keeps that
placement (its labels are one side's, at most without the name), so it
nests: `sum by (region) (a - b)` is pre-aggregated whole by the workers.

An operator matched on()/ignoring() listed labels pairs series whose other
labels may differ, so a match group may span workers; it is pushed down
on trust and checked: each worker also reports the hashes of the
signatures (match groups) it saw, and if one occurs on two workers, or a
worker's evaluation failed (the error over all series may be another), the
router plans the query again without such operators and evaluates them
itself (signatures_disjoint, Evaluator.fetch). Metrics of one target with
the same labels (`avail / on(instance, device) size`) pass the check.

A series-local expression that no pushable aggregation takes (say
`max_over_time(x[10m])` alone, or under `quantile`, a binary operator
between two vectors or a subquery) is pushed down whole: each worker
evaluates it over its own series and sends the resulting rows, values per
step instead of raw samples; the router puts the rows of all workers in
label order (pushable_series, merge_series).

Everything else is evaluated in the router over raw series, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from athens.model.labels import METRIC_NAME, Labels
from athens.model.matchers import MatchOp
from athens.query import ast
from athens.query.aggregations import _groups, _topk, check_k
from athens.query.functions import (
    _MATH,
    _OVER_TIME,
    AG_AVG,
    AG_MAX,
    AG_MIN,
    AG_SUM,
    k_combine_moments,
    k_group_agg,
    k_group_partial,
)
from athens.query.values import ScalarValue, VectorValue

if TYPE_CHECKING:
    from athens.query.engine import Evaluator

# The step of a subquery that names none (`x[5m:]`): Prometheus' default
# evaluation interval. The router's engine and the workers' must agree.
DEFAULT_SUBQUERY_STEP_MS = 60_000
# Aggregations with a partial form (see merge_partials).
PUSHABLE_AGGREGATIONS = frozenset(
    ["sum", "count", "min", "max", "avg", "group", "stddev", "stdvar", "topk", "bottomk", "count_values"]
)
# Functions of a range vector that map each series to one series.
RANGE_FUNCTIONS = frozenset(_OVER_TIME) | frozenset(
    ["rate", "increase", "delta", "irate", "idelta", "deriv", "predict_linear",
     "quantile_over_time", "double_exponential_smoothing", "holt_winters", "changes", "resets"]
)
# Element-wise functions of an instant vector (number literal arguments only).
ELEMENTWISE_FUNCTIONS = frozenset(_MATH) | frozenset(
    ["clamp", "clamp_min", "clamp_max", "round", "timestamp"]
)
# Operators between a vector and a number that work series by series.
_SCALAR_OPS = frozenset(["+", "-", "*", "/", "%", "^", "atan2", "==", "!=", ">", "<", ">=", "<="])


def _is_number(node: ast.Expr) -> bool:
    node = _unparen(node)
    if isinstance(node, ast.UnaryExpr):
        return _is_number(node.expr)
    return isinstance(node, ast.NumberLiteral)


def _unparen(node: ast.Expr) -> ast.Expr:
    while isinstance(node, ast.ParenExpr):
        node = node.expr
    return node


# How far binary operators between two vectors are pushed down (the
# `binops` argument below); see the module doc.
BINOPS_NONE = 0  # placement by identity: never
BINOPS_COLOCATED = 1  # placement WITHOUT_NAME: those matched on all labels but the name
BINOPS_VERIFIED = 2  # and those matched on()/ignoring() listed labels, checked (signatures_disjoint)

# _locality's answers: no; the shard's rows are exactly its part of the
# rows over all series (each row from series on that shard only); and also
# each row lives where its labels without the name are placed.
_NOT_LOCAL, _LOCAL, _PLACED = 0, 1, 2


def _locality(node: ast.Expr, binops: int) -> int:
    node = _unparen(node)
    if isinstance(node, ast.VectorSelector):
        return _PLACED
    if isinstance(node, ast.UnaryExpr):
        return _locality(node.expr, binops)
    if isinstance(node, ast.Call):
        args = list(node.args)
        if node.func in RANGE_FUNCTIONS:
            mats = [a for a in args if _unparen(a).type is ast.ValueType.MATRIX]
            if len(mats) != 1 or not all(_is_number(a) for a in args if a is not mats[0]):
                return _NOT_LOCAL
            rng = _unparen(mats[0])
            if isinstance(rng, ast.MatrixSelector):
                return _PLACED
            # Over a subquery: each series of the inner expression, evaluated
            # at the subquery's steps, gives one output series.
            return _locality(rng.expr, binops) if isinstance(rng, ast.SubqueryExpr) else _NOT_LOCAL
        if node.func in ELEMENTWISE_FUNCTIONS and args:
            return _locality(args[0], binops) if all(_is_number(a) for a in args[1:]) else _NOT_LOCAL
        return _NOT_LOCAL
    if isinstance(node, ast.BinaryExpr):
        if _is_number(node.lhs):
            return _locality(node.rhs, binops) if node.op in _SCALAR_OPS else _NOT_LOCAL
        if _is_number(node.rhs):
            return _locality(node.lhs, binops) if node.op in _SCALAR_OPS else _NOT_LOCAL
        if binops == BINOPS_NONE:
            return _NOT_LOCAL
        sides = min(_locality(node.lhs, binops), _locality(node.rhs, binops))
        if not needs_verifying(node):
            # Matched on all labels but the name: every match group is placed
            # on one worker; the result's labels are one side's (at most
            # without the name), so it stays placed.
            return _PLACED if sides == _PLACED else _NOT_LOCAL
        m = node.matching
        assert m is not None
        if binops < BINOPS_VERIFIED or (m.on and not m.labels) or m.include:
            return _NOT_LOCAL
        # Local once the router has checked that no match group spans two
        # workers; the result's labels (the on() labels, or group_left's
        # copies) are no longer placed.
        return _LOCAL if sides >= _LOCAL else _NOT_LOCAL
    return _NOT_LOCAL


def needs_verifying(node: ast.Expr) -> bool:
    """A binary operator between two vectors matched on other labels than
    all but the name (on(...), ignoring(...)): pushed down only under
    BINOPS_VERIFIED, its match groups checked by signatures_disjoint."""
    if not isinstance(node, ast.BinaryExpr) or _is_number(node.lhs) or _is_number(node.rhs):
        return False
    m = node.matching
    return m is not None and (m.on or bool(m.labels))


def series_local(node: ast.Expr, binops: int = BINOPS_NONE) -> bool:
    """Whether a shard computes exactly its part of node's rows over all
    series from its own series: each output series depends on one input
    series, or (binops) on input series of one match group, all on one
    worker."""
    return _locality(node, binops) != _NOT_LOCAL


def pushable(node: ast.Expr, binops: int = BINOPS_NONE) -> bool:
    """An aggregation the shards can pre-aggregate (see the module doc)."""
    if not isinstance(node, ast.AggregateExpr) or node.op not in PUSHABLE_AGGREGATIONS:
        return False
    if node.param is not None:
        p = _unparen(node.param)
        if node.op == "count_values":
            if not isinstance(p, ast.StringLiteral):
                return False
        elif not _is_number(p):
            return False
    return series_local(node.expr, binops)


def pushable_series(node: ast.Expr, binops: int = BINOPS_NONE) -> bool:
    """A series-local expression (not an aggregation's argument) the shards
    can evaluate completely on their own series: each sends its result rows
    instead of the raw samples (a range function over a day of samples
    becomes one value per step, a selector one value per step instead of
    every sample). The caller keeps selectors whose samples' own timestamps
    are read (info()'s info series) unpushed, and those read at a single
    step (an instant query), where rows save little."""
    return series_local(node, binops)


def names_may_merge(node: ast.Expr) -> bool:
    """Whether series of node that differ only in their metric name can meet
    (a selector without a name equality, or `or`): once names are removed
    where dropped (Engine.delayed_name_removal off), they collide, and only
    the router, holding every shard's series, can tell."""
    for n in ast.walk(node):
        if isinstance(n, ast.VectorSelector) and not any(
            m.name == METRIC_NAME and m.op is MatchOp.EQ for m in n.matchers
        ):
            return True
        if isinstance(n, ast.BinaryExpr) and n.op == "or":
            return True
    return False


def verified_binops(node: ast.Expr) -> list[ast.BinaryExpr]:
    """The binary operators of a pushed node whose match groups the shards
    report (needs_verifying), in pre-order."""
    return [n for n in ast.walk(node) if needs_verifying(n)]  # type: ignore[misc]


def signatures_disjoint(parts: list[Partial]) -> bool:
    """Whether no match group of a pushed node's verified binary operators
    occurs on two shards (Partial.sigs: per operator, the hashes of the
    signatures a shard matched, each once). Equal signatures hash equally
    in every process of a node (the supervisor gives them one
    PYTHONHASHSEED; Partial.probe checks it); a collision of two different
    ones only makes the router evaluate the node itself."""
    if not any(p.sigs for p in parts):
        return True
    if any(p.probe != SIGNATURE_PROBE for p in parts):
        return False
    for k in range(len(parts[0].sigs) if parts else 0):
        every = np.concatenate([p.sigs[k] for p in parts])
        if len(np.unique(every)) != len(every):
            return False
    return True


# hash() of this string in this process: a shard's partial carries its own,
# so a worker whose str hashes differ from the router's is noticed.
SIGNATURE_PROBE = hash("athens signature probe")


def pushed_argument(node: ast.Expr) -> ast.Expr:
    """What a shard evaluates over its series for a pushed node: an
    aggregation's argument, or the series-local node itself."""
    return node.expr if isinstance(node, ast.AggregateExpr) else node


def node_index(root: ast.Expr, node: ast.Expr) -> int:
    """Position of node in the pre-order walk of root (how a shard finds it)."""
    for i, n in enumerate(ast.walk(root)):
        if n is node:
            return i
    raise ValueError("node is not in the tree")


def node_at(root: ast.Expr, index: int) -> ast.Expr:
    for i, n in enumerate(ast.walk(root)):
        if i == index:
            return n
    raise ValueError(f"no node {index} in the expression")


@dataclass(slots=True)
class PartialRequest:
    """What a shard needs to evaluate one pushed-down node (an aggregation,
    or a series-local expression: pushable_series).

    The shard re-parses the full query text (so annotation positions match)
    and evaluates the node at `node_index` of its pre-order walk at times ts.
    """

    text: str
    node_index: int
    start: int
    end: int
    step: int
    lookback_ms: int
    ts: np.ndarray
    max_samples: int
    max_bytes: int
    timeout_s: float
    binops: int = BINOPS_NONE  # what the router planned with (series_local)
    # The router's step for subqueries without one (`x[5m:]`): a pushed node
    # may hold subqueries, whose inner steps must be the router's.
    subquery_step_ms: int = DEFAULT_SUBQUERY_STEP_MS
    delayed_name_removal: bool = False  # the router engine's (Engine.delayed_name_removal)
    # Whether the partial carries its groups' first series (Partial.first):
    # only the partials of several shards are put in order by them.
    with_first: bool = True

    def to_meta(self) -> dict[str, object]:
        return {
            "text": self.text, "node": self.node_index, "start": self.start, "end": self.end,
            "step": self.step, "lookback": self.lookback_ms, "max_samples": self.max_samples,
            "max_bytes": self.max_bytes, "timeout": self.timeout_s, "binops": self.binops,
            "subquery_step": self.subquery_step_ms, "delayed_names": self.delayed_name_removal,
            "first": self.with_first,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, object], ts: np.ndarray) -> PartialRequest:
        return cls(
            str(meta["text"]), int(meta["node"]), int(meta["start"]), int(meta["end"]),  # type: ignore[call-overload]
            int(meta["step"]), int(meta["lookback"]), np.asarray(ts, np.int64),  # type: ignore[call-overload]
            int(meta["max_samples"]), int(meta["max_bytes"]), float(meta["timeout"]),  # type: ignore[arg-type]
            int(meta.get("binops", BINOPS_NONE)),  # type: ignore[call-overload]
            int(meta.get("subquery_step", DEFAULT_SUBQUERY_STEP_MS)),  # type: ignore[call-overload]
            bool(meta.get("delayed_names", False)), bool(meta.get("first", True)),
        )


@dataclass(slots=True)
class Partial:
    """One shard's pre-aggregated answer for one aggregation node, or (op
    "series") its rows of a pushed series-local node.

    rows:   label sets (group labels; series labels for topk/bottomk;
            output labels for count_values)
    first:  per row, the first input series of the group in label order,
            as Labels.flat() (only for the simple aggregations; orders
            groups like the unpushed evaluation does)
    drop:   per row, the delayed `__name__` removal flag
    arrays: float64[rows, steps] components, by op:
            sum: sum, compensation, count   avg: sum, compensation, count, mean
            count: count   min/max: value, count   group: count
            stddev/stdvar: count, mean, m2   topk/bottomk: value, kept (0/1)
            count_values: count              series: value, present (0/1)
    """

    op: str
    rows: list[Labels]
    first: list[tuple[str, ...]]
    drop: np.ndarray
    arrays: list[np.ndarray]
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    samples: int = 0
    # Per verified binary operator of the node (verified_binops): the
    # distinct hashes of the signatures the shard matched on; and the
    # shard's SIGNATURE_PROBE.
    sigs: list[np.ndarray] = field(default_factory=list)
    probe: int = SIGNATURE_PROBE


class _Rows:
    """The rows of several partials of one node numbered by group (equal
    label sets), each group with its first input series and its `__name__`
    removal flag."""

    def __init__(self, parts: list[Partial], n_t: int) -> None:
        self.parts, self.n_t = parts, n_t
        used = [p for p in parts if len(p.rows)]
        # Rows of one partial only: each group is one row, whose components
        # are the group's, and the rows are in the order of their groups'
        # first series already (partial_of numbers groups so, and a fold
        # keeps the slices' order): only several shards' are sorted by them.
        self.lone = len(used) == 1
        if self.lone:
            # One partial's rows are distinct groups already (a shard sends
            # each once): numbered as they come, with no key per row (`medium`'s
            # 1,716 groups: 0.9 ms a side), and its first series, if it sent
            # none, made only if asked for.
            (one,) = used
            self.labels = list(one.rows)
            self.gids = [np.arange(len(p.rows), dtype=np.int64) for p in parts]
            self._first: list[tuple[str, ...]] | None = list(one.first) or None
            self.drop = one.drop.astype(bool)
            return
        # Keyed by the label pairs, which hash and compare in C (a Labels
        # key calls its __hash__ and __eq__ in Python).
        index: dict[tuple[tuple[str, str], ...], int] = {}
        labels: list[Labels] = []
        first: list[tuple[str, ...]] = []
        gids = []
        for p in parts:
            pf = p.first
            g = []
            for i, lb in enumerate(p.rows):
                key = lb.sort_key()
                k = index.get(key)
                if k is None:
                    k = index[key] = len(labels)
                    labels.append(lb)
                    first.append(pf[i] if pf else lb.flat())
                elif pf and pf[i] < first[k]:
                    first[k] = pf[i]
                g.append(k)
            gids.append(np.array(g, np.int64))
        self.gids, self._first = gids, first
        self.labels = labels
        self.drop = np.zeros(len(index), bool)
        for p, g in zip(parts, gids):
            if len(g):
                np.logical_or.at(self.drop, g, p.drop)

    @property
    def first(self) -> list[tuple[str, ...]]:
        """Each group's first input series (Labels.flat()), or its own labels
        where the partials carried none."""
        if self._first is None:
            self._first = [lb.flat() for lb in self.labels]
        return self._first

    def stack(self, component: int) -> tuple[np.ndarray, np.ndarray]:
        """One component of every row, and the rows' groups."""
        used = [(p, g) for p, g in zip(self.parts, self.gids) if len(p.rows)]
        vals = np.concatenate([p.arrays[component] for p, _ in used]).reshape(-1, self.n_t)
        return vals, np.concatenate([g for _, g in used])


def fold_partials(parts: list[Partial], n_t: int) -> Partial:
    """One partial of the node from several over disjoint series (a
    worker's slices), one row per group: what merge_partials makes of them
    together is what it makes of the fold. So a worker sends each group
    once however many slices it evaluated them in, and holds a slice's
    series at a time, not all of them."""
    used = [p for p in parts if len(p.rows)]
    if len(used) <= 1:
        return used[0] if used else parts[0]
    op = used[0].op
    if op in ("topk", "bottomk", "series"):  # rows are input series: disjoint
        return Partial(
            op, [lb for p in used for lb in p.rows], [], np.concatenate([p.drop for p in used]),
            [np.concatenate([p.arrays[c] for p in used]).reshape(-1, n_t) for c in range(2)],
        )
    rows = _Rows(used, n_t)
    n_g = len(rows.labels)
    if n_g == sum(len(p.rows) for p in used):
        # Every group in one slice only (a group's series are neighbours in
        # label order, and slices take them in that order): its rows as they
        # are, which is what one slice over all the series would send, without
        # the sums' temporaries (`medium`'s `mean_latency_on`, 1,700 groups a
        # side over 100 steps: a side's peak 16.6 -> 11.6 MB).
        arrays = [np.concatenate([p.arrays[c] for p in used]) for c in range(len(used[0].arrays))]
        return Partial(op, rows.labels, rows.first, rows.drop, arrays)
    if op in ("stddev", "stdvar"):
        arrays = list(_combine_moments(used, rows.gids, n_g, n_t))
        return Partial(op, rows.labels, rows.first, rows.drop, arrays)
    cnt, gid = rows.stack(_COUNT_COMPONENT[op])
    total_cnt, _ = k_group_agg(cnt, cnt > 0, gid, n_g, AG_SUM)
    if op in ("count", "group", "count_values"):
        arrays = [total_cnt]
    elif op in ("min", "max"):
        v, _ = rows.stack(0)
        best, _ = k_group_agg(v, cnt > 0, gid, n_g, AG_MIN if op == "min" else AG_MAX)
        arrays = [best, total_cnt]
    else:  # sum, avg
        s, _ = rows.stack(0)
        c, _ = rows.stack(1)
        present = cnt > 0
        # The rows' sums and compensations summed as the router sums them,
        # with the compensation of that sum kept apart (rounded into the
        # total, 1e100 + 1 - 1e100 would lose its 1).
        total, comp, _, _, _ = k_group_partial(
            np.concatenate([s, c]), np.concatenate([present, present]), np.concatenate([gid, gid]), n_g, 0)
        arrays = [total, comp, total_cnt]
        if op == "avg":
            mean, _ = rows.stack(3)
            arrays.append(_merge_avg(s, mean, cnt, gid, total_cnt, total + comp, n_g))
    return Partial(op, rows.labels, rows.first, rows.drop, arrays)


def merge_partials(
    ev: Evaluator, node: ast.AggregateExpr, parts: list[Partial], ts: np.ndarray
) -> VectorValue:
    """The aggregation over all series, from every shard's partial."""
    n_t = len(ts)
    op = node.op
    if op in ("topk", "bottomk"):
        return _merge_topk(ev, node, parts, ts)
    rows = _Rows(parts, n_t)
    n_g = len(rows.labels)
    if n_g == 0:
        return VectorValue.empty(n_t)
    stack, gids = rows.stack, rows.gids
    if op in ("count", "group", "count_values"):
        cnt, gid = stack(0)
        total, _ = k_group_agg(cnt, cnt > 0, gid, n_g, AG_SUM)
        ok = total > 0
        vals = np.ones_like(total) if op == "group" else total
    elif op in ("min", "max"):
        v, gid = stack(0)
        cnt, _ = stack(1)
        vals, ok = k_group_agg(v, cnt > 0, gid, n_g, AG_MIN if op == "min" else AG_MAX)
    elif op in ("sum", "avg"):
        s, gid = stack(0)
        c, _ = stack(1)
        cnt, _ = stack(2)
        present = cnt > 0
        if rows.lone:
            # What k_group_agg makes of one row a group: the Kahan sum of
            # (0, sum, compensation), which is (0 + sum) + compensation
            # exactly, without the four arrays of the output's size each
            # call allocates (`medium`'s `mean_latency_on` range: 13 of the
            # router's 23 MiB at its peak).
            with np.errstate(all="ignore"):
                total = np.where(present, (0.0 + s) + c, 0.0)
            n = cnt
        else:
            both = np.concatenate([s, c])
            total, _ = k_group_agg(both, np.concatenate([present, present]), np.concatenate([gid, gid]),
                                   n_g, AG_SUM)
            n, _ = k_group_agg(cnt, present, gid, n_g, AG_SUM)
        ok = n > 0
        if op == "sum":
            vals = total
        else:
            mean, _ = stack(3)
            vals = _merge_avg(s, mean, cnt, gid, n, total, n_g)
    elif op in ("stddev", "stdvar"):
        n, _, m2 = _combine_moments(parts, gids, n_g, n_t)
        with np.errstate(all="ignore"):
            var = m2 / np.where(n > 0, n, 1)
            vals = np.where(n > 0, np.sqrt(var) if op == "stddev" else var, 0.0)
        ok = n > 0
    else:
        raise ValueError(f"no merge for {op}")
    out = VectorValue(rows.labels, vals, ok, rows.drop)
    if not rows.lone:
        out = out.take(sorted(range(n_g), key=rows.first.__getitem__))
    if op == "count_values":
        out = out.take(sorted(range(n_g), key=lambda k: out.labels[k]))
    return out.compact()


def series_partial(vec: VectorValue) -> Partial:
    """A shard's rows of a pushed series-local node (labels as they are,
    with their delayed `__name__` removal flags)."""
    keep = np.flatnonzero(vec.present.any(axis=1))
    return Partial(
        "series", [vec.labels[i] for i in keep.tolist()], [], vec.drop_name[keep].copy(),
        [vec.values[keep], vec.present[keep].astype(np.float64)],
    )


def merge_series(parts: list[Partial], n_t: int) -> VectorValue:
    """All shards' rows of a pushed series-local node, in label order: the
    order its selector's series have (shards hold disjoint series, and a
    series-local expression keeps each row's labels and position)."""
    labels = [lb for p in parts for lb in p.rows]
    if not labels:
        return VectorValue.empty(n_t)
    vec = VectorValue(
        labels,
        np.concatenate([p.arrays[0] for p in parts]).reshape(-1, n_t),
        np.concatenate([p.arrays[1] for p in parts]).reshape(-1, n_t) > 0,
        np.concatenate([p.drop for p in parts]),
    )
    keys = list(map(Labels.sort_key, labels))
    return vec.take(sorted(range(len(labels)), key=keys.__getitem__))


def _merge_avg(
    s: np.ndarray, mean: np.ndarray, cnt: np.ndarray, gid: np.ndarray, n: np.ndarray,
    total: np.ndarray, n_g: int,
) -> np.ndarray:
    """sum / count; where a shard's sum overflowed, the count-weighted mean
    of the shards' means (Prometheus switches to an incremental mean there)."""
    with np.errstate(all="ignore"):
        direct = total / np.where(n > 0, n, 1)
        weight = cnt / np.where(n > 0, n, 1)[gid]
        contrib = np.where(cnt > 0, mean * weight, 0.0)
        weighted, _ = k_group_agg(contrib, cnt > 0, gid, n_g, AG_SUM)
    overflow = np.zeros_like(direct, bool)
    shard_over = np.isinf(s) & np.isfinite(mean)
    if shard_over.any():
        np.logical_or.at(overflow, gid, shard_over)
    overflow |= np.isinf(total) & np.isfinite(weighted)
    return np.where(overflow, weighted, direct)


def _combine_moments(
    parts: list[Partial], gids: list[np.ndarray], n_g: int, n_t: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, mean, M2) per group and step from the rows' own, each
    group's rows in order (the parts', and each part's rows). Parts without
    rows may have no arrays at all (an unverifiable partial)."""
    used = [(p, g) for p, g in zip(parts, gids) if len(g)]
    if not used:
        z = np.zeros((n_g, n_t))
        return z, z.copy(), z.copy()
    counts, means, m2s = (np.concatenate([p.arrays[c] for p, _ in used]) for c in range(3))
    return k_combine_moments(counts, means, m2s, np.concatenate([g for _, g in used]), n_g)  # type: ignore[no-any-return]


def _merge_topk(
    ev: Evaluator, node: ast.AggregateExpr, parts: list[Partial], ts: np.ndarray
) -> VectorValue:
    """Every shard sent its local top k per group and step; the global top k
    is among them, so topk over their union is the answer."""
    assert node.param is not None
    k = ev.eval(node.param, ts)
    assert isinstance(k, ScalarValue)
    check_k(k.values)
    rows = [(lb, p, i) for p in parts for i, lb in enumerate(p.rows)]
    rows.sort(key=lambda r: r[0].sort_key())
    n_t = len(ts)
    if not rows:
        return VectorValue.empty(n_t)
    vals = np.stack([p.arrays[0][i] for _, p, i in rows]).reshape(-1, n_t)
    kept = np.stack([p.arrays[1][i] for _, p, i in rows]).reshape(-1, n_t) > 0
    drop = np.array([bool(p.drop[i]) for _, p, i in rows])
    vec = VectorValue([r[0] for r in rows], vals, kept, drop)
    gid, glabels = _groups(vec, node)
    return _topk(ev, node.op, vec, gid, len(glabels), k.values)


def partial_of(
    node: ast.AggregateExpr, vec: VectorValue, param: object, ts: np.ndarray
) -> Partial:
    """A shard's partial of aggregation `node` over its part `vec` of the input."""
    from athens.query.aggregations import _count_values  # noqa: PLC0415

    op = node.op
    n_t = len(ts)
    if op in ("topk", "bottomk"):
        assert isinstance(param, ScalarValue)
        check_k(param.values)
        gid, glabels = _groups(vec, node)
        if not len(vec.labels):
            return Partial(op, [], [], np.zeros(0, bool), [np.zeros((0, n_t)), np.zeros((0, n_t))])
        kk = np.floor(np.clip(np.nan_to_num(param.values), 0, 9.2e18)).astype(np.int64)
        from athens.query.functions import k_topk_heap  # noqa: PLC0415

        bounds = np.bincount(gid, minlength=len(glabels))
        cap = np.minimum(bounds, max(int(kk.max(initial=0)), 1)).astype(np.int64)
        keep = k_topk_heap(vec.values, vec.present, gid, len(glabels), kk, cap, op == "bottomk")
        keep |= _ties(vec, keep, gid, len(glabels), op == "bottomk")
        rows = np.flatnonzero(keep.any(axis=1))
        return Partial(
            op, [vec.labels[i] for i in rows], [], vec.drop_name[rows].copy(),
            [vec.values[rows], keep[rows].astype(np.float64)],
        )
    if op == "count_values":
        assert isinstance(param, str)
        out = _count_values(vec, node, param, n_t)
        return Partial(op, list(out.labels), [], out.drop_name.copy(), [out.values])
    gid, glabels = _groups(vec, node)
    n_g = len(glabels)
    # Groups are numbered in order of first appearance: their first members.
    _, first_rows = np.unique(gid, return_index=True)
    first = [vec.labels[i] for i in first_rows.tolist()]
    drop = np.zeros(n_g, bool)
    if not node.without and "__name__" in node.grouping and len(gid):
        np.logical_or.at(drop, gid, vec.drop_name)
    s, c, cnt, mean, m2 = k_group_partial(vec.values, vec.present, gid, n_g, _PARTIAL_KIND[op])
    if op == "sum":
        arrays = [s, c, cnt]
    elif op == "avg":
        mean, _ = k_group_agg(vec.values, vec.present, gid, n_g, AG_AVG)
        arrays = [s, c, cnt, mean]
    elif op in ("count", "group"):
        arrays = [cnt]
    elif op in ("min", "max"):
        v, _ = k_group_agg(vec.values, vec.present, gid, n_g, AG_MIN if op == "min" else AG_MAX)
        arrays = [v, cnt]
    else:
        arrays = [cnt, mean, m2]
    has = (cnt > 0).any(axis=1)
    if has.all():  # every group has a value somewhere: no copies
        return Partial(op, glabels, [lb.flat() for lb in first], drop, arrays)
    keep = np.flatnonzero(has)
    return Partial(
        op, [glabels[i] for i in keep], [first[i].flat() for i in keep], drop[keep],
        [a[keep] for a in arrays],
    )


def _ties(vec: VectorValue, keep: np.ndarray, gid: np.ndarray, n_g: int, bottom: bool) -> np.ndarray:
    """Rows equal to their group's worst kept value at a step.

    Which of several equal series the heap keeps depends on the order it
    sees all series in; a shard sends every tied candidate so the router's
    selection over the union can choose as it would over all series.
    """
    with np.errstate(invalid="ignore"):
        v = np.where(keep & ~np.isnan(vec.values), vec.values, np.inf if not bottom else -np.inf)
        worst = np.full((n_g, vec.values.shape[1]), np.inf if not bottom else -np.inf)
        (np.minimum if not bottom else np.maximum).at(worst, gid, v)
        nan_kept = np.zeros_like(worst, bool)
        np.logical_or.at(nan_kept, gid, keep & np.isnan(vec.values))
        w = worst[gid]
        tie = vec.present & (vec.values == w) & np.isfinite(w)
        tie |= vec.present & np.isnan(vec.values) & nan_kept[gid]
    return tie


# Which of a partial's arrays counts the input series (Partial.arrays).
_COUNT_COMPONENT = {"count": 0, "group": 0, "count_values": 0, "min": 1, "max": 1, "sum": 2, "avg": 2}

# Which sums k_group_partial computes (0: sum+count, 1: +mean, 2: Welford).
_PARTIAL_KIND = {"sum": 0, "count": 0, "group": 0, "min": 0, "max": 0, "avg": 1,
                 "stddev": 2, "stdvar": 2}
