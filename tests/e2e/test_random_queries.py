"""Random PromQL through a real `athens serve` against the engine alone.

The same data is remote-written to a two-worker server (part of it sealed
into segment files, the rest in the heads) and loaded into a MemQuerier;
random expressions - selectors with offsets and @, range functions,
subqueries, aggregations with and without grouping, vector matching,
scalars, functions - must get the same answers from both: the router's
planner, pushdown to the workers, their storage reads and the merge of
their partials change nothing. Each runs as an instant query at a random
time and as a range query.

Timestamps carry random milliseconds and queries are evaluated at .700 s,
so no sample sits on a window edge. topk/bottomk keep an arbitrary one of
equal values (as in Prometheus), so they appear only at the top of an
expression, where each step's values are compared instead of the series.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from typing import Any

import numpy as np
import pytest

from athens.errors import AthensError
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.query.engine import Engine
from athens.query.memquerier import MemQuerier
from athens.router.app import result_pieces
from e2e.harness import Athens, http, make_write

QUERIES = 300
SEED = 20261205
SPAN_MS = 50 * 60_000
LABELS = ("job", "instance", "env")
VALUES = {"job": ("api", "web", "db", "x"), "instance": ("i-1", "i-2", "i-9"), "env": ("prod", "dev")}
REGEXES = (".*", "i-[12]", "a.*|d.*", "p.*", "")
RANGE_FUNCTIONS = (
    "rate", "increase", "irate", "delta", "idelta", "deriv", "changes", "resets", "sum_over_time",
    "avg_over_time", "min_over_time", "max_over_time", "count_over_time", "stddev_over_time",
    "stdvar_over_time", "last_over_time", "present_over_time",
)
AGGREGATIONS = ("sum", "avg", "count", "min", "max", "stddev", "stdvar", "group", "quantile", "count_values")
BINARY = ("+", "-", "*", "/", "%", ">", "<", "==", "> bool", "and", "or", "unless")
FUNCTIONS = ("abs", "ceil", "floor", "sqrt", "exp", "ln", "sgn", "clamp_min", "clamp_max", "round",
             "timestamp", "sort", "sort_desc", "label_replace", "label_join", "absent", "scalar", "vector",
             "histogram_quantile")


def make_data(rng: np.random.Generator, end: int) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
    """Counters with a reset, gauges and classic histograms of 21 targets,
    15 s apart with jitter and missed scrapes, over SPAN_MS up to end."""
    start = end - SPAN_MS

    def times() -> np.ndarray:
        base = np.arange(start, end, 15_000)
        ts = base + rng.integers(0, 14, len(base)) * 1000 + rng.integers(1, 500, len(base))
        return np.sort(ts[rng.random(len(ts)) > 0.1]).astype(np.int64)

    out = []
    for job in ("api", "web", "db"):
        for k in range(7):
            target = [("job", job), ("instance", f"i-{k}"), ("env", ("prod", "dev")[k % 2])]
            ts = times()
            vs = 1000 + np.cumsum(rng.exponential(5.0, len(ts)))
            cut = int(rng.integers(1, len(ts)))
            vs[cut:] -= vs[cut - 1] * 0.5  # a reset
            out.append((Labels([("__name__", "req_total"), *target]), ts, vs))
            ts = times()
            out.append((Labels([("__name__", "temp"), *target]), ts, np.round(rng.normal(100, 4, len(ts)), 3)))
            if k < 3:
                ts = np.arange(start, end, 15_000, dtype=np.int64) + 7 + k
                steps = rng.integers(0, 10, (len(ts), 4))
                counts = 1000 + np.cumsum(np.cumsum(steps, axis=0), axis=1).astype(np.float64)
                for j, le in enumerate(("0.1", "0.5", "2.5", "+Inf")):
                    lb = Labels([("__name__", "lat_bucket"), ("job", job), ("instance", f"i-{k}"), ("le", le)])
                    out.append((lb, ts, counts[:, j]))
    return out


class Expressions:
    """Random PromQL over make_data's metrics."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def query(self) -> str:
        r = self.r
        if r.random() < 0.15:
            op = r.choice(("topk", "bottomk"))
            return f"{op}{self._grouping()}({r.randint(1, 4)}, {self.vector(1)})"
        return self.vector(0)

    def vector(self, depth: int) -> str:
        if depth >= 3:
            return self._selector() if self.r.random() < 0.4 else self._range_function(depth)
        make = self.r.choices(
            (self._selector, self._range_function, self._aggregation, self._binary, self._function),
            (2, 4, 4, 2, 1),
        )[0]
        return make() if make == self._selector else make(depth)

    def _selector(self, modified: bool = True) -> str:
        r = self.r
        matchers = []
        for _ in range(r.choice((0, 0, 1, 2))):
            name = r.choice(LABELS)
            op = r.choice(("=", "!=", "=~", "!~"))
            value = r.choice(VALUES[name]) if op in ("=", "!=") else r.choice(REGEXES)
            matchers.append(f'{name}{op}"{value}"')
        name = r.choice(("req_total", "temp", "req_total", "temp", ""))
        if not name:  # both metrics, by a matcher on the name
            matchers.insert(0, '__name__=~"req_total|temp"')
        s = name + ("{" + ",".join(matchers) + "}" if matchers else "")
        return s + self._modifiers() if modified else s

    def _modifiers(self) -> str:
        r = self.r
        s = f" offset {r.choice(('1m', '3m', '-1m', '90s'))}" if r.random() < 0.15 else ""
        return s + r.choice((" @ start()", " @ end()")) if r.random() < 0.08 else s

    def _window(self) -> str:
        return self.r.choice(("1m", "2m", "3m", "5m", "10m"))

    def _grouping(self) -> str:
        r = self.r
        if r.random() < 0.5:
            return ""
        return f" {r.choice(('by', 'without'))} ({', '.join(r.sample(LABELS, r.randint(0, 2)))}) "

    def _range_function(self, depth: int) -> str:
        r = self.r
        inner = f"{self._selector(modified=False)}[{self._window()}]{self._modifiers()}"
        if depth < 2 and r.random() < 0.15:
            inner = f"({self.vector(depth + 1)})[{self._window()}:{r.choice(('30s', '1m', ''))}]"
        f = r.choice(RANGE_FUNCTIONS + ("quantile_over_time", "predict_linear"))
        if f == "quantile_over_time":
            return f"quantile_over_time({r.choice((0.1, 0.5, 0.9))}, {inner})"
        if f == "predict_linear":
            return f"predict_linear({inner}, 60)"
        return f"{f}({inner})"

    def _aggregation(self, depth: int) -> str:
        r = self.r
        op, grouping, inner = r.choice(AGGREGATIONS), self._grouping(), self.vector(depth + 1)
        if op == "quantile":
            return f"quantile{grouping}({r.choice((0.25, 0.5, 0.9))}, {inner})"
        if op == "count_values":
            return f'count_values{grouping}("v", floor({inner}))'
        return f"{op}{grouping}({inner})"

    def _binary(self, depth: int) -> str:
        r = self.r
        op, lhs = r.choice(BINARY), self.vector(depth + 1)
        if r.random() < 0.3 and op not in ("and", "or", "unless"):
            return f"({lhs}) {op} {r.choice(('2', '0.5', '-1'))}"
        matching = ""
        if r.random() < 0.5:
            matching = f" {r.choice(('on', 'ignoring'))}({', '.join(r.sample(LABELS, r.randint(1, 2)))}) "
        return f"({lhs}) {op}{matching} ({self.vector(depth + 1)})"

    def _function(self, depth: int) -> str:
        r = self.r
        f = r.choice(FUNCTIONS)
        if f == "histogram_quantile":
            sel = r.choice(("lat_bucket", 'lat_bucket{job="api"}'))
            return (f"histogram_quantile({r.choice((0.5, 0.9, 0.99))}, "
                    f"sum by (le{r.choice(('', ', job'))}) (rate({sel}[{self._window()}])))")
        if f == "vector":
            return f"vector(time() - {r.choice((1, 100))})"
        inner = self.vector(depth + 1)
        if f == "scalar":
            return f"({inner}) {r.choice(('+', '*', '>', '-'))} scalar(sum({self.vector(depth + 1)}))"
        if f == "label_join":
            return f'label_join({inner}, "joined", "/", "job", "instance")'
        if f in ("clamp_min", "clamp_max"):
            return f"{f}({inner}, 100)"
        if f == "round":
            return f"round({inner}, 0.5)"
        if f == "label_replace":
            return f'label_replace({inner}, "host", "$1", "instance", "i-(.*)")'
        return f"{f}({inner})"


def _points(data: dict[str, Any]) -> dict[Any, list[tuple[float, str]]]:
    """An API answer's data as {labels: [(t, value)]}."""
    kind, result = data["resultType"], data["result"]
    if kind in ("scalar", "string"):
        return {None: [tuple(result)]}
    key = "value" if kind == "vector" else "values"
    return {tuple(sorted(s["metric"].items())): [tuple(p) for p in ([s[key]] if kind == "vector" else s[key])]
            for s in result}


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


def _difference(query: str, got: dict[str, Any], want: dict[str, Any]) -> str | None:
    """How the server's answer differs from the engine's, or None."""
    if got["status"] != want["status"]:
        return f"server {got.get('error', 'success')!r}, engine {want.get('error', 'success')!r}"
    if want["status"] != "success":
        # Which match group and duplicates an error names depends on the
        # order series come in.
        ga, wa = (re.sub(r"\{[^{}]*\}", "{}", e["error"]) for e in (got, want))
        return None if ga == wa else f"errors {got['error']!r} / {want['error']!r}"
    if got["data"]["resultType"] != want["data"]["resultType"]:
        return "result types differ"
    a, b = _points(got["data"]), _points(want["data"])
    if query.startswith(("topk", "bottomk")):
        sa, sb = _by_step(a), _by_step(b)
        if sa.keys() != sb.keys() or any(not all(map(_same, sa[t], sb[t])) for t in sb):
            return "values per step differ"
        return None
    if a.keys() != b.keys():
        return f"series only on the server {sorted(a.keys() - b.keys())[:2]}, only in the engine {sorted(b.keys() - a.keys())[:2]}"
    for key, pts in b.items():
        if [t for t, _ in a[key]] != [t for t, _ in pts]:
            return f"timestamps of {key}"
        for (t, x), (_, y) in zip(a[key], pts):
            if not _same(x, y):
                return f"{key} at {t}: server {x}, engine {y}"
    return None


def _engine_answer(engine: Engine, store: MemQuerier, query: str, params: dict[str, str]) -> dict[str, Any]:
    """The engine's answer as the API would render it."""
    try:
        if "time" in params:
            res = asyncio.run(engine.instant(store, query, round(float(params["time"]) * 1000)))
        else:
            res = asyncio.run(engine.range(store, query, round(float(params["start"]) * 1000),
                                           round(float(params["end"]) * 1000), round(float(params["step"]) * 1000)))
    except AthensError as e:
        return {"status": "error", "error": str(e)}
    return json.loads(b"".join(result_pieces(res, 0, None)))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, prompb):  # type: ignore[no-untyped-def]
    # The end on a whole hour: subquery steps (absolute times) fall on the
    # data the same way in every run.
    end = (int(time.time()) // 3600 - 1) * 3600_000
    data = make_data(np.random.default_rng(SEED), end)
    store = MemQuerier()
    store.append(WriteBatch.from_series(data))
    server = Athens(tmp_path_factory.mktemp("random") / "data", workers=2).start()
    try:
        cut = end - SPAN_MS // 3
        for older in (True, False):  # the older part sealed into segments, the rest in the heads
            part = [({n: v for n, v in lb}, [(int(t), float(v)) for t, v in zip(ts, vs) if (t < cut) == older])
                    for lb, ts, vs in data]
            status, body = server.remote_write(make_write(prompb, part))
            assert status == 204, body
            if older:
                assert http("POST", server.url + "/internal/force_flush")[0] == 200
        yield server, store, end
    finally:
        server.stop()


def test_random_queries_answer_as_the_engine_alone(loaded) -> None:  # type: ignore[no-untyped-def]
    server, store, end = loaded
    engine = Engine()
    gen = Expressions(SEED)
    start = end - SPAN_MS
    differ = []
    answered = 0  # answers with at least one point
    for _ in range(QUERIES):
        query = gen.query()
        t = gen.r.randint(start // 1000 + 12 * 60, end // 1000)
        s = start + 15 * 60_000
        for path, params in (
            ("/api/v1/query", {"query": query, "time": f"{t}.700"}),
            ("/api/v1/query_range", {"query": query, "start": f"{s // 1000}.700",
                                     "end": f"{s // 1000 + 20 * 60}.700", "step": "37"}),
        ):
            _, got = server.api(path, params)
            why = _difference(query, got, _engine_answer(engine, store, query, params))
            if why:
                differ.append(f"{path} {query}: {why}")
            answered += got["status"] == "success" and bool(got["data"]["result"])
    assert not differ, "\n".join(differ)
    assert answered > QUERIES, answered  # most of the 2 x QUERIES answers hold data
