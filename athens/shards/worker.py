"""The shard worker process: one Shard behind a unix-socket frame server.

A worker opens (and replays) its shard before it binds its socket, so a
router that can connect knows the worker is ready. Appends are answered only
after Shard.append returned, i.e. after the samples are in the WAL; they go
through a bounded, group-committing queue (athens/shards/appendq.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from athens import heap, kernels
from athens.config import ServeConfig, byte_size, duration_ms
from athens.errors import AthensError
from athens.log import kv
from athens.shards import chunkenc, evaluate, head, ipc, tombstones
from athens.shards import index as indexmod
from athens.shards.appendq import AppendQueue
from athens.shards.evaluate import EvalService
from athens.shards.ipc import Frame, Op
from athens.shards import reads
from athens.shards.sealer import Sealer
from athens.shards.shard import Shard, ShardConfig

log = logging.getLogger("athens.worker")

HOUSEKEEPING_INTERVAL_S = 1.0
# What a query asks of a worker: its arrays are what the heap keeps for the
# next one (heap.QuietTrim).
QUERY_OPS = frozenset({Op.SELECT, Op.LABEL_NAMES, Op.LABEL_VALUES, Op.SERIES, Op.POSTINGS_STATS, Op.EVAL})


class WorkerServer:
    """Serves one shard to any number of router connections."""

    def __init__(
        self, shard: Shard, index: int, appends: AppendQueue | None = None, query_cpu_share: float = 1.0,
        query_threads: int = 1,
    ) -> None:
        self.shard = shard
        self.index = index
        self.appends = appends
        self.sealer = Sealer(shard)  # seals off the loop; housekeeping ticks it
        self.query_cpu_share = query_cpu_share
        self.query_threads = query_threads
        self._evals: EvalService | None = None
        # Every connection's ref table, to drop the refs of forgotten series.
        self._ref_tables: weakref.WeakSet[ipc.RefTable] = weakref.WeakSet()
        self._forgotten_seen = 0
        self.quiet = heap.QuietTrim()  # the free heap and segment pages given back once queries stop

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        refs = ipc.RefTable()  # this connection's series refs (APPEND_REFS)
        self._ref_tables.add(refs)
        evals: dict[int, threading.Event] = {}  # this connection's running EVALs
        try:
            while True:
                try:
                    req = await ipc.read_frame(reader)
                except asyncio.IncompleteReadError:
                    return
                await self._serve(req, refs, evals, writer)
                # Not held while the next request is awaited (an append's
                # samples; the answer to a select is _serve's).
                del req
        except (ConnectionError, ipc.FrameError) as e:
            log.warning("router connection closed", extra=kv(err=str(e)))
        finally:
            for cancel in evals.values():  # nobody is left to read the answers
                cancel.set()
            writer.close()

    async def _serve(
        self, req: Frame, refs: ipc.RefTable, evals: dict[int, threading.Event], writer: asyncio.StreamWriter
    ) -> None:
        """One request of a connection: answered here, or queued (appends,
        evaluations) to be answered when done."""
        if req.op in QUERY_OPS:
            self.quiet.query()
        if req.op is Op.EVAL:
            self.evaluator().start(req, writer, evals)
            return
        if req.op is Op.CANCEL:
            writer.writelines(ipc.encode_frame(EvalService.cancel(req, evals)))
            return
        if self.appends is not None and req.op in (Op.APPEND, Op.APPEND_REFS):
            self.quiet.appended()
            self._queue_append(req, refs, writer)
            return
        if self.appends is not None and req.op is Op.APPEND_EXEMPLARS:
            _answer_when_done(self.appends.submit_exemplars(*_exemplar_args(req)), req, writer)
            return
        writer.writelines(ipc.encode_frame(await self.dispatch(req)))
        if req.op is Op.SELECT and (self._evals is None or self._evals.running == 0):
            self.shard.release_read_pages()
        await writer.drain()

    def tick(self, now_ms: int) -> None:
        """Housekeeping (the sealer's: seals, retention, compaction), then
        the connections' refs of series it forgot are dropped."""
        self.sealer.tick(now_ms)
        if self.quiet.tick():
            self.shard.unmap_segments()
        forgotten = self.shard.index.forgotten
        if forgotten != self._forgotten_seen:
            self._forgotten_seen = forgotten
            dropped = sum(t.drop(self.shard.index.is_forgotten) for t in self._ref_tables)
            if dropped:
                log.info("dropped the refs of forgotten series", extra=kv(worker=self.index, refs=dropped))

    def evaluator(self) -> EvalService:
        """The service running pushed-down aggregations (EVAL/CANCEL)."""
        if self._evals is None:
            appends = self.appends
            self._evals = EvalService(self.shard, self.query_threads, share=self.query_cpu_share,
                                      busy=lambda: appends is not None and appends.busy())
        return self._evals

    def _queue_append(self, req: Frame, refs: ipc.RefTable, writer: asyncio.StreamWriter) -> None:
        """Queue an append; its answer is written when its group is committed."""
        assert self.appends is not None
        try:
            if req.op is Op.APPEND_REFS:
                fut = self.appends.submit(*refs.batch(req))
            else:
                fut = self.appends.submit(ipc.parse_append(req))
        except AthensError as e:
            writer.writelines(ipc.encode_frame(ipc.error_response(req.req_id, e.error_type, str(e))))
            return
        except ipc.RefsUnknownError as e:
            writer.writelines(ipc.encode_frame(
                ipc.error_response(req.req_id, ipc.REFS_UNKNOWN, str(e), refs=e.refs.tolist())))
            return
        _answer_when_done(fut, req, writer)

    async def dispatch(self, req: Frame) -> Frame:
        try:
            if req.op is Op.FLUSH:
                await self.sealer.flush()  # after a seal being written off the loop
                return Frame(Op.OK, req.req_id, {})
            if req.op is Op.SNAPSHOT:
                dest = Path(req.meta["dir"]) / self.shard.path.name
                await self.sealer.snapshot(dest, bool(req.meta["with_head"]))
                return Frame(Op.OK, req.req_id, {})
            if req.op is Op.CLEAN_TOMBSTONES:
                await self.sealer.clean_tombstones()
                return Frame(Op.OK, req.req_id, {})
            return self._dispatch(req)
        except AthensError as e:
            return ipc.error_response(req.req_id, e.error_type, str(e))
        except Exception as e:  # a bug must not take the worker down
            log.exception("request failed", extra=kv(op=req.op.name))
            return ipc.error_response(req.req_id, "internal", f"{type(e).__name__}: {e}")

    def _dispatch(self, req: Frame) -> Frame:
        shard = self.shard
        if req.op is Op.APPEND:
            res = shard.append(ipc.parse_append(req))
            return Frame(Op.OK, req.req_id, res.to_meta())
        if req.op is Op.SELECT:
            m = req.meta
            series = shard.select(ipc.parse_matchers(m), m["mint"], m["maxt"])
            return ipc.series_response(req.req_id, series)
        if req.op is Op.LABEL_NAMES:
            m = req.meta
            names = shard.label_names(ipc.parse_matchers(m), m["mint"], m["maxt"])
            return Frame(Op.OK, req.req_id, {"values": names})
        if req.op is Op.LABEL_VALUES:
            m = req.meta
            values = shard.label_values(m["name"], ipc.parse_matchers(m), m["mint"], m["maxt"])
            return Frame(Op.OK, req.req_id, {"values": values})
        if req.op is Op.STATS:
            stats = shard.stats()
            if self.appends is not None:  # group commit and series-cap counters
                c = self.appends.counters
                stats.update({f"append_queue_{k}": v for k, v in c.items()})
                if c["samples_rejected_series_limit"]:
                    stats["samples_rejected"] = {**stats.get("samples_rejected", {}),
                                                 "series_limit": c["samples_rejected_series_limit"]}
            return Frame(Op.OK, req.req_id, {"stats": stats})
        if req.op is Op.SERIES:
            m = req.meta
            found, truncated = reads.series_labels(
                shard, ipc.parse_matchers(m), m["mint"], m["maxt"], m.get("limit", 0)
            )
            return Frame(Op.OK, req.req_id, {"labels": [lb.flat() for lb in found],
                                              "truncated": truncated})
        if req.op is Op.DELETE_SERIES:
            m = req.meta
            n = shard.delete_series(ipc.parse_matchers(m), m["mint"], m["maxt"])
            return Frame(Op.OK, req.req_id, {"series": n})
        if req.op is Op.APPEND_EXEMPLARS:
            res = shard.append_exemplars(*_exemplar_args(req))
            return Frame(Op.OK, req.req_id, {"written": res.written, "rejected": res.rejected()})
        if req.op is Op.EXEMPLARS:
            m = req.meta
            found = shard.select_exemplars([ipc.parse_matchers({"matchers": ms}) for ms in m["matcher_sets"]],
                                           m["mint"], m["maxt"])
            held = [e for _, got in found for e in got]
            return Frame(Op.OK, req.req_id, {"series": [lb.flat() for lb, _ in found],
                                              "labels": [lb.flat() for lb, _, _ in held]}, [
                np.array([len(got) for _, got in found], np.int64),
                np.array([t for _, t, _ in held], np.int64), np.array([v for _, _, v in held], np.float64)])
        if req.op is Op.POSTINGS_STATS:
            return Frame(Op.OK, req.req_id, {"stats": reads.postings_stats(shard)})
        if req.op is Op.PING:
            return Frame(Op.OK, req.req_id, {"worker": self.index, "pid": os.getpid()})
        return ipc.error_response(req.req_id, "bad_data", f"unknown op {req.op}")


def _exemplar_args(req: Frame) -> tuple[Any, ...]:
    """Shard.append_exemplars' arguments from an APPEND_EXEMPLARS frame."""
    series_idx, ts, values, hashes = req.arrays
    return (ipc.unflat_labels(req.meta["series"]), series_idx, ipc.unflat_labels(req.meta["labels"]), ts, values,
            hashes)


def _answer_when_done(fut: asyncio.Future[dict[str, Any]], req: Frame, writer: asyncio.StreamWriter) -> None:
    """Write req's answer once fut (an append queue's) is done."""

    def answer(f: asyncio.Future[dict[str, Any]]) -> None:
        if writer.is_closing():
            return
        exc = f.exception()
        if exc is None:
            resp = Frame(Op.OK, req.req_id, f.result())
        elif isinstance(exc, AthensError):
            resp = ipc.error_response(req.req_id, exc.error_type, str(exc))
        else:
            resp = ipc.error_response(req.req_id, "internal", f"{type(exc).__name__}: {exc}")
        writer.writelines(ipc.encode_frame(resp))

    fut.add_done_callback(answer)


def shard_config(cfg: ServeConfig, index: int = 0) -> ShardConfig:
    """Worker `index`'s shard settings: its seals are staggered by index/workers."""
    return ShardConfig(
        wal_fsync=cfg.wal_fsync,
        max_exemplars=-(-cfg.max_exemplars // max(cfg.workers, 1)),
        head_flush_age_ms=duration_ms(cfg.head_flush_interval),
        head_flush_samples=cfg.head_max_samples,
        seal_phase=index / max(cfg.workers, 1),
        retention_ms=duration_ms(cfg.retention),
        retention_bytes=byte_size(cfg.retention_size),
        ooo_window_ms=duration_ms(cfg.ooo_window),
        compact_zstd=cfg.compaction_compression == "zstd",
        merge_fanin=cfg.seal_merge_fanin,
    )


def warm_up() -> None:
    """Compile (or load from the cache) every kernel a worker runs, before it
    serves: cold, that is tens of seconds no write or query should wait for."""
    for warm in (chunkenc.warm_up, head.warm_up, indexmod.warm_up, evaluate.warm_up, tombstones.warm_up):
        warm()


async def run_worker(cfg: ServeConfig, index: int) -> None:
    t0 = time.monotonic()
    heap.keep_freed_memory()
    kernels.warm_up(warm_up)
    shard = Shard(cfg.shard_dir(index), shard_config(cfg, index))
    replay = shard.open()
    log.info(
        "shard opened",
        extra=kv(worker=index, seconds=round(time.monotonic() - t0, 3), **replay.to_dict()),
    )
    sock = cfg.socket_path(index)
    sock.parent.mkdir(parents=True, exist_ok=True)
    _unlink(sock)
    heap.settle()
    appends = AppendQueue(shard, cfg.worker_max_queued_samples, cfg.max_series_per_shard)
    appends.start()
    # The share is the whole node's, split between its workers (1: no pacing).
    share = cfg.query_cpu_share if cfg.query_cpu_share >= 1 else cfg.query_cpu_share / max(cfg.workers, 1)
    threads = cfg.query_threads or len(psutil.Process().cpu_affinity() or [0])
    server = WorkerServer(shard, index, appends, share, threads)
    sealer = server.sealer
    appends.committed = lambda: sealer.seal_if_due(int(time.time() * 1000))
    srv = await asyncio.start_unix_server(server.handle, path=str(sock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def housekeeping() -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            try:
                server.tick(int(time.time() * 1000))
            except Exception:
                log.exception("housekeeping failed", extra=kv(worker=index))

    hk = asyncio.create_task(housekeeping())
    log.info("worker ready", extra=kv(worker=index, socket=str(sock), pid=os.getpid()))
    await stop.wait()
    log.info("worker stopping", extra=kv(worker=index))
    hk.cancel()
    srv.close()
    await appends.drain()
    await sealer.close()
    shard.close()
    _unlink(sock)
    log.info("worker stopped", extra=kv(worker=index))


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass
