"""format_expr writes queries the way Prometheus' String() does, and they parse back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.model.matchers import Matcher
from athens.query.ast import DurationExpr, MatrixSelector, VectorSelector
from athens.query.parser import parse
from athens.query.printer import format_expr, format_float, format_float_v
from query.trees import shape


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        # Aggregations: the grouping moves in front, with Prometheus' spacing.
        ('sum(task:errors:rate10s{job="s"}) by (a)', 'sum by (a) (task:errors:rate10s{job="s"})'),
        ("sum without(instance) (x)", "sum without (instance) (x)"),
        ("topk(5, x)", "topk(5, x)"),
        ('count_values("value", x)', 'count_values("value", x)'),
        ('sum by ("foo.bar", le) (x)', 'sum by ("foo.bar", le) (x)'),
        ("SUM(x) BY (job)", "sum by (job) (x)"),
        # Binary operators and their modifiers.
        ("a-b", "a - b"),
        ("a - on(b) c", "a - on (b) c"),
        ("a - on(b) group_right(x, y) c", "a - on (b) group_right (x, y) c"),
        ("a - ignoring(b) group_left c", "a - ignoring (b) group_left () c"),
        ("a>bool 0", "a > bool 0"),
        ("a and on(x) b", "a and on (x) b"),
        ("a atan2 b", "a atan2 b"),
        ("h </ 5", "h </ 5"),
        ("a + fill(0) b", "a + fill (0) b"),
        ("a + fill_left(1) fill_right(2) b", "a + fill_left (1) fill_right (2) b"),
        ("a + on(x) group_left fill(NaN) b", "a + on (x) group_left () fill (NaN) b"),
        ("a + fill_right(-Inf) b", "a + fill_right (-Inf) b"),
        ("a + fill(1e21) b", "a + fill (1e+21) b"),
        ("a + fill(0.5) b", "a + fill (0.5) b"),
        # Selectors: matchers sorted, the name kept outside, odd names quoted.
        ('a{c="d",b="e"}', 'a{b="e",c="d"}'),
        ('{__name__="a"}', '{__name__="a"}'),
        ('{"my.metric", "a.b"="c"}', '{"a.b"="c",__name__="my.metric"}'),
        ('a{b!~"c\\\\d\\n"}', 'a{b!~"c\\\\d\\n"}'),
        ("a offset 1m", "a offset 1m"),
        ("a offset -7m", "a offset -7m"),
        ("a offset 90", "a offset 1m30s"),
        ('a{c="d"}[1m] offset 1m', 'a{c="d"}[1m] offset 1m'),
        ("a[1800]", "a[30m]"),
        ("a[14d]", "a[2w]"),
        ("a[90d]", "a[90d]"),
        ("a[365d]", "a[1y]"),
        ("a[1001ms]", "a[1s1ms]"),
        ("a @ 100", "a @ 100.000"),
        ("a offset 1m @ 1.5", "a @ 1.500 offset 1m"),
        ("a[1h:5m] @ 1603775091 offset 1m", "a[1h:5m] @ 1603775091.000 offset 1m"),
        ("a @ start()", "a @ start()"),
        ("a[1m] @ end()", "a[1m] @ end()"),
        ("rate(a[5m])[1h:]", "rate(a[5m])[1h:]"),
        ("a offset 5m smoothed", "a smoothed offset 5m"),
        ("a[5m] offset 1m anchored @ 10", "a[5m] anchored @ 10.000 offset 1m"),
        # Literals.
        ("'a'", '"a"'),
        ('"\\t\\u00e9"', '"\\té"'),
        ("0x10", "16"),
        ("Inf", "+Inf"),
        ("-inf", "-Inf"),
        ("1.5", "1.5"),
        ("1e-7", "0.0000001"),
        ("5m", "300"),
        ("- - 1", "1"),
        # Unary, parentheses.
        ("-a", "-a"),
        ("-(a + b)", "-(a + b)"),
        ("((a))", "((a))"),
        ("-a ^ 2", "-a ^ 2"),
        # Duration expressions.
        ("a[5m+1m]", "a[5m + 1m]"),
        ("a[(5m+1m)*2]", "a[(5m + 1m) * 2]"),
        ("a[5m+(1m*2)]", "a[5m + 1m * 2]"),
        ("a[2^3^2]", "a[2 ^ 3 ^ 2]"),
        ("a[(2^3)^2]", "a[(2 ^ 3) ^ 2]"),
        ("a[-(1m+1m)+10m]", "a[-(1m + 1m) + 10m]"),
        ("a[step()*2:step()]", "a[step() * 2:step()]"),
        ("a[min_of(step(), 1h)]", "a[min_of(step(), 1h)]"),
        ("a offset (1m + step())", "a offset (1m + step())"),
        ("a offset -step()", "a offset -step()"),
        ("a offset -(1m + step())", "a offset -(1m + step())"),
        ("a offset -2 ^ 2", "a offset -2s ^ 2"),
        ("a offset (-2 ^ 2)", "a offset -(2 ^ 2)"),
    ],
)
def test_prints_like_prometheus(text: str, printed: str) -> None:
    first = parse(text)
    assert format_expr(first) == printed
    assert shape(parse(printed)) == shape(first)


def test_explicit_empty_groupings_are_kept() -> None:
    # Prometheus prints these without the empty list; keeping it keeps the tree.
    assert format_expr(parse("sum by () (x)")) == "sum by () (x)"
    assert format_expr(parse("a + ignoring() b")) == "a + ignoring () b"


@pytest.mark.parametrize(
    ("value", "f", "v"),
    [
        (1.0, "1", "1"),
        (-0.0, "-0", "-0"),
        (1e300, "1" + "0" * 300, "1e+300"),
        (1e20, "100000000000000000000", "100000000000000000000"),
        (1e21, "1" + "0" * 21, "1e+21"),
        (0.0001, "0.0001", "0.0001"),
        (0.00001, "0.00001", "1e-05"),
        (1.25e-10, "0.000000000125", "1.25e-10"),
        (math.nan, "NaN", "NaN"),
    ],
)
def test_go_float_formats(value: float, f: str, v: str) -> None:
    assert format_float(value) == f
    assert format_float_v(value) == v


# -- property: duration expressions print with the parentheses they need -------------------

_leaf = st.one_of(
    st.integers(1, 10**6).map(lambda ms: DurationExpr("duration", value=ms / 1000)),
    st.integers(-50, 50).filter(lambda n: n != 0).map(lambda n: DurationExpr("number", value=float(n))),
    st.sampled_from(["step", "range"]).map(lambda op: DurationExpr(op)),
)


def _extend(children: st.SearchStrategy[DurationExpr]) -> st.SearchStrategy[DurationExpr]:
    binary = st.tuples(st.sampled_from(["+", "-", "*", "/", "%", "^"]), children, children).map(
        lambda t: DurationExpr(t[0], t[1], t[2])
    )
    # A sign on a literal folds into it when parsed, so "neg" only wraps non-literals.
    neg = children.filter(lambda c: c.op not in ("number", "duration")).map(
        lambda c: DurationExpr("neg", None, c)
    )
    minmax = st.tuples(st.sampled_from(["min_of", "max_of"]), children, children).map(
        lambda t: DurationExpr(t[0], t[1], t[2])
    )
    return st.one_of(binary, neg, minmax)


_compound = st.recursive(_leaf, _extend, max_leaves=8).filter(lambda d: d.op not in ("number", "duration"))


@settings(max_examples=300, deadline=None)
@given(_compound, _compound)
def test_duration_trees_round_trip_through_brackets_and_offset(rng: DurationExpr, off: DurationExpr) -> None:
    sel = VectorSelector("m", [Matcher.from_tuple(("=", "__name__", "m"))], offset=off)
    expr = MatrixSelector(sel, rng)
    text = format_expr(expr)
    assert shape(parse(text)) == shape(expr), text
