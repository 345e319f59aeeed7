"""The PromQL evaluator.

A query runs in two phases. First the AST is walked to find, for every
selector, the time range it needs (offset, @, ranges, subquery ranges and
the lookback delta all widen or move it); those are fetched concurrently
through the Querier. Then the tree is evaluated synchronously, each node
once for all steps: instant vectors are [series, steps] arrays, range
vectors are concatenated samples plus per-step window bounds that the
kernels in functions.py walk in compiled code.

Semantics are Prometheus 3.x for float samples, including delayed
`__name__` removal: functions mark series whose name is to go, and the
name is only removed when the result is handed out.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np

from athens.errors import (
    BadDataError,
    ExecutionError,
    InvalidQueryError,
    QueryCanceledError,
    QueryTimeoutError,
    TooManySamplesError,
)
from athens.model.labels import Labels
from athens.model.series import Series, SeriesSet, has_stale, is_stale
from athens.query import ast
from athens.query.aggregations import eval_aggregate
from athens.query.ast import AtModifier, Expr, ValueType
from athens.query.binops import arith, eval_binary
from athens.query.functions import (
    eval_call,
    info_reference_times,
    info_selector,
    k_select,
    unwrap_parens,
    window_bounds,
)
from athens.query.functions import warm_up as warm_up_kernels
from athens.query.parser import parse
from athens.query.planner import (
    BINOPS_COLOCATED,
    BINOPS_NONE,
    BINOPS_VERIFIED,
    DEFAULT_SUBQUERY_STEP_MS,
    Partial,
    PartialRequest,
    merge_partials,
    merge_series,
    names_may_merge,
    node_index,
    pushable,
    pushable_series,
    signatures_disjoint,
)
from athens.query.querier import Querier
from athens.query.values import (
    MatrixValue,
    QueryResult,
    ScalarValue,
    StringValue,
    VectorValue,
    check_dropped_names,
    merge_duplicate_labels,
    remove_dropped_names,
)

Value = ScalarValue | StringValue | VectorValue | MatrixValue


# Nice value of query evaluation threads: CPU-heavy queries yield the CPU
# to ingest (the event loops stay at normal priority).
QUERY_THREAD_NICE = 10
# Queries whose fetched data is at most about this big (Evaluator.small)
# are evaluated on the event loop: the thread hand-off costs more.
INLINE_BYTES = 256 << 10


class PushdownChecks:
    """Checked pushdowns of on()/ignoring() operators (planner.signatures_disjoint)
    whose check failed: how many, and which query texts lately, so that a
    dashboard's query whose match groups span workers is not pushed (and
    evaluated twice) on every refresh; retried after RETRY_S."""

    TEXTS = 1024
    RETRY_S = 600.0

    def __init__(self) -> None:
        self.failed = 0
        self._texts: OrderedDict[str, float] = OrderedDict()  # text -> monotonic time of failure

    def failed_lately(self, text: str) -> bool:
        t = self._texts.get(text)
        return t is not None and time.monotonic() - t < self.RETRY_S

    def fail(self, text: str) -> None:
        self.failed += 1
        self._texts[text] = time.monotonic()
        self._texts.move_to_end(text)
        while len(self._texts) > self.TEXTS:
            self._texts.popitem(last=False)


def lower_thread_priority() -> None:
    """Lower the calling thread's scheduling priority (Linux: per thread):
    a higher nice value, and SCHED_BATCH, so that a woken evaluation thread
    does not preempt the event loop on its CPU (which may still hold the GIL
    the thread needs). Measured in docs/benchmarks.md, "Scheduling of the
    evaluation threads"."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), QUERY_THREAD_NICE)
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def go_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as Go does."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@functools.lru_cache(maxsize=1024)
def parse_shared(text: str) -> Expr:
    """An AST parsed once per distinct text and shared: dashboards send the
    same queries again and again, and parsing is ~30% of a one-series
    query's engine time. Never change what this returns (callers that do,
    like the conformance runner's @ pinning, parse their own copy)."""
    return parse(text)


def _parse(expr: Expr | str) -> tuple[Expr, str]:
    if isinstance(expr, str):
        return parse_shared(expr), expr
    return expr, ""


