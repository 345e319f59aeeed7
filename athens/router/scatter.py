"""Scatter requests to shard workers and gather their answers.

Which worker owns a series is athens.model.placement's. Reads go to every
worker and series with equal labels are merged by timestamp, which is also
what a replicated cluster will need when two replicas return the same
series.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import operator
import os
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from athens.errors import AthensError, BadDataError, OverloadedError, UnavailableError
from athens.kernels import kernel
from athens.log import kv
from athens.model.batch import RefSpace, WriteBatch
from athens.model.exemplars import ExemplarBatch
from athens.model.labels import Labels, canonical_blocks
from athens.model.matchers import Matcher
from athens.model.placement import WITHOUT_NAME
from athens.model.series import Series, SeriesSet
from athens.shards import ipc
from athens.shards.ipc import Frame, Op

log = logging.getLogger("athens.router")

# How long a request waits for a (re)starting worker before answering 503.
CONNECT_TIMEOUT_S = 5.0
# How long a write waits for a worker's WAL before answering 503 (senders
# retry; a late commit makes the retry a harmless duplicate). Below
# Prometheus' default remote_timeout of 30 s.
APPEND_TIMEOUT_S = 25.0
# Samples in flight to one worker past which writes are refused with 503:
# the worker is behind, and queueing more in the router only grows memory.
MAX_INFLIGHT_SAMPLES_PER_WORKER = 8_000_000


class WorkerError(AthensError):
    """A worker answered with an error; carries the worker's errorType (and
    the rest of its answer's meta)."""

    def __init__(self, error_type: str, message: str, meta: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.meta = meta or {}


@dataclass(frozen=True, slots=True)
class Sent:
    """A request sent by ShardClient.send, its answer not read yet."""

    req_id: int
    future: asyncio.Future[Frame]
    deadline: float | None  # loop time by which the answer must be there (None: no limit)
    wait: float | None


class ShardClient:
    """One multiplexed connection to a worker; reconnects after it restarts."""

    def __init__(self, index: int, path: Path) -> None:
        self.index = index
        self.path = path
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # Refs this connection has taught the worker (APPEND_REFS); cleared
        # on every new connection and whenever the router's RefSpace changes.
        self._sent = np.zeros(0, np.bool_)
        self._sent_space: RefSpace | None = None
        self.inflight_samples = 0
        self.cpus: frozenset[int] = frozenset()  # the worker's CPU affinity (send_order)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def _connect(self, timeout: float) -> asyncio.StreamWriter:
        async with self._lock:
            if self.connected:
                assert self._writer is not None
                return self._writer
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            delay = 0.05
            while True:
                try:
                    reader, writer = await asyncio.open_unix_connection(str(self.path))
                    break
                except OSError as e:
                    if loop.time() + delay > deadline:
                        raise UnavailableError(
                            f"shard worker {self.index} is not reachable: {e.strerror or e}"
                        ) from None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
            self._writer = writer
            self.cpus = _peer_cpus(writer)
            self._sent_space = None  # a new connection knows no refs
            self._reader_task = asyncio.create_task(self._read_loop(reader, writer))
            log.info("connected to worker", extra=kv(worker=self.index))
            return writer

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        err: str = "connection closed"
        try:
            while True:
                frame = await ipc.read_frame(reader)
                fut = self._pending.pop(frame.req_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                # The answer is its waiter's: held here while the next one is
                # awaited, a query's partials or raw series (7 MiB of
                # `medium`'s `mean_latency_on` range) outlived it.
                del frame, fut
        except (asyncio.IncompleteReadError, ConnectionError, ipc.FrameError) as e:
            err = f"{type(e).__name__}: {e}"
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            pending, self._pending = self._pending, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(
                        UnavailableError(f"shard worker {self.index} connection lost ({err})")
                    )

    async def request(
        self, make: Any, *args: Any, timeout: float = CONNECT_TIMEOUT_S, wait: float | None = None
    ) -> Frame:
        """Send make(req_id, *args) and wait (at most `wait` seconds) for the response frame."""
        return await self.answer(await self.send(make, *args, timeout=timeout, wait=wait))

    async def send(
        self, make: Any, *args: Any, timeout: float = CONNECT_TIMEOUT_S, wait: float | None = None
    ) -> Sent:
        """The first half of request(): send make(req_id, *args) now, take
        the answer with answer(). A fan-out sends to every worker, then
        awaits the answers in turn, with no task per worker."""
        writer = await self._connect(timeout)
        req_id = next(self._ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Frame] = loop.create_future()
        self._pending[req_id] = fut
        try:
            writer.writelines(ipc.encode_frame(make(req_id, *args)))
            await writer.drain()
        except ConnectionError as e:
            self._pending.pop(req_id, None)
            raise UnavailableError(f"shard worker {self.index}: {e}") from None
        return Sent(req_id, fut, None if wait is None else loop.time() + wait, wait)

    async def answer(self, sent: Sent) -> Frame:
        """The answer to a send(), by its deadline if it has one (a query's
        sends have none: the query's own deadline bounds them)."""
        try:
            if sent.deadline is None:
                resp = await sent.future
            else:
                async with asyncio.timeout_at(sent.deadline):
                    resp = await sent.future
        except TimeoutError:
            raise UnavailableError(f"shard worker {self.index} did not answer within {sent.wait:g} s") from None
        finally:
            self._pending.pop(sent.req_id, None)
        if resp.op is Op.ERROR:
            raise WorkerError(resp.meta.get("type", "internal"), resp.meta.get("message", ""), resp.meta)
        return resp

    def forget(self, sent: Sent) -> None:
        """Drop a send() whose answer will not be read."""
        self._pending.pop(sent.req_id, None)
        if sent.future.done() and not sent.future.cancelled():
            sent.future.exception()  # read: a lost connection's error is not "never retrieved"
        sent.future.cancel()

    def refs_to_define(self, space: RefSpace, refs: np.ndarray) -> np.ndarray:
        """Positions in refs of those this connection has not taught yet; marks
        them taught. Call only while building the frame that carries them."""
        if self._sent_space is not space:
            self._sent_space = space
            self._sent = np.zeros(max(1024, len(self._sent)), np.bool_)
        if len(refs):
            top = int(refs.max()) + 1
            if top > len(self._sent):
                self._sent = np.concatenate((self._sent, np.zeros(max(top, 2 * len(self._sent)) - len(self._sent), np.bool_)))
        new = np.flatnonzero(~self._sent[refs])
        self._sent[refs[new]] = True
        return new

    def refs_dropped(self, space: RefSpace, refs: np.ndarray) -> None:
        """The worker no longer holds these refs (ipc.REFS_UNKNOWN): the
        next frame naming them teaches them again."""
        if self._sent_space is space:
            refs = refs[refs < len(self._sent)]
            self._sent[refs] = False

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


def _simple(op: Op, meta: dict[str, Any]) -> Any:
    return lambda req_id: Frame(op, req_id, meta)


@kernel(cache=True)
def partition(own, series_idx, ts, values, n):  # pragma: no cover - jitted
    """A batch cut into n workers' parts in one pass, each part in the batch's order.

    own[s] is series s's worker, series_idx[i] sample i's series. Returns
    (s_off, order, p_off, idx, ts, values): worker w's series are
    order[s_off[w]:s_off[w+1]] (indices into the batch's series), its samples
    [p_off[w]:p_off[w+1]] of idx (their series' position among w's series),
    ts and values. What per-worker masks compute, without a pass per worker.
    """
    k = own.shape[0]
    m = series_idx.shape[0]
    s_off = np.zeros(n + 1, np.int64)
    for s in range(k):
        s_off[own[s] + 1] += 1
    for w in range(n):
        s_off[w + 1] += s_off[w]
    order = np.empty(k, np.int64)
    local = np.empty(k, np.int32)
    at = s_off[:n].copy()
    for s in range(k):
        w = own[s]
        order[at[w]] = s
        local[s] = at[w] - s_off[w]
        at[w] += 1
    p_off = np.zeros(n + 1, np.int64)
    for i in range(m):
        p_off[own[series_idx[i]] + 1] += 1
    for w in range(n):
        p_off[w + 1] += p_off[w]
    idx = np.empty(m, np.int32)
    ts_out = np.empty(m, np.int64)
    values_out = np.empty(m, np.float64)
    at = p_off[:n].copy()
    for i in range(m):
        s = series_idx[i]
        j = at[own[s]]
        idx[j] = local[s]
        ts_out[j] = ts[i]
        values_out[j] = values[i]
        at[own[s]] += 1
    return s_off, order, p_off, idx, ts_out, values_out


def warm_up() -> None:
    """Compile (or load) partition for the types a compiled batch has."""
    own = np.array([1, 0], np.int64)
    partition(own, np.array([0, 1, 1], np.int32), np.zeros(3, np.int64), np.zeros(3), 2)


class ShardPool:
    """All workers of this node: routing of writes, fan-out of reads."""

    def __init__(self, sockets: Sequence[Path], placement: str = WITHOUT_NAME) -> None:
        self.clients = [ShardClient(i, p) for i, p in enumerate(sockets)]
        self.placement = placement

    @property
    def size(self) -> int:
        return len(self.clients)

    async def ping_all(self, timeout: float = 0.2) -> bool:
        try:
            await asyncio.gather(
                *(c.request(_simple(Op.PING, {}), timeout=timeout) for c in self.clients)
            )
        except AthensError:
            return False
        return True

    async def append(self, batch: WriteBatch) -> dict[str, int]:
        """Route each series to its owner; returns summed per-reason rejection counts.

        Returns only after every owning worker acknowledged (samples in its WAL).
        A batch from the compiled decoder (batch.refs set) goes as one
        APPEND_REFS frame per worker, with labels only for refs the
        connection has not seen; any other batch as APPEND with labels.
        """
        own = batch.owners(self.placement, self.size)
        jobs = []
        if batch.refs is not None and self.size > 1:
            # A ref batch is split in one compiled pass, without per-worker
            # masks or label lists.
            s_off, order, p_off, idx, ts, values = partition(
                own, batch.series_idx, batch.ts, batch.values, self.size
            )
            for i, client in enumerate(self.clients):
                a, b, c, d = s_off[i], s_off[i + 1], p_off[i], p_off[i + 1]
                if a < b:
                    jobs.append(self._append_one(client, batch, (order[a:b], idx[c:d], ts[c:d], values[c:d])))
        else:
            for i, client in enumerate(self.clients):
                mask = own == i
                if not mask.any():
                    continue
                if mask.all():
                    jobs.append(self._append_one(client, batch, None))
                else:
                    jobs.append(self._append_one(client, batch.select_series(mask), None))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        rejected: dict[str, int] = {}
        first_error: BaseException | None = None
        for r in results:
            if isinstance(r, BaseException):
                first_error = first_error or r
                continue
            for reason, n in r.meta.get("rejected", {}).items():
                rejected[reason] = rejected.get(reason, 0) + n
        if first_error is not None:
            raise first_error
        return rejected

    async def append_exemplars(self, ex: ExemplarBatch) -> tuple[int, dict[str, int]]:
        """Each series' exemplars to its owner (after its samples: the
        series must be known there); (written, rejected per reason)."""
        own = ex.owners(self.placement, self.size)
        jobs = []
        for i, client in enumerate(self.clients):
            part = ex.of_series(own == i)
            if len(part):
                meta = {"series": [lb.flat() for lb in part.series], "labels": [lb.flat() for lb in part.labels]}
                arrays = [part.series_idx, part.ts, part.values, part.identity_hashes()]
                jobs.append(client.request(lambda rid, m=meta, a=arrays: Frame(Op.APPEND_EXEMPLARS, rid, m, a)))
        written, rejected = 0, {}
        for f in await asyncio.gather(*jobs):
            written += f.meta["written"]
            for reason, n in f.meta["rejected"].items():
                rejected[reason] = rejected.get(reason, 0) + n
        return written, rejected

    async def select_exemplars(
        self, matcher_sets: Sequence[Sequence[Matcher]], mint: int, maxt: int
    ) -> list[tuple[Labels, list[tuple[Labels, int, float]]]]:
        """(series labels, exemplars) of the series any matcher set selects,
        from every worker, sorted by series labels (as Prometheus sorts them)."""
        meta = {"matcher_sets": [[m.to_tuple() for m in ms] for ms in matcher_sets], "mint": mint, "maxt": maxt}
        out = []
        for f in await self._fan_out(_simple(Op.EXEMPLARS, meta)):
            counts, ts, values = f.arrays
            held = list(zip(ipc.unflat_labels(f.meta["labels"]), ts.tolist(), values.tolist()))
            ends = np.cumsum(counts).tolist()
            starts = [0, *ends[:-1]]
            out.extend(zip(ipc.unflat_labels(f.meta["series"]), (held[a:b] for a, b in zip(starts, ends))))
        return sorted(out, key=lambda item: item[0])

    async def _append_one(
        self, client: ShardClient, batch: WriteBatch,
        part: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
    ) -> Frame:
        """Send one worker the whole batch (part None), or its part of a ref
        batch as partition() cut it: the series (indices into batch.series),
        the samples' series (indices into those), timestamps, values."""
        if part is None:
            keep = None
            refs, hashes, idx, ts, values = batch.refs, batch.hashes, batch.series_idx, batch.ts, batch.values
        else:
            keep, idx, ts, values = part
            assert batch.refs is not None  # parts are cut from ref batches only
            refs = batch.refs[keep]
            hashes = batch.hashes[keep]
        n = len(ts)
        if client.inflight_samples and client.inflight_samples + n > MAX_INFLIGHT_SAMPLES_PER_WORKER:
            raise OverloadedError(
                f"shard worker {client.index} is behind ({client.inflight_samples} samples in flight)"
            )
        client.inflight_samples += n
        try:
            if refs is None or batch.space is None:
                return await client.request(ipc.append_request, batch, wait=APPEND_TIMEOUT_S)
            space = batch.space

            def make(req_id: int) -> Frame:
                new = client.refs_to_define(space, refs)
                pos = new if keep is None else keep[new]
                return ipc.append_refs_request(
                    req_id, refs[new], hashes[new], canonical_blocks(batch.series, pos.tolist()),
                    refs, idx, ts, values,
                )

            try:
                return await client.request(make, wait=APPEND_TIMEOUT_S)
            except WorkerError as e:
                if e.error_type != ipc.REFS_UNKNOWN:
                    raise
                # The worker dropped refs of series it forgot (nothing of the
                # frame was applied): taught again from this request's labels.
                client.refs_dropped(space, np.asarray(e.meta.get("refs", []), np.int64))
                return await client.request(make, wait=APPEND_TIMEOUT_S)
        finally:
            client.inflight_samples -= n

    async def _fan_out(self, make: Any, *args: Any) -> list[Frame]:
        return await fan_out(self.clients, make, *args)

    async def select(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> SeriesSet:
        frames = await self._fan_out(ipc.select_request, list(matchers), mint, maxt)
        return merge_series([ipc.parse_series(f) for f in frames])

    async def label_names(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> list[str]:
        meta = {"matchers": [m.to_tuple() for m in matchers], "mint": mint, "maxt": maxt}
        frames = await self._fan_out(_simple(Op.LABEL_NAMES, meta))
        return sorted({v for f in frames for v in f.meta["values"]})

    async def label_values(
        self, name: str, matchers: Sequence[Matcher], mint: int, maxt: int
    ) -> list[str]:
        meta = {"name": name, "matchers": [m.to_tuple() for m in matchers], "mint": mint, "maxt": maxt}
        frames = await self._fan_out(_simple(Op.LABEL_VALUES, meta))
        return sorted({v for f in frames for v in f.meta["values"]})

    async def series_labels(
        self, matchers: Sequence[Matcher], mint: int, maxt: int, limit: int = 0
    ) -> tuple[list[tuple[str, ...]], bool]:
        """Sorted label sets (flat: names and values interleaved, which sorts
        like Labels) of matching series with data in range, no samples.

        With limit > 0 at most `limit` are returned; the flag says whether
        any matching series were left out.
        """
        meta = {"matchers": [m.to_tuple() for m in matchers], "mint": mint, "maxt": maxt,
                "limit": limit}
        frames = await self._fan_out(_simple(Op.SERIES, meta))
        # Each answer is sorted: sorting their concatenation merges the runs
        # in linear time, and flat tuples compare at one level, not two.
        found = list(dict.fromkeys(sorted(tuple(flat) for f in frames for flat in f.meta["labels"])))
        truncated = any(f.meta.get("truncated") for f in frames)
        if limit > 0 and len(found) > limit:
            found, truncated = found[:limit], True
        return found, truncated

    async def postings_stats(self) -> list[dict[str, Any]]:
        """Each worker's per label pair series counts (athens/shards/reads.py)."""
        return [f.meta["stats"] for f in await self._fan_out(_simple(Op.POSTINGS_STATS, {}))]

    async def stats(self) -> list[dict[str, Any]]:
        return [f.meta["stats"] for f in await self._fan_out(_simple(Op.STATS, {}))]

    async def flush(self) -> None:
        await self._fan_out(_simple(Op.FLUSH, {}))

    async def delete_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> int:
        """Delete [mint, maxt] of the series the matchers select on every
        worker (Shard.delete_series); how many series had samples there."""
        meta = {"matchers": [m.to_tuple() for m in matchers], "mint": mint, "maxt": maxt}
        frames = await self._fan_out(_simple(Op.DELETE_SERIES, meta))
        return sum(f.meta["series"] for f in frames)

    async def clean_tombstones(self) -> None:
        """Deleted data removed from every worker's head and files (Sealer.clean_tombstones)."""
        await self._fan_out(_simple(Op.CLEAN_TOMBSTONES, {}))

    async def snapshot(self, root: Path, with_head: bool) -> None:
        """Every worker's shard directory under root (Shard.snapshot)."""
        await self._fan_out(_simple(Op.SNAPSHOT, {"dir": str(root), "with_head": with_head}))

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


def merge_series(answers: Sequence[SeriesSet]) -> SeriesSet:
    """The answers (each sorted by labels) as one set sorted by labels;
    series with equal label sets are merged (timestamp union, first value
    wins).

    The stable sort of the concatenated answers only merges sorted runs, and
    brings equal label sets together in input order; the samples then move
    with one gather. Equal label sets (replicas of a series) are rare: only
    then are series handled one by one.
    """
    found = [a for a in answers if len(a.labels)]
    if len(found) <= 1:  # one shard had them all (a light query's usual answer)
        return found[0] if found else SeriesSet.of([])
    both = SeriesSet.concat(found)
    keys = [lb.sort_key() for lb in both.labels]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    ordered = both.take(order)
    keys = [keys[i] for i in order]
    if not any(map(operator.eq, keys, keys[1:])):
        return ordered
    out: list[Series] = []
    parts: list[Series] = []
    for s in ordered:
        if parts and s.labels != parts[0].labels:
            out.append(_union(parts))
            parts = []
        parts.append(s)
    out.append(_union(parts))
    return SeriesSet.of(out)


def _union(parts: list[Series]) -> Series:
    if len(parts) == 1:
        return parts[0]
    ts = np.concatenate([p.ts for p in parts])
    vals = np.concatenate([p.values for p in parts])
    order = np.argsort(ts, kind="stable")
    ts, vals = ts[order], vals[order]
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = ts[1:] != ts[:-1]
    return Series(parts[0].labels, ts[keep], vals[keep])


class ScatterQuerier:
    """The engine's Querier over all workers of this node."""

    def __init__(self, pool: ShardPool) -> None:
        self.pool = pool
        # Series equal but for their name share a worker (athens.query.planner).
        self.colocated = pool.placement == WITHOUT_NAME
        # CANCELs on their way to workers (the loop keeps only weak references).
        self._cancels: set[asyncio.Future[None]] = set()

    async def select(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> SeriesSet:
        try:
            return await self.pool.select(matchers, mint, maxt)
        except WorkerError as e:
            if e.error_type == "bad_data":
                raise BadDataError(str(e)) from None
            raise

    async def evaluate_partials(self, req: Any) -> list[Any]:
        """Every worker's partial of a pushed-down aggregation (a
        athens.query.planner.PartialRequest; see athens/shards/evaluate.py).

        If this is cancelled (client gone, query timeout) or one worker
        fails, the other workers get a CANCEL so they stop evaluating too.
        """
        from athens.shards import evaluate  # noqa: PLC0415 - keeps the engine out of ingest-only imports

        def on_failure(client: ShardClient, sent: Sent) -> None:
            if client.connected:
                task = asyncio.ensure_future(_send_cancel(client, sent.req_id))
                self._cancels.add(task)
                task.add_done_callback(self._cancels.discard)

        # Only several shards' partials are ordered by their first series.
        req = replace(req, with_first=len(self.pool.clients) > 1)
        try:
            frames = await fan_out(self.pool.clients, evaluate.eval_request, req, on_failure=on_failure)
        except WorkerError as e:
            raise _query_error(e) from None
        return [evaluate.parse_partial(f, len(req.ts)) for f in frames]


async def fan_out(
    clients: Sequence[ShardClient], make: Any, *args: Any,
    on_failure: Callable[[ShardClient, Sent], None] | None = None,
) -> list[Frame]:
    """make(req_id, *args) to every client, their answers in client order.

    Every request is sent (in send_order) before the first answer is
    awaited, so the workers work at once. If one fails (or this is
    cancelled), the answers not read yet are dropped, and on_failure is
    called for each of them (an EVAL's worker is told to stop).
    """
    order = send_order(clients)
    sent: dict[int, Sent] = {}
    answers: dict[int, Frame] = {}
    try:
        for i in order:
            sent[i] = await clients[i].send(make, *args)
        for i in order:
            answers[i] = await clients[i].answer(sent[i])
        return [answers[i] for i in range(len(clients))]
    except BaseException:
        for i, s in sorted(sent.items()):
            if i not in answers:
                clients[i].forget(s)
                if on_failure is not None:
                    on_failure(clients[i], s)
        raise


# glibc's; None elsewhere (then every fan-out goes in plain order).
_sched_getcpu = getattr(ctypes.CDLL(None), "sched_getcpu", None)


def send_order(clients: Sequence[ShardClient], cpu: int | None = None) -> list[int]:
    """Positions of `clients` in the order to send them one request each:
    workers pinned to the CPU this process is running on go last.

    Such a worker, woken by the request, may preempt this process on the
    spot (its CPU is ours) and run its part before the next request is
    written; sent last, it finds the others already at work. A small
    effect: `long`, the benchmark's 34 queries one after the other with 10
    ms idle before each request (AMD EPYC guest, 2 vCPUs), geometric mean
    0.94-0.98x; each request repeated back to back first, 1.03-1.07x
    (docs/benchmarks.md).
    """
    if cpu is None:
        cpu = _sched_getcpu() if _sched_getcpu is not None else -1
    return sorted(range(len(clients)), key=lambda i: cpu in clients[i].cpus)


def _peer_cpus(writer: asyncio.StreamWriter) -> frozenset[int]:
    """The CPUs the process at the other end of a unix socket may run on."""
    sock = writer.get_extra_info("socket")
    try:
        pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return frozenset(os.sched_getaffinity(pid))
    except (OSError, AttributeError):  # no such option (not Linux), peer gone
        return frozenset()


async def _send_cancel(client: ShardClient, req_id: int) -> None:
    try:
        await client.request(_simple(Op.CANCEL, {"id": req_id}), wait=CONNECT_TIMEOUT_S)
    except AthensError as e:
        log.info("cancel not delivered", extra=kv(worker=client.index, err=str(e)))


def _query_error(e: WorkerError) -> AthensError:
    """A worker's query error as the error class the API maps to its status."""
    from athens.errors import ExecutionError, QueryCanceledError, QueryTimeoutError  # noqa: PLC0415

    cls = {"bad_data": BadDataError, "execution": ExecutionError, "timeout": QueryTimeoutError,
           "canceled": QueryCanceledError}.get(e.error_type)
    return cls(str(e)) if cls is not None else e
