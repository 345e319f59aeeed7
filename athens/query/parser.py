"""PromQL parser: recursive descent with precedence climbing.

Accepts the language of Prometheus 3.x with every feature flag the upstream
test suite turns on: experimental functions, duration expressions
(`[5m+1m]`, `offset (2*1m)`, `step()`, `range()`, `min_of`/`max_of`), the
extended range selectors `anchored`/`smoothed`, the binary `fill`,
`fill_left`, `fill_right` modifiers and the native-histogram trim operators
`</` and `>/`.

Grammar decisions follow Prometheus' yacc grammar (generated_parser.y),
including the places where its conflict resolution defines the language:

- precedence, loosest first: `or`; `and unless`; comparisons; `+ -`;
  `* / % atan2 </ >/`; `^` (right-associative). Unary minus binds like `*`,
  so `-a ^ b` is `-(a ^ b)` and `-a * b` is `(-a) * b`.
- postfix modifiers (`[range]`, `[range:step]`, `offset`, `@`, `anchored`,
  `smoothed`) bind tighter than any operator.
- after `offset` only a single duration term is taken (a literal, `step()`,
  `range()`, `min_of/max_of(...)`, each with an optional sign, or a
  parenthesised duration expression), so `foo offset 1m + 1m` is
  `(foo offset 1m) + 1m` and `foo offset -2 ^ 2` is `(foo offset -2) ^ 2`.
- a minus sign in front of a number literal is folded into the literal.

Semantic checks mirror Prometheus' checkAST and run after a successful
parse, in the same order, so the first error reported is the one Prometheus
reports. Errors are ParseError with Prometheus' text
(`1:5: parse error: unexpected <op:+>`).
"""

from __future__ import annotations

import math
import re

from athens.errors import ExecutionError, InvalidQueryError
from athens.model.matchers import BadRegexError, Matcher, MatchOp
from athens.query import lexer as L
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
    PosRange,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    ValueType,
    VectorMatching,
    VectorSelector,
    depth,
)
from athens.query.signatures import AGGREGATIONS, FUNCTIONS

__all__ = [
    "MAX_DEPTH",
    "RECURSION_LIMIT",
    "ParseError",
    "parse",
    "parse_matchers",
    "parse_duration",
    "eval_duration",
    "position_str",
]


class ParseError(InvalidQueryError):
    """A query that is not valid PromQL.

    `msg` is the bare message, `pos` the byte range it refers to, `query` the
    text; str() gives Prometheus' form `<line>:<col>: parse error: <msg>`.
    """

    def __init__(self, msg: str, pos: PosRange, query: str | None = None) -> None:
        self.msg = msg
        self.pos = pos
        self.query = query
        if query is None:
            text = msg
        else:
            text = f"{position_str(query, pos.start)}: parse error: {msg}"
        super().__init__(text)


def position_str(query: str, byte_pos: int) -> str:
    """`line:col` (1-based, col in bytes) of a byte offset, as Prometheus prints it."""
    if query == "":
        return "unknown position"
    raw = query.encode("utf-8", "surrogatepass") if not query.isascii() else query
    if byte_pos < 0 or byte_pos > len(raw):
        return "invalid position"
    head = raw[:byte_pos]
    nl = "\n" if isinstance(head, str) else b"\n"
    line = head.count(nl)  # type: ignore[arg-type]
    last = head.rfind(nl)  # type: ignore[arg-type]
    return f"{line + 1}:{byte_pos - last}"


# Levels an expression may nest (binary operator chains count one a term).
# Prometheus has no bound; here parsing, checking, planning, printing and
# evaluating all recurse over the tree, up to ~6 Python frames a level, so
# the serving processes raise Python's limit to RECURSION_LIMIT (depths of
# 4,000 evaluated within it and the 8 MiB thread stacks, 12-07).
MAX_DEPTH = 2000
RECURSION_LIMIT = 20_000


# --------------------------------------------------------------------------
# Durations

_DURATION_RE = re.compile(
    r"^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$"
)
_UNIT_MS = (365 * 86400_000, 7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1)
_MAX_NS = (1 << 63) - 1


def parse_duration(text: str) -> int:
    """Milliseconds of a Prometheus duration (`1h30m`, `1y`, `500ms`, `0`).

    Raises ParseError (without a position) with Prometheus' message.
    """
    if text == "0":
        return 0
    if text == "":
        raise ParseError("empty duration string", PosRange(0, 0))
    m = _DURATION_RE.match(text)
    if m is None:
        raise ParseError(f"not a valid duration string: {L.go_quote(text)}", PosRange(0, len(text)))
    total = 0
    for g, unit in zip(m.groups(), _UNIT_MS):
        if g:
            total += int(g) * unit
    if total * 1_000_000 > _MAX_NS:
        raise ParseError("duration out of range", PosRange(0, len(text)))
    return total


def format_duration(ms: int) -> str:
    """Prometheus' model.Duration.String() for a non-negative ms count."""
    if ms == 0:
        return "0s"
    out = []
    for unit, mult, exact in (
        ("y", 365 * 86400_000, True),
        ("w", 7 * 86400_000, True),
        ("d", 86400_000, False),
        ("h", 3600_000, False),
        ("m", 60_000, False),
        ("s", 1000, False),
        ("ms", 1, False),
    ):
        if exact and ms % mult != 0:
            continue
        v = ms // mult
        if v > 0:
            out.append(f"{v}{unit}")
            ms -= v * mult
    return "".join(out)


