"""Random PromQL to Athens and Prometheus holding the same data: where the answers differ, and why.

    python -m bench.differential [--queries 500] [--seed 1] [--athens-workers 2] [--delayed-name-removal on]

A hunt for semantic bugs, run by hand after engine, planner or storage
changes (it found count_values grouping by the label it sets, `f3e6ba2`).
make_data and Expressions are built so that what Prometheus 2.42 (Debian's)
does differently from 3.x, which Athens follows, mostly cannot show: sample
timestamps carry random milliseconds and queries are evaluated at .700 s, so
no sample sits on a window edge (3.x windows are left-open); subqueries step
45 s over windows that are not multiples of it; rate, increase, irate and
resets read counters that start far from zero (3.x extrapolates before
clamping at the counter's zero point); no sample is NaN but staleness
markers (3.x's stddev of a NaN is NaN); no atan2 between vectors (2.42
keeps the name) and no @ on predict_linear's range (2.42 answers a few
steps, wrongly); a subquery inside another steps 45 s without an offset
(so no window of it starts on one of its steps: 3.x windows are
left-open, 2.42's closed). The kinds of difference that stay
expected are counted apart (expected_kind): ties in topk/bottomk (either of
equal values is kept); delayed name removal (Prometheus fails with "vector
cannot contain metrics with the same labelset" or, in group_left/right,
"grouping labels must ensure unique matches"; or Athens fails with the
former where series of two names met in a subquery); 3.x's many-to-one check
before a comparison filters; stddev/stdvar of a group holding an infinity
(3.x NaN, 2.42 0) or of values far from zero and close together (timestamps:
their last 7-8 digits depend on the order of the updates); sums over an
infinity (3.x resets the compensation of an infinite Kahan sum, 2.42's turns
NaN); exp, sinh and cosh from 709.437 on (+Inf in 2.42 on amd64, whose Go
Exp overflows early); count_values labels made from values equal within
1e-9; series that a negation, a range function or label_replace makes equal
at steps apart (3.x merges them, 2.42 fails with "vector cannot contain
metrics with the same labelset"); timestamp() of a selector with both offset
and @, whose offset Prometheus (3.x too) ignores (README.md, PromQL
semantics); a last bit of Go's exp/sinh/pow, of 2.42's plain sums or of
its incremental avg and avg_over_time, amplified by a periodic
function, a modulo, a rounding or changes() of the result; deriv of a
constant series (3.x exactly 0, 2.42 the rounding of its sums). Every
other difference is printed with the engine's
answer over the same data in process (one MemQuerier): server = engine !=
Prometheus points at the engine, server != engine at storage, pushdown or
merge. Exits 1 if any.

Athens runs as it and Prometheus do by default (--query-delayed-name-removal
off), where that kind is not expected; --delayed-name-removal on runs it
with 3.x's feature flag: 2026-12-05, seeds 41, 45, 46, 1000 expressions
each, 1991-1996 of 2000 answers agreed off against ~1890-1920 on.

Athens gets the older part of the data sealed into segment files before
the rest (load_athens), so reads cross both.
tests/e2e/test_random_queries.py runs the same expressions against the
engine alone, without Prometheus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import snappy

from athens.errors import AthensError
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.series import STALE_NAN
from athens.query.engine import Engine
from athens.query.memquerier import MemQuerier
from athens.router.app import result_pieces
from bench.rwencode import encode_series
from bench.systems import Athens, Prometheus, Server

SPAN_MS = 50 * 60_000
LABELS = ("job", "instance", "env")
VALUES = {"job": ("api", "web", "db", "x"), "instance": ("i-1", "i-2", "i-9"), "env": ("prod", "dev")}
REGEXES = (".*", "i-[12]", "a.*|d.*", "p.*", "")
METRICS = ("req_total", "temp", "req_total", "temp", "gauge_inf", "churn_total", "")  # "": a __name__ regex
COUNTERS = ("req_total", "churn_total")
COUNTER_FUNCTIONS = ("rate", "increase", "irate", "resets")
RANGE_FUNCTIONS = COUNTER_FUNCTIONS + (
    "delta", "idelta", "deriv", "changes", "sum_over_time", "avg_over_time", "min_over_time",
    "max_over_time", "count_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time", "quantile_over_time", "predict_linear", "holt_winters",
)
AGGREGATIONS = ("sum", "avg", "count", "min", "max", "stddev", "stdvar", "group", "quantile", "count_values")
# No atan2: Prometheus 2.42 keeps the metric name on it (3.x drops it, as for every arithmetic operator).
BINARY = ("+", "-", "*", "/", "%", "^", ">", "<", "==", "!=", ">= bool", "<= bool", "and", "or", "unless")
FUNCTIONS = ("abs", "ceil", "floor", "sqrt", "exp", "ln", "log2", "log10", "sgn", "clamp", "clamp_min", "clamp_max",
             "round", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh",
             "deg", "rad", "timestamp", "hour", "minute", "day_of_week", "day_of_month", "day_of_year",
             "days_in_month", "month", "year", "sort", "sort_desc", "label_replace",
             "label_join", "absent", "absent_over_time", "scalar", "vector", "-", "histogram_quantile")
# Where an infinity or NaN may come from in an expression.
INFINITIES = ("gauge_inf", "exp(", "sinh(", "cosh(", "Inf", "NaN", " / ", " ^ ", "ln(", "log2(", "log10(", "atanh(")
SUBQUERY = re.compile(r"\[\w+:\w*\]")
WRITE_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                 "X-Prometheus-Remote-Write-Version": "0.1.0"}


def make_data(rng: np.random.Generator, end: int) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
    """21 targets over SPAN_MS up to end, 15 s apart with jitter and missed
    scrapes: a counter with a reset, a gauge, a gauge with infinities, a
    counter present for 12 minutes only, and (for 9 of them) a classic
    histogram. As when Prometheus scrapes them: the short-lived counter
    ends with a staleness marker, and a third of the targets go down for
    a few minutes (a marker a scrape after their last sample before the gap) in
    their counter and gauge."""
    start = end - SPAN_MS

    def down(ts: np.ndarray, vs: np.ndarray, gap: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Without samples in [gap), a staleness marker a scrape after the last one before it."""
        if gap is None:
            return ts, vs
        keep = (ts < gap[0]) | (ts >= gap[1])
        ts, vs = ts[keep], vs[keep]
        at = int(np.searchsorted(ts, gap[0]))
        if at == 0:
            return ts, vs
        return np.insert(ts, at, ts[at - 1] + 15_000), np.insert(vs, at, STALE_NAN)

    def times() -> np.ndarray:
        base = np.arange(start, end, 15_000)
        ts = base + rng.integers(0, 14, len(base)) * 1000 + rng.integers(1, 500, len(base))
        return np.sort(ts[rng.random(len(ts)) > 0.1]).astype(np.int64)

    out = []
    for job in ("api", "web", "db"):
        for k in range(7):
            target = [("job", job), ("instance", f"i-{k}"), ("env", ("prod", "dev")[k % 2])]
            gap = None
            if k % 3 == 0:
                at = start + int(rng.integers(5, 45)) * 60_000 + int(rng.integers(0, 60_000))
                gap = (at, at + int(rng.integers(60, 420)) * 1000)
            ts = times()
            vs = 1000 + np.cumsum(rng.exponential(5.0, len(ts)))
            cut = int(rng.integers(1, len(ts)))
            vs[cut:] -= vs[cut - 1] * 0.5  # a reset
            out.append((Labels([("__name__", "req_total"), *target]), *down(ts, vs, gap)))
            ts = times()
            vs = np.round(rng.normal(100, 4, len(ts)), 3)
            out.append((Labels([("__name__", "temp"), *target]), *down(ts, vs, gap)))
            ts = times()
            vs = np.round(rng.normal(50, 10, len(ts)), 2)
            vs[rng.random(len(ts)) < 0.03] = math.inf
            out.append((Labels([("__name__", "gauge_inf"), *target]), ts, vs))
            ts = times()
            first = start + int(rng.integers(0, 38)) * 60_000
            ts = ts[(ts >= first) & (ts < first + 12 * 60_000)]
            vs = 500 + np.cumsum(rng.exponential(2.0, len(ts)))
            if len(ts) and ts[-1] + 15_000 < end:
                ts, vs = np.append(ts, ts[-1] + 15_000), np.append(vs, STALE_NAN)
            out.append((Labels([("__name__", "churn_total"), *target]), ts, vs))
            if k < 3:
                ts = np.arange(start, end, 15_000, dtype=np.int64) + 7 + k
                steps = rng.integers(0, 10, (len(ts), 4))
                counts = 1000 + np.cumsum(np.cumsum(steps, axis=0), axis=1).astype(np.float64)
                for j, le in enumerate(("0.1", "0.5", "2.5", "+Inf")):
                    lb = Labels([("__name__", "lat_bucket"), ("job", job), ("instance", f"i-{k}"), ("le", le)])
                    out.append((lb, ts, counts[:, j]))
    return out


