"""PromQL printer: an AST back to query text, as Prometheus' String() writes it.

Used by /api/v1/format_query and by the conformance runner when it rewrites
selectors with `@`. The output re-parses to the same tree (ignoring `pos`).

Departures from Prometheus, all in degenerate spellings the AST can still
tell apart: an explicit empty `by ()` and `on ()`/`ignoring ()` are kept
(Prometheus drops them), and duration expressions are printed with the
parentheses they need rather than the ones that were written (the AST does
not record redundant parentheses inside durations).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from athens.model.matchers import Matcher
from athens.query.ast import (
    AggregateExpr,
    AtModifier,
    BinaryExpr,
    Call,
    Cardinality,
    DurationExpr,
    Expr,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    VectorMatching,
    VectorSelector,
)
from athens.query.lexer import go_quote
from athens.query.parser import format_duration, go_round

_LEGACY_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def format_expr(expr: Expr) -> str:
    """The canonical PromQL text of an expression."""
    return _fmt(expr)


def format_float(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): shortest digits, no exponent."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    r = repr(v)
    if "e" in r or "E" in r:
        r = format(Decimal(r), "f")
    if r.endswith(".0"):
        r = r[:-2]
    return r


def format_float_v(v: float) -> str:
    """Go's %v for a float64: shortest digits, exponent form below 1e-4 or from 1e21."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    d = Decimal(repr(v))
    if d == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    sign, digits, exp = d.normalize().as_tuple()
    assert isinstance(exp, int)
    x = len(digits) + exp - 1
    if x < -4 or x >= 21:
        ds = "".join(map(str, digits))
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        s = f"{mant}e{'+' if x >= 0 else '-'}{abs(x):02d}"
        return ("-" if sign else "") + s
    return format_float(v)


def format_label_name(name: str) -> str:
    return name if _LEGACY_LABEL.match(name) else go_quote(name)


def format_matcher(m: Matcher) -> str:
    """Prometheus' Matcher.String(): the name is quoted unless it is a plain identifier."""
    return f"{format_label_name(m.name)}{m.op.value}{go_quote(m.value)}"


def _labels(names: list[str]) -> str:
    return ", ".join(format_label_name(n) for n in names)


def _offset(off: int | Expr) -> str:
    if isinstance(off, int):
        if off > 0:
            return " offset " + format_duration(off)
        if off < 0:
            return " offset -" + format_duration(-off)
        return ""
    return " offset " + _fmt_offset_duration(off)


def _at(at: int | AtModifier | None) -> str:
    if at is None:
        return ""
    if at is AtModifier.START:
        return " @ start()"
    if at is AtModifier.END:
        return " @ end()"
    return f" @ {at / 1000.0:.3f}"


def _range(r: int | Expr) -> str:
    if isinstance(r, int):
        return format_duration(r)
    return _fmt_duration(r, 0)


def _selector_body(vs: VectorSelector) -> str:
    parts = []
    for m in vs.matchers:
        if m.name == "__name__" and m.op.value == "=" and m.value == vs.name and m.value != "":
            continue
        parts.append(format_matcher(m))
    name = vs.name or ""
    if parts:
        parts.sort()
        return name + "{" + ",".join(parts) + "}"
    return name if name else "{}"


def _extended(vs: VectorSelector) -> str:
    return " " + vs.modifier if vs.modifier else ""


def _matching(vm: VectorMatching | None) -> str:
    if vm is None:
        return ""
    out = ""
    grouped = vm.card in (Cardinality.MANY_TO_ONE, Cardinality.ONE_TO_MANY)
    if vm.labels or vm.on or grouped or vm.given:
        out += (" on (" if vm.on else " ignoring (") + _labels(vm.labels) + ")"
    if grouped:
        side = "left" if vm.card is Cardinality.MANY_TO_ONE else "right"
        out += f" group_{side} (" + _labels(vm.include) + ")"
    lf, rf = vm.fill_left, vm.fill_right
    if lf is not None and rf is not None and (lf == rf or (math.isnan(lf) and math.isnan(rf))):
        out += f" fill ({format_float_v(lf)})"
    else:
        if lf is not None:
            out += f" fill_left ({format_float_v(lf)})"
        if rf is not None:
            out += f" fill_right ({format_float_v(rf)})"
    return out


def _fmt(e: Expr) -> str:
    if isinstance(e, VectorSelector):
        return _selector_body(e) + _at(e.at) + _extended(e) + _offset(e.offset)
    if isinstance(e, MatrixSelector):
        vs = e.vector
        return (
            _selector_body(vs)
            + "["
            + _range(e.range)
            + "]"
            + _extended(vs)
            + _at(vs.at)
            + _offset(vs.offset)
        )
    if isinstance(e, NumberLiteral):
        return format_float(e.value)
    if isinstance(e, StringLiteral):
        return go_quote(e.value)
    if isinstance(e, ParenExpr):
        return "(" + _fmt(e.expr) + ")"
    if isinstance(e, UnaryExpr):
        return e.op + _fmt(e.expr)
    if isinstance(e, BinaryExpr):
        return (
            _fmt(e.lhs)
            + " "
            + e.op
            + (" bool" if e.return_bool else "")
            + _matching(e.matching)
            + " "
            + _fmt(e.rhs)
        )
    if isinstance(e, Call):
        return e.func + "(" + ", ".join(_fmt(a) for a in e.args) + ")"
    if isinstance(e, AggregateExpr):
        s = e.op
        if e.without:
            s += " without (" + _labels(e.grouping) + ") "
        elif e.grouping or e.grouping_given:
            s += " by (" + _labels(e.grouping) + ") "
        s += "("
        if e.param is not None:
            s += _fmt(e.param) + ", "
        return s + _fmt(e.expr) + ")"
    if isinstance(e, SubqueryExpr):
        step = ""
        if isinstance(e.step, int):
            if e.step != 0:
                step = format_duration(e.step)
        else:
            step = _fmt_duration(e.step, 0)
        return _fmt(e.expr) + "[" + _range(e.range) + ":" + step + "]" + _at(e.at) + _offset(e.offset)
    if isinstance(e, DurationExpr):
        return _fmt_duration(e, 0)
    raise TypeError(f"cannot format {type(e).__name__}")


# -- duration expressions ------------------------------------------------------

_DUR_PREC = {"+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "^": 6}


def _dur_literal(d: DurationExpr) -> str:
    if d.op == "duration":
        ms = go_round(d.value * 1000)
        return format_duration(ms) if ms >= 0 else "-" + format_duration(-ms)
    return format_float(d.value)


def _is_negative_literal(d: Expr) -> bool:
    return isinstance(d, DurationExpr) and d.op in ("number", "duration") and (
        d.value < 0 or (d.value == 0 and math.copysign(1.0, d.value) < 0)
    )


def _fmt_duration(d: Expr, min_prec: int) -> str:
    """A duration expression with the fewest parentheses that parse back the same.

    `min_prec` is the precedence the surrounding context demands: 0 at the
    top of `[...]`, higher inside operators.
    """
    if not isinstance(d, DurationExpr):
        return _fmt(d)
    op = d.op
    if op in ("number", "duration"):
        return _dur_literal(d)
    if op in ("step", "range"):
        return op + "()"
    if op in ("min_of", "max_of"):
        assert d.lhs is not None and d.rhs is not None
        return f"{op}({_fmt_duration(d.lhs, 0)}, {_fmt_duration(d.rhs, 0)})"
    if op == "neg":
        assert d.rhs is not None
        s = "-" + _fmt_duration(d.rhs, 6)
        # A sign binds like `*`: it needs parentheses where only `^` may follow.
        return f"({s})" if min_prec > 5 else s
    prec = _DUR_PREC[op]
    assert d.lhs is not None and d.rhs is not None
    right_assoc = op == "^"
    lhs_min = prec + 1 if right_assoc else prec
    rhs_min = prec if right_assoc else prec + 1
    left = _fmt_duration(d.lhs, lhs_min)
    if op == "^" and _is_negative_literal(d.lhs):
        left = f"({left})"
    s = f"{left} {op} {_fmt_duration(d.rhs, rhs_min)}"
    return f"({s})" if prec < min_prec else s


def _fmt_offset_duration(d: Expr) -> str:
    """After `offset` only one term is read, so anything compound is wrapped."""
    if isinstance(d, DurationExpr):
        if d.op in _DUR_PREC:
            return "(" + _fmt_duration(d, 0) + ")"
        if d.op == "neg":
            assert d.rhs is not None
            inner = d.rhs
            if isinstance(inner, DurationExpr) and inner.op in ("step", "range", "min_of", "max_of"):
                return "-" + _fmt_duration(inner, 0)
            return "-(" + _fmt_duration(inner, 0) + ")"
    return _fmt_duration(d, 0)