def go_round(x: float) -> int:
    """Go's math.Round: halves away from zero (Python's round() goes to even)."""
    t = math.trunc(x)
    if abs(x - t) >= 0.5:
        t += 1 if x > 0 else -1
    return int(t)


def _seconds_to_ms(seconds: float) -> int:
    """time.Duration(math.Round(s * 1e9)) then whole milliseconds, as Prometheus does."""
    ns = go_round(seconds * 1e9)
    return ns // 1_000_000 if ns >= 0 else -((-ns) // 1_000_000)


def eval_duration(expr: Expr, *, step_ms: int, range_ms: int) -> float:
    """Value in seconds of a DurationExpr tree, given the query's step and range.

    Leaves are DurationExpr(op="number"|"duration", value=seconds); `step()`
    and `range()` read the arguments; "neg" negates its `rhs`; "min_of" and
    "max_of" take `lhs`, `rhs`. Division or modulo by zero raises
    ExecutionError, as Prometheus does when it resolves the expression.
    Offered to the engine, which decides what a negative or zero result means
    in each position (Prometheus: ranges and steps must be > 0).
    """
    if not isinstance(expr, DurationExpr):
        if isinstance(expr, NumberLiteral):
            return expr.value
        raise TypeError(f"not a duration expression: {type(expr).__name__}")
    op = expr.op
    if op in ("number", "duration"):
        return expr.value
    if op == "step":
        return step_ms / 1000.0
    if op == "range":
        return range_ms / 1000.0
    if op == "neg":
        assert expr.rhs is not None
        return -eval_duration(expr.rhs, step_ms=step_ms, range_ms=range_ms)
    assert expr.lhs is not None and expr.rhs is not None
    a = eval_duration(expr.lhs, step_ms=step_ms, range_ms=range_ms)
    b = eval_duration(expr.rhs, step_ms=step_ms, range_ms=range_ms)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            raise ExecutionError("division by zero")
        return a / b
    if op == "%":
        if b == 0:
            raise ExecutionError("modulo by zero")
        return math.fmod(a, b)
    if op == "^":
        return math.pow(a, b)
    if op == "min_of":
        return math.nan if math.isnan(a) or math.isnan(b) else min(a, b)
    if op == "max_of":
        return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)
    raise ValueError(f"unknown duration operator {op!r}")


# --------------------------------------------------------------------------
# Numbers


def parse_number(text: str) -> float:
    """Go's ParseInt(s, 0, 64) with fallback to ParseFloat, as Prometheus does."""
    s = text
    try:
        low = s.lower()
        if low.startswith(("0x", "0o", "0b")):
            v = int(s, 0)
        elif len(s) > 1 and s[0] == "0" and s.replace("_", "").isdigit():
            v = int(s.replace("_", ""), 8)
        else:
            v = int(s, 10)
        if -(1 << 63) <= v < (1 << 63):
            return float(v)
    except ValueError:
        pass
    f = float(s)
    if math.isinf(f) and "inf" not in low:
        raise OverflowError(text)  # Go's ErrRange: 1e400 is an error, not +Inf
    return f


# --------------------------------------------------------------------------
# Parser

# kind -> (precedence, right-associative)
_BINOPS: dict[str, tuple[int, bool]] = {
    "or": (1, False),
    "and": (2, False),
    "unless": (2, False),
    "==": (3, False),
    "!=": (3, False),
    "<": (3, False),
    "<=": (3, False),
    ">": (3, False),
    ">=": (3, False),
    "+": (4, False),
    "-": (4, False),
    "*": (5, False),
    "/": (5, False),
    "%": (5, False),
    "atan2": (5, False),
    "</": (5, False),
    ">/": (5, False),
    "^": (6, True),
}
_UNARY_PREC = 6  # the operand of a unary sign extends over `^` only

_DUR_BINOPS: dict[str, tuple[int, bool]] = {
    "+": (4, False),
    "-": (4, False),
    "*": (5, False),
    "/": (5, False),
    "%": (5, False),
    "^": (6, True),
}

COMPARISON_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
SET_OPS = frozenset({"and", "or", "unless"})

_MATCH_OPS = {"=": MatchOp.EQ, "!=": MatchOp.NE, "=~": MatchOp.RE, "!~": MatchOp.NRE}

# Words that may name a metric (Prometheus' metric_identifier rule).
_METRIC_WORDS = L.AGGREGATORS | frozenset(
    {"by", "and", "or", "unless", "offset", "without", "start", "end", "step", "range", "anchored", "smoothed"}
)
# Words that may name a label in grouping lists (Prometheus' maybe_label rule).
_LABEL_WORDS = (
    L.AGGREGATORS
    | frozenset(
        {
            "bool", "by", "group_left", "group_right", "ignoring", "and", "or", "unless",
            "offset", "on", "start", "end", "atan2", "step", "range", "anchored", "smoothed",
        }
    )
    | {L.IDENT, L.METRIC_IDENT}
)
_DURATION_START = frozenset({L.NUMBER, L.DURATION, "+", "-", "(", "step", "range", "min_of", "max_of"})
_MAX_DURATION_SECONDS = (1 << 63) / 1e9


