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
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numba
import numpy as np

from athens.errors import AthensError, BadDataError, QueryCanceledError
from athens.log import kv
from athens.model.labels import Labels
from athens.model.matchers import Matcher
from athens.model.series import Series, SeriesSet
from athens.query import ast
from athens.query.engine import Engine, Evaluator, lower_thread_priority, parse_shared
from athens.query.planner import (
    Partial,
    PartialRequest,
    node_at,
    partial_of,
    pushable,
    pushable_series,
    pushed_argument,
    series_partial,
)
from athens.query.values import StringValue, VectorValue
from athens.shards import ipc
from athens.shards.head import PendingRead
from athens.shards.ipc import Frame

log = logging.getLogger("athens.worker")

Select = Callable[[Sequence[Matcher], int, int], Sequence[Series]]
# Where a partial's series come from: the selector's series in label order,
# a slice of them at a time.
Slices = Callable[[Sequence[Matcher], int, int], AsyncIterator[SeriesSet]]


def find_node(req: PartialRequest) -> ast.Expr:
    """The pushed-down node, from the query text (parsed once per text)."""
    node = node_at(parse_shared(req.text), req.node_index)
    if not (pushable(node) or pushable_series(node)):
        raise BadDataError(f"node {req.node_index} of the query cannot be pushed down")
    return node


def evaluator(req: PartialRequest) -> Evaluator:
    engine = Engine(
        lookback_delta_ms=req.lookback_ms, max_samples=req.max_samples,
        timeout_s=req.timeout_s, max_bytes=req.max_bytes, pushdown=False,
    )
    return Evaluator(engine, req.text, req.start, req.end, req.step)