class Engine:
    """Evaluates PromQL over any Querier. Between queries it keeps only the
    admission gate and the failed pushdown checks (PushdownChecks)."""

    def __init__(
        self,
        lookback_delta_ms: int = 300_000,
        max_samples: int = 50_000_000,
        timeout_s: float = 120,
        default_subquery_step_ms: int = DEFAULT_SUBQUERY_STEP_MS,
        executor: Executor | None = None,
        max_bytes: int = 0,
        max_concurrency: int = 0,
        pushdown: bool = True,
        delayed_name_removal: bool = False,
    ) -> None:
        self.lookback_delta_ms = lookback_delta_ms
        self.max_samples = max_samples
        self.timeout_s = timeout_s
        self.default_subquery_step_ms = default_subquery_step_ms
        # Where the CPU-bound evaluation phase runs. None: inline on the
        # event loop. A thread pool lets the loop keep serving while numpy
        # and the kernels (which release the GIL) work.
        self.executor = executor
        # Bytes of series data and intermediate arrays one query may hold
        # (0: no bound); exceeding it fails that query like max_samples.
        self.max_bytes = max_bytes
        # Queries evaluated at once (0: no bound); the rest wait in a queue.
        self.max_concurrency = max_concurrency
        self._gate: asyncio.Semaphore | None = None
        # Hand aggregations to queriers that can pre-aggregate per shard.
        self.pushdown = pushdown
        # Prometheus 3's promql-delayed-name-removal: a dropped `__name__`
        # goes when the answer is handed out (label functions can still read
        # it, series of two names stay apart). Off: where it is dropped, with
        # Prometheus' duplicate check there (2.x, and 3.x by default).
        self.delayed_name_removal = delayed_name_removal
        self.checks = PushdownChecks()

    @classmethod
    def from_config(cls, cfg: Any) -> Engine:
        """The router's engine for a ServeConfig (athens/config.py).

        Evaluation runs in a small thread pool so the router's event loop
        keeps taking writes while a query computes (the kernels release
        the GIL).
        """
        from athens.config import byte_size, duration_ms  # noqa: PLC0415

        return cls(
            lookback_delta_ms=duration_ms(cfg.lookback_delta),
            max_samples=cfg.query_max_samples,
            timeout_s=duration_ms(cfg.query_timeout) / 1000,
            executor=ThreadPoolExecutor(max_workers=2, thread_name_prefix="query",
                                        initializer=lower_thread_priority),
            max_bytes=byte_size(cfg.query_max_bytes),
            max_concurrency=cfg.query_max_concurrency,
            pushdown=cfg.query_pushdown == "on",
            delayed_name_removal=cfg.query_delayed_name_removal == "on",
        )

    def with_limits(self, lookback_delta_ms: int, timeout_s: float) -> Engine:
        """A copy with another lookback / timeout sharing this one's queue."""
        e = Engine(lookback_delta_ms, self.max_samples, timeout_s, self.default_subquery_step_ms,
                   self.executor, self.max_bytes, self.max_concurrency, self.pushdown, self.delayed_name_removal)
        e._gate = self.gate()
        e.checks = self.checks
        return e

    def gate(self) -> asyncio.Semaphore:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.max_concurrency or 1 << 30)
        return self._gate

    async def _admitted(self, ev: Evaluator) -> None:
        """Wait for a free query slot; the wait counts against the timeout."""
        gate = self.gate()
        if not gate.locked():  # a free slot: taken at once, no timer to set and cancel
            await gate.acquire()
            return
        remaining = ev.deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):  # no task per wait, unlike wait_for
                await gate.acquire()
        except TimeoutError:
            raise QueryTimeoutError("query timed out in query queue") from None

    async def _run(
        self, ev: Evaluator, querier: Querier, node: Expr, fn: Callable[[Expr], QueryResult]
    ) -> QueryResult:
        await self._admitted(ev)
        try:
            await ev.fetch_within_deadline(querier, node)
            return await self._evaluate(fn, node, ev.small())
        except asyncio.CancelledError:
            ev.cancel.set()  # stop the evaluation thread, if any
            raise
        finally:
            self.gate().release()

    async def _evaluate(self, fn: Callable[[Expr], QueryResult], node: Expr, inline: bool) -> QueryResult:
        # Small evaluations skip the hand-off to the query thread and back.
        if self.executor is None or inline:
            return fn(node)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, node)

    @staticmethod
    def warm_up() -> None:
        """Compile the numba kernels so the first query does not pay for it."""
        warm_up_kernels()

    async def instant(
        self, querier: Querier, expr: Expr | str, t_ms: int
    ) -> QueryResult:
        node, text = _parse(expr)
        ev = Evaluator(self, text, t_ms, t_ms, 0)
        return await self._run(ev, querier, node, ev.run_instant)

    async def range(
        self,
        querier: Querier,
        expr: Expr | str,
        start_ms: int,
        end_ms: int,
        step_ms: int,
    ) -> QueryResult:
        node, text = _parse(expr)
        if step_ms <= 0:
            raise BadDataError(
                "zero or negative query resolution step widths are not accepted. "
                "Try a positive integer"
            )
        if end_ms < start_ms:
            raise BadDataError("end timestamp must not be before start time")
        if node.type not in (ValueType.SCALAR, ValueType.VECTOR):
            raise InvalidQueryError(
                f'invalid expression type "{_type_name(node.type)}" for range query, '
                "must be Scalar or instant Vector"
            )
        ev = Evaluator(self, text, start_ms, end_ms, step_ms)
        return await self._run(ev, querier, node, ev.run_range)