def _describe(tok: L.Token) -> str:
    """Prometheus' Item.desc(): how an unexpected token is named in errors."""
    k = tok.kind
    if k == L.EOF:
        return "end of input"
    if k in L.OPERATORS:
        return f"<op:{tok.val}>"
    if k in L.KEYWORDS:
        return f"<{tok.val}>"
    if k in L.AGGREGATORS:
        return f"<aggr:{tok.val}>"
    names = {
        L.IDENT: "identifier",
        L.METRIC_IDENT: "metric identifier",
        L.NUMBER: "number",
        L.DURATION: "duration",
        L.STRING: "string",
    }
    if k in names:
        if k in (L.IDENT, L.METRIC_IDENT):
            return f"{names[k]} {L.go_quote(tok.val)}"
        return f"{names[k]} {_short_quote(tok.val)}"
    return _short_quote(tok.val)


def _short_quote(s: str) -> str:
    if len(s) > 10:
        return L.go_quote(s[:10]) + "..."
    return L.go_quote(s)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = L.tokenize(text)
        self.i = 0

    # -- token access ------------------------------------------------------
    def peek(self, k: int = 0) -> L.Token:
        j = self.i + k
        if j >= len(self.toks):
            j = len(self.toks) - 1
        t = self.toks[j]
        if t.kind == L.ERROR:
            raise ParseError(t.val, PosRange(t.pos, t.end), self.text)
        return t

    def advance(self) -> L.Token:
        t = self.peek()
        if t.kind != L.EOF:
            self.i += 1
        return t

    def error(self, msg: str, start: int, end: int) -> ParseError:
        return ParseError(msg, PosRange(start, end), self.text)

    def unexpected(self, tok: L.Token, context: str = "", expected: str = "") -> ParseError:
        msg = "unexpected " + _describe(tok)
        if context:
            msg += " in " + context
        if expected:
            msg += ", expected " + expected
        return self.error(msg, tok.pos, tok.end)

    def expect(self, kind: str, context: str = "", expected: str = "") -> L.Token:
        t = self.peek()
        if t.kind != kind:
            raise self.unexpected(t, context, expected)
        return self.advance()

    # -- expressions ---------------------------------------------------------
    def parse_expr(self, min_prec: int) -> Expr:
        lhs = self.parse_unary()
        while True:
            t = self.peek()
            info = _BINOPS.get(t.kind)
            if info is None or info[0] < min_prec:
                return lhs
            prec, right = info
            self.advance()
            matching, return_bool = self.parse_bin_modifiers()
            rhs = self.parse_expr(prec if right else prec + 1)
            lhs = BinaryExpr(
                t.kind,
                lhs,
                rhs,
                matching,
                return_bool,
                pos=PosRange(lhs.pos.start, rhs.pos.end),
            )

    def parse_unary(self) -> Expr:
        t = self.peek()
        if t.kind == "+" or t.kind == "-":
            self.advance()
            operand = self.parse_expr(_UNARY_PREC)
            if isinstance(operand, NumberLiteral):
                if t.kind == "-":
                    operand.value = -operand.value
                operand.pos = PosRange(t.pos, operand.pos.end)
                return operand
            return UnaryExpr(t.kind, operand, pos=PosRange(t.pos, operand.pos.end))
        return self.parse_postfix(self.parse_primary())

    def parse_primary(self) -> Expr:
        t = self.peek()
        k = t.kind
        if k == L.NUMBER:
            self.advance()
            return NumberLiteral(self.number(t), pos=PosRange(t.pos, t.end))
        if k == L.DURATION:
            self.advance()
            return NumberLiteral(self.duration_ms(t) / 1000.0, pos=PosRange(t.pos, t.end))
        if k == L.STRING:
            self.advance()
            return StringLiteral(L.unquote(t.val), pos=PosRange(t.pos, t.end))
        if k == "(":
            self.advance()
            inner = self.parse_expr(0)
            close = self.peek()
            if close.kind != ")":
                raise self.unexpected(close)
            self.advance()
            return ParenExpr(inner, pos=PosRange(t.pos, close.end))
        if k == "{":
            return self.parse_vector_selector(None)
        if k == L.IDENT:
            if self.peek(1).kind == "(":
                return self.parse_call(t.val)
            return self.parse_vector_selector(t)
        if k == L.METRIC_IDENT:
            return self.parse_vector_selector(t)
        if k in L.AGGREGATORS and self.peek(1).kind in ("(", "by", "without"):
            return self.parse_aggregation()
        if k in L.PREPROCESSORS and self.peek(1).kind == "(":
            return self.parse_call(k)
        if k in _METRIC_WORDS:
            return self.parse_vector_selector(t)
        raise self.unexpected(t)

    def number(self, t: L.Token) -> float:
        try:
            return parse_number(t.val)
        except (ValueError, OverflowError) as e:
            why = "value out of range" if isinstance(e, OverflowError) else "invalid syntax"
            raise self.error(
                f"error parsing number: strconv.ParseFloat: parsing {L.go_quote(t.val)}: {why}", t.pos, t.end
            ) from None

    def duration_ms(self, t: L.Token) -> int:
        try:
            return parse_duration(t.val)
        except ParseError as e:
            raise self.error(e.msg, t.pos, t.end) from None

    # -- postfix modifiers ---------------------------------------------------
    def parse_postfix(self, e: Expr) -> Expr:
        while True:
            k = self.peek().kind
            if k == "[":
                e = self.parse_range_or_subquery(e)
            elif k == "offset":
                self.parse_offset(e)
            elif k == "@":
                self.parse_at(e)
            elif k == "anchored" or k == "smoothed":
                self.advance()
                self.set_extended(e, k)
            else:
                return e

    def parse_range_or_subquery(self, e: Expr) -> Expr:
        lb = self.advance()
        t = self.peek()
        if t.kind not in _DURATION_START:
            raise self.unexpected(t, "subquery or range selector", "number, duration, step(), or range()")
        rng = self.positive_duration(self.parse_duration_expr(0))
        t = self.peek()
        if t.kind == "]":
            rb = self.advance()
            msg = ""
            if not isinstance(e, VectorSelector):
                msg = "ranges only allowed for vector selectors"
            elif not (isinstance(e.offset, int) and e.offset == 0):
                msg = "no offset modifiers allowed before range"
            elif e.at is not None:
                msg = "no @ modifiers allowed before range"
            if msg:
                raise self.error(msg, lb.pos, rb.end)
            assert isinstance(e, VectorSelector)
            return MatrixSelector(e, rng, pos=PosRange(e.pos.start, rb.end))
        if t.kind != ":":
            raise self.unexpected(t, "subquery or range", '":" or "]"')
        self.advance()
        t = self.peek()
        step: int | Expr = 0
        if t.kind != "]":
            if t.kind not in _DURATION_START:
                raise self.unexpected(
                    t, "subquery selector", 'number, duration, step(), range(), or "]"'
                )
            step = self.positive_duration(self.parse_duration_expr(0))
            t = self.peek()
            if t.kind != "]":
                raise self.unexpected(t, "subquery selector", '"]"')
        rb = self.advance()
        return SubqueryExpr(e, rng, step, pos=PosRange(e.pos.start, rb.end))

    def positive_duration(self, d: DurationExpr) -> int | Expr:
        """A literal becomes int ms (and must be > 0); anything else stays an Expr."""
        if d.op in ("number", "duration"):
            if d.value <= 0 or math.isnan(d.value):
                raise self.error("duration must be greater than 0", d.pos.start, d.pos.end)
            return self.literal_ms(d)
        return d

    def literal_ms(self, d: DurationExpr) -> int:
        if not (-_MAX_DURATION_SECONDS <= d.value <= _MAX_DURATION_SECONDS):
            raise self.error("duration out of range", d.pos.start, d.pos.end)
        if d.op == "duration":
            return go_round(d.value * 1000)
        return _seconds_to_ms(d.value)

    def parse_offset(self, e: Expr) -> None:
        self.advance()
        t = self.peek()
        sign = None
        if t.kind == "+" or t.kind == "-":
            sign = self.advance()
            t = self.peek()
        k = t.kind
        if k in (L.NUMBER, L.DURATION, "step", "range") or self.is_min_max(t):
            d = self.parse_duration_atom()
        elif k == "(":
            d = self.parse_duration_atom()
            if sign is None:
                # `offset (1m) * 2`: yacc shifts here, so arithmetic continues.
                d = self.parse_duration_rest(d, 0)
        else:
            raise self.unexpected(t, "offset", "number, duration, step(), or range()")
        if sign is not None:
            d = self.apply_sign(sign, d)
        if d.op in ("number", "duration"):
            value: int | Expr = self.literal_ms(d)
        else:
            value = d
        end = self.toks[self.i - 1].end
        self.add_offset(e, value, end)

    def add_offset(self, e: Expr, value: int | Expr, end: int) -> None:
        if isinstance(e, VectorSelector):
            target: VectorSelector | SubqueryExpr = e
        elif isinstance(e, MatrixSelector):
            target = e.vector
        elif isinstance(e, SubqueryExpr):
            target = e
        else:
            raise self.error(
                "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
                e.pos.start,
                e.pos.end,
            )
        if not (isinstance(target.offset, int) and target.offset == 0):
            raise self.error("offset may not be set multiple times", e.pos.start, e.pos.end)
        target.offset = value
        e.pos = PosRange(e.pos.start, end)

    def parse_at(self, e: Expr) -> None:
        self.advance()
        t = self.peek()
        at: int | AtModifier
        if t.kind in ("start", "end"):
            self.advance()
            self.expect("(", "@", "timestamp")
            self.expect(")", "@", "timestamp")
            at = AtModifier.START if t.kind == "start" else AtModifier.END
        else:
            neg = False
            if t.kind in ("+", "-"):
                neg = t.kind == "-"
                self.advance()
                t = self.peek()
            if t.kind == L.NUMBER:
                ts = self.number(t)
            elif t.kind == L.DURATION:
                ts = self.duration_ms(t) / 1000.0
            else:
                raise self.unexpected(t, "@", "timestamp")
            self.advance()
            if neg:
                ts = -ts
            if math.isinf(ts) or math.isnan(ts) or ts >= 2.0**63 or ts <= -(2.0**63):
                raise self.error(
                    f"timestamp out of bounds for @ modifier: {_go_percent_f(ts)}", e.pos.start, e.pos.end
                )
            at = go_round(ts * 1000)
        if isinstance(e, VectorSelector):
            target: VectorSelector | SubqueryExpr = e
        elif isinstance(e, MatrixSelector):
            target = e.vector
        elif isinstance(e, SubqueryExpr):
            target = e
        else:
            raise self.error(
                "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery",
                e.pos.start,
                e.pos.end,
            )
        if target.at is not None:
            raise self.error("@ <timestamp> may not be set multiple times", e.pos.start, e.pos.end)
        target.at = at
        e.pos = PosRange(e.pos.start, self.toks[self.i - 1].end)

    def set_extended(self, e: Expr, which: str) -> None:
        other = "smoothed" if which == "anchored" else "anchored"
        if isinstance(e, VectorSelector):
            vs = e
        elif isinstance(e, MatrixSelector):
            vs = e.vector
        elif isinstance(e, SubqueryExpr):
            raise self.error(f"{which} modifier is not supported for subqueries", e.pos.start, e.pos.end)
        else:
            raise self.error(f"{which} modifier not implemented", e.pos.start, e.pos.end)
        if vs.modifier == other:
            raise self.error("anchored and smoothed modifiers cannot be used together", e.pos.start, e.pos.end)
        vs.modifier = which

    # -- duration expressions -------------------------------------------------
    @staticmethod
    def is_min_max(t: L.Token) -> bool:
        if t.kind in ("min_of", "max_of"):
            return True
        return t.kind == L.IDENT and t.val.lower() in ("min_of", "max_of")

    def parse_duration_expr(self, min_prec: int) -> DurationExpr:
        return self.parse_duration_rest(self.parse_duration_unary(), min_prec)

    def parse_duration_rest(self, lhs: DurationExpr, min_prec: int) -> DurationExpr:
        while True:
            t = self.peek()
            info = _DUR_BINOPS.get(t.kind)
            if info is None or info[0] < min_prec:
                return lhs
            prec, right = info
            self.advance()
            rhs = self.parse_duration_expr(prec if right else prec + 1)
            if t.kind in ("/", "%") and rhs.op in ("number", "duration") and rhs.value == 0:
                what = "division by zero" if t.kind == "/" else "modulo by zero"
                raise self.error(what, t.pos, t.end)
            lhs = DurationExpr(t.kind, lhs, rhs, pos=PosRange(lhs.pos.start, rhs.pos.end))

    def parse_duration_unary(self) -> DurationExpr:
        t = self.peek()
        if t.kind == "+" or t.kind == "-":
            self.advance()
            return self.apply_sign(t, self.parse_duration_expr(_UNARY_PREC))
        return self.parse_duration_atom()

    def apply_sign(self, sign: L.Token, d: DurationExpr) -> DurationExpr:
        if d.op in ("number", "duration"):
            if sign.kind == "-":
                d.value = -d.value
            d.pos = PosRange(sign.pos, d.pos.end)
            if not (-_MAX_DURATION_SECONDS <= d.value <= _MAX_DURATION_SECONDS):
                raise self.error("duration out of range", sign.pos, sign.end)
            return d
        if sign.kind == "-":
            return DurationExpr("neg", None, d, pos=PosRange(sign.pos, d.pos.end))
        return d

    def parse_duration_atom(self) -> DurationExpr:
        t = self.peek()
        k = t.kind
        if k == L.NUMBER:
            self.advance()
            return DurationExpr("number", value=self.number(t), pos=PosRange(t.pos, t.end))
        if k == L.DURATION:
            self.advance()
            ms = self.duration_ms(t)
            return DurationExpr("duration", value=ms / 1000.0, pos=PosRange(t.pos, t.end))
        if k in ("step", "range"):
            self.advance()
            self.expect("(", "duration expression", '"("')
            close = self.expect(")", "duration expression", '")"')
            return DurationExpr(k, pos=PosRange(t.pos, close.end))
        if self.is_min_max(t):
            self.advance()
            self.expect("(", "duration expression", '"("')
            a = self.parse_duration_expr(0)
            self.expect(",", "duration expression", '","')
            b = self.parse_duration_expr(0)
            close = self.expect(")", "duration expression", '")"')
            return DurationExpr(t.val.lower(), a, b, pos=PosRange(t.pos, close.end))
        if k == "(":
            self.advance()
            inner = self.parse_duration_expr(0)
            self.expect(")", "duration expression", '")"')
            return inner
        raise self.unexpected(t, "duration expression", "number, duration, step(), or range()")

    # -- selectors -----------------------------------------------------------
    def parse_vector_selector(self, name_tok: L.Token | None) -> VectorSelector:
        if name_tok is not None:
            self.advance()
            start, end = name_tok.pos, name_tok.end
        else:
            start = self.peek().pos
            end = start
        matchers: list[Matcher] = []
        if self.peek().kind == "{":
            self.advance()
            matchers, end = self.parse_label_matchers()
        name = None
        if name_tok is not None:
            name = name_tok.val
            matchers.append(Matcher(MatchOp.EQ, "__name__", name))
        return VectorSelector(name, matchers, pos=PosRange(start, end))

    def parse_label_matchers(self) -> tuple[list[Matcher], int]:
        """After `{`: the matchers and the end offset of the closing `}`."""
        ms: list[Matcher] = []
        t = self.peek()
        if t.kind == "}":
            self.advance()
            return ms, t.end
        while True:
            t = self.peek()
            if t.kind == L.IDENT or t.kind == L.STRING:
                self.advance()
                lname = t.val if t.kind == L.IDENT else L.unquote(t.val)
                op = self.peek()
                if op.kind in _MATCH_OPS:
                    self.advance()
                    v = self.peek()
                    if v.kind != L.STRING:
                        raise self.unexpected(v, "label matching", "string")
                    self.advance()
                    ms.append(self.new_matcher(_MATCH_OPS[op.kind], lname, L.unquote(v.val), t.pos, v.end))
                elif t.kind == L.STRING:
                    ms.append(Matcher(MatchOp.EQ, "__name__", lname))
                else:
                    raise self.unexpected(op, "label matching", "label matching operator")
            else:
                raise self.unexpected(t, "label matching", 'identifier or "}"')
            t = self.peek()
            if t.kind == ",":
                self.advance()
                t = self.peek()
                if t.kind == "}":
                    self.advance()
                    return ms, t.end
                continue
            if t.kind == "}":
                self.advance()
                return ms, t.end
            raise self.unexpected(t, "label matching", '"," or "}"')

    def new_matcher(self, op: MatchOp, name: str, value: str, start: int, end: int) -> Matcher:
        try:
            return Matcher(op, name, value)
        except BadRegexError as e:  # Go's message (athens.model.re2)
            raise self.error(str(e), start, end) from None

    # -- calls and aggregations ----------------------------------------------
    def parse_call_args(self) -> tuple[list[Expr], int]:
        """`( args )`; returns the args and the end offset of `)`."""
        self.advance()  # "("
        args: list[Expr] = []
        t = self.peek()
        if t.kind == ")":
            self.advance()
            return args, t.end
        while True:
            args.append(self.parse_expr(0))
            t = self.peek()
            if t.kind == ",":
                self.advance()
                if self.peek().kind == ")":
                    raise self.error("trailing commas not allowed in function call args", t.pos, t.end)
                continue
            if t.kind == ")":
                self.advance()
                return args, t.end
            raise self.unexpected(t)

    def parse_call(self, fname: str) -> Call:
        name_tok = self.advance()
        args, end = self.parse_call_args()
        if fname not in FUNCTIONS:
            raise self.error(f"unknown function with name {L.go_quote(fname)}", name_tok.pos, name_tok.end)
        return Call(fname, args, pos=PosRange(name_tok.pos, end))

    def parse_aggregation(self) -> AggregateExpr:
        op_tok = self.advance()
        op = op_tok.kind
        grouping: list[str] = []
        without = False
        given = False
        if self.peek().kind in ("by", "without"):
            without = self.advance().kind == "without"
            grouping, _ = self.parse_grouping_labels()
            given = True
        t = self.peek()
        if t.kind != "(":
            raise self.unexpected(t, "aggregation")
        args, end = self.parse_call_args()
        if not given and self.peek().kind in ("by", "without"):
            without = self.advance().kind == "without"
            grouping, end = self.parse_grouping_labels()
            given = True
        pos = PosRange(op_tok.pos, end)
        if not args:
            raise self.error("no arguments for aggregate expression provided", pos.start, pos.end)
        want = 2 if AGGREGATIONS[op].param_type is not None else 1
        if len(args) != want:
            raise self.error(
                f"wrong number of arguments for aggregate expression provided, expected {want}, got {len(args)}",
                pos.start,
                pos.end,
            )
        param = args[0] if want == 2 else None
        return AggregateExpr(op, args[-1], param, grouping, without, given, pos=pos)

    def parse_grouping_labels(self) -> tuple[list[str], int]:
        """`(a, b, "c.d")`; returns the labels and the end offset of `)`."""
        t = self.peek()
        if t.kind != "(":
            raise self.unexpected(t, "grouping opts", '"("')
        self.advance()
        labels: list[str] = []
        t = self.peek()
        if t.kind == ")":
            self.advance()
            return labels, t.end
        while True:
            t = self.peek()
            if t.kind in _LABEL_WORDS:
                labels.append(t.val)
            elif t.kind == L.STRING:
                name = L.unquote(t.val)
                if name == "":
                    raise self.error(
                        f"invalid label name for grouping: {L.go_quote(name)}", t.pos, t.end
                    )
                labels.append(name)
            else:
                raise self.unexpected(t, "grouping opts", "label")
            self.advance()
            t = self.peek()
            if t.kind == ",":
                self.advance()
                t = self.peek()
                if t.kind == ")":
                    self.advance()
                    return labels, t.end
                continue
            if t.kind == ")":
                self.advance()
                return labels, t.end
            raise self.unexpected(t, "grouping opts", '"," or ")"')

    def parse_bin_modifiers(self) -> tuple[VectorMatching, bool]:
        vm = VectorMatching()
        return_bool = False
        if self.peek().kind == "bool":
            self.advance()
            return_bool = True
        if self.peek().kind in ("on", "ignoring"):
            vm.on = self.advance().kind == "on"
            vm.labels, _ = self.parse_grouping_labels()
            vm.given = True
            if self.peek().kind in ("group_left", "group_right"):
                left = self.advance().kind == "group_left"
                vm.card = Cardinality.MANY_TO_ONE if left else Cardinality.ONE_TO_MANY
                if self.peek().kind == "(":
                    vm.include, _ = self.parse_grouping_labels()
        seen: set[str] = set()
        while self.peek().kind in ("fill", "fill_left", "fill_right"):
            t = self.peek()
            if t.kind in seen or ("fill" in seen) or (t.kind == "fill" and seen):
                raise self.unexpected(t)
            self.advance()
            seen.add(t.kind)
            self.expect("(", "fill modifier", '"("')
            value = self.parse_fill_value()
            self.expect(")", "fill modifier", '")"')
            if t.kind in ("fill", "fill_left"):
                vm.fill_left = value
            if t.kind in ("fill", "fill_right"):
                vm.fill_right = value
        return vm, return_bool

    def parse_fill_value(self) -> float:
        t = self.peek()
        neg = False
        if t.kind in ("+", "-"):
            neg = t.kind == "-"
            self.advance()
            t = self.peek()
        if t.kind == L.NUMBER:
            v = self.number(t)
        elif t.kind == L.DURATION:
            v = self.duration_ms(t) / 1000.0
        else:
            raise self.unexpected(t, "fill modifier", "number")
        self.advance()
        return -v if neg else v


