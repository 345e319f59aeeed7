"""Type signatures of every PromQL function and aggregation operator.

The parser type-checks calls against FUNCTIONS the way Prometheus' checkAST
does, and `Call.type` reads the return type from here. The list follows
Prometheus 3.x (promql/parser/functions.go) including the experimental
functions, which Athens always enables (as the upstream test suite does).

`variadic` has Prometheus' meaning: 0 means exactly len(arg_types) arguments;
n > 0 means the last argument type is optional and may repeat up to n times
(so between len(arg_types) - 1 and len(arg_types) - 1 + n arguments); -1 means
it may repeat without limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from athens.query.ast import ValueType

S = ValueType.SCALAR
V = ValueType.VECTOR
M = ValueType.MATRIX
STR = ValueType.STRING


@dataclass(frozen=True, slots=True)
class FunctionSig:
    """What a function accepts and returns."""

    name: str
    arg_types: tuple[ValueType, ...]
    variadic: int
    return_type: ValueType
    experimental: bool = False

    @property
    def min_args(self) -> int:
        return len(self.arg_types) if self.variadic == 0 else len(self.arg_types) - 1

    @property
    def max_args(self) -> int | None:
        """None when the last argument may repeat without limit."""
        if self.variadic == 0:
            return len(self.arg_types)
        if self.variadic < 0:
            return None
        return len(self.arg_types) - 1 + self.variadic


def _sig(
    name: str,
    args: tuple[ValueType, ...],
    ret: ValueType = V,
    variadic: int = 0,
    experimental: bool = False,
) -> FunctionSig:
    return FunctionSig(name, args, variadic, ret, experimental)


_ALL: list[FunctionSig] = [
    # Instant-vector math, one vector in, one vector out.
    *(
        _sig(n, (V,))
        for n in (
            "abs", "absent", "acos", "acosh", "asin", "asinh", "atan", "atanh",
            "ceil", "cos", "cosh", "deg", "exp", "floor", "histogram_avg",
            "histogram_count", "histogram_stddev", "histogram_stdvar",
            "histogram_sum", "ln", "log10", "log2", "rad", "sgn", "sin", "sinh",
            "sort", "sort_desc", "sqrt", "tan", "tanh", "timestamp",
        )
    ),
    # Range-vector functions returning one sample per series.
    *(
        _sig(n, (M,))
        for n in (
            "absent_over_time", "avg_over_time", "changes", "count_over_time",
            "delta", "deriv", "idelta", "increase", "irate", "last_over_time",
            "max_over_time", "min_over_time", "present_over_time", "rate",
            "resets", "stddev_over_time", "stdvar_over_time", "sum_over_time",
        )
    ),
    *(
        _sig(n, (M,), experimental=True)
        for n in (
            "first_over_time", "mad_over_time", "ts_of_first_over_time",
            "ts_of_last_over_time", "ts_of_max_over_time", "ts_of_min_over_time",
        )
    ),
    # Calendar functions: the vector argument is optional (defaults to time()).
    *(
        _sig(n, (V,), variadic=1)
        for n in (
            "day_of_month", "day_of_week", "day_of_year", "days_in_month",
            "hour", "minute", "month", "year",
        )
    ),
    _sig("clamp", (V, S, S)),
    _sig("clamp_max", (V, S)),
    _sig("clamp_min", (V, S)),
    _sig("round", (V, S), variadic=1),
    _sig("histogram_fraction", (S, S, V)),
    _sig("histogram_quantile", (S, V)),
    _sig("histogram_quantiles", (V, STR, S, S), variadic=9, experimental=True),
    _sig("double_exponential_smoothing", (M, S, S), experimental=True),
    # Its name in Prometheus 2.x (3.0 removed it): 2.x dashboards keep working.
    _sig("holt_winters", (M, S, S)),
    _sig("predict_linear", (M, S)),
    _sig("quantile_over_time", (S, M)),
    _sig("integral", (M, S), variadic=1, experimental=True),
    _sig("label_replace", (V, STR, STR, STR, STR)),
    _sig("label_join", (V, STR, STR, STR), variadic=-1),
    _sig("sort_by_label", (V, STR), variadic=-1, experimental=True),
    _sig("sort_by_label_desc", (V, STR), variadic=-1, experimental=True),
    _sig("info", (V, V), variadic=1, experimental=True),
    # Start timestamps (created timestamps) of the samples, experimental.
    _sig("start_timestamp", (V,), experimental=True),
    _sig("scalar", (V,), S),
    _sig("vector", (S,)),
    _sig("pi", (), S),
    _sig("time", (), S),
    # Query-shape functions (Prometheus 3.x duration-expression work).
    _sig("start", (), S, experimental=True),
    _sig("end", (), S, experimental=True),
    _sig("step", (), S, experimental=True),
    _sig("range", (), S, experimental=True),
    _sig("min_of", (S, S), S, experimental=True),
    _sig("max_of", (S, S), S, experimental=True),
]

FUNCTIONS: dict[str, FunctionSig] = {f.name: f for f in _ALL}


@dataclass(frozen=True, slots=True)
class AggregationSig:
    """An aggregation operator; param_type is None when it takes no parameter."""

    name: str
    param_type: ValueType | None = None
    experimental: bool = False


AGGREGATIONS: dict[str, AggregationSig] = {
    a.name: a
    for a in (
        AggregationSig("sum"),
        AggregationSig("avg"),
        AggregationSig("count"),
        AggregationSig("min"),
        AggregationSig("max"),
        AggregationSig("group"),
        AggregationSig("stddev"),
        AggregationSig("stdvar"),
        AggregationSig("topk", S),
        AggregationSig("bottomk", S),
        AggregationSig("quantile", S),
        AggregationSig("count_values", STR),
        AggregationSig("limitk", S, experimental=True),
        AggregationSig("limit_ratio", S, experimental=True),
    )
}