class Offload:
    """Runs a query's shard work: pieces of at most INLINE_POINTS inline on
    the event loop (handing them to a thread and back costs more than they
    do), the rest on `pool`, the low-priority evaluation thread.

    While appends queue up (`busy()`), offloaded work is paced to `share`
    of one CPU: after a piece that took t seconds of thread CPU, the next one
    starts t * (1 - share) / share later. A low priority alone does not keep
    queries from slowing ingest: whenever the loop waits (for the router,
    the WAL) the query thread runs, and on a hyperthreaded CPU (this
    project's bench machine) it then slows the loop on the sibling.
    """

    def __init__(
        self, pool: Executor | None = None, share: float = 1.0, busy: Callable[[], bool] = lambda: False
    ) -> None:
        self.pool = pool
        self.share = share
        self.busy = busy
        self._free_at = 0.0  # monotonic time before which paced work waits

    async def __call__(self, size: int, fn: Callable[..., Any], *args: Any) -> Any:
        if self.pool is None or size <= INLINE_POINTS:
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
    dropped), read a slice of series at a time: the arrays stay
    cache-sized, appends run between slices, a consumer can drop each
    slice once evaluated, and a cancelled evaluation stops reading. The
    first slice has SELECT_SLICE series; later ones as many as decode about
    READ_SAMPLES samples at the rate seen so far (an instant query reads a
    few chunks per series, a day-long range thousands of samples).

    The event loop only plans each slice's read (Shard.plan_read); decoding
    and grouping, most of a read's work, are offloaded (Offload: to the
    low-priority evaluation thread, the kernels release the GIL), so appends
    on the loop are not held up by reads.
    """

    def __init__(self, shard: Any, cancel: threading.Event | None = None, offload: Offload | None = None) -> None:
        self.shard = shard
        self.cancel = cancel
        self.offload = offload or Offload()

    async def slices(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> AsyncIterator[SeriesSet]:
        shard = self.shard
        ids = shard._ids_in_range(matchers, mint, maxt)
        if len(ids) == 0:
            return
        rank_of = shard.label_rank()
        ids = ids[np.argsort(rank_of[ids], kind="stable")]
        labels = shard.index.labels
        lo, size, series_read, samples_read = 0, SELECT_SLICE, 0, 0
        while lo < len(ids):
            await asyncio.sleep(0)
            if self.cancel is not None and self.cancel.is_set():
                raise QueryCanceledError("query was canceled while reading series")
            sub = np.sort(ids[lo : lo + size])
            lo += len(sub)
            pending = shard.plan_read(sub, mint, maxt)
            series_read += len(sub)
            samples_read += pending.samples
            want = min(READ_SAMPLES, SLICE_SAMPLES) * series_read // max(samples_read, 1)
            size = min(max(want, SELECT_SLICE), MAX_SELECT_SLICE)
            if pending.samples == 0:
                continue
            got = await self.offload(pending.samples, _decode_slice, pending, sub, rank_of[sub], labels, mint, maxt)
            if got is not None:
                yield got


def _decode_slice(
    pending: PendingRead, sub: np.ndarray, ranks: np.ndarray, labels: Sequence[Labels], mint: int, maxt: int
) -> SeriesSet | None:
    """The series `sub` (ids, sorted; `ranks` their label ranks) of a planned
    read as a SeriesSet in label order; None if no sample is in range."""
    pieces = pending.decode()
    # Dense local keys in label order; compiled passes over the pieces as
    # they are (no concatenation, no filtered copies).
    local = np.zeros(int(sub[-1]) + 1, np.int64)  # id -> position in label order
    local[sub] = np.argsort(np.argsort(ranks, kind="stable"), kind="stable")
    t2, v2, counts = group_series(pieces, local, len(sub), mint, maxt)
    if len(t2) == 0:
        return None
    has = counts > 0
    by_rank = sub[np.argsort(local[sub], kind="stable")][has]
    offsets = np.zeros(len(by_rank) + 1, np.int64)
    np.cumsum(counts[has], out=offsets[1:])
    return SeriesSet([labels[i] for i in by_rank.tolist()], t2, v2, offsets)


def group_series(
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]], local: np.ndarray, n: int, mint: int, maxt: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The samples in [mint, maxt] of pieces (series id, ts, values), grouped
    by local[series id] (0 <= key < n), each group sorted by time with
    duplicate timestamps dropped (the first in piece order, i.e. the oldest
    source, wins, as in Shard.select); returns ts, values and group sizes."""
    counts = np.zeros(n + 1, np.int64)
    for sid, ts, _ in pieces:
        k_count_keys(sid, ts, local, mint, maxt, counts)
    np.cumsum(counts, out=counts)
    start = counts.copy()
    out_t = np.empty(int(counts[n]), np.int64)
    out_v = np.empty(int(counts[n]), np.float64)
    for sid, ts, vals in pieces:
        k_scatter_keys(sid, ts, vals, local, mint, maxt, counts, out_t, out_v)
    return k_order_groups(out_t, out_v, start, n)


@numba.njit(cache=True, nogil=True)
def k_count_keys(sid, ts, local, mint, maxt, counts):  # pragma: no cover - jitted
    """counts[local[sid[i]] + 1] += 1 for every sample i in [mint, maxt]
    (a run of one series' samples at a time: pieces come grouped by series)."""
    i = 0
    n = sid.shape[0]
    while i < n:
        s = sid[i]
        c = 0
        while i < n and sid[i] == s:
            t = ts[i]
            c += (t >= mint) & (t <= maxt)
            i += 1
        counts[local[s] + 1] += c


@numba.njit(cache=True, nogil=True)
def k_scatter_keys(sid, ts, vals, local, mint, maxt, pos, out_t, out_v):  # pragma: no cover - jitted
    """Each sample in [mint, maxt] to the next free place of its key (pos),
    a run of one series' samples at a time."""
    i = 0
    n = sid.shape[0]
    while i < n:
        s = sid[i]
        k = local[s]
        j = pos[k]
        while i < n and sid[i] == s:
            t = ts[i]
            if t >= mint and t <= maxt:
                out_t[j] = t
                out_v[j] = vals[i]
                j += 1
            i += 1
        pos[k] = j


