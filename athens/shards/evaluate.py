"""Shard-side partial evaluation of what the router pushed down.

The router's planner (athens/query/planner.py) sends an EVAL frame naming an
aggregation node of the query, or a series-local expression; the worker
selects its own series for it, evaluates the aggregation's argument (or the
expression) with the same engine the router uses, pre-aggregates per group
(or keeps the rows) and answers with a binary partial (numpy arrays, labels
only per group or row). The series are read and evaluated a slice at a
time: the worker's event loop plans the reads between appends, decoding
and evaluation run in a low-priority thread (the kernels release the GIL),
and a CANCEL frame for the request id stops it between slices.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import numpy as np

from athens.errors import AthensError, BadDataError, ExecutionError, QueryCanceledError, TooManySamplesError
from athens.log import kv
from athens.model.matchers import Matcher
from athens.model.series import Series, SeriesSet
from athens.query import ast
from athens.query.aggregations import reads_names
from athens.query.engine import Engine, Evaluator, lower_thread_priority, parse_shared
from athens.query.planner import (
    Partial,
    PartialRequest,
    fold_partials,
    node_at,
    partial_of,
    pushable,
    pushable_series,
    pushed_argument,
    series_partial,
    verified_binops,
)
from athens.query.values import StringValue, VectorValue
from athens.shards import ipc
from athens.shards.ipc import Frame

log = logging.getLogger("athens.worker")

Select = Callable[[Sequence[Matcher], int, int], Sequence[Series]]
# One slice of a selector's series, not read yet: (series, samples it
# holds at most, the call that reads it - on any thread).
SliceRead = tuple[int, int, Callable[[], SeriesSet]]
# Where a partial's series come from: the selector's series in label order,
# a slice of them at a time (matchers, mint, maxt, at most so many series
# per slice).
Slices = Callable[[Sequence[Matcher], int, int, int], AsyncIterator[SliceRead]]
T = TypeVar("T")


def find_node(req: PartialRequest) -> ast.Expr:
    """The pushed-down node, from the query text (parsed once per text)."""
    node = node_at(parse_shared(req.text), req.node_index)
    if not (pushable(node, req.binops) or pushable_series(node, req.binops)):
        raise BadDataError(f"node {req.node_index} of the query cannot be pushed down")
    return node


def evaluator(req: PartialRequest, cancel: threading.Event | None = None) -> Evaluator:
    engine = Engine(
        lookback_delta_ms=req.lookback_ms, max_samples=req.max_samples,
        timeout_s=req.timeout_s, default_subquery_step_ms=req.subquery_step_ms,
        max_bytes=req.max_bytes, pushdown=False, delayed_name_removal=req.delayed_name_removal,
    )
    return Evaluator(engine, req.text, req.start, req.end, req.step, cancel)


class Offload:
    """Runs a query's shard work: pieces of at most INLINE_POINTS inline on
    the event loop (handing them to a thread and back costs more than they
    do), and a query's only piece reading up to INLINE_IDLE_SAMPLES too
    while appends do not queue up (`busy()`); the rest on `pool`, the
    low-priority evaluation threads; `lanes` pieces of one query may run at
    once (the pool's threads).

    While appends queue up (`busy()`), offloaded work is paced to `share`
    of one CPU: after a piece that took t seconds of thread CPU, the next one
    starts t * (1 - share) / share later. A low priority alone does not keep
    queries from slowing ingest: whenever the loop waits (for the router,
    the WAL) the query thread runs, and on a hyperthreaded CPU (this
    project's bench machine) it then slows the loop on the sibling.
    """

    def __init__(
        self, pool: Executor | None = None, share: float = 1.0, busy: Callable[[], bool] = lambda: False,
        lanes: int = 1,
    ) -> None:
        self.pool = pool
        self.lanes = lanes if pool is not None else 1
        self.share = share
        self.busy = busy
        self._free_at = 0.0  # monotonic time before which paced work waits

    async def __call__(
        self, points: int, fn: Callable[..., Any], *args: Any, samples: int = 0, solo: bool = False
    ) -> Any:
        """fn(*args), a piece that evaluates `points` (series x steps) over
        `samples` raw samples it reads; `solo`: the query's only piece (none
        could run beside it in another lane)."""
        light = points <= INLINE_POINTS
        if self.pool is None or (light and samples <= INLINE_POINTS):
            return fn(*args)
        if light and solo and samples <= INLINE_IDLE_SAMPLES and not self.busy():
            return fn(*args)
        if self.share < 1:
            while (wait := self._free_at - time.monotonic()) > 0 and self.busy():
                await asyncio.sleep(wait)
        cpu, out = await asyncio.get_running_loop().run_in_executor(self.pool, _cpu_timed, fn, args)
        if self.share < 1:
            self._free_at = max(self._free_at, time.monotonic()) + cpu * (1 - self.share) / self.share
        return out


def _cpu_timed(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[float, Any]:
    t0 = time.thread_time()
    out = fn(*args)
    return time.thread_time() - t0, out


class ShardSlices:
    """Shard.select in slices of series, yielding to the loop between them.

    Together the slices are Shard.select's answer (series in label order,
    samples in [mint, maxt] sorted by time, duplicates across sources
    dropped), read a slice of series at a time: appends run between slices,
    a consumer evaluates and drops each slice (a few slices of raw samples
    are held at a time), and a cancelled evaluation stops reading. The
    read of the first SELECT_SLICE series is planned (not decoded) to learn
    how many samples a series holds; slices have as many series as decode
    about SLICE_SAMPLES samples at the rate seen so far (an instant query
    reads a few chunks per series, a day-long range thousands of samples),
    at most the consumer's max_series, the first one too when that is more
    than the probe's (its plan is then dropped: folding the partials of a
    64-series slice and the rest cost the `medium` profile's 1,640-group
    ratio ~1 ms a worker). With `lanes` slices evaluated at once the
    selection is split evenly in at least `lanes` slices when it reads
    more than a lone piece may on the event loop (INLINE_IDLE_SAMPLES) and
    each slice would still be too big to run inline (INLINE_POINTS), so
    that the lanes get work of similar size; the slices are not made smaller
    for it: the Python of each slice holds the GIL, which the lanes share
    (one worker with two lanes, `long` 12-hour aggregations: 1/lanes-sized
    slices 67-74 ms and 94-105 ms of CPU, whole slices 53-60 ms and 75-89).

    The event loop only plans each slice's read (Shard.plan_read, a
    snapshot); the consumer decodes it where it evaluates it (on an
    evaluation thread, the kernels release the GIL), so appends on the loop
    are not held up by reads.
    """

    def __init__(self, shard: Any, cancel: threading.Event | None = None, lanes: int = 1) -> None:
        self.shard = shard
        self.cancel = cancel
        self.lanes = max(lanes, 1)

    async def slices(
        self, matchers: Sequence[Matcher], mint: int, maxt: int, max_series: int
    ) -> AsyncIterator[SliceRead]:
        shard = self.shard
        ids = shard._ids_in_range(matchers, mint, maxt)
        if len(ids) == 0:
            return
        rank_of = shard.label_rank()
        ids = ids[np.argsort(rank_of[ids], kind="stable")]
        labels = shard.index.labels
        lo, size, series_read, samples_read = 0, min(SELECT_SLICE, max_series), 0, 0
        probing = True
        while lo < len(ids):
            await asyncio.sleep(0)
            if self.cancel is not None and self.cancel.is_set():
                raise QueryCanceledError("query was canceled while reading series")
            sub = np.sort(ids[lo : lo + size])
            pending = shard.plan_read(sub, mint, maxt)
            series_read += len(sub)
            samples_read += pending.samples
            want = SLICE_SAMPLES * series_read // max(samples_read, 1)
            split = False
            if probing:  # the selection in `lanes` slices or more
                per_series = samples_read / series_read
                part = -(-len(ids) // self.lanes)
                split = (part < want and len(ids) * per_series > INLINE_IDLE_SAMPLES
                         and part * per_series > INLINE_POINTS)
                if split:
                    want = part
            size = max(1, min(want, max_series))
            if probing and (len(sub) < min(size, len(ids)) or (split and len(sub) > size)):
                # Drop the probe's plan and plan the first slice at the size
                # its rate allows: a few thousand series are then one slice,
                # read and evaluated once, with no partials to fold; a
                # selection split for the lanes is split evenly (82 series
                # as the 64-series probe and 18 more kept one lane busy).
                probing = False
                continue
            probing = False
            lo += len(sub)
            if pending.samples:
                yield len(sub), pending.samples, partial(
                    pending.series, sub, rank_of[sub], labels, mint, maxt, shard.index
                )


# Series whose read ShardSlices plans first, to learn the samples per series.
SELECT_SLICE = 64

# Bounds of one evaluation slice (at least one series): series x steps, and
# raw samples read for it. Cancellation and the deadline are checked between
# slices; on a worker a query holds one slice of raw samples at a time. A
# slice is read and evaluated as one, while its 8 MB of samples are still in
# the CPU's cache: the long profile's 12-hour range queries over 2.8-4M
# samples per worker took 8-17% less than with 4M-sample slices (the read
# decodes in place, so more reads cost no copies), the medium profile's the
# same (bench.compare, two alternations each).
CHUNK_POINTS = 250_000
SLICE_SAMPLES = 500_000
# Evaluations of at most this many series x steps (or raw samples), and reads
# of at most this many samples, run on the event loop instead of the
# evaluation thread: at most about a millisecond of work, less than handing
# it to the thread and back costs a light query on a busy 2-vCPU machine
# (2_000 before: the instant queries of the long profile, pushed down, were
# 0.5-1 ms slower than with pushdown off).
INLINE_POINTS = 65_536
# A query's only piece, evaluating at most INLINE_POINTS, also runs on the
# loop if it reads up to this many samples, while ingest keeps up (Offload):
# decoding is ~5 ns a sample, so ~1-2 ms of work, which a light EVAL
# arriving meanwhile waits for, against a hand-off that costs 114-181 us
# after a few ms of idle on this guest (docs/benchmarks.md) and wakes the
# other vCPU. Evaluating points costs more (`topk` over 156,000: 7.5 ms), so
# they keep the bound above. A selection reading no more than this is not
# split for the lanes either (ShardSlices): one worker, two lanes, `count by
# (job, region) (up)` over 12 hours (82 series, 236,000 samples) took
# 1.1-1.4 ms whole on the loop, 2.1-2.6 ms split in two on the threads (in
# process). The `long` list's 12-hour queries over a few dozen series a
# worker (80-240k samples, 3-8k points).
INLINE_IDLE_SAMPLES = 262_144


def pre_aggregate(ev: Evaluator, node: ast.Expr, vec: VectorValue, ts: np.ndarray) -> Partial:
    """The shard's partial of the pushed node over the series of `vec`, its
    argument evaluated at ts (a series-local node is its own argument)."""
    if isinstance(node, ast.AggregateExpr):
        param: object = None
        if node.param is not None:
            pv = ev.eval(node.param, ts)
            param = pv.value if isinstance(pv, StringValue) else pv
        ev.check_time()
        return partial_of(node, vec, param, ts)
    return series_partial(vec)


def annotated(ev: Evaluator, p: Partial) -> Partial:
    """The partial with the query's warnings, infos and samples read."""
    p.warnings = list(ev.warnings)
    p.infos = list(ev.infos)
    p.samples = ev.fetched_samples
    return p


