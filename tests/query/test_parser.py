"""The PromQL parser accepts Prometheus 3.x's language and rejects what it rejects.

Expected trees and error texts are Prometheus' (promql/parser behaviour);
the corpus test parses every `eval` expression of the upstream test files.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from pathlib import Path

import pytest

from athens.errors import BadDataError
from athens.model.matchers import Matcher, MatchOp
from athens.query.ast import (
    AggregateExpr,
    AtModifier,
    BinaryExpr,
    Call,
    Cardinality,
    DurationExpr,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    PosRange,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    ValueType,
    VectorMatching,
    VectorSelector,
)
from athens.query.lexer import tokenize
from athens.query.parser import (
    MAX_DEPTH,
    RECURSION_LIMIT,
    ParseError,
    eval_duration,
    parse,
    parse_duration,
    parse_matchers,
)
from athens.query.printer import format_expr
from athens.query.signatures import AGGREGATIONS, FUNCTIONS
from query.trees import shape

TESTDATA = Path(
    os.environ.get(
        "ATHENS_PROMQL_TESTDATA",
        Path(__file__).resolve().parents[2].parent / "shared" / "promql-testdata",
    )
)


def vs(name: str | None, *matchers: tuple[str, str, str]) -> VectorSelector:
    ms = [Matcher(MatchOp(op), n, v) for op, n, v in matchers]
    if name is not None:
        ms.append(Matcher(MatchOp.EQ, "__name__", name))
    return VectorSelector(name, ms)


def same(text: str, expected: object) -> None:
    assert shape(parse(text)) == shape(expected)


def fails(text: str, message: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert str(info.value) == message
    return info.value


# -- literals and selectors -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1.0), ("0x1f", 31.0), ("0X1F", 31.0), ("1e3", 1000.0), (".5", 0.5), ("5.", 5.0),
        ("010", 8.0), ("1_000", 1000.0), ("Inf", math.inf), ("+inf", math.inf), ("-Inf", -math.inf),
        ("5m", 300.0), ("1h30m", 5400.0), ("100ms", 0.1), ("1y", 365 * 86400.0), ("- - 1", 1.0),
    ],
)
def test_number_literals_including_hex_specials_and_durations(text: str, value: float) -> None:
    e = parse(text)
    assert isinstance(e, NumberLiteral) and e.value == value
    assert e.pos == PosRange(0, len(text))


def test_nan_literal() -> None:
    e = parse("NaN")
    assert isinstance(e, NumberLiteral) and math.isnan(e.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"a\\nb"', "a\nb"), ("'a\"b'", 'a"b'), ("`a\\nb`", "a\\nb"), ('"\\x41\\u00e9\\101"', "AéA"),
        ('"\\U0001F600"', "\U0001F600"), ("'\\''", "'"),
    ],
)
def test_string_literals_with_go_escapes(text: str, value: str) -> None:
    e = parse(text)
    assert isinstance(e, StringLiteral) and e.value == value and e.type is ValueType.STRING


def test_vector_selectors_in_all_spellings() -> None:
    same("foo", vs("foo"))
    same('foo{a="b"}', vs("foo", ("=", "a", "b")))
    same('{a="b", c!="d", e=~"f.*", g!~"h",}', vs(None, ("=", "a", "b"), ("!=", "c", "d"), ("=~", "e", "f.*"), ("!~", "g", "h")))
    same('{"utf8.name"}', vs(None, ("=", "__name__", "utf8.name")))
    same('{"my.metric", "a.b"="c"}', vs(None, ("=", "__name__", "my.metric"), ("=", "a.b", "c")))
    same('{__name__=~"foo.*"}', vs(None, ("=~", "__name__", "foo.*")))
    same("foo:bar:baz", vs("foo:bar:baz"))
    same(":foo", vs(":foo"))
    # Keywords are plain label names inside braces.
    same('foo{by="x", offset="y"}', vs("foo", ("=", "by", "x"), ("=", "offset", "y")))


def test_keywords_name_metrics_where_an_operand_is_expected() -> None:
    for word in ("sum", "by", "offset", "and", "without", "step", "anchored", "limitk"):
        e = parse(word)
        assert isinstance(e, VectorSelector) and e.name == word
    same("foo * sum", BinaryExpr("*", vs("foo"), vs("sum"), VectorMatching()))
    e = parse("fill + fill(0) other")
    assert isinstance(e, BinaryExpr) and shape(e.lhs) == shape(vs("fill"))
    assert isinstance(e, BinaryExpr) and e.matching is not None and e.matching.fill_left == 0.0


def test_vector_selector_positions_cover_modifiers() -> None:
    e = parse('foo{a="b"} offset 5m')
    assert isinstance(e, VectorSelector) and e.pos == PosRange(0, 20) and e.offset == 300_000
    e = parse("  foo[5m] @ 10")
    assert isinstance(e, MatrixSelector) and e.pos == PosRange(2, 14)
    assert e.vector.pos == PosRange(2, 5) and e.vector.at == 10_000


def test_positions_are_byte_offsets() -> None:
    e = parse('{a="é"} + foo')
    assert isinstance(e, BinaryExpr)
    assert e.lhs.pos == PosRange(0, 8) and e.rhs.pos == PosRange(11, 14)


def test_matrix_selectors_offsets_and_at() -> None:
    e = parse("foo[5m] offset -1h @ end()")
    assert isinstance(e, MatrixSelector) and e.range == 300_000
    assert e.vector.offset == -3_600_000 and e.vector.at is AtModifier.END
    e = parse("foo @ start() offset 10")
    assert isinstance(e, VectorSelector) and e.at is AtModifier.START and e.offset == 10_000
    e = parse("foo @ -1.5")
    assert isinstance(e, VectorSelector) and e.at == -1500
    e = parse("foo @ 1m40s")
    assert isinstance(e, VectorSelector) and e.at == 100_000
    e = parse("foo[1800]")
    assert isinstance(e, MatrixSelector) and e.range == 1_800_000


def test_subqueries() -> None:
    e = parse("rate(foo[5m])[30m:1m] offset 5m @ 100")
    assert isinstance(e, SubqueryExpr) and isinstance(e.expr, Call)
    assert (e.range, e.step, e.offset, e.at) == (1_800_000, 60_000, 300_000, 100_000)
    e = parse("foo[1h:]")
    assert isinstance(e, SubqueryExpr) and e.step == 0 and isinstance(e.expr, VectorSelector)
    # @ on the selector before a subquery is allowed (unlike before a range).
    e = parse('{__name__="x"} @ start()[1h:1m] offset 1m16s')
    assert isinstance(e, SubqueryExpr) and e.offset == 76_000
    assert isinstance(e.expr, VectorSelector) and e.expr.at is AtModifier.START


def test_extended_range_selectors() -> None:
    e = parse("foo[5m] anchored")
    assert isinstance(e, MatrixSelector) and e.vector.modifier == "anchored"
    e = parse("metric @ 100 smoothed + 0")
    assert isinstance(e, BinaryExpr) and isinstance(e.lhs, VectorSelector) and e.lhs.modifier == "smoothed"


# -- operators ------------------------------------------------------------------------


def tree(text: str) -> str:
    """Fully parenthesised rendering, to read precedence at a glance."""

    def r(e: object) -> str:
        if isinstance(e, BinaryExpr):
            return f"({r(e.lhs)} {e.op} {r(e.rhs)})"
        if isinstance(e, UnaryExpr):
            return f"({e.op}{r(e.expr)})"
        if isinstance(e, NumberLiteral):
            return format_expr(e)
        if isinstance(e, ParenExpr):
            return r(e.expr)
        return format_expr(e)  # type: ignore[arg-type]

    return r(parse(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a + b * c", "(a + (b * c))"),
        ("a * b + c", "((a * b) + c)"),
        ("a - b - c", "((a - b) - c)"),
        ("a / b / c", "((a / b) / c)"),
        ("a ^ b ^ c", "(a ^ (b ^ c))"),
        ("2 ^ 3 ^ 2", "(2 ^ (3 ^ 2))"),
        ("-a ^ b", "(-(a ^ b))"),
        ("-a * b", "((-a) * b)"),
        ("-2 ^ 2", "(-(2 ^ 2))"),
        ("a ^ -b", "(a ^ (-b))"),
        ("a ^ -b ^ c", "(a ^ (-(b ^ c)))"),
        ("a + -b * c", "(a + ((-b) * c))"),
        ("a or b and c", "(a or (b and c))"),
        ("a and b unless c", "((a and b) unless c)"),
        ("a or b or c", "((a or b) or c)"),
        ("a > b + c", "(a > (b + c))"),
        ("a == b or c != d", "((a == b) or (c != d))"),
        ("a atan2 b + c", "((a atan2 b) + c)"),
        ("a % b * c", "((a % b) * c)"),
        ("h </ 5 + 1", "((h </ 5) + 1)"),
        ("h >/ -Inf", "(h >/ -Inf)"),
        ("a + b offset 5m", "(a + b offset 5m)"),
        ("---a", "(-(-(-a)))"),
        ("+a", "(+a)"),
        ("1 - -1", "(1 - -1)"),
    ],
)
def test_precedence_and_associativity(text: str, expected: str) -> None:
    assert tree(text) == expected


def test_unary_minus_folds_into_number_literals_only() -> None:
    e = parse("-1")
    assert isinstance(e, NumberLiteral) and e.value == -1 and e.pos == PosRange(0, 2)
    e = parse("-(1)")
    assert isinstance(e, UnaryExpr) and isinstance(e.expr, ParenExpr)


@pytest.mark.parametrize(
    "make",
    [lambda n: " or ".join(["x"] * n), lambda n: "(" * (n - 1) + "1" + ")" * (n - 1),
     lambda n: "-" * (n - 1) + "x", lambda n: "abs(" * (n - 1) + "x" + ")" * (n - 1)],
    ids=["chain", "parens", "unary", "calls"],
)
def test_depth_is_bounded_at_max_depth_levels(make) -> None:  # type: ignore[no-untyped-def]
    # The serving processes run with RECURSION_LIMIT (athens.cli); a tree
    # of MAX_DEPTH levels parses, one more level is refused as too deep.
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(RECURSION_LIMIT)
    try:
        e = parse(make(MAX_DEPTH))
        with pytest.raises(ParseError, match="nested too deeply"):
            parse(make(MAX_DEPTH + 1))
    finally:
        sys.setrecursionlimit(old)
    sys.setrecursionlimit(400)  # pytest's own frames, and far fewer than MAX_DEPTH
    try:  # typing the tree asks no operand: it was O(depth) a node, O(n^2) for a chain
        assert e.type in (ValueType.SCALAR, ValueType.VECTOR)
    finally:
        sys.setrecursionlimit(old)


def test_binary_modifiers() -> None:
    e = parse("a == bool on(x, y) group_left(z) b")
    assert isinstance(e, BinaryExpr) and e.return_bool and e.matching is not None
    m = e.matching
    assert (m.on, m.labels, m.card, m.include, m.given) == (True, ["x", "y"], Cardinality.MANY_TO_ONE, ["z"], True)
    e = parse("a * ignoring(x) group_right b")
    assert isinstance(e, BinaryExpr) and e.matching is not None
    assert (e.matching.on, e.matching.card, e.matching.include) == (False, Cardinality.ONE_TO_MANY, [])
    e = parse("a and b")
    assert isinstance(e, BinaryExpr) and e.matching is not None
    assert e.matching.card is Cardinality.MANY_TO_MANY
    # Vector matching is dropped when one side is a scalar, as in Prometheus.
    e = parse("a + on() 1")
    assert isinstance(e, BinaryExpr) and e.matching is None
    e = parse("a > bool 1")
    assert isinstance(e, BinaryExpr) and e.return_bool and e.type is ValueType.VECTOR
    e = parse("1 > bool 2")
    assert isinstance(e, BinaryExpr) and e.type is ValueType.SCALAR


def test_fill_modifiers() -> None:
    e = parse("a + fill(0) b")
    assert isinstance(e, BinaryExpr) and e.matching is not None
    assert (e.matching.fill_left, e.matching.fill_right) == (0.0, 0.0)
    e = parse("a + on(job) group_left fill_left(5) fill_right(-Inf) b")
    assert isinstance(e, BinaryExpr) and e.matching is not None
    assert (e.matching.fill_left, e.matching.fill_right) == (5.0, -math.inf)
    e = parse("a != bool fill(30) b")
    assert isinstance(e, BinaryExpr) and e.return_bool and e.matching is not None
    assert e.matching.fill_right == 30.0


def test_aggregations_with_grouping_before_or_after() -> None:
    a = parse("sum by (job) (rate(x[5m]))")
    b = parse("sum(rate(x[5m])) by (job)")
    assert shape(a) == shape(b)
    assert isinstance(a, AggregateExpr) and a.grouping == ["job"] and not a.without and a.grouping_given
    e = parse('count_values without (a, "b.c",) ("v", x)')
    assert isinstance(e, AggregateExpr) and e.without and e.grouping == ["a", "b.c"]
    assert isinstance(e.param, StringLiteral) and e.param.value == "v"
    for op in ("topk", "bottomk", "quantile", "limitk", "limit_ratio"):
        e = parse(f"{op}(0.5, x)")
        assert isinstance(e, AggregateExpr) and isinstance(e.param, NumberLiteral) and e.op == op
    e = parse("SUM(x) BY (on, by, group_left)")
    assert isinstance(e, AggregateExpr) and e.op == "sum" and e.grouping == ["on", "by", "group_left"]
    assert parse("sum(x) by (a)").pos == PosRange(0, 13)
    assert parse("sum(x)").pos == PosRange(0, 6)


def test_function_calls_and_variadic_arguments() -> None:
    e = parse('label_join(x, "dst", ",", "a", "b", "c")')
    assert isinstance(e, Call) and len(e.args) == 6 and e.pos == PosRange(0, 40)
    assert isinstance(parse("hour()"), Call) and isinstance(parse("round(x, 5)"), Call)
    e = parse("time()")
    assert isinstance(e, Call) and e.type is ValueType.SCALAR
    for text in ("step()", "range()", "start()", "end()", "STEP()", "min_of(1, 2)", "max_of(1, step())"):
        e = parse(text)
        assert isinstance(e, Call) and e.type is ValueType.SCALAR
    e = parse('info(metric, {data=~".+"})')
    assert isinstance(e, Call) and e.func == "info"
    assert isinstance(parse("info(metric, {})"), Call)


def test_signatures_cover_prometheus_functions() -> None:
    for name in ("rate", "histogram_quantile", "label_replace", "double_exponential_smoothing",
                 "mad_over_time", "ts_of_max_over_time", "sort_by_label", "info", "histogram_fraction"):
        assert name in FUNCTIONS
    assert FUNCTIONS["round"].min_args == 1 and FUNCTIONS["round"].max_args == 2
    assert FUNCTIONS["label_join"].max_args is None
    assert AGGREGATIONS["count_values"].param_type is ValueType.STRING
    assert AGGREGATIONS["sum"].param_type is None


# -- duration expressions ------------------------------------------------------------


def test_duration_arithmetic_in_brackets() -> None:
    e = parse("foo[5m+1m]")
    assert isinstance(e, MatrixSelector) and isinstance(e.range, DurationExpr)
    assert eval_duration(e.range, step_ms=0, range_ms=0) == 360.0
    e = parse("foo[1h30m % 1h]")
    assert isinstance(e, MatrixSelector) and isinstance(e.range, DurationExpr)
    assert eval_duration(e.range, step_ms=0, range_ms=0) == 1800.0
    e = parse("rate(foo[step()*2 + 1s:step()])")
    assert isinstance(e, Call)
    sq = e.args[0]
    assert isinstance(sq, SubqueryExpr) and isinstance(sq.range, DurationExpr) and isinstance(sq.step, DurationExpr)
    assert eval_duration(sq.range, step_ms=15_000, range_ms=0) == 31.0
    assert eval_duration(sq.step, step_ms=15_000, range_ms=0) == 15.0
    e = parse("foo[max_of(min_of(step()+1, 1h), 1ms)]")
    assert isinstance(e, MatrixSelector)
    assert eval_duration(e.range, step_ms=60_000, range_ms=0) == 61.0  # type: ignore[arg-type]
    e = parse("foo[(5m)]")
    assert isinstance(e, MatrixSelector) and e.range == 300_000


@pytest.mark.parametrize(
    ("text", "offset_seconds", "outer"),
    [
        ("foo offset 1m + 1m", 60.0, "+"),
        ("foo offset -2 ^ 2", -2.0, "^"),
        ("foo offset 2 ^ 2", 2.0, "^"),
        ("foo offset -step() * 2", -5.0, "*"),
        ("foo offset step() ^ 0", 5.0, "^"),
        ("foo offset -min_of(step(), 1s) + 8000", -1.0, "+"),
        ("foo offset -(min_of(step(), 1s)) + 8000", -1.0, "+"),
        ("foo offset (2 * 2)", 4.0, None),
        ("foo offset (-2 ^ 2)", -4.0, None),
        ("foo offset (1m) * 2", 120.0, None),
        ("foo offset min_of(range(), 8s)", 8.0, None),
    ],
)
def test_offset_takes_a_single_duration_term(text: str, offset_seconds: float, outer: str | None) -> None:
    e = parse(text)
    if outer is None:
        sel = e
    else:
        assert isinstance(e, BinaryExpr) and e.op == outer
        sel = e.lhs
    assert isinstance(sel, VectorSelector)
    off = sel.offset
    value = off / 1000 if isinstance(off, int) else eval_duration(off, step_ms=5000, range_ms=60_000)
    assert value == offset_seconds


def test_parse_duration() -> None:
    assert parse_duration("1h30m") == 5_400_000
    assert parse_duration("1y") == 365 * 86_400_000
    assert parse_duration("1w2d") == 9 * 86_400_000
    assert parse_duration("15ms") == 15
    assert parse_duration("0") == 0
    for bad in ("", "1", "1.5h", "1m1h", "-1m", "1hs"):
        with pytest.raises(ParseError):
            parse_duration(bad)


def test_parse_matchers_for_series_api() -> None:
    ms = parse_matchers('up{job="a", instance=~"b.*"}')
    assert {m.to_tuple() for m in ms} == {("=", "job", "a"), ("=~", "instance", "b.*"), ("=", "__name__", "up")}
    assert parse_matchers('{job=""}') == [Matcher(MatchOp.EQ, "job", "")]
    with pytest.raises(ParseError):
        parse_matchers("up + 1")


@pytest.mark.parametrize(
    ("regex", "hits", "misses"),
    [
        ("((?i)PRO).*", ["production", "PROduction"], ["xproduction"]),
        (".*((?i)duc).*", ["proDUCtion"], ["prodction"]),
        ("(?i)foo", ["FOO", "foo"], ["bar"]),
        ("a(?i)b|c", ["aB", "C"], ["AB", "ac"]),
        ("(a(?i)b|c)d", ["aBd", "Cd"], ["aBD"]),
        ("[(?i)]x", ["(x", "ix"], ["Ix"]),
    ],
)
def test_mid_pattern_regex_flags_match_like_re2(regex: str, hits: list[str], misses: list[str]) -> None:
    e = parse(f"foo{{group=~`{regex}`}}")
    assert isinstance(e, VectorSelector)
    m = e.matchers[0]
    assert all(m.matches(h) for h in hits) and not any(m.matches(x) for x in misses)


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unknown position: parse error: no expression found in input"),
        ("  ", "1:1: parse error: no expression found in input"),
        ("1+", "1:3: parse error: unexpected end of input"),
        ("*1", "1:1: parse error: unexpected <op:*>"),
        ("foo + * bar", "1:7: parse error: unexpected <op:*>"),
        (".", "1:1: parse error: unexpected character: '.'"),
        ("2.5.", '1:1: parse error: bad number or duration syntax: "2.5."'),
        ("0deadbeef", '1:1: parse error: bad number or duration syntax: "0de"'),
        ("(1))", "1:5: parse error: unexpected right parenthesis ')'"),
        ("((1)", "1:5: parse error: unclosed left parenthesis"),
        ("1 !~ 1", "1:3: parse error: unexpected character after '!': '~'"),
        ("1 and 1", '1:1: parse error: set operator "and" not allowed in binary scalar expression'),
        ("1 == 1", "1:3: parse error: comparisons between scalars must use BOOL modifier"),
        ('-"s"', '1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got "string"'),
        ("-x[5m]", '1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got "range vector"'),
        ('"a" + 1', "1:1: parse error: binary expression must contain only scalar and instant vector types"),
        ("x[5m] + 1", "1:1: parse error: binary expression must contain only scalar and instant vector types"),
        ("1 offset 1d", "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery"),
        ("foo offset 1s offset 2s", "1:1: parse error: offset may not be set multiple times"),
        ("a - on(b) ignoring(c) d", "1:11: parse error: unexpected <ignoring>"),
        ("foo or on(bar) group_left(baz) bar", '1:1: parse error: no grouping allowed for "or" operation'),
        ("foo + bool bar", "1:5: parse error: bool modifier can only be used on comparison operators"),
        ("x * on(a) group_left(a) y", '1:3: parse error: label "a" must not occur in ON and GROUP clause at once'),
        ("{}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
        ('{x=~".*", y=""}', "1:1: parse error: vector selector must contain at least one non-empty matcher"),
        ('foo{__name__="bar"}', '1:1: parse error: metric name must not be set twice: "foo" or "bar"'),
        ("foo{1}", "1:5: parse error: unexpected character inside braces: '1'"),
        ('foo{a="b", c}', '1:13: parse error: unexpected "}" in label matching, expected label matching operator'),
        ('m{a="b" b="c"}', '1:9: parse error: unexpected identifier "b" in label matching, expected "," or "}"'),
        ('foo{a="b"', "1:10: parse error: unexpected end of input inside braces"),
        ("topk(x)", "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1"),
        ("count()", "1:1: parse error: no arguments for aggregate expression provided"),
        ("topk(x, y)", "1:6: parse error: expected type scalar in aggregation parameter, got instant vector"),
        ("count_values(5, y)", "1:14: parse error: expected type string in aggregation parameter, got scalar"),
        ("sum(x[5m])", "1:5: parse error: expected type instant vector in aggregation expression, got range vector"),
        ("rate(x)", '1:6: parse error: expected type range vector in call to function "rate", got instant vector'),
        ("nope()", '1:1: parse error: unknown function with name "nope"'),
        ("RATE(x[5m])", '1:1: parse error: unknown function with name "RATE"'),
        ("floor()", '1:1: parse error: expected 1 argument(s) in call to "floor", got 0'),
        ("round(x, 1, 2)", '1:1: parse error: expected at most 2 argument(s) in call to "round", got 3'),
        ("label_join(x)", '1:1: parse error: expected at least 3 argument(s) in call to "label_join", got 1'),
        ("rate(x[5m],)", "1:11: parse error: trailing commas not allowed in function call args"),
        ("sum(a) by b", '1:11: parse error: unexpected identifier "b" in grouping opts, expected "("'),
        ("sum(a) by (1)", '1:12: parse error: unexpected number "1" in grouping opts, expected label'),
        ("foo offset bar", '1:12: parse error: unexpected identifier "bar" in offset, expected number, duration, step(), or range()'),
        ("foo @ bar", '1:7: parse error: unexpected identifier "bar" in @, expected timestamp'),
        ("foo @ 1 @ 2", "1:1: parse error: @ <timestamp> may not be set multiple times"),
        ("foo @ Inf", "1:1: parse error: timestamp out of bounds for @ modifier: +Inf"),
        ("sum(x) @ 1", "1:1: parse error: @ modifier must be preceded by an instant vector selector or range vector selector or a subquery"),
        ("foo[]", '1:5: parse error: unexpected "]" in subquery or range selector, expected number, duration, step(), or range()'),
        ("foo[0]", "1:5: parse error: duration must be greater than 0"),
        ("foo[5m:0]", "1:8: parse error: duration must be greater than 0"),
        ("foo[5m:1m:1m]", "1:10: parse error: unexpected colon ':'"),
        ("foo[5m x]", "1:8: parse error: unexpected character: 'x', expected ':'"),
        ("foo[x]", "1:5: parse error: unexpected character in duration expression: 'x'"),
        ("foo[5m", "1:7: parse error: unclosed left bracket"),
        ("foo[1hs]", '1:5: parse error: not a valid duration string: "1hs"'),
        ("foo[5m/0]", "1:7: parse error: division by zero"),
        ("(foo)[5m]", "1:6: parse error: ranges only allowed for vector selectors"),
        ("foo offset 5m [5m]", "1:15: parse error: no offset modifiers allowed before range"),
        ("foo @ 10 [5m]", "1:10: parse error: no @ modifiers allowed before range"),
        ("foo[5m][5m:]", "1:1: parse error: subquery is only allowed on instant vector, got matrix instead"),
        ("foo anchored smoothed", "1:1: parse error: anchored and smoothed modifiers cannot be used together"),
        ("foo[5m:] anchored", "1:1: parse error: anchored modifier is not supported for subqueries"),
        ("a + fill(0) 1", "1:1: parse error: filling in missing series only allowed between instant vectors"),
        ("a and fill(0) b", "1:1: parse error: filling in missing series not allowed for set operators"),
        ("info(x, y)", "1:9: parse error: expected label selectors only, got vector selector instead"),
        ("1e400", '1:1: parse error: error parsing number: strconv.ParseFloat: parsing "1e400": value out of range'),
        ('foo{a="\\q"}', "1:7: parse error: unknown escape sequence U+0071 'q'"),
        ('foo{a="x', "1:7: parse error: unterminated quoted string"),
        ("foo bar", '1:5: parse error: unexpected identifier "bar"'),
        ("foo\n  + * 2", "2:5: parse error: unexpected <op:*>"),
        ("é + (", "1:1: parse error: unexpected character: 'é'"),
        ('{a="é"} + *', "1:12: parse error: unexpected <op:*>"),  # é is two bytes
    ],
)
def test_errors_read_like_prometheus(text: str, message: str) -> None:
    fails(text, message)


def test_parse_error_is_bad_data_with_position() -> None:
    err = fails("foo + * bar", "1:7: parse error: unexpected <op:*>")
    assert isinstance(err, BadDataError) and err.error_type == "bad_data"
    assert err.pos == PosRange(6, 7) and err.msg == "unexpected <op:*>"


@pytest.mark.parametrize(
    ("regex", "detail"),
    [
        # As Prometheus 3 (labels.NewFastRegexMatcher parses the pattern
        # itself before compiling it anchored): the pattern as written.
        ("x[y", "missing closing ]: `[y`"),
        ("(abc", "missing closing ): `(abc`"),
        ("abc)", "unexpected ): `abc)`"),
        ("*a", "missing argument to repetition operator: `*`"),
        ("[z-a]", "invalid character class range: `z-a`"),
        # Python accepts these; RE2 (and so Prometheus) does not.
        ("a(?=b)", "invalid or unsupported Perl syntax: `(?=`"),
        ("(a)\\1", "invalid escape sequence: `\\1`"),
        ("a*+", "invalid nested repetition operator: `*+`"),
        ("\\p{Foo}", "invalid character class range: `\\p{Foo}`"),
    ],
)
def test_regex_errors_read_like_go(regex: str, detail: str) -> None:
    fails(f"foo{{a=~`{regex}`}}", f"1:5: parse error: error parsing regexp: {detail}")


def test_comments_are_ignored() -> None:
    same("foo # a comment\n + 1", BinaryExpr("+", vs("foo"), NumberLiteral(1.0), None))


def test_tokenizer_stops_at_the_first_error() -> None:
    toks = tokenize("foo + 'bar")
    assert [t.kind for t in toks] == ["IDENT", "+", "ERROR"]


# -- the upstream corpus -------------------------------------------------------------------

_INSTANT = re.compile(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
_RANGE = re.compile(r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$")


def corpus_expressions() -> list[tuple[str, str]]:
    """(file:line, expression) of every eval command in the upstream test files."""
    out = []
    for path in sorted(TESTDATA.glob("*.test")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line.lower().startswith("eval"):
                continue
            m = _INSTANT.match(line)
            if m:
                out.append((f"{path.name}:{n}", m.group(3)))
                continue
            m = _RANGE.match(line)
            if m:
                out.append((f"{path.name}:{n}", m.group(5)))
    return out


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, str]]:
    if not TESTDATA.is_dir():
        pytest.skip(f"upstream PromQL test data not found at {TESTDATA}")
    exprs = corpus_expressions()
    if not exprs:
        pytest.skip(f"no eval commands found under {TESTDATA}")
    return exprs


def test_every_corpus_expression_parses_and_round_trips(corpus: list[tuple[str, str]]) -> None:
    failures = []
    start = time.perf_counter()
    for where, text in corpus:
        try:
            first = parse(text)
        except ParseError as e:
            failures.append(f"{where}: {text!r}: {e}")
            continue
        printed = format_expr(first)
        try:
            again = parse(printed)
        except ParseError as e:
            failures.append(f"{where}: {text!r} printed as {printed!r}: {e}")
            continue
        if shape(again) != shape(first):
            failures.append(f"{where}: {text!r} printed as {printed!r} parses differently")
    elapsed = time.perf_counter() - start
    print(f"\n{len(corpus) - len(failures)} of {len(corpus)} corpus expressions parse and round-trip "
          f"({elapsed * 1000:.0f} ms)")
    assert not failures, "\n".join(failures[:50])
    assert len(corpus) == 2214
