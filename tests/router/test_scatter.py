"""The router's fan-out to workers, against stand-in workers on unix sockets, and its
write path against a real worker server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens import heap
from athens.model.batch import RefSpace, WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher, MatchOp
from athens.router.scatter import ShardClient, ShardPool, WorkerError, fan_out, partition, send_order
from athens.shards import ipc
from athens.shards.appendq import AppendQueue
from athens.shards.ipc import Frame, Op
from athens.shards.shard import Shard, ShardConfig
from athens.shards.worker import WorkerServer


class _Worker:
    """Answers PING at once, SELECT after `delay` (or never: None), an
    ERROR for SELECT when `fails`; records every frame it gets."""

    def __init__(self, delay: float | None = 0.0, fails: bool = False) -> None:
        self.delay = delay
        self.fails = fails
        self.got: list[Frame] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = await ipc.read_frame(reader)
                self.got.append(req)
                if req.op is Op.SELECT:
                    if self.delay is None:
                        continue
                    await asyncio.sleep(self.delay)
                    resp = (ipc.error_response(req.req_id, "execution", "boom") if self.fails
                            else Frame(Op.OK, req.req_id, {"n": len(self.got)}))
                else:
                    resp = Frame(Op.OK, req.req_id, {"found": True})
                writer.writelines(ipc.encode_frame(resp))
        except asyncio.IncompleteReadError:
            writer.close()


async def _clients(tmp_path: Path, workers: list[_Worker]) -> tuple[list[ShardClient], list[asyncio.Server]]:
    servers, clients = [], []
    for i, w in enumerate(workers):
        path = tmp_path / f"w{i}.sock"
        servers.append(await asyncio.start_unix_server(w.handle, path=str(path)))
        clients.append(ShardClient(i, path))
    return clients, servers


def _select(req_id: int) -> Frame:
    return Frame(Op.SELECT, req_id, {})


def test_answers_come_in_client_order_whoever_answers_first(tmp_path: Path) -> None:
    async def run() -> list[Frame]:
        clients, servers = await _clients(tmp_path, [_Worker(delay=0.05), _Worker(delay=0.0)])
        try:
            return await fan_out(clients, _select)
        finally:
            for c in clients:
                await c.close()
            for s in servers:
                s.close()

    frames = asyncio.run(run())
    assert [f.op for f in frames] == [Op.OK, Op.OK]
    assert frames[0].req_id == frames[1].req_id == 1  # one request per connection


def test_a_client_holds_no_answer_once_its_caller_drops_it(tmp_path: Path) -> None:
    """The read loop hands each answer over and keeps nothing while it waits
    for the next: a query's partials or raw series do not outlive it."""

    class _Answers(_Worker):  # SELECT answers carry an array, which can be watched
        async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError):
                while True:
                    req = await ipc.read_frame(reader)
                    writer.writelines(ipc.encode_frame(Frame(Op.OK, req.req_id, {}, [np.arange(1000)])))

    async def run() -> bool:
        (client,), (server,) = await _clients(tmp_path, [_Answers()])
        try:
            frame = await client.request(_select)
            gone = weakref.ref(frame.arrays[0])
            del frame
            await asyncio.sleep(0.01)  # the read loop now waits for the next answer
            gc.collect()
            return gone() is None
        finally:
            await client.close()
            server.close()

    assert asyncio.run(run())


@pytest.mark.parametrize("cancelled", [False, True])
def test_a_failure_or_cancellation_drops_the_other_answers_and_tells_their_workers(
    tmp_path: Path, cancelled: bool
) -> None:
    slow = _Worker(delay=None)  # never answers its SELECT

    async def run() -> None:
        first = _Worker(delay=None) if cancelled else _Worker(fails=True)
        clients, servers = await _clients(tmp_path, [first, slow])
        told: list[tuple[int, int]] = []

        def on_failure(client: ShardClient, sent) -> None:  # type: ignore[no-untyped-def]
            told.append((client.index, sent.req_id))

        try:
            call = asyncio.ensure_future(fan_out(clients, _select, on_failure=on_failure))
            if cancelled:
                while not (first.got and slow.got):  # both requests out (a fixed 50 ms once was not)
                    await asyncio.sleep(0.005)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            else:
                with pytest.raises(WorkerError, match="boom"):
                    await call
                while not slow.got:  # its request is out (told below); let it arrive
                    await asyncio.sleep(0.005)
            assert told == [(0, 1), (1, 1)]  # every worker whose answer was not read
            assert all(not c._pending for c in clients)  # nothing left waiting for an answer
        finally:
            for c in clients:
                await c.close()
            for s in servers:
                s.close()

    asyncio.run(run())
    assert [f.op for f in slow.got] == [Op.SELECT]


def test_workers_on_the_current_cpu_are_sent_to_last() -> None:
    clients = [SimpleNamespace(cpus=frozenset(c)) for c in ({0}, {1}, {0, 1}, set(), {2})]
    assert send_order(clients, cpu=0) == [1, 3, 4, 0, 2]  # type: ignore[arg-type]
    assert send_order(clients, cpu=2) == [0, 1, 2, 3, 4]  # type: ignore[arg-type]
    assert send_order(clients, cpu=-1) == [0, 1, 2, 3, 4]  # type: ignore[arg-type]
    assert sorted(send_order(clients)) == [0, 1, 2, 3, 4]  # type: ignore[arg-type]  # this CPU, whichever