@numba.njit(cache=True, nogil=True)
def k_order_groups(out_t, out_v, start, n):  # pragma: no cover - jitted
    """Sort each group start[k]:start[k+1] by time (stable), drop repeated
    timestamps, and pack the groups; returns ts, values and group sizes."""
    sizes = np.zeros(n, np.int64)
    w = 0
    for k in range(n):
        a, b = start[k], start[k + 1]
        ordered = True
        for i in range(a + 1, b):
            if out_t[i] <= out_t[i - 1]:
                ordered = False
                break
        if not ordered:
            order = np.argsort(out_t[a:b], kind="mergesort")
            seg_t = out_t[a:b][order]
            seg_v = out_v[a:b][order]
            m = 0
            for i in range(b - a):
                if m > 0 and seg_t[i] == out_t[w + m - 1]:
                    continue
                out_t[w + m] = seg_t[i]
                out_v[w + m] = seg_v[i]
                m += 1
            sizes[k] = m
            w += m
            continue
        if w != a:  # an earlier group shrank: move this one down
            for i in range(a, b):
                out_t[w + i - a] = out_t[i]
                out_v[w + i - a] = out_v[i]
        w += b - a
        sizes[k] = b - a
    return out_t[:w], out_v[:w], sizes


# Slices of series read by ShardSlices: the first and the smallest slice
# (series), the largest, and the samples a slice should decode. 64 series
# per slice throughout made reading two thirds of a pushed-down query's time
# (per-call overhead in the segment reads); 256k samples decode in ~2 ms.
SELECT_SLICE = 64
MAX_SELECT_SLICE = 4096
READ_SAMPLES = 1 << 18

# Bounds of one evaluation slice (at least one series): series x steps, and
# raw samples read for it. Cancellation and the deadline are checked between
# slices; on a worker a query holds one slice of raw samples at a time.
CHUNK_POINTS = 250_000
SLICE_SAMPLES = 4_000_000
# Evaluations of at most this many series x steps (or raw samples), and reads
# of at most this many samples, run on the event loop instead of the
# evaluation thread.
INLINE_POINTS = 2_000


def pre_aggregate(ev: Evaluator, node: ast.Expr, vec: VectorValue, ts: np.ndarray) -> Partial:
    """The shard's partial of the pushed node, given its argument evaluated
    at ts (a series-local node is its own argument)."""
    if isinstance(node, ast.AggregateExpr):
        param: object = None
        if node.param is not None:
            pv = ev.eval(node.param, ts)
            param = pv.value if isinstance(pv, StringValue) else pv
        ev.check_time()
        p = partial_of(node, vec, param, ts)
    else:
        p = series_partial(vec)
    p.warnings = list(ev.warnings)
    p.infos = list(ev.infos)
    p.samples = ev.fetched_samples
    return p


def concat_vectors(parts: list[VectorValue]) -> VectorValue:
    """Row-wise concatenation (slices of one argument, in order)."""
    if len(parts) == 1:
        return parts[0]
    return VectorValue(
        [lb for p in parts for lb in p.labels],
        np.concatenate([p.values for p in parts]),
        np.concatenate([p.present for p in parts]),
        np.concatenate([p.drop_name for p in parts]),
    )


def whole(select: Select) -> Slices:
    """A synchronous select (its answer sorted by labels, as Querier.select's)
    as a slice source of one slice (in-process shards)."""

    async def slices(matchers: Sequence[Matcher], mint: int, maxt: int) -> AsyncIterator[SeriesSet]:
        await asyncio.sleep(0)  # let queued appends run first
        yield SeriesSet.of(select(matchers, mint, maxt))

    return slices