def _type_name(t: ValueType) -> str:
    return {
        ValueType.SCALAR: "scalar",
        ValueType.VECTOR: "instant vector",
        ValueType.MATRIX: "range vector",
        ValueType.STRING: "string",
    }[t]


class Evaluator:
    """One query's evaluation: its time frame, fetched data and annotations."""

    def __init__(
        self, engine: Engine, text: str, start: int, end: int, step: int,
        cancel: threading.Event | None = None,
    ) -> None:
        self.engine = engine
        self.text = text
        self.start = start
        self.end = end
        self.step = step
        self.lookback = engine.lookback_delta_ms
        self.data: dict[int, Sequence[Series]] = {}
        self.ranges: dict[int, list[int]] = {}
        self.selectors: dict[int, ast.VectorSelector] = {}
        # Synthetic selectors of info() calls for their info series, by call.
        self.info_selectors: dict[int, ast.VectorSelector] = {}
        self.warnings: list[str] = []
        self.infos: list[str] = []
        self.deadline = time.monotonic() + engine.timeout_s
        # Samples the selectors returned (for query statistics).
        self.fetched_samples = 0
        # Bytes held for this query (fetched data, partials, big arrays).
        self.held_bytes = 0
        # Set to stop evaluation early (client gone, or the shard's CANCEL).
        self.cancel = cancel if cancel is not None else threading.Event()
        # Nodes pushed down to the querier (aggregations, series-local
        # expressions): node id -> (node, steps),
        # and after fetching, node id -> every shard's partial.
        self.pushed: dict[int, tuple[Expr, np.ndarray]] = {}
        self.partials: dict[int, list[Partial]] = {}
        self.pushdown = False
        # Which binary operators between vectors push down (planner.BINOPS_*):
        # with a querier that colocates series differing only in their name.
        self.binops = BINOPS_NONE
        # On a shard evaluating verified operators (planner.verified_binops):
        # node id -> hashes of the signatures it matched.
        self.signatures: dict[int, set[int]] | None = None
        self.root: Expr | None = None

    # ----------------------------------------------------------- annotations

    def _position(self, node: Expr | None) -> str:
        if node is None:
            return ""
        start = node.pos.start
        before = self.text[:start]
        line = before.count("\n") + 1
        col = start - (before.rfind("\n") + 1) + 1
        return f" ({line}:{col})"

    def warn(self, msg: str, node: Expr | None = None) -> None:
        s = f"PromQL warning: {msg}{self._position(node)}"
        if s not in self.warnings:
            self.warnings.append(s)

    def info(self, msg: str, node: Expr | None = None) -> None:
        s = f"PromQL info: {msg}{self._position(node)}"
        if s not in self.infos:
            self.infos.append(s)

    # -------------------------------------------------------------- durations

    def duration(self, d: ast.Duration) -> int:
        """A duration field in ms (duration expressions resolved now)."""
        if isinstance(d, int):
            return d
        if isinstance(d, float):
            return int(round(d))
        secs = self._duration_seconds(d)
        if math.isnan(secs) or math.isinf(secs):
            raise BadDataError(f"invalid duration: {secs}")
        return int(round(secs * 1000))

    def _duration_seconds(self, e: Expr) -> float:
        if isinstance(e, ast.DurationExpr):
            op = e.op
            if op in ("number", "duration"):
                return float(e.value)
            if op == "step":
                return self.step / 1000.0
            if op == "range":
                return (self.end - self.start) / 1000.0
            if op == "neg":
                operand = e.rhs if e.rhs is not None else e.lhs
                assert operand is not None
                return -self._duration_seconds(operand)
            if op in ("min_of", "max_of"):
                assert e.lhs is not None and e.rhs is not None
                a, b = self._duration_seconds(e.lhs), self._duration_seconds(e.rhs)
                return _min_max(op, a, b)
            assert e.lhs is not None
            a = self._duration_seconds(e.lhs)
            if e.rhs is None:
                return a
            b = self._duration_seconds(e.rhs)
            return _scalar_arith(op, a, b)
        if isinstance(e, ast.NumberLiteral):
            return float(e.value)
        if isinstance(e, ast.ParenExpr):
            return self._duration_seconds(e.expr)
        if isinstance(e, ast.UnaryExpr):
            v = self._duration_seconds(e.expr)
            return -v if e.op == "-" else v
        if isinstance(e, ast.BinaryExpr):
            return _scalar_arith(
                e.op, self._duration_seconds(e.lhs), self._duration_seconds(e.rhs)
            )
        if isinstance(e, ast.Call) and e.func in ("step", "range", "min_of", "max_of"):
            if e.func == "step":
                return self.step / 1000.0
            if e.func == "range":
                return (self.end - self.start) / 1000.0
            a, b = (self._duration_seconds(x) for x in e.args)
            return _min_max(e.func, a, b)
        raise BadDataError(f"unsupported duration expression {type(e).__name__}")

    def at(self, at: ast.At) -> int | None:
        if at is None:
            return None
        if at is AtModifier.START:
            return self.start
        if at is AtModifier.END:
            return self.end
        return int(at)

    def effective_times(
        self, ts: np.ndarray, at: ast.At, offset: ast.Duration
    ) -> np.ndarray:
        a = self.at(at)
        base = np.full_like(ts, a) if a is not None else ts
        return base - self.duration(offset)

    def subquery_times(
        self, node: ast.SubqueryExpr, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(effective outer times, inner step times, range) of a subquery.

        Inner steps are the multiples of the subquery step (from the epoch)
        inside the union of all outer windows, as Prometheus aligns them.
        """
        eff = self.effective_times(ts, node.at, node.offset)
        rng = self.duration(node.range)
        step = self.duration(node.step) or self.engine.default_subquery_step_ms
        if len(eff) == 0:
            return eff, np.empty(0, np.int64), rng
        lo = int(eff.min()) - rng
        first = step * go_div(lo, step)
        if first <= lo:
            first += step
        inner = np.arange(first, int(eff.max()) + 1, step, dtype=np.int64)
        return eff, inner, rng

    # ------------------------------------------------------------------ fetch

    def _plan(self, node: Expr, ts: np.ndarray, raw: bool = False) -> None:
        """Record the [mint, maxt] every selector needs at steps ts, and the
        nodes the shards evaluate (raw: a selector here is read with its
        samples' timestamps, as info() reads its info series; timestamp(x)
        is series-local, so it is pushed whole with its selector)."""
        if len(ts) == 0:
            return
        # A selector is fetched as it is where its samples' timestamps are
        # read, and at one step: its rows would save a few samples per series
        # and cost the shards an evaluation more than a select.
        as_is = isinstance(unwrap_parens(node), ast.VectorSelector) and (raw or len(ts) == 1)
        if self.pushdown and not as_is and id(node) not in self.pushed and (
            pushable(node, self.binops) or pushable_series(node, self.binops)
        ) and (self.engine.delayed_name_removal or not names_may_merge(node)):
            self.pushed[id(node)] = (node, ts)
            return
        if isinstance(node, ast.VectorSelector):
            eff = self.effective_times(ts, node.at, node.offset)
            after = self.lookback if node.modifier == "smoothed" else 0
            self._need(node, int(eff.min()) - self.lookback + 1, int(eff.max()) + after)
            return
        if isinstance(node, ast.MatrixSelector):
            vs = node.vector
            eff = self.effective_times(ts, vs.at, vs.offset)
            rng = self.duration(node.range)
            # anchored/smoothed selectors look one lookback beyond the window.
            extra = self.lookback if vs.modifier else 0
            self._need(vs, int(eff.min()) - rng - extra + 1, int(eff.max()) + extra)
            return
        if isinstance(node, ast.SubqueryExpr):
            _, inner, _ = self.subquery_times(node, ts)
            self._plan(node.expr, inner)
            return
        if isinstance(node, ast.Call) and node.func == "info":
            self._plan(node.args[0], ts)
            self._plan(info_selector(self, node), info_reference_times(self, node.args[0], ts), raw=True)
            return
        for c in ast.children(node):
            self._plan(c, ts)

    def selections(self, node: Expr, steps: np.ndarray) -> list[tuple[int, ast.VectorSelector, int, int]]:
        """(key in self.data, selector, mint, maxt) of every selector node
        reads at steps, for a caller that fills self.data itself."""
        self.root = node
        self._plan(node, steps)
        return [(k, self.selectors[k], *self.ranges[k]) for k in self.ranges]

    def _need(self, vs: ast.VectorSelector, mint: int, maxt: int) -> None:
        key = id(vs)
        self.selectors[key] = vs
        r = self.ranges.get(key)
        if r is None:
            self.ranges[key] = [mint, maxt]
        else:
            r[0], r[1] = min(r[0], mint), max(r[1], maxt)

    async def fetch_within_deadline(self, querier: Querier, node: Expr) -> None:
        remaining = self.deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                await self.fetch(querier, node)
        except TimeoutError:
            raise QueryTimeoutError("query timed out in query execution") from None

    async def fetch(self, querier: Querier, node: Expr, steps: np.ndarray | None = None) -> None:
        """Select every selector's series, all concurrently; with a querier
        that pre-aggregates per shard (evaluate_partials), fetch the pushed
        down aggregations' partials instead of their series."""
        if steps is None:
            steps = self.steps()
        self.root = node
        self.pushdown = (
            self.engine.pushdown and bool(self.text) and hasattr(querier, "evaluate_partials")
        )
        colocated = self.pushdown and bool(getattr(querier, "colocated", False))
        self.binops = BINOPS_VERIFIED if colocated else BINOPS_NONE
        if self.binops == BINOPS_VERIFIED and self.engine.checks.failed_lately(self.text):
            self.binops = BINOPS_COLOCATED
        held = self.held_bytes
        await self._fetch_planned(querier, node, steps)
        if not all(signatures_disjoint(parts) for parts in self.partials.values()):
            # A match group of an on()/ignoring() operator spans two workers:
            # fetch again, those operators evaluated here.
            self.engine.checks.fail(self.text)
            self.binops = BINOPS_COLOCATED
            for d in (self.ranges, self.selectors, self.pushed, self.partials, self.data):
                d.clear()
            self.held_bytes = held
            await self._fetch_planned(querier, node, steps)

    async def _fetch_planned(self, querier: Querier, node: Expr, steps: np.ndarray) -> None:
        self._plan(node, steps)
        keys = list(self.ranges)
        pushed = list(self.pushed.items())

        async def one(key: int) -> SeriesSet:
            vs = self.selectors[key]
            mint, maxt = self.ranges[key]
            res = querier.select(list(vs.matchers), mint, maxt)
            if inspect.isawaitable(res):
                res = await res
            return SeriesSet.of(res)  # sorted by labels, as Querier.select answers

        root = node

        async def partial(agg: Expr, ts: np.ndarray) -> list[Partial]:
            req = PartialRequest(
                self.text, node_index(root, agg), self.start, self.end, self.step,
                self.lookback, ts, self.engine.max_samples, self.engine.max_bytes,
                max(self.deadline - time.monotonic(), 0.001), self.binops,
                self.engine.default_subquery_step_ms, self.engine.delayed_name_removal,
            )
            return await querier.evaluate_partials(req)  # type: ignore[attr-defined, no-any-return]

        fetches = [*(one(k) for k in keys), *(partial(n, t) for _, (n, t) in pushed)]
        # One fetch (most queries) is awaited as it is: gather would wrap it in a task.
        results = [await fetches[0]] if len(fetches) == 1 else await asyncio.gather(*fetches)
        total = 0
        for k, r in zip(keys, results):
            self.data[k] = r
            n = len(r.ts)
            total += n
            self.check_bytes(16 * n + 200 * len(r))
        for (key, _), parts in zip(pushed, results[len(keys):]):
            self.partials[key] = parts
            for p in parts:
                total += p.samples
                self.check_bytes(sum(a.nbytes for a in p.arrays) + 200 * len(p.rows))
                self.add_annotations(p.warnings, p.infos)
        self.fetched_samples = total

    def small(self) -> bool:
        """Whether evaluating what was fetched is cheap enough to run on the
        event loop: about a millisecond of work (bytes held plus a value per
        fetched series or partial row and step)."""
        n_steps = len(self.steps())
        rows = sum(len(r) for r in self.data.values())
        rows += sum(len(p.rows) for parts in self.partials.values() for p in parts)
        return self.held_bytes + 8 * n_steps * rows <= INLINE_BYTES

    def steps(self) -> np.ndarray:
        if self.step == 0:
            return np.array([self.start], np.int64)
        return np.arange(self.start, self.end + 1, self.step, dtype=np.int64)

    # ---------------------------------------------------------------- running

    def run_instant(self, node: Expr) -> QueryResult:
        t = self.start
        ts = np.array([t], np.int64)
        inner = unwrap_parens(node)
        if node.type is ValueType.MATRIX:
            m = self.eval_matrix(inner, ts)
            out = []
            for s in range(len(m.labels)):
                a, b = int(m.lo[s, 0]), int(m.hi[s, 0])
                if b > a:
                    lb = m.labels[s]
                    if m.drop_name[s]:
                        lb = lb.without_name()
                    out.append((lb, m.ts[a:b].copy(), m.vals[a:b].copy()))
            out.sort(key=lambda x: x[0].sort_key())
            return self._result("matrix", out)
        v = self.eval(node, ts)
        if isinstance(v, ScalarValue):
            return self._result("scalar", (t, float(v.values[0])))
        if isinstance(v, StringValue):
            return self._result("string", (t, v.value))
        assert isinstance(v, VectorValue)
        v = remove_dropped_names(v)
        rows = np.flatnonzero(v.present[:, 0])
        labels = v.labels
        out = [(labels[i], t, x) for i, x in zip(rows.tolist(), v.values[rows, 0].tolist())]
        return self._result("vector", out)

    def run_range(self, node: Expr) -> QueryResult:
        ts = self.steps()
        v = self.eval(node, ts)
        if isinstance(v, ScalarValue):
            return self._result("matrix", [(Labels(), ts, v.values.copy())])
        assert isinstance(v, VectorValue)
        v = remove_dropped_names(v)
        # Rows present at every step (most) keep the steps and their values
        # as they are: three numpy calls a row were ~10 ms of a 1,640-series answer.
        full = v.present.all(axis=1).tolist()
        out = []
        for i in np.flatnonzero(v.present.any(axis=1)).tolist():
            if full[i]:
                out.append((v.labels[i], ts, v.values[i]))
            else:
                p = v.present[i]
                out.append((v.labels[i], ts[p], v.values[i, p]))
        out.sort(key=lambda x: x[0].sort_key())
        return self._result("matrix", out)

    def _result(self, kind: str, value: object) -> QueryResult:
        return QueryResult(kind, value, list(self.warnings), list(self.infos))

    # ------------------------------------------------------------- evaluation

    def check_time(self) -> None:
        if self.cancel.is_set():
            raise QueryCanceledError("query was canceled in expression evaluation")
        if time.monotonic() > self.deadline:
            raise QueryTimeoutError("query timed out in expression evaluation")

    def fork(self) -> Evaluator:
        """An evaluator of the same query for one slice of its series, on
        another thread: same limits, deadline and cancel event, its own data
        and annotations; it starts from the bytes this one holds now."""
        child = Evaluator(self.engine, self.text, self.start, self.end, self.step, self.cancel)
        child.deadline = self.deadline
        child.held_bytes = self.held_bytes
        return child

    def absorb(self, child: Evaluator) -> None:
        """Take a fork's annotations and samples (bytes are the caller's)."""
        self.add_annotations(child.warnings, child.infos)
        self.fetched_samples += child.fetched_samples

    def add_annotations(self, warnings: list[str], infos: list[str]) -> None:
        """Warnings and infos (already formatted) not yet among this query's."""
        for w in warnings:
            if w not in self.warnings:
                self.warnings.append(w)
        for i in infos:
            if i not in self.infos:
                self.infos.append(i)

    def check_bytes(self, n: int) -> None:
        """Account n more bytes held by this query against the byte budget."""
        self.held_bytes += n
        if self.engine.max_bytes and self.held_bytes > self.engine.max_bytes:
            raise TooManySamplesError()

    def check_samples(self, n: int) -> None:
        if n > self.engine.max_samples:
            raise TooManySamplesError()

    def eval(self, node: Expr, ts: np.ndarray, names_read: bool = True) -> Value:
        """node's value at ts. names_read=False: the caller never reads the
        series' metric names (aggregations.reads_names), so without delayed
        removal they need not be removed, only checked for duplicates."""
        v = self._eval(node, ts)
        if not self.engine.delayed_name_removal and isinstance(v, VectorValue):
            if names_read:
                return remove_dropped_names(v)  # as dropped, with the duplicate check
            check_dropped_names(v)
        return v

    def _eval(self, node: Expr, ts: np.ndarray) -> Value:
        self.check_time()
        # Taken, not looked up: a node is evaluated once, and the partials'
        # frames (`medium`'s `mean_latency_on` range: 4 MB a side) go as
        # soon as they are merged instead of with the query.
        parts = self.partials.pop(id(node), None)
        if parts is not None:
            planned = self.pushed[id(node)][1]
            # (np.array_equal costs ~20 us; the planned steps are mostly ts itself)
            if planned is not ts and (len(planned) != len(ts) or not (planned == ts).all()):
                raise ExecutionError("pushed-down node evaluated at other steps than planned")
            if isinstance(node, ast.AggregateExpr):
                return merge_partials(self, node, parts, ts)
            return merge_series(parts, len(ts))
        if isinstance(node, ast.NumberLiteral):
            return ScalarValue(np.full(len(ts), float(node.value)))
        if isinstance(node, ast.StringLiteral):
            return StringValue(node.value)
        if isinstance(node, ast.ParenExpr):
            return self.eval(node.expr, ts)
        if isinstance(node, ast.VectorSelector):
            return self.eval_vector_selector(node, ts)[0]
        if isinstance(node, (ast.MatrixSelector, ast.SubqueryExpr)):
            return self.eval_matrix(node, ts)
        if isinstance(node, ast.UnaryExpr):
            v = self.eval(node.expr, ts)
            if node.op != "-":
                return v
            if isinstance(v, ScalarValue):
                return ScalarValue(-v.values)
            assert isinstance(v, VectorValue)
            return VectorValue(
                v.labels, -v.values, v.present, np.ones(len(v.labels), bool)
            )
        if isinstance(node, ast.BinaryExpr):

            return eval_binary(self, node, ts)
        if isinstance(node, ast.AggregateExpr):
            return eval_aggregate(self, node, ts)
        if isinstance(node, ast.Call):

            return eval_call(self, node, ts)
        if isinstance(node, ast.DurationExpr):
            return ScalarValue(np.full(len(ts), self._duration_seconds(node)))
        raise BadDataError(f"unhandled expression of type {type(node).__name__}")

    def eval_vector(self, node: Expr, ts: np.ndarray, names_read: bool = True) -> VectorValue:
        v = self.eval(node, ts, names_read)
        if not isinstance(v, VectorValue):
            raise BadDataError("expected instant vector")
        return v

    def eval_scalar(self, node: Expr, ts: np.ndarray) -> np.ndarray:
        v = self.eval(node, ts)
        if not isinstance(v, ScalarValue):
            raise BadDataError("expected scalar")
        return v.values

    def eval_vector_selector(
        self, node: ast.VectorSelector, ts: np.ndarray
    ) -> tuple[VectorValue, np.ndarray]:
        """The selector at each step, and the timestamps of the samples used."""
        series = self.data.get(id(node), [])
        eff = self.effective_times(ts, node.at, node.offset).astype(np.int64)
        ss = SeriesSet.of(series)
        labels, flat_t, flat_v, offsets = ss.labels, ss.ts, ss.values, ss.offsets
        stale = np.zeros(len(flat_v), np.bool_) if ss.stale_free else is_stale(flat_v)
        values, present, sample_ts = k_select(
            flat_t, flat_v, stale, offsets, eff, self.lookback,
            node.modifier == "smoothed",
        )
        self.check_samples(int(present.sum()))
        self.check_bytes(values.nbytes)
        vec = VectorValue(labels, values, present, np.zeros(len(labels), bool))
        return vec, sample_ts

    def eval_matrix(self, node: Expr, ts: np.ndarray) -> MatrixValue:
        """A range selector or subquery as concatenated samples plus windows."""
        node = unwrap_parens(node)
        if isinstance(node, ast.MatrixSelector):
            vs = node.vector
            series = self.data.get(id(vs), [])
            eff = self.effective_times(ts, vs.at, vs.offset)
            rng = self.duration(node.range)
            ss = SeriesSet.of(series)
            labels, flat_t, flat_v, offsets = ss.labels, ss.ts, ss.values, ss.offsets
            # Range windows never see staleness markers.
            if not ss.stale_free and has_stale(np.ascontiguousarray(flat_v).view(np.uint64)):
                keep = ~is_stale(flat_v)
                seg = np.repeat(np.arange(len(labels)), np.diff(offsets))
                counts = np.bincount(seg[keep], minlength=len(labels))
                offsets = np.zeros(len(labels) + 1, np.int64)
                np.cumsum(counts, out=offsets[1:])
                flat_t, flat_v = flat_t[keep], flat_v[keep]
            drop = np.zeros(len(labels), bool)
        elif isinstance(node, ast.SubqueryExpr):
            eff, inner_ts, rng = self.subquery_times(node, ts)
            inner = self.eval(node.expr, inner_ts)
            if isinstance(inner, ScalarValue):
                inner = VectorValue(
                    [Labels()],
                    inner.values[None, :],
                    np.ones((1, len(inner_ts)), bool),
                    np.zeros(1, bool),
                )
            assert isinstance(inner, VectorValue)
            inner = inner.compact()
            # Row-major boolean indexing concatenates the series in order.
            flat_t = np.broadcast_to(inner_ts, inner.present.shape)[inner.present]
            flat_v = inner.values[inner.present]
            offsets = np.zeros(len(inner.labels) + 1, np.int64)
            np.cumsum(inner.present.sum(axis=1), out=offsets[1:])
            labels = list(inner.labels)
            drop = inner.drop_name.copy()
        else:
            raise BadDataError(f"expected range vector, got {type(node).__name__}")
        wstart = (eff - rng).astype(np.int64)
        wend = eff.astype(np.int64)
        lo, hi = window_bounds(flat_t.astype(np.int64, copy=False), offsets, wstart, wend)
        if len(labels):
            self.check_samples(int((hi - lo).sum(axis=0).max(initial=0)))
            self.check_bytes(lo.nbytes + hi.nbytes)
        return MatrixValue(
            labels, drop, flat_t.astype(np.int64, copy=False), flat_v.astype(np.float64, copy=False),
            offsets, lo, hi, wstart, wend, rng,
        )

    def finish_vector(self, vec: VectorValue) -> VectorValue:
        """Merge series that ended up with identical labels (see values.py)."""
        return merge_duplicate_labels(vec)


def _min_max(op: str, a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return min(a, b) if op == "min_of" else max(a, b)


def _scalar_arith(op: str, a: float, b: float) -> float:

    return float(arith(op, np.array([a]), np.array([b]))[0])