def test_a_client_learns_the_cpus_its_worker_may_run_on(tmp_path: Path) -> None:
    async def run() -> frozenset[int]:
        clients, servers = await _clients(tmp_path, [_Worker()])
        try:
            await clients[0].request(lambda req_id: Frame(Op.PING, req_id, {}))
            return clients[0].cpus
        finally:
            await clients[0].close()
            servers[0].close()

    assert asyncio.run(run()) == frozenset(os.sched_getaffinity(0))  # the stand-in worker is this process


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.integers(0, n - 1), min_size=1, max_size=12),
    st.lists(st.integers(0, 11), max_size=40),
)))
def test_partition_cuts_a_batch_as_per_worker_masks_do(case) -> None:
    """Each worker's part: its series in batch order, its samples in batch
    order with their series' position among its series (what the masks of
    WriteBatch.select_series give)."""
    n, owners, picks = case
    own = np.array(owners, np.int64)
    series_idx = np.array([p % len(owners) for p in picks], np.int32)
    ts = np.arange(len(picks), dtype=np.int64) * 1000
    values = np.arange(len(picks), dtype=np.float64) / 4
    s_off, order, p_off, idx, ts_out, values_out = partition(own, series_idx, ts, values, n)
    for w in range(n):
        keep = np.flatnonzero(own == w)
        assert order[s_off[w] : s_off[w + 1]].tolist() == keep.tolist()
        mine = own[series_idx] == w
        local = {s: j for j, s in enumerate(keep.tolist())}
        assert idx[p_off[w] : p_off[w + 1]].tolist() == [local[s] for s in series_idx[mine].tolist()]
        assert ts_out[p_off[w] : p_off[w + 1]].tolist() == ts[mine].tolist()
        assert values_out[p_off[w] : p_off[w + 1]].tolist() == values[mine].tolist()


def _ref_batch(space: RefSpace, labels: list[Labels], refs: list[int], t: int) -> WriteBatch:
    batch = WriteBatch.from_series([(lb, np.array([t], np.int64), np.array([float(t)])) for lb in labels])
    batch.refs = np.array(refs, np.int32)
    batch.space = space
    return batch


@contextlib.asynccontextmanager
async def _served_shard(tmp_path: Path, **cfg: int) -> AsyncIterator[tuple[Shard, WorkerServer, ShardPool]]:
    """A shard served by a WorkerServer on a unix socket, and a pool talking to it."""
    shard = Shard(tmp_path / "shard", ShardConfig(wal_fsync="off", **cfg))
    shard.open()
    appends = AppendQueue(shard, 1 << 20)
    appends.start()
    server = WorkerServer(shard, 0, appends)
    srv = await asyncio.start_unix_server(server.handle, path=str(tmp_path / "w.sock"))
    pool = ShardPool([tmp_path / "w.sock"])
    try:
        yield shard, server, pool
    finally:
        await pool.close()
        srv.close()
        await appends.drain()
        shard.close()


def test_refs_a_worker_dropped_with_their_forgotten_series_are_taught_again(tmp_path: Path) -> None:
    """Samples by ref for a series the worker forgot (and whose ref it
    dropped) are not refused: the router teaches the ref again and the
    series comes back under a new id."""
    a, b = Labels([("__name__", "m"), ("pod", "a")]), Labels([("__name__", "m"), ("pod", "b")])

    async def main() -> None:
        async with _served_shard(tmp_path, retention_ms=0) as (shard, server, pool):
            space = RefSpace()
            assert await pool.append(_ref_batch(space, [a, b], [0, 1], 1000)) == {}
            assert await pool.append(_ref_batch(space, [a, b], [0, 1], 2000)) == {}  # ids learnt
            old = shard.index.lookup([a], np.array([a.identity_hash()], np.uint64))
            shard.index.forget(old)  # as retention does once a's data is gone
            server.tick(0)
            (table,) = server._ref_tables  # the router's one connection
            assert table.labels[0] is None and table.labels[1] == b  # the forgotten one's label set let go
            assert await pool.append(_ref_batch(space, [a, b], [0, 1], 3000)) == {}
            assert table.labels[0] == a  # taught again
            new = shard.index.lookup([a], np.array([a.identity_hash()], np.uint64))
            assert new[0] >= 0 and new[0] != old[0]
            got = {s.labels: s.ts.tolist() for s in shard.select([Matcher(MatchOp.EQ, "__name__", "m")], 0, 5000)}
            assert got == {a: [3000], b: [1000, 2000, 3000]}

    asyncio.run(main())


def test_a_worker_trims_its_heap_once_queries_stop_and_appends_do_not_hold_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = Labels([("__name__", "m"), ("pod", "a")])
    now = [0.0]
    trims: list[float] = []

    async def main() -> None:
        async with _served_shard(tmp_path) as (_, server, pool):
            monkeypatch.setattr(heap, "trim", lambda: trims.append(now[0]) or True)  # the worker's trims from here
            server.quiet = heap.QuietTrim(60.0, clock=lambda: now[0])
            for t in (10, 70):  # appends alone: trimmed a minute after the start
                now[0] = t
                assert await pool.append(WriteBatch.from_series([(a, np.array([t], np.int64), np.array([1.0]))])) == {}
                server.tick(0)
            now[0] = 100
            assert await pool.label_names([], 0, 10**6) == ["__name__", "pod"]
            now[0] = 150
            assert len(await pool.select([Matcher(MatchOp.EQ, "__name__", "m")], 0, 10**6)) == 1
            now[0] = 200
            server.tick(0)  # 50 s after the last query
            now[0] = 210
            server.tick(0)

    asyncio.run(main())
    assert trims == [70, 210]
