"""The router's fan-out to workers, against stand-in workers on unix sockets."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.router.scatter import ShardClient, WorkerError, fan_out, partition, send_order
from athens.shards import ipc
from athens.shards.ipc import Frame, Op


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
                await asyncio.sleep(0.05)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            else:
                with pytest.raises(WorkerError, match="boom"):
                    await call
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