def whole(select: Select) -> Slices:
    """A synchronous select (its answer sorted by labels, as Querier.select's)
    as a slice source of one slice (in-process shards)."""

    async def slices(
        matchers: Sequence[Matcher], mint: int, maxt: int, max_series: int
    ) -> AsyncIterator[SliceRead]:
        await asyncio.sleep(0)  # let queued appends run first
        yield 0, 0, lambda: SeriesSet.of(select(matchers, mint, maxt))

    return slices


async def evaluate_partial(
    req: PartialRequest, slices: Slices, offload: Offload | None = None, cancel: threading.Event | None = None
) -> Partial:
    """The shard's partial, streamed: the selector's series come slice by
    slice from `slices` (planned on the event loop, between appends) and
    each slice is read and evaluated by `offload` (default inline), up to
    its `lanes` slices at once, each by a fork of the query's evaluator.
    Each piece of a slice is pre-aggregated as soon as it is evaluated and
    the pieces' partials are folded into one at the end (fold_partials). So
    a query holds a few slices of raw samples and the partials of the
    others, however many series and days it covers (when every slice's
    evaluated series were kept for one pre-aggregation at the end, the
    `medium` benchmark's `sum by (instance) (rate(...[5m]))` over 100
    steps took each of two workers' anonymous memory 33 MiB up, with the
    fold 20); and a worker with two evaluation threads uses two CPUs for
    one query. The argument is series-local (planner.series_local: one
    selector, each output series from one input series), so slices can be
    evaluated and pre-aggregated independently. `cancel` stops it
    between slices and pieces. An argument with several selectors (a binary
    operator between vectors, planner.series_local) is evaluated whole
    (_evaluate_whole)."""
    node = find_node(req)
    arg = pushed_argument(node)
    ev = evaluator(req, cancel)
    ts = req.ts
    selections = ev.selections(arg, ts)
    run = offload or Offload()
    if len(selections) != 1:
        return await _evaluate_whole(ev, node, arg, selections, ts, slices, run)
    ((key, vs, mint, maxt),) = selections
    per_slice = max(1, CHUNK_POINTS // max(1, len(ts)))

    def evaluate(read: Callable[[], SeriesSet], sub: Evaluator, planned: int) -> list[Partial]:
        got = read()
        sub.fetched_samples = len(got.ts)
        extra = 16 * len(got.ts) + 200 * len(got) - planned  # the read beyond its planned bytes
        sub.check_bytes(extra)
        out = []
        for lo in range(0, max(len(got), 1), per_slice):
            sub.check_time()
            sub.data[key] = got[lo : lo + per_slice]
            held = sub.held_bytes
            p = pre_aggregate(sub, node, sub.eval_vector(arg, ts, reads_names(node)), ts)
            sub.held_bytes = held  # the piece's vectors are dropped, its partial kept
            sub.check_bytes(sum(a.nbytes for a in p.arrays) + 200 * len(p.rows))
            out.append(p)
        sub.data.clear()  # the slice's raw samples are dropped
        sub.held_bytes -= extra
        return out

    async def one(
        series: int, samples: int, read: Callable[[], SeriesSet], solo: bool = False
    ) -> tuple[Evaluator, list[Partial]]:
        planned = 16 * samples
        ev.check_bytes(planned)  # the slice's raw samples, at most, while it runs
        sub = ev.fork()
        sub_start = sub.held_bytes
        try:
            out = await run(series * len(ts), evaluate, read, sub, planned, samples=samples, solo=solo)
        finally:
            ev.held_bytes -= planned
        ev.check_bytes(sub.held_bytes - sub_start)  # what its evaluation keeps
        return sub, out

    stream = aiter(slices(list(vs.matchers), mint, maxt, per_slice))
    first = await anext(stream, None)
    second = None if first is None else await anext(stream, None)
    if second is None:
        # No series (the partial of nothing), or all in one slice (a light
        # query): evaluated in this task, without a task per slice.
        results = [await one(*(first or (0, 0, lambda: SeriesSet.of([]))), solo=True)]
    else:
        results = await _in_lanes(_resumed((first, second), stream), one, run.lanes)
    parts = []
    for sub, out in results:  # in slice order
        ev.absorb(sub)
        parts.extend(out)
    filled = [len(p.rows) for p in parts if len(p.rows)]
    # One piece with rows (a light query's single slice) is its own fold: no
    # hand-off to the evaluation thread and back for it (30-180 us).
    work = sum(filled) * len(ts) if len(filled) > 1 else 0
    return annotated(ev, await run(work, fold_partials, parts, len(ts)))


async def _resumed(head: Sequence[SliceRead], rest: AsyncIterator[SliceRead]) -> AsyncIterator[SliceRead]:
    """The slices already taken from `rest`, then the others."""
    for item in head:
        yield item
    async for item in rest:
        yield item


async def _in_lanes(
    stream: AsyncIterator[SliceRead], one: Callable[[int, int, Callable[[], SeriesSet]], Awaitable[T]], lanes: int
) -> list[T]:
    """one() of every slice, each as a task, at most `lanes` at once (the
    next slice is planned while they run); the results in slice order."""
    done: list[asyncio.Future[T]] = []
    running: set[asyncio.Future[T]] = set()
    try:
        async for item in stream:
            while len(running) >= lanes:
                finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for t in finished:
                    t.result()  # the first failure stops the query
            done.append(asyncio.ensure_future(one(*item)))
            running.add(done[-1])
        return await asyncio.gather(*done)
    finally:
        for t in done:
            if not t.done():
                t.cancel()
            elif not t.cancelled():
                t.exception()  # retrieved: only the first failure is raised


async def _evaluate_whole(
    ev: Evaluator, node: ast.Expr, arg: ast.Expr, selections: list[tuple[int, ast.VectorSelector, int, int]],
    ts: np.ndarray, slices: Slices, run: Offload,
) -> Partial:
    """Every selector's series of the shard read at once, the argument
    evaluated over them in one piece: the slices of two selectors do not
    hold the same label sets, which a binary operator pairs up."""
    reads: list[tuple[int, list[Callable[[], SeriesSet]]]] = []
    points = read_samples = 0
    for key, vs, mint, maxt in selections:
        parts = []
        async for series, samples, read in slices(list(vs.matchers), mint, maxt, 1 << 62):
            ev.check_bytes(16 * samples)  # the raw samples, at most, until the evaluation ends
            points += series * len(ts)
            read_samples += samples
            parts.append(read)
        reads.append((key, parts))

    verified = verified_binops(arg)
    if verified:
        ev.signatures = {id(b): set() for b in verified}

    def evaluate() -> Partial:
        for key, parts in reads:
            got = SeriesSet.concat([read() for read in parts])
            ev.fetched_samples += len(got.ts)
            ev.data[key] = got
        try:
            vec = ev.eval_vector(arg, ts, reads_names(node))
        except TooManySamplesError:
            raise
        except ExecutionError:
            if not verified:
                raise
            # Over all series the error may be another (a match group's
            # other series are on another shard): an unverifiable partial
            # has the router evaluate the node itself.
            return Partial(node.op if isinstance(node, ast.AggregateExpr) else "series", [], [],
                           np.zeros(0, bool), [], sigs=[np.zeros(0, np.int64) for _ in verified], probe=0)
        ev.data.clear()
        p = annotated(ev, pre_aggregate(ev, node, vec, ts))
        if verified:
            p.sigs = [np.fromiter(ev.signatures[id(b)], np.int64) for b in verified]
        return p

    return await run(points, evaluate, samples=read_samples, solo=True)  # type: ignore[no-any-return]


# --- frames ------------------------------------------------------------------


def eval_request(req_id: int, req: PartialRequest) -> Frame:
    return Frame(ipc.Op.EVAL, req_id, req.to_meta(), [np.asarray(req.ts, np.int64)])


def parse_eval(frame: Frame) -> PartialRequest:
    if len(frame.arrays) != 1:
        raise ipc.FrameError("EVAL carries exactly one array (the steps)")
    return PartialRequest.from_meta(frame.meta, frame.arrays[0])


def partial_response(req_id: int, p: Partial, with_first: bool = True) -> Frame:
    """rows/first as flat label lists; drop flags and each component
    (float64[rows * steps], row-major) as raw arrays. Without first (a
    request's with_first: the router's only shard), a partial's meta is
    its rows alone: `long`'s `sum by (instance, handler)` over 164 groups
    sent 38.6 KB of label strings, three quarters of them first series,
    which took the router 85 us to parse (orjson, in process)."""
    arrays = [np.asarray(p.drop, np.uint8)] + [np.ascontiguousarray(a, np.float64).ravel() for a in p.arrays]
    arrays += [np.asarray(a, np.int64) for a in p.sigs]
    meta = {
        "agg": p.op, "rows": [lb.flat() for lb in p.rows],
        "first": p.first if with_first else [],
        "warnings": p.warnings, "infos": p.infos, "samples": p.samples,
        "sigs": len(p.sigs), "probe": p.probe,
    }
    return Frame(ipc.Op.OK, req_id, meta, arrays)


def parse_partial(frame: Frame, n_steps: int) -> Partial:
    m = frame.meta
    rows = ipc.unflat_labels(m["rows"])
    n_sigs = int(m["sigs"])
    drop, *comps = frame.arrays[: len(frame.arrays) - n_sigs]
    if len(drop) != len(rows) or any(len(c) != len(rows) * n_steps for c in comps):
        raise ipc.FrameError("partial arrays disagree with its rows and steps")
    return Partial(
        m["agg"], rows, [tuple(f) for f in m["first"]], drop.astype(bool),
        [c.reshape(len(rows), n_steps) for c in comps], list(m["warnings"]), list(m["infos"]),
        int(m["samples"]), frame.arrays[len(frame.arrays) - n_sigs :], int(m["probe"]),
    )


# --- the worker's side ---------------------------------------------------------


class EvalService:
    """Runs EVAL requests of one worker; CANCEL stops one by request id."""

    def __init__(
        self, shard: Any, threads: int = 1, share: float = 1.0, busy: Callable[[], bool] = lambda: False
    ) -> None:
        self._shard = shard
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="eval",
                                        initializer=lower_thread_priority)
        self._offload = Offload(self._pool, share, busy, lanes=threads)
        self.running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    def start(self, req: Frame, writer: asyncio.StreamWriter, cancels: dict[int, threading.Event]) -> None:
        """Answer req on writer when done; cancels[req_id] stops it early."""
        cancel = threading.Event()
        cancels[req.req_id] = cancel
        task = asyncio.get_running_loop().create_task(self._run(req, writer, cancels, cancel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, req: Frame, writer: asyncio.StreamWriter, cancels: dict[int, threading.Event],
        cancel: threading.Event,
    ) -> None:
        self.running += 1
        try:
            slices = ShardSlices(self._shard, cancel, self._offload.lanes).slices
            asked = parse_eval(req)
            p = await evaluate_partial(asked, slices, self._offload, cancel)
            resp = partial_response(req.req_id, p, asked.with_first)
        except AthensError as e:
            if cancel.is_set():
                log.info("evaluation canceled", extra=kv(req=req.req_id))
            resp = ipc.error_response(req.req_id, e.error_type, str(e))
        except ipc.FrameError as e:
            resp = ipc.error_response(req.req_id, "bad_data", str(e))
        except Exception as e:  # a bug must not take the worker down
            log.exception("evaluation failed", extra=kv(op="EVAL"))
            resp = ipc.error_response(req.req_id, "internal", f"{type(e).__name__}: {e}")
        finally:
            self.running -= 1
            cancels.pop(req.req_id, None)
        if not writer.is_closing():
            writer.writelines(ipc.encode_frame(resp))
        if self.running == 0:  # after the answer is on its way
            self._shard.release_read_pages()

    @staticmethod
    def cancel(req: Frame, cancels: dict[int, threading.Event]) -> Frame:
        ev = cancels.get(int(req.meta.get("id", -1)))
        if ev is not None:
            ev.set()
        return Frame(ipc.Op.OK, req.req_id, {"found": ev is not None})

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def warm_up() -> None:
    """Compile (or load from the cache) what evaluating a pushed-down query
    runs, at worker start: the engine's kernels (reads warm with the head's)."""
    Engine.warm_up()
