"""The JSON syntax tree of /api/v1/parse_query, in Prometheus 3's shape.

Prometheus' UI (the "explain" view) reads this: one object per node with a
"type" and the node's fields, durations in milliseconds.
"""

from __future__ import annotations

from typing import Any

from athens.model.matchers import Matcher
from athens.query import ast
from athens.query.printer import format_float
from athens.query.signatures import FUNCTIONS


def _ms(d: ast.Duration) -> int | None:
    return d if isinstance(d, int) else None


def _at(at: ast.At) -> tuple[int | None, str | None]:
    if isinstance(at, ast.AtModifier):
        return None, at.value
    return at, None


def _matchers(ms: list[Matcher]) -> list[dict[str, str]]:
    return [{"type": m.op.value, "name": m.name, "value": m.value} for m in ms]


def translate(node: ast.Expr | None) -> Any:
    """The node and its children as JSON-ready dicts (None for an absent node)."""
    if node is None:
        return None
    if isinstance(node, ast.AggregateExpr):
        return {"type": "aggregation", "op": node.op, "expr": translate(node.expr),
                "param": translate(node.param), "grouping": list(node.grouping), "without": node.without}
    if isinstance(node, ast.BinaryExpr):
        m = node.matching
        matching = None
        if m is not None:
            matching = {"card": m.card.value, "labels": list(m.labels), "on": m.on,
                        "include": list(m.include)}
        return {"type": "binaryExpr", "op": node.op, "lhs": translate(node.lhs),
                "rhs": translate(node.rhs), "matching": matching, "bool": node.return_bool}
    if isinstance(node, ast.Call):
        sig = FUNCTIONS[node.func]
        return {"type": "call",
                "func": {"name": sig.name, "argTypes": [t.value for t in sig.arg_types],
                         "variadic": sig.variadic, "returnType": sig.return_type.value},
                "args": [translate(a) for a in node.args]}
    if isinstance(node, ast.MatrixSelector):
        vs = node.vector
        ts, se = _at(vs.at)
        return {"type": "matrixSelector", "name": vs.name or "", "range": _ms(node.range),
                "offset": _ms(vs.offset), "matchers": _matchers(vs.matchers), "timestamp": ts,
                "startOrEnd": se}
    if isinstance(node, ast.SubqueryExpr):
        ts, se = _at(node.at)
        return {"type": "subquery", "expr": translate(node.expr), "range": _ms(node.range),
                "offset": _ms(node.offset), "step": _ms(node.step), "timestamp": ts, "startOrEnd": se}
    if isinstance(node, ast.NumberLiteral):
        return {"type": "numberLiteral", "val": format_float(node.value)}
    if isinstance(node, ast.DurationExpr):
        return {"type": "numberLiteral", "val": format_float(node.value)}
    if isinstance(node, ast.ParenExpr):
        return {"type": "parenExpr", "expr": translate(node.expr)}
    if isinstance(node, ast.StringLiteral):
        return {"type": "stringLiteral", "val": node.value}
    if isinstance(node, ast.UnaryExpr):
        return {"type": "unaryExpr", "op": node.op, "expr": translate(node.expr)}
    if isinstance(node, ast.VectorSelector):
        ts, se = _at(node.at)
        return {"type": "vectorSelector", "name": node.name or "", "offset": _ms(node.offset),
                "matchers": _matchers(node.matchers), "timestamp": ts, "startOrEnd": se}
    raise TypeError(f"cannot translate {type(node).__name__}")
