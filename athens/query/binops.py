"""Binary operators: arithmetic, comparison and set operations, with vector
matching (on/ignoring, group_left/group_right, fill modifiers).

Matching is decided per step: a series pairs with the series of the other
side that share its signature and are present at the same step, so the
whole range query is matched at once with boolean [S, T] arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from athens.errors import ExecutionError
from athens.model.labels import METRIC_NAME, Labels, projections
from athens.query import ast
from athens.query.ast import Cardinality
from athens.query.functions import go_pow
from athens.query.values import ScalarValue, StepError, VectorValue, drop_names, merge_duplicate_labels

if TYPE_CHECKING:
    from athens.query.engine import Evaluator

ARITH = frozenset(["+", "-", "*", "/", "%", "^", "atan2"])
COMPARISON = frozenset(["==", "!=", ">", "<", ">=", "<="])
SET_OPS = frozenset(["and", "or", "unless"])


def arith(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise arithmetic with Go's float semantics."""
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return np.true_divide(a, b)
        if op == "%":
            return np.fmod(a, b)
        if op == "^":
            return go_pow(a, b)
        if op == "atan2":
            return np.arctan2(a, b)
    raise ExecutionError(f"unknown arithmetic operator {op!r}")


def compare(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == ">":
            return a > b
        if op == "<":
            return a < b
        if op == ">=":
            return a >= b
        if op == "<=":
            return a <= b
    raise ExecutionError(f"unknown comparison operator {op!r}")


def _apply(op: str, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(value, keep mask or None). Comparisons keep the left value."""
    if op in COMPARISON:
        return a, compare(op, a, b)
    return arith(op, a, b), None


def eval_binary(ev: Evaluator, node: ast.BinaryExpr, ts: np.ndarray):  # type: ignore[no-untyped-def]
    lhs = ev.eval(node.lhs, ts)
    rhs = ev.eval(node.rhs, ts)
    op = node.op
    if isinstance(lhs, ScalarValue) and isinstance(rhs, ScalarValue):
        val, keep = _apply(op, lhs.values, rhs.values)
        if keep is not None:
            val = keep.astype(np.float64)
        return ScalarValue(np.asarray(val, np.float64))
    if isinstance(lhs, VectorValue) and isinstance(rhs, ScalarValue):
        return _vector_scalar(op, lhs, rhs.values, False, node.return_bool)
    if isinstance(lhs, ScalarValue) and isinstance(rhs, VectorValue):
        return _vector_scalar(op, rhs, lhs.values, True, node.return_bool)
    assert isinstance(lhs, VectorValue) and isinstance(rhs, VectorValue)
    matching = node.matching or ast.VectorMatching()
    if op in SET_OPS:
        return _set_op(ev, node, lhs, rhs, matching)
    return _vector_vector(ev, node, lhs, rhs, matching)


def _vector_scalar(
    op: str, vec: VectorValue, s: np.ndarray, swap: bool, return_bool: bool
) -> VectorValue:
    sv = np.broadcast_to(s[None, :], vec.values.shape)
    a, b = (sv, vec.values) if swap else (vec.values, sv)
    present = vec.present
    if op in COMPARISON:
        keep = compare(op, a, b)
        if return_bool:
            values = keep.astype(np.float64)
        else:
            values = vec.values
            present = present & keep
    else:
        values = arith(op, a, b)
    drop = vec.drop_name
    if return_bool or op not in COMPARISON:
        drop = np.ones(len(vec.labels), bool)
    return VectorValue(vec.labels, values, present, drop).compact()


Signature = tuple[tuple[str, str], ...]


def signatures(matching: ast.VectorMatching, labels: list[Labels]) -> list[Signature]:
    """The label pairs each series is matched on (sorted, usable as a dict key)."""
    if matching.on:
        return projections(labels, frozenset(matching.labels), keep=True)
    return projections(labels, frozenset(matching.labels) | {METRIC_NAME}, keep=False)


def _group_rows(sigs: list[Signature]) -> tuple[np.ndarray, list[Signature], dict[Signature, int]]:
    index: dict[Signature, int] = {}
    gid = np.empty(len(sigs), np.int64)
    for i, s in enumerate(sigs):
        g = index.get(s)
        if g is None:
            g = index[s] = len(index)
        gid[i] = g
    return gid, list(index), index


def _any_present(vec: VectorValue, gid: np.ndarray, n_groups: int) -> np.ndarray:
    out = np.zeros((n_groups, vec.num_steps), bool)
    if len(gid):
        np.logical_or.at(out, gid, vec.present)
    return out


def _report(ev: Evaluator, node: ast.BinaryExpr, *sides: list[Signature]) -> None:
    """Hand the signatures an operator matched to a shard's verifying
    evaluation (Evaluator.signatures, planner.signatures_disjoint)."""
    sink = ev.signatures.get(id(node)) if ev.signatures is not None else None
    if sink is not None:
        for sigs in sides:
            sink.update(map(hash, sigs))


def _set_op(
    ev: Evaluator, node: ast.BinaryExpr, lhs: VectorValue, rhs: VectorValue, matching: ast.VectorMatching
) -> VectorValue:
    op = node.op
    lsig = signatures(matching, lhs.labels)
    rsig = signatures(matching, rhs.labels)
    _report(ev, node, lsig, rsig)
    gid_all, _, index = _group_rows(lsig + rsig)
    n = len(index)
    lg, rg = gid_all[: len(lsig)], gid_all[len(lsig) :]
    if op == "and":
        rp = _any_present(rhs, rg, n)
        present = lhs.present & rp[lg] if len(lg) else lhs.present
        return VectorValue(lhs.labels, lhs.values, present, lhs.drop_name).compact()
    if op == "unless":
        rp = _any_present(rhs, rg, n)
        present = lhs.present & ~rp[lg] if len(lg) else lhs.present
        return VectorValue(lhs.labels, lhs.values, present, lhs.drop_name).compact()
    lp = _any_present(lhs, lg, n)
    rpres = rhs.present & ~lp[rg] if len(rg) else rhs.present
    out = VectorValue(
        lhs.labels + rhs.labels,
        np.concatenate([lhs.values, rhs.values]),
        np.concatenate([lhs.present, rpres]),
        np.concatenate([lhs.drop_name, rhs.drop_name]),
    ).compact()
    return _merge(out, "vector cannot contain metrics with the same labelset")


def labels_string(lb: Labels) -> str:
    """Go's labels.Labels.String(): {a="b", c="d"}, the name as a plain label."""
    inner = ", ".join(
        f'{n}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), chr(92) + "n")}"'
        for n, v in lb
    )
    return "{" + inner + "}"


def _dup_error(
    sig: Signature, side: str, rows: list[int], vec: VectorValue, step_present: np.ndarray, step: int
) -> StepError:
    both = [rows[i] for i in np.flatnonzero(step_present)][:2]
    names = ", ".join(labels_string(vec.labels[r]) for r in both)
    return StepError(
        step,
        f"found duplicate series for the match group {labels_string(Labels.from_sorted(sig))} on the "
        f"{side} hand-side of the operation: [{names}];many-to-many matching not "
        "allowed: matching labels must be unique on one side",
    )


def _vector_vector(
    ev: Evaluator,
    node: ast.BinaryExpr,
    lhs: VectorValue,
    rhs: VectorValue,
    matching: ast.VectorMatching,
) -> VectorValue:
    op = node.op
    card = matching.card
    if card is Cardinality.MANY_TO_MANY:
        raise ExecutionError("many-to-many only allowed for set operators")
    swap = card is Cardinality.ONE_TO_MANY
    many, one = (rhs, lhs) if swap else (lhs, rhs)
    one_side = "left" if swap else "right"
    msig = signatures(matching, many.labels)
    osig = signatures(matching, one.labels)
    _report(ev, node, msig, osig)
    # Prometheus applies fill_left to the "many" side and fill_right to the
    # "one" side, also under group_right (fill-modifier.test pins this).
    fill_many = matching.fill_left
    fill_one = matching.fill_right
    n_t = lhs.num_steps
    pm, po, failure = _unique_pairs(msig, osig) or _matched_pairs(
        ev, card, many, one, msig, osig, one_side, fill_many is not None
    )
    mv = many.values[pm]
    ov = one.values[po]
    present = many.present[pm] & one.present[po]
    # Fill modifiers: a sample whose match is missing at a step pairs with
    # the fill value instead; -1 marks the missing side of such a row.
    extra_m: list[int] = []
    extra_o: list[int] = []
    extra_mv, extra_ov, extra_p = [], [], []
    if fill_one is not None:
        matched = np.zeros(many.present.shape, bool)
        if len(pm):
            np.logical_or.at(matched, pm, one.present[po])
        lonely = many.present & ~matched
        for r in np.flatnonzero(lonely.any(axis=1)):
            extra_m.append(int(r))
            extra_o.append(-1)
            extra_mv.append(many.values[r])
            extra_ov.append(np.full(n_t, fill_one))
            extra_p.append(lonely[r])
    if fill_many is not None:
        matched = np.zeros(one.present.shape, bool)
        if len(po):
            np.logical_or.at(matched, po, many.present[pm])
        lonely = one.present & ~matched
        for r in np.flatnonzero(lonely.any(axis=1)):
            extra_m.append(-1)
            extra_o.append(int(r))
            extra_mv.append(np.full(n_t, fill_many))
            extra_ov.append(one.values[r])
            extra_p.append(lonely[r])
    if extra_p:
        mv = np.concatenate([mv, np.array(extra_mv)])
        ov = np.concatenate([ov, np.array(extra_ov)])
        present = np.concatenate([present, np.array(extra_p)])
    rows_m = pm.tolist() + extra_m
    rows_o = po.tolist() + extra_o
    lv, rv = (ov, mv) if swap else (mv, ov)
    if op in COMPARISON:
        keep = compare(op, lv, rv)
        if node.return_bool:
            values = keep.astype(np.float64)
        else:
            values = lv
            present = present & keep
    else:
        values = arith(op, lv, rv)
    one_to_one = card is Cardinality.ONE_TO_ONE and not matching.include
    names_go = node.return_bool or op not in COMPARISON
    # The match group's labels are the result's: with on(), and with
    # ignoring() (or neither) where the name goes now (it is the only other
    # label the group leaves out), as Prometheus' result metric is.
    group_labels = one_to_one and (matching.on or (names_go and not ev.engine.delayed_name_removal))
    out_labels = [
        Labels.from_sorted(osig[o]) if m < 0  # only the one side exists: the match group's labels stand in
        else Labels.from_sorted(msig[m]) if group_labels
        else _result_labels(many.labels[m], one.labels[o] if o >= 0 else None, matching, card)
        for m, o in zip(rows_m, rows_o)
    ]
    # The result carries the many side's labels, and with them its pending
    # name removal.
    rm = np.asarray(rows_m, np.int64)
    drop = np.zeros(len(rm), bool)
    has_many = rm >= 0
    drop[has_many] = True if names_go else many.drop_name[rm[has_many]]
    out = VectorValue(out_labels, np.asarray(values, np.float64), present, drop).compact()
    if not ev.engine.delayed_name_removal:
        # Without delayed removal the name goes before the check that a
        # group_left/right's results are unique, as in Prometheus.
        out = drop_names(out)
    msg = (
        "multiple matches for labels: grouping labels must ensure unique matches"
        if card is not Cardinality.ONE_TO_ONE
        else "vector cannot contain metrics with the same labelset"
    )
    try:
        merged = _merge(out, msg)
    except StepError as e:
        if failure is None or e.step < failure.step:
            raise
        raise failure from None
    if failure is not None:
        raise failure
    return merged


# The matched (many row, one row) pairs of an operator, and the error its
# match groups cause at their earliest step, if any.
Pairs = tuple[np.ndarray, np.ndarray, StepError | None]


def _unique_pairs(msig: list[Signature], osig: list[Signature]) -> Pairs | None:
    """The matched pairs when every signature occurs once on each side (two
    aggregations matched on their grouping labels, say): no cardinality
    error is possible, and a dict per side does in C what _matched_pairs
    does a row at a time. None otherwise."""
    index = dict(zip(osig, range(len(osig))))
    if len(index) != len(osig) or len(set(msig)) != len(msig):
        return None
    po = np.array([index.get(s, -1) for s in msig], np.int64)
    pm = np.flatnonzero(po >= 0)
    return pm, po[pm], None


def _matched_pairs(
    ev: Evaluator, card: Cardinality, many: VectorValue, one: VectorValue,
    msig: list[Signature], osig: list[Signature], one_side: str, fill_many: bool,
) -> Pairs:
    """The (many row, one row) pairs an operator matches, in the many
    side's order, with Prometheus' error for duplicate match groups at the
    earliest step one occurs (the caller raises it unless the result has
    duplicate label sets at an earlier step)."""
    ogroups: dict[Signature, list[int]] = {}
    for i, s in enumerate(osig):
        ogroups.setdefault(s, []).append(i)
    mgroups: dict[Signature, list[int]] = {}
    for i, s in enumerate(msig):
        mgroups.setdefault(s, []).append(i)
    # Prometheus evaluates step by step and stops at the first error: the
    # earliest failing step decides which error is reported, a duplicate on
    # the "one" side before many-to-one matching within a step.
    no_error = many.num_steps
    # The "one" side must be unique per signature, at every step where there
    # is anything to match it with (Prometheus short-circuits empty sides).
    active = np.ones(many.num_steps, bool) if fill_many else many.present.any(axis=0)
    dup_step, dup = no_error, None
    for s, rows in ogroups.items():
        if len(rows) > 1:
            cnt = one.present[rows].sum(axis=0)
            bad = np.flatnonzero((cnt > 1) & active)
            if len(bad) and bad[0] < dup_step:
                dup_step, dup = int(bad[0]), (s, rows)
            if ev.signatures is not None and np.any(cnt > 1):
                # A shard verifying its part (planner.signatures_disjoint)
                # sees only its own "many" series: over all of them this
                # group may be matched and the duplicate an error. Failing
                # makes the partial unverifiable, so the router decides.
                raise ExecutionError("duplicate series on the one side of a shard's part")
    pair_m: list[int] = []
    pair_o: list[int] = []
    multiple_step = no_error
    for s, mrows in mgroups.items():
        orows = ogroups.get(s)
        if orows is None:
            continue
        if card is Cardinality.ONE_TO_ONE and len(mrows) > 1:
            # Two many-side samples matching at one step is an error even
            # if a comparison would filter them out (Prometheus 3 checks
            # before applying the operator; operators.test pins this).
            both = np.flatnonzero((many.present[mrows].sum(axis=0) > 1) & one.present[orows].any(axis=0))
            if len(both):
                multiple_step = min(multiple_step, int(both[0]))
        for m in mrows:
            for o in orows:
                pair_m.append(m)
                pair_o.append(o)
    failure = None
    if dup is not None and dup_step <= multiple_step:
        s, rows = dup
        failure = _dup_error(s, one_side, rows, one, one.present[rows, dup_step], dup_step)
    elif multiple_step < no_error:
        failure = StepError(
            multiple_step,
            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
        )
    return np.asarray(pair_m, np.int64), np.asarray(pair_o, np.int64), failure


def _result_labels(
    many: Labels, one: Labels | None, matching: ast.VectorMatching, card: Cardinality
) -> Labels:
    lb = many
    if card is Cardinality.ONE_TO_ONE:
        if matching.on:
            lb = lb.only(matching.labels)
        else:
            lb = lb.without(matching.labels)
    if matching.include and one is not None:
        d = lb.to_dict()
        for name in matching.include:
            v = one.get(name)
            if v:
                d[name] = v
            else:
                d.pop(name, None)
        lb = Labels(d.items())
    return lb


def _merge(vec: VectorValue, msg: str) -> VectorValue:
    try:
        return merge_duplicate_labels(vec)
    except StepError as e:
        raise StepError(e.step, msg) from None