async def evaluate_partial(
    req: PartialRequest, slices: Slices, offload: Offload | None = None, cancel: threading.Event | None = None
) -> Partial:
    """The shard's partial, streamed: the selector's series come slice by
    slice from `slices` (on the event loop, between appends) and are
    evaluated a bounded slice at a time (by `offload`, default inline),
    so a query holds one slice of raw samples however many series and days
    it covers. The argument is series-local (planner.series_local: one
    selector, each output series from one input series), so slices can be
    evaluated independently and concatenated. `cancel` stops it between
    slices."""
    node = find_node(req)
    arg = pushed_argument(node)
    ev = evaluator(req)
    if cancel is not None:
        ev.cancel = cancel
    ts = req.ts
    ((key, vs, mint, maxt),) = ev.selections(arg, ts)
    run = offload or Offload()
    per_slice = max(1, CHUNK_POINTS // max(1, len(ts)))
    parts: list[VectorValue] = []
    pending: list[SeriesSet] = []
    n_series = n_pending = 0

    async def evaluate_pending() -> None:
        nonlocal pending, n_series, n_pending
        raw = 16 * n_pending + 200 * n_series
        ev.check_bytes(raw)
        got = await run(n_pending, SeriesSet.concat, pending)
        for lo in range(0, max(len(got), 1), per_slice):
            ev.check_time()
            part = ev.data[key] = got[lo : lo + per_slice]
            size = max(len(part) * len(ts), len(part.ts))
            parts.append(await run(size, ev.eval_vector, arg, ts))
        ev.data[key] = pending = []
        ev.held_bytes -= raw  # the slice's raw samples are dropped
        n_series = n_pending = 0

    async for got in slices(list(vs.matchers), mint, maxt):
        pending.append(got)
        n = len(got.ts)
        n_series += len(got)
        n_pending += n
        ev.fetched_samples += n
        if n_series >= per_slice or n_pending >= SLICE_SAMPLES:
            await evaluate_pending()
    if pending or not parts:
        await evaluate_pending()
    rows = sum(len(p.labels) for p in parts)
    return await run(rows * len(ts), lambda: pre_aggregate(ev, node, concat_vectors(parts), ts))


# --- frames ------------------------------------------------------------------


def eval_request(req_id: int, req: PartialRequest) -> Frame:
    return Frame(ipc.Op.EVAL, req_id, req.to_meta(), [np.asarray(req.ts, np.int64)])


def parse_eval(frame: Frame) -> PartialRequest:
    if len(frame.arrays) != 1:
        raise ipc.FrameError("EVAL carries exactly one array (the steps)")
    return PartialRequest.from_meta(frame.meta, frame.arrays[0])


def partial_response(req_id: int, p: Partial) -> Frame:
    """rows/first as flat label lists; drop flags and each component
    (float64[rows * steps], row-major) as raw arrays."""
    arrays = [np.asarray(p.drop, np.uint8)] + [np.ascontiguousarray(a, np.float64).ravel() for a in p.arrays]
    meta = {
        "agg": p.op, "rows": [lb.flat() for lb in p.rows],
        "first": p.first,
        "warnings": p.warnings, "infos": p.infos, "samples": p.samples,
    }
    return Frame(ipc.Op.OK, req_id, meta, arrays)


def parse_partial(frame: Frame, n_steps: int) -> Partial:
    m = frame.meta
    rows = [ipc.unflat_labels(f) for f in m["rows"]]
    drop, *comps = frame.arrays
    if len(drop) != len(rows) or any(len(c) != len(rows) * n_steps for c in comps):
        raise ipc.FrameError("partial arrays disagree with its rows and steps")
    return Partial(
        m["agg"], rows, [tuple(f) for f in m["first"]], drop.astype(bool),
        [c.reshape(len(rows), n_steps) for c in comps], list(m["warnings"]), list(m["infos"]),
        int(m["samples"]),
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
        self._offload = Offload(self._pool, share, busy)
        self.running = 0

    def start(self, req: Frame, writer: asyncio.StreamWriter, cancels: dict[int, threading.Event]) -> None:
        """Answer req on writer when done; cancels[req_id] stops it early."""
        cancel = threading.Event()
        cancels[req.req_id] = cancel
        asyncio.get_running_loop().create_task(self._run(req, writer, cancels, cancel))

    async def _run(
        self, req: Frame, writer: asyncio.StreamWriter, cancels: dict[int, threading.Event],
        cancel: threading.Event,
    ) -> None:
        self.running += 1
        try:
            slices = ShardSlices(self._shard, cancel, self._offload).slices
            p = await evaluate_partial(parse_eval(req), slices, self._offload, cancel)
            resp = partial_response(req.req_id, p)
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
    runs, at worker start: the engine's kernels and the grouping pass."""
    Engine.warm_up()
    piece = (np.array([1, 0, 1], np.int64), np.array([0, 0, -1], np.int64), np.ones(3))
    group_series([piece, piece], np.array([1, 0], np.int64), 2, -1, 0)
