"""PromQL syntax tree.

Node shapes follow Prometheus' promql/parser/ast.go so that behaviour can be
read across. Every node carries `pos`, the byte range of its source text, for
error messages and annotations ("(line:col)").

Durations (ranges, offsets, subquery steps) are integer milliseconds once
parsed. Where the language allows a duration *expression* that depends on the
query (`step()`, `range()`), the field holds an `Expr` instead, and the engine
resolves it before evaluation (see DurationExpr).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Union

from athens.model.matchers import Matcher


class ValueType(enum.Enum):
    SCALAR = "scalar"
    VECTOR = "vector"
    MATRIX = "matrix"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class PosRange:
    """Half-open byte range [start, end) in the query text."""

    start: int
    end: int


class AtModifier(enum.Enum):
    """`@ start()` / `@ end()`; a literal `@ <ts>` is stored as int ms."""

    START = "start"
    END = "end"


Duration = Union[int, "Expr"]  # ms, or a duration expression resolved at eval
At = Union[int, AtModifier, None]  # ms since epoch


@dataclass(slots=True)
class Expr:
    pos: PosRange = field(default_factory=lambda: PosRange(0, 0), kw_only=True)

    @property
    def type(self) -> ValueType:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(slots=True)
class NumberLiteral(Expr):
    value: float

    @property
    def type(self) -> ValueType:
        return ValueType.SCALAR


@dataclass(slots=True)
class StringLiteral(Expr):
    value: str

    @property
    def type(self) -> ValueType:
        return ValueType.STRING


@dataclass(slots=True)
class VectorSelector(Expr):
    """`name{matchers} offset X @ T`.

    `matchers` always includes the `__name__` equality matcher when a bare
    metric name was written (as Prometheus does); `name` keeps the written
    name for printing.
    """

    name: str | None
    matchers: list[Matcher]
    offset: Duration = 0
    at: At = None
    # Prometheus 3.x extended range selectors: "anchored" / "smoothed" / None.
    modifier: str | None = None

    @property
    def type(self) -> ValueType:
        return ValueType.VECTOR


@dataclass(slots=True)
class MatrixSelector(Expr):
    """`selector[range]`; offset/@ live on the inner VectorSelector."""

    vector: VectorSelector
    range: Duration

    @property
    def type(self) -> ValueType:
        return ValueType.MATRIX


@dataclass(slots=True)
class SubqueryExpr(Expr):
    """`expr[range:step] offset X @ T`; step 0 means the default step."""

    expr: Expr
    range: Duration
    step: Duration = 0
    offset: Duration = 0
    at: At = None

    @property
    def type(self) -> ValueType:
        return ValueType.MATRIX


@dataclass(slots=True)
class Call(Expr):
    func: str
    args: list[Expr]

    @property
    def type(self) -> ValueType:
        from athens.query.signatures import FUNCTIONS  # noqa: PLC0415

        return FUNCTIONS[self.func].return_type


@dataclass(slots=True)
class AggregateExpr(Expr):
    """`op [by|without (labels)] ([param,] expr)`."""

    op: str
    expr: Expr
    param: Expr | None = None
    grouping: list[str] = field(default_factory=list)
    without: bool = False
    # True when `by ()`/`without ()` was written explicitly (for printing).
    grouping_given: bool = False

    @property
    def type(self) -> ValueType:
        return ValueType.VECTOR


class Cardinality(enum.Enum):
    ONE_TO_ONE = "one-to-one"
    MANY_TO_ONE = "many-to-one"
    ONE_TO_MANY = "one-to-many"
    MANY_TO_MANY = "many-to-many"


@dataclass(slots=True)
class VectorMatching:
    """How the two sides of a vector/vector binary operation pair up."""

    card: Cardinality = Cardinality.ONE_TO_ONE
    labels: list[str] = field(default_factory=list)  # on(...) / ignoring(...)
    on: bool = False
    include: list[str] = field(default_factory=list)  # group_left/right(...)
    # Set when on()/ignoring() was written, even with an empty list.
    given: bool = False
    # Prometheus 3.x fill modifiers: value used for a missing side, or None.
    fill_left: float | None = None
    fill_right: float | None = None


@dataclass(slots=True)
class BinaryExpr(Expr):
    op: str  # + - * / % ^ atan2 == != > < >= <= and or unless, </ >/ (histogram trim)
    lhs: Expr
    rhs: Expr
    matching: VectorMatching | None = None
    return_bool: bool = False
    # Set once, as the tree is built bottom-up (nodes are not re-parented):
    # a property asking the operands made typing a chain of n operators
    # O(n^2), 4 million calls for 2,000 `or`s. The same for UnaryExpr and
    # ParenExpr.
    _type: ValueType = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        scalar = self.lhs.type is ValueType.SCALAR and self.rhs.type is ValueType.SCALAR
        self._type = ValueType.SCALAR if scalar else ValueType.VECTOR

    @property
    def type(self) -> ValueType:
        return self._type


@dataclass(slots=True)
class UnaryExpr(Expr):
    op: str  # "-" or "+"
    expr: Expr
    _type: ValueType = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._type = self.expr.type

    @property
    def type(self) -> ValueType:
        return self._type


@dataclass(slots=True)
class ParenExpr(Expr):
    expr: Expr
    _type: ValueType = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._type = self.expr.type

    @property
    def type(self) -> ValueType:
        return self._type


@dataclass(slots=True)
class DurationExpr(Expr):
    """Duration arithmetic (`5m + 1m`, `2 * step()`), value in seconds.

    op is one of + - * / % ^, "neg" (unary minus), "step", "range", "number"
    (then `value` holds seconds), or "duration" (value holds seconds).
    "neg" keeps its operand in `rhs`; "min_of"/"max_of" use `lhs` and `rhs`.
    """

    op: str
    lhs: Expr | None = None
    rhs: Expr | None = None
    value: float = 0.0

    @property
    def type(self) -> ValueType:
        return ValueType.SCALAR


def children(node: Expr) -> list[Expr]:
    """The direct sub-expressions of a node, for generic tree walks."""
    if isinstance(node, MatrixSelector):
        return [node.vector]
    if isinstance(node, (SubqueryExpr, UnaryExpr, ParenExpr)):
        return [node.expr]
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, AggregateExpr):
        return [node.expr] if node.param is None else [node.param, node.expr]
    if isinstance(node, BinaryExpr):
        return [node.lhs, node.rhs]
    return []


def walk(node: Expr):  # type: ignore[no-untyped-def]
    """Pre-order traversal. Iterative: a chain of 2,000 binary operators is
    as deep, and nested generators would resume every level for each node."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(children(n)))


def depth(node: Expr) -> int:
    """Levels of the tree (a lone selector is 1), without recursing."""
    deepest = 0
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in children(n))
    return deepest