def _go_percent_f(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:f}"


# --------------------------------------------------------------------------
# Semantic checks (Prometheus' checkAST)

_DOC_TYPE = {
    ValueType.VECTOR: "instant vector",
    ValueType.MATRIX: "range vector",
    ValueType.SCALAR: "scalar",
    ValueType.STRING: "string",
}
_SCALAR_PARAM_AGGS = frozenset(a.name for a in AGGREGATIONS.values() if a.param_type is ValueType.SCALAR)


class _Checker:
    def __init__(self, text: str) -> None:
        self.text = text
        raw = text.encode("utf-8", "surrogatepass") if not text.isascii() else text.encode()
        self.raw = raw

    def error(self, msg: str, pos: PosRange) -> ParseError:
        return ParseError(msg, pos, self.text)

    def expect_type(self, node: Expr, want: ValueType, context: str) -> None:
        t = self.check(node)
        if t is not want:
            raise self.error(
                f"expected type {_DOC_TYPE[want]} in {context}, got {_DOC_TYPE[t]}", node.pos
            )

    def op_range(self, n: BinaryExpr) -> PosRange:
        raw = self.raw
        start = n.lhs.pos.end
        while start < len(raw) and raw[start] in b" \t\n\r":
            start += 1
        end = n.rhs.pos.start - 1
        while end > start and raw[end] in b" \t\n\r":
            end -= 1
        return PosRange(start, end + 1)

    def check(self, node: Expr, bypass_empty: bool = False) -> ValueType:
        typ = node.type
        if isinstance(node, AggregateExpr):
            self.expect_type(node.expr, ValueType.VECTOR, "aggregation expression")
            if node.op in _SCALAR_PARAM_AGGS:
                assert node.param is not None
                self.expect_type(node.param, ValueType.SCALAR, "aggregation parameter")
            if node.op == "count_values":
                assert node.param is not None
                self.expect_type(node.param, ValueType.STRING, "aggregation parameter")
        elif isinstance(node, BinaryExpr):
            self.check_binary(node)
        elif isinstance(node, Call):
            self.check_call(node)
        elif isinstance(node, ParenExpr):
            self.check(node.expr)
        elif isinstance(node, UnaryExpr):
            t = self.check(node.expr)
            if t is not ValueType.SCALAR and t is not ValueType.VECTOR:
                raise self.error(
                    "unary expression only allowed on expressions of type scalar or instant vector, "
                    f'got "{_DOC_TYPE[t]}"',
                    node.pos,
                )
        elif isinstance(node, SubqueryExpr):
            t = self.check(node.expr)
            if t is not ValueType.VECTOR:
                raise self.error(f"subquery is only allowed on instant vector, got {t.value} instead", node.pos)
        elif isinstance(node, MatrixSelector):
            self.check(node.vector)
        elif isinstance(node, VectorSelector):
            self.check_selector(node, bypass_empty)
        return typ

    def check_selector(self, vs: VectorSelector, bypass_empty: bool) -> None:
        if vs.name is not None:
            for m in vs.matchers[:-1]:
                if m.name == "__name__":
                    raise self.error(
                        f"metric name must not be set twice: {L.go_quote(vs.name)} or {L.go_quote(m.value)}",
                        vs.pos,
                    )
            return
        if bypass_empty:
            return
        if not any(not m.matches_empty() for m in vs.matchers):
            raise self.error("vector selector must contain at least one non-empty matcher", vs.pos)

    def check_binary(self, n: BinaryExpr) -> None:
        lt = self.check(n.lhs)
        rt = self.check(n.rhs)
        vm = n.matching
        is_cmp = n.op in COMPARISON_OPS
        is_set = n.op in SET_OPS
        if n.return_bool and not is_cmp:
            raise self.error("bool modifier can only be used on comparison operators", self.op_range(n))
        if is_cmp and not n.return_bool and lt is ValueType.SCALAR and rt is ValueType.SCALAR:
            raise self.error("comparisons between scalars must use BOOL modifier", self.op_range(n))
        if vm is not None:
            if is_set and vm.card is Cardinality.ONE_TO_ONE:
                vm.card = Cardinality.MANY_TO_MANY
            if vm.on:
                for l1 in vm.labels:
                    if l1 in vm.include:
                        raise self.error(
                            f"label {L.go_quote(l1)} must not occur in ON and GROUP clause at once",
                            self.op_range(n),
                        )
        if lt is not ValueType.SCALAR and lt is not ValueType.VECTOR:
            raise self.error("binary expression must contain only scalar and instant vector types", n.lhs.pos)
        if rt is not ValueType.SCALAR and rt is not ValueType.VECTOR:
            raise self.error("binary expression must contain only scalar and instant vector types", n.rhs.pos)
        if vm is not None:
            if lt is not ValueType.VECTOR or rt is not ValueType.VECTOR:
                if vm.labels:
                    raise self.error("vector matching only allowed between instant vectors", n.pos)
                if vm.fill_left is not None or vm.fill_right is not None:
                    raise self.error("filling in missing series only allowed between instant vectors", n.pos)
                n.matching = None
            elif is_set:
                if vm.card in (Cardinality.ONE_TO_MANY, Cardinality.MANY_TO_ONE):
                    raise self.error(f"no grouping allowed for {L.go_quote(n.op)} operation", n.pos)
                if vm.fill_left is not None or vm.fill_right is not None:
                    raise self.error("filling in missing series not allowed for set operators", n.pos)
        if (lt is ValueType.SCALAR or rt is ValueType.SCALAR) and is_set:
            raise self.error(f"set operator {L.go_quote(n.op)} not allowed in binary scalar expression", n.pos)

    def check_call(self, n: Call) -> None:
        sig = FUNCTIONS[n.func]
        nargs = len(sig.arg_types)
        got = len(n.args)
        fq = L.go_quote(n.func)
        if sig.variadic == 0:
            if nargs != got:
                raise self.error(f"expected {nargs} argument(s) in call to {fq}, got {got}", n.pos)
        else:
            na = nargs - 1
            if na > got:
                raise self.error(f"expected at least {na} argument(s) in call to {fq}, got {got}", n.pos)
            if sig.variadic > 0 and na + sig.variadic < got:
                raise self.error(
                    f"expected at most {na + sig.variadic} argument(s) in call to {fq}, got {got}", n.pos
                )
        bypass_index = -1
        if n.func == "info" and got > 1:
            second = n.args[1]
            if second.type is not ValueType.VECTOR:
                raise self.error(
                    f"expected type instant vector in call to function {fq}, got {_DOC_TYPE[second.type]}",
                    n.pos,
                )
            if isinstance(second, VectorSelector):
                if second.name is not None:
                    raise self.error("expected label selectors only, got vector selector instead", second.pos)
                bypass_index = 1
            else:
                raise self.error("expected label selectors only", second.pos)
        for i, arg in enumerate(n.args):
            j = i
            if i >= nargs:
                if sig.variadic == 0:
                    break
                j = nargs - 1
            t = self.check(arg, bypass_empty=(i == bypass_index))
            want = sig.arg_types[j]
            if t is not want:
                raise self.error(
                    f"expected type {_DOC_TYPE[want]} in call to function {fq}, got {_DOC_TYPE[t]}",
                    arg.pos,
                )


# --------------------------------------------------------------------------
# Public API


def parse(text: str) -> Expr:
    """Parse and type-check a PromQL expression."""
    p = _Parser(text)
    t = p.peek()
    if t.kind == L.EOF:
        raise ParseError("no expression found in input", PosRange(0, 0), text)
    # Prometheus' LALR parser has no depth limit; everything here that walks
    # an expression recurses (the evaluator too), so one bound for all.
    too_deep = ParseError(f"expression nested too deeply (more than {MAX_DEPTH} levels)", PosRange(0, 0), text)
    try:
        expr = p.parse_expr(0)
        t = p.peek()
        if t.kind != L.EOF:
            raise p.unexpected(t)
        if depth(expr) > MAX_DEPTH:
            raise too_deep
        _Checker(text).check(expr)
    except RecursionError:
        raise too_deep from None
    return expr


def parse_matchers(text: str) -> list[Matcher]:
    """The matchers of a bare series selector (`/api/v1/series?match[]=...`).

    Like Prometheus' ParseMetricSelector this does not insist on a non-empty
    matcher; the API layer checks that.
    """
    p = _Parser(text)
    t = p.peek()
    if t.kind in (L.IDENT, L.METRIC_IDENT) or t.kind in _METRIC_WORDS:
        vs = p.parse_vector_selector(t)
    elif t.kind == "{":
        vs = p.parse_vector_selector(None)
    else:
        raise p.unexpected(t)
    t = p.peek()
    if t.kind != L.EOF:
        raise p.unexpected(t)
    return vs.matchers