class Expressions:
    """Random PromQL over make_data's metrics. topk/bottomk only at the top
    (where difference() compares each step's values, not the series)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self._enclosing = 0  # subqueries around the expression being made

    def query(self) -> str:
        r = self.r
        if r.random() < 0.15:
            return f"{r.choice(('topk', 'bottomk'))}{self._grouping()}({r.randint(1, 4)}, {self.vector(1)})"
        return self.scalar(1) if r.random() < 0.05 else self.vector(0)

    def scalar(self, depth: int) -> str:
        """A scalar expression: literals in PromQL's number forms, time(),
        pi(), scalar() of a vector, and operators between scalars (bool
        comparisons, unary minus and ^'s right associativity included)."""
        r = self.r
        kind = r.randrange(6) if depth < 3 else 0
        if kind == 0:
            return r.choice(("2", "0.5", "-1", "1e2", "0x10", "Inf", "-Inf", "NaN", ".5", "3"))
        if kind == 1:
            return r.choice(("time()", "pi()"))
        if kind == 2:
            return f"scalar({self.vector(depth + 1)})"
        if kind == 3:
            return f"-{self.scalar(depth + 1)}"
        op = r.choice(BINARY[:6] + ("> bool", "== bool", "!= bool", "<= bool", "atan2"))
        return f"({self.scalar(depth + 1)} {op} {self.scalar(depth + 1)})"

    def vector(self, depth: int) -> str:
        if depth >= 3:
            return self._selector() if self.r.random() < 0.4 else self._range_function(depth)
        make = self.r.choices(
            (self._selector, self._range_function, self._aggregation, self._binary, self._function),
            (2, 4, 4, 2, 1),
        )[0]
        return make() if make == self._selector else make(depth)

    def _selector(self, metrics: tuple[str, ...] = METRICS, modified: bool = True) -> str:
        r = self.r
        matchers = []
        for _ in range(r.choice((0, 0, 1, 2))):
            name = r.choice(LABELS)
            op = r.choice(("=", "!=", "=~", "!~"))
            value = r.choice(VALUES[name]) if op in ("=", "!=") else r.choice(REGEXES)
            matchers.append(f'{name}{op}"{value}"')
        name = r.choice(metrics)
        if not name:  # two metrics, by a matcher on the name
            matchers.insert(0, '__name__=~"req_total|temp"')
        s = name + ("{" + ",".join(matchers) + "}" if matchers else "")
        return s + self._modifiers() if modified else s

    def _modifiers(self, at: bool = True) -> str:
        r = self.r
        offset = f" offset {r.choice(('1m', '3m', '-1m', '90s', '1m30s'))}" if r.random() < 0.15 else ""
        if not (at and r.random() < 0.08):
            return offset
        at_ = r.choice((" @ start()", " @ end()"))
        return offset + at_ if r.random() < 0.5 else at_ + offset  # either order is PromQL

    def _window(self) -> str:
        return self.r.choice(("1m", "2m", "5m", "10m", "2m30s"))  # none a multiple of the subqueries' 45 s

    def _subquery(self, depth: int, at: bool) -> str:
        """A subquery at 45 s steps or (without a step) the default
        evaluation interval's 1 m, sometimes with offset and @. One inside
        another steps 45 s without an offset, and one holding another steps
        45 s: otherwise the inner one's window may start on one of its
        steps, which 3.x leaves out and 2.42 keeps."""
        self._enclosing += 1
        inner = self.vector(depth + 1)
        self._enclosing -= 1
        nested = self._enclosing > 0
        step = "45s" if nested or SUBQUERY.search(inner) or self.r.random() < 0.8 else ""
        return f"({inner})[{self._window()}:{step}]{self._modifiers(at) if not nested else ''}"

    def _grouping(self) -> str:
        r = self.r
        if r.random() < 0.5:
            return ""
        return f" {r.choice(('by', 'without'))} ({', '.join(r.sample(LABELS, r.randint(0, 2)))}) "

    def _range_function(self, depth: int) -> str:
        r = self.r
        f = r.choice(RANGE_FUNCTIONS)
        counter = f in COUNTER_FUNCTIONS
        # Prometheus 2.42 answers predict_linear(x[w] @ t, d) at a few steps only, with wrong values.
        at = f != "predict_linear"
        inner = f"{self._selector(COUNTERS if counter else METRICS, False)}[{self._window()}]{self._modifiers(at)}"
        if depth < 2 and not counter and r.random() < 0.15:
            inner = self._subquery(depth, at)
        if f == "quantile_over_time":
            return f"quantile_over_time({r.choice((0.1, 0.5, 0.9, 0, 1, 2))}, {inner})"
        if f == "predict_linear":
            return f"predict_linear({inner}, 60)"
        if f == "holt_winters":  # 3.x's double_exponential_smoothing, by the name 2.42 and Athens know
            return f"holt_winters({inner}, {r.choice((0.1, 0.5, 0.9))}, {r.choice((0.1, 0.5, 0.9))})"
        return f"{f}({inner})"

    def _aggregation(self, depth: int) -> str:
        r = self.r
        op, grouping, inner = r.choice(AGGREGATIONS), self._grouping(), self.vector(depth + 1)
        if op == "quantile":
            return f"quantile{grouping}({r.choice((0.25, 0.5, 0.9, 1, -1))}, {inner})"
        if op == "count_values":
            return f'count_values{grouping}("v", floor({inner}))'
        return f"{op}{grouping}({inner})"

    def _binary(self, depth: int) -> str:
        r = self.r
        op, lhs = r.choice(BINARY), self.vector(depth + 1)
        set_op = op in ("and", "or", "unless")
        if r.random() < 0.3 and not set_op:
            scalar = self.scalar(depth + 1)
            return f"({lhs}) {op} {scalar}" if r.random() < 0.7 else f"{scalar} {op} ({lhs})"
        if r.random() < 0.1:  # unary minus binds tighter than every operator but ^
            lhs = f"-{lhs}" if lhs.endswith(")") else f"-({lhs})"
            return f"{lhs} {op} ({self.vector(depth + 1)})"
        matching = ""
        if r.random() < 0.5:
            matching = f" {r.choice(('on', 'ignoring'))}({', '.join(r.sample(LABELS, r.randint(0, 2)))}) "
            if not set_op and r.random() < 0.4:
                matching += f"{r.choice(('group_left', 'group_right'))}({', '.join(r.sample(LABELS, r.randint(0, 1)))}) "
        return f"({lhs}) {op}{matching} ({self.vector(depth + 1)})"

    def _function(self, depth: int) -> str:
        r = self.r
        f = r.choice(FUNCTIONS)
        if f == "histogram_quantile":
            sel = r.choice(("lat_bucket", 'lat_bucket{job="api"}'))
            return (f"histogram_quantile({r.choice((0.5, 0.9, 0.99))}, "
                    f"sum by (le{r.choice(('', ', job'))}) (rate({sel}[{self._window()}])))")
        if f == "vector":
            return f"vector({self.scalar(depth + 1)})"
        if f == "absent_over_time":
            return f"absent_over_time({self._selector(METRICS, False)}[{self._window()}])"
        inner = self.vector(depth + 1)
        if f == "-":
            return f"-({inner})"
        if f in ("hour", "minute", "day_of_week", "day_of_month", "day_of_year", "days_in_month", "month", "year"):
            return f"{f}(timestamp({inner}))" if r.random() < 0.8 else f"{f}()"
        if f == "clamp":
            return f"clamp({inner}, {r.choice(('50', '-1'))}, {r.choice(('100', '0'))})"
        if f == "scalar":
            return f"({inner}) {r.choice(('+', '*', '>', '-'))} scalar(sum({self.vector(depth + 1)}))"
        if f in ("clamp_min", "clamp_max"):
            return f"{f}({inner}, 100)"
        if f == "round":
            return f"round({inner}, 0.5)"
        if f == "label_replace":
            return f'label_replace({inner}, "host", "$1", "instance", "i-(.*)")'
        if f == "label_join":
            return f'label_join({inner}, "joined", "/", "job", "instance")'
        return f"{f}({inner})"


def requests_for(query: str, r: random.Random, end: int) -> list[tuple[str, dict[str, str]]]:
    """The query as an instant query at a random time from the data's last
    38 minutes to 6 minutes after its end (lookback running out), and as a
    range query of 5 to 45 minutes inside the data at steps of 15 s to
    5 m, all at .700 s."""
    start = end - SPAN_MS
    t = r.randint(start // 1000 + 12 * 60, end // 1000 + 6 * 60)
    step = r.choice((15, 37, 37, 60, 97, 300))
    length = r.choice((5, 20, 20, 45)) * 60
    s = r.randint(start // 1000 + 5 * 60, end // 1000 - length)
    return [
        ("/api/v1/query", {"query": query, "time": f"{t}.700"}),
        ("/api/v1/query_range", {"query": query, "start": f"{s}.700", "end": f"{s + length}.700", "step": str(step)}),
    ]


def engine_answer(engine: Engine, store: MemQuerier, params: dict[str, str]) -> dict[str, Any]:
    """The engine's answer to an API request's parameters, as the API renders it."""
    query = params["query"]
    try:
        if "time" in params:
            res = asyncio.run(engine.instant(store, query, round(float(params["time"]) * 1000)))
        else:
            res = asyncio.run(engine.range(store, query, round(float(params["start"]) * 1000),
                                           round(float(params["end"]) * 1000), round(float(params["step"]) * 1000)))
    except AthensError as e:
        return {"status": "error", "error": str(e)}
    return json.loads(b"".join(result_pieces(res, 0, None)))


def _points(data: dict[str, Any]) -> dict[Any, list[tuple[float, str]]]:
    """An API answer's data as {labels: [(t, value)]}."""
    kind, result = data["resultType"], data["result"]
    if kind in ("scalar", "string"):
        return {None: [tuple(result)]}
    if kind == "vector":
        return {tuple(sorted(s["metric"].items())): [tuple(s["value"])] for s in result}
    return {tuple(sorted(s["metric"].items())): [tuple(p) for p in s["values"]] for s in result}


def _same(a: str, b: str) -> bool:
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)


def _by_step(points: dict[Any, list[tuple[float, str]]]) -> dict[float, list[float]]:
    out: dict[float, list[float]] = {}
    for pts in points.values():
        for t, v in pts:
            out.setdefault(t, []).append(float(v))
    return {t: sorted(vs) for t, vs in out.items()}


def _error(answer: dict[str, Any]) -> str:
    """An error without the match group and series it names (which ones
    depends on the order series arrive in) or the parameter it came in."""
    return re.sub(r"\{[^{}]*\}", "{}", answer["error"].removeprefix('invalid parameter "query": '))


def difference(query: str, got: dict[str, Any], want: dict[str, Any]) -> str | None:
    """How answer `got` differs from `want` (values within 1e-9), or None.
    For topk/bottomk at the top, each step's values are compared."""
    if got["status"] != want["status"]:
        return f"{got.get('error', 'success')!r} against {want.get('error', 'success')!r}"
    if want["status"] != "success":
        return None if _error(got) == _error(want) else f"errors {got['error']!r} against {want['error']!r}"
    if got["data"]["resultType"] != want["data"]["resultType"]:
        return "result types differ"
    a, b = _points(got["data"]), _points(want["data"])
    if query.startswith(("topk", "bottomk")):
        sa, sb = _by_step(a), _by_step(b)
        if sa.keys() != sb.keys() or any(len(sa[t]) != len(sb[t]) or not all(map(_same, sa[t], sb[t])) for t in sb):
            return "values per step differ"
        return None
    if a.keys() != b.keys():
        return f"series only in the first {sorted(a.keys() - b.keys())[:2]}, only in the second {sorted(b.keys() - a.keys())[:2]}"
    for key, pts in b.items():
        if [t for t, _ in a[key]] != [t for t, _ in pts]:
            return f"timestamps of {key}: {len(a[key])} against {len(pts)}"
        for (t, x), (_, y) in zip(a[key], pts):
            if not _same(x, y):
                return f"{key} at {t}: {x} against {y}"
    return None


def _count_values_rounding(athens: dict[str, Any], prometheus: dict[str, Any]) -> bool:
    """Whether the answers differ only in count_values' "v" labels, each
    within 1e-9 of its counterpart (a last-bit difference of a function's
    value becomes a different label), with the same points."""
    if athens["status"] != "success" or prometheus["status"] != "success":
        return False

    def by_rest(answer: dict[str, Any]) -> dict[tuple, list] | None:
        out: dict[tuple, list] = {}
        for key, pts in _points(answer["data"]).items():
            labels = dict(key or ())
            if "v" not in labels:
                return None
            v = labels.pop("v")
            out.setdefault(tuple(sorted(labels.items())), []).append((float(v), v, pts))
        return {k: sorted(rows, key=lambda row: row[0]) for k, rows in out.items()}

    a, b = by_rest(athens), by_rest(prometheus)
    if not a or not b or a.keys() != b.keys():
        return False
    for key, rows in a.items():
        if len(rows) != len(b[key]):
            return False
        for (_, va, pa), (_, vb, pb) in zip(rows, b[key]):
            if not _same(va, vb) or [t for t, _ in pa] != [t for t, _ in pb]:
                return False
            if not all(_same(x, y) for (_, x), (_, y) in zip(pa, pb)):
                return False
    return True


def expected_kind(
    query: str, why: str, athens: dict[str, Any], prometheus: dict[str, Any], delayed_names: bool = False
) -> str | None:
    """Which expected kind of difference (module docstring) `why` is, if any
    (delayed name removal only where Athens runs with it)."""
    if "topk" in query or "bottomk" in query:
        return "ties in topk/bottomk"
    if "count_values" in query and _count_values_rounding(athens, prometheus):
        return "count_values labels of values within 1e-9"
    error = prometheus.get("error", "")
    if delayed_names and (
        "same labelset" in error or ("grouping labels must ensure unique matches" in error and "__name__" in query)
    ):
        # Athens keeps names to the end: it answers, or fails later on.
        return "delayed name removal"
    if (not delayed_names and "same labelset" in error and "same labelset" not in athens.get("error", "")
            and SUBQUERY.search(query)):
        # 3.x merges series that a negation, a range function or
        # label_replace makes equal where they share no step; 2.42 fails.
        # Athens answers, or fails later on (many-to-many matching of the
        # merged series, say). (Only in a subquery here: a range query's
        # would look the same as a bug at one step.)
        return "series merged across steps (3.x)"
    if delayed_names and "same labelset" in athens.get("error", "") and prometheus["status"] == "success":
        # ... and keeps series of different names apart to the end, where
        # 2.42 merged them (in a subquery's matrix) once their names went.
        return "delayed name removal"
    if "many-to-one matching must be explicit" in athens.get("error", "") and any(
        op in query for op in (") >", ") <", ") ==", ") !=")
    ):
        # 2.42 lets a comparison filter first: it answers, or fails later on.
        return "many-to-one checked before filtering"
    if "stddev" in query or "stdvar" in query:
        if "NaN" in why or any(source in query for source in INFINITIES):
            # An infinity (gauge_inf's, exp's of a counter, a division by
            # zero, a literal) or NaN, and what follows from it (a
            # comparison with 2.42's 0 keeps series that 3.x's NaN drops).
            return "stddev/stdvar of NaN or Inf"
        m = re.search(r": (\S+) against (\S+)$", why)
        if m and math.isclose(float(m[1]), float(m[2]), rel_tol=1e-6):
            # Of values far from zero and close together (timestamps): the
            # order of the updates moves the last 7-8 digits, in Prometheus too.
            return "stddev/stdvar of ill-conditioned values"
    if "deriv(" in query and re.search(r": 0 against \S+$", why):
        # 3.x answers a constant series' slope as exactly 0; 2.42's
        # regression leaves the cancellation of its sums (huge values).
        return "deriv of a constant series (3.x: 0)"
    if re.search(r"[+-]Inf against NaN$", why) or (
        ("predict_linear" in query or "deriv" in query)
        and (why.endswith(" against NaN") or any(source in query for source in INFINITIES))
    ):
        # 2.42's Kahan compensation turns NaN, 3.x's is reset: then 3.x
        # answers an infinity where 2.42 answers NaN, which max, min, a
        # comparison or a sum show as any other difference.
        return "compensated sums over an infinity"
    if any(f in query for f in ("exp(", "sinh(", "cosh(")) and re.search(r" against [+-]Inf$", why):
        return "Go's exp overflowing early"  # Prometheus 2.42 on amd64: +Inf from exp(709.437)
    chaotic = any(f in query for f in (
        "cos(", "sin(", "tan(", " % ", "floor(", "ceil(", "round(", "count_values", "changes(", "resets(",
    ))
    if chaotic and any(f in query for f in ("exp(", "sinh(", "cosh(", " ^ ")):
        # Go's Exp, Sinh and Pow are a last bit off glibc's now and then,
        # which a periodic function of a large argument, a modulo or a
        # rounding shows.
        return "Go's exp or pow a bit apart, amplified"
    if chaotic and re.search(r"\b(avg|sum)(_over_time)?\b", query):
        # 2.42 adds plainly and averages incrementally, 3.x (and Athens)
        # compensates its sums (Kahan): a last bit apart, which a rounding
        # or modulo shows (floor(sum(x)) where the sum is 255 exactly and
        # 2.42's 254.99999999999997).
        return "sum's or avg's rounding, amplified"
    if re.search(r"timestamp\(\(*[^()]*(?: offset [^()]*@|@[^()]* offset )", query):
        return "timestamp() of a selector with both offset and @"  # Prometheus drops the offset there
    return None


def load_athens(url: str, data: list[tuple[Labels, np.ndarray, np.ndarray]], end: int) -> None:
    """Remote-write make_data's data (up to end) to the Athens at url: the
    older third sealed into segment files (`/internal/force_flush`), the
    rest left in the heads, so reads cross both. A refusal raises
    urllib.error.HTTPError."""
    cut = end - SPAN_MS // 3
    for older in (True, False):
        part = [(lb, ts[(ts < cut) == older], vs[(ts < cut) == older]) for lb, ts, vs in data]
        _post(url + "/api/v1/write", snappy.compress(encode_series(part)), WRITE_HEADERS)
        if older:
            _post(url + "/internal/force_flush", b"", {})


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


def _get(url: str, path: str, params: dict[str, str]) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url + path + "?" + urllib.parse.urlencode(params), timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--athens-workers", type=int, default=2)
    p.add_argument("--delayed-name-removal", choices=["on", "off"], default="off",
                   help="Athens' --query-delayed-name-removal (off, the default: as the Prometheus it is "
                        "compared with)")
    p.add_argument("--end", type=int, default=None,
                   help="the data's end, unix seconds (default: two minutes ago on a whole minute); on a whole "
                        "hour, subquery steps fall on the data the same way in every run")
    p.add_argument("--logs", type=Path, default=None,
                   help="folder for the servers' logs (default: a new temporary folder, kept)")
    args = p.parse_args(argv)
    delayed = args.delayed_name_removal == "on"
    prometheus = Prometheus()
    athens = Athens(workers=args.athens_workers,
                    extra_args=("--query-delayed-name-removal", args.delayed_name_removal))
    for system in (prometheus, athens):
        missing = system.missing()
        if missing:
            print(missing, file=sys.stderr)
            return 2
    end = args.end * 1000 if args.end is not None else (int(time.time()) // 60 - 2) * 60_000
    data = make_data(np.random.default_rng(args.seed), end)
    store = MemQuerier()
    store.append(WriteBatch.from_series(data))
    logs = args.logs or Path(tempfile.mkdtemp(prefix="athens-differential-"))
    engine = Engine(delayed_name_removal=delayed)
    gen = Expressions(args.seed)
    kinds: Counter[str] = Counter()
    unexplained = 0
    with Server(prometheus, logs) as prom, Server(athens, logs) as ath:
        _post(prom.base_url + "/api/v1/write", snappy.compress(encode_series(data)), WRITE_HEADERS)
        load_athens(ath.base_url, data, end)
        for _ in range(args.queries):
            query = gen.query()
            for path, params in requests_for(query, gen.r, end):
                a, b = _get(ath.base_url, path, params), _get(prom.base_url, path, params)
                why = difference(query, a, b)
                if why is None:
                    kinds["same"] += 1
                    continue
                kind = expected_kind(query, why, a, b, delayed)
                if kind:
                    kinds[kind] += 1
                    continue
                unexplained += 1
                mem = difference(query, a, engine_answer(engine, store, params))
                print(f"{path} {query}\n    Athens against Prometheus: {why}\n"
                      f"    Athens against its engine alone: {mem or 'the same'}", flush=True)
    print(f"{2 * args.queries} requests ({args.queries} expressions, seed {args.seed}, "
          f"{args.athens_workers} workers, delayed name removal {args.delayed_name_removal}): " + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
          + f", unexplained {unexplained}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
