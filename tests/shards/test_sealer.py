"""Seals written off the worker's loop: appends and reads go on meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from athens.shards.sealer import Sealer
from athens.shards.segment import Segment
from athens.shards.shard import Shard, ShardConfig
from tests.shards.test_shard import _batch, _dump, _expected, _open


def test_appends_and_reads_go_on_while_a_seal_is_written(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    first = _batch(20, 0, per=130)
    sh.append(first)
    seal = sh.begin_seal()
    during = [_batch(20, 130 * 15_000, per=10), _batch(25, 10**9, per=3)]
    writer = threading.Thread(target=sh.write_seal, args=(seal,))
    writer.start()
    for b in during:
        sh.append(b)
    assert sh.append(first).accepted == 0  # the frozen head's samples are still known
    want = _expected([first, *during])
    assert _dump(sh) == want  # the frozen head and the new one
    writer.join()
    final = sh.finish_seal(seal)
    assert final is not None and sh.sealing is None
    assert Segment(final).samples == first.num_samples  # the frozen head only
    assert sh.head.num_samples == sum(b.num_samples for b in during)
    assert sh.finish_seal(seal) is None  # finishing twice is harmless
    assert _dump(sh) == want
    sh.close()
    assert _dump(_open(tmp_path)) == want


def test_a_seal_that_never_finishes_loses_nothing(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    first = _batch(20, 0, per=130)
    sh.append(first)
    seal = sh.begin_seal()
    later = _batch(20, 130 * 15_000, per=5)
    sh.append(later)
    sh.write_seal(seal)  # written, never published: the process dies here
    crashed = _open(tmp_path)
    assert _dump(crashed) == _expected([first, later])
    assert not list((tmp_path / "segments").glob("*.tmp"))


def _slow_seal_writes(sh: Shard) -> threading.Event:
    """Make sh's segment writes take 0.3 s; the event is set as one starts."""
    write = sh.write_seal
    started = threading.Event()

    def slow_write(seal) -> None:  # type: ignore[no-untyped-def]
        started.set()
        time.sleep(0.3)
        write(seal)

    sh.write_seal = slow_write  # type: ignore[method-assign]
    return started


def test_sealer_seals_when_due_and_flush_waits_for_the_seal_being_written(tmp_path: Path) -> None:
    sh = _open(tmp_path, ShardConfig(wal_fsync="off", head_flush_samples=100))
    batches = [_batch(20, 0, per=10)]
    sh.append(batches[0])
    started = _slow_seal_writes(sh)
    sealer = Sealer(sh)

    async def go() -> None:
        sealer.tick(int(time.time() * 1000))  # starts the seal, does not wait for it
        while not started.is_set():
            await asyncio.sleep(0.01)
        batches.append(_batch(20, 10**9, per=2))
        sh.append(batches[1])  # the loop is free during the seal
        assert sh.sealing is not None
        await sealer.flush()  # seals the rest after the seal being written
        await sealer.close()

    asyncio.run(go())
    assert sh.sealing is None and sh.head.num_samples == 0
    assert len(sh.segments) == 2 and sh.stats()["flushes"] == 2
    want = _expected(batches)
    assert _dump(sh) == want
    sh.close()
    assert _dump(_open(tmp_path)) == want


def test_a_failed_seal_is_retried_and_its_head_stays_readable(tmp_path: Path) -> None:
    sh = _open(tmp_path, ShardConfig(wal_fsync="off", head_flush_samples=100))
    first = _batch(20, 0, per=10)
    sh.append(first)
    write = sh.write_seal
    fail = [True]

    def flaky_write(seal) -> None:  # type: ignore[no-untyped-def]
        if fail and fail.pop():
            raise OSError("disk full")
        write(seal)

    sh.write_seal = flaky_write  # type: ignore[method-assign]
    sealer = Sealer(sh)

    async def go() -> None:
        sealer.tick(0)
        while sealer._task is not None:
            await asyncio.sleep(0.01)
        assert sh.sealing is not None and not sh.segments  # failed, frozen head kept
        assert _dump(sh) == _expected([first])
        sealer.seal_if_due(0)  # what every commit calls: no retry there (a failing disk would be hammered)
        assert sealer._task is None
        fail.append(False)
        sealer.tick(0)  # retries the same seal
        await sealer.close()

    asyncio.run(go())
    assert sh.sealing is None and len(sh.segments) == 1
    assert _dump(sh) == _expected([first])


def test_a_frozen_heads_open_rows_are_chunks_before_its_segment_is_written(tmp_path: Path) -> None:
    sh = _open(tmp_path, ShardConfig(wal_fsync="off", head_flush_samples=100))
    first = _batch(20, 0, per=130)  # per series a closed chunk of 120 and an open row of 10
    sh.append(first)
    assert int(sh.head.count.sum()) == 20 * 10
    write = sh.write_seal
    seen = {}

    def spying_write(seal) -> None:  # type: ignore[no-untyped-def]
        seen["open"] = int(seal.head.count.sum())
        seen["dump"] = _dump(sh)
        write(seal)

    sh.write_seal = spying_write  # type: ignore[method-assign]
    sealer = Sealer(sh)

    async def go() -> None:
        sealer.tick(int(time.time() * 1000))
        await sealer.close()

    asyncio.run(go())
    assert seen == {"open": 0, "dump": _expected([first])}  # rows released, same answers
    assert sh.sealing is None and len(sh.segments) == 1
    assert _dump(sh) == _expected([first])


@pytest.mark.parametrize("kind", ["compactions", "merges"])
def test_compaction_steps_run_off_the_loop_and_retention_waits_for_them(tmp_path: Path, kind: str) -> None:
    from tests.shards.test_compact import CFG, MERGE_CFG, _many_small_segments, _write
    from tests.shards.test_compact import _dump as dump_all

    sh, want = _many_small_segments(tmp_path, CFG if kind == "compactions" else MERGE_CFG)
    advance = sh.advance_compaction
    in_step = threading.Event()
    release = threading.Event()
    threads = []

    def slow_advance(job, budget):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread())
        in_step.set()
        release.wait(5)
        return advance(job, None)  # the whole job in this step

    sh.advance_compaction = slow_advance  # type: ignore[method-assign]
    retention = []
    apply_retention = sh.apply_retention
    sh.apply_retention = lambda: retention.append(in_step.is_set() and not release.is_set()) or apply_retention()  # type: ignore[method-assign]
    sealer = Sealer(sh)

    async def go() -> None:
        sealer.tick(0)  # plans the job, starts its step on the thread
        while not in_step.is_set():
            await asyncio.sleep(0.01)
        for lb, ts in _write(sh, 6, 3000, 3100).items():  # the loop appends meanwhile
            want.setdefault(lb, []).extend(ts)
        sealer.tick(0)  # a step is running: no retention, no second step
        assert sh.stats()[kind] == 0
        release.set()
        while sh.stats()[kind] == 0:
            await asyncio.sleep(0.01)
        await sealer.close()

    asyncio.run(go())
    assert threads and threads[0] is not threading.main_thread()
    assert retention == [False]  # only the first tick, before the step started
    assert dump_all(sh) == want


def test_compaction_waits_while_the_head_fills_its_second_half(tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.shards.test_compact import MERGE_CFG, _many_small_segments, _write
    from tests.shards.test_compact import _dump as dump_all

    sh, want = _many_small_segments(tmp_path, replace(MERGE_CFG, head_flush_samples=200))
    for lb, ts in _write(sh, 6, 3000, 3170).items():  # 102 samples: over half the threshold
        want.setdefault(lb, []).extend(ts)
    assert sh.compaction_job() is not None  # merges are due
    sealer = Sealer(sh)

    async def go() -> None:
        sealer.tick(0)
        assert sealer._compacting is None and sh.sealing is None  # not due, and the merges wait
        sh.flush()  # the head's seal: its memory is free again
        sealer.tick(0)
        assert sealer._compacting is not None
        while sh.stats()["merges"] == 0:
            await asyncio.sleep(0.01)
        await sealer.close()

    asyncio.run(go())
    assert dump_all(sh) == want


def test_a_commit_that_makes_the_head_due_starts_its_seal_at_once(tmp_path: Path) -> None:
    # Checked only at the once-a-second tick, a head taking millions of
    # samples a second grew to twice its threshold before its seal began.
    from athens.shards.appendq import AppendQueue

    sh = _open(tmp_path, ShardConfig(wal_fsync="off", head_flush_samples=100))
    sealer = Sealer(sh)

    async def go() -> bool:
        q = AppendQueue(sh, max_queued_samples=10_000, linger_s=0.0,
                        committed=lambda: sealer.seal_if_due(int(time.time() * 1000)))
        q.start()
        await q.submit(_batch(20, 0, per=4))  # 80 samples: not due
        assert sh.sealing is None and not sh.segments
        await q.submit(_batch(20, 10**6, per=2))  # 120: due, sealed without a tick
        started = sh.sealing is not None or len(sh.segments) == 1
        await sealer.close()
        await q.drain()
        return started

    assert asyncio.run(go())
    assert len(sh.segments) == 1 and sh.head.num_samples == 0
    sh.close()


@pytest.mark.parametrize("with_head", [True, False])
def test_a_snapshot_waits_for_the_seal_being_written_and_opens_as_a_shard(tmp_path: Path, with_head: bool) -> None:
    sh = _open(tmp_path / "shard", ShardConfig(wal_fsync="off", head_flush_samples=100))
    sealed = _batch(20, 0, per=10)
    sh.append(sealed)
    started = _slow_seal_writes(sh)
    sealer = Sealer(sh)
    head = _batch(20, 10**9, per=2)
    after = _batch(20, 2 * 10**9, per=2)

    async def go() -> None:
        sealer.tick(int(time.time() * 1000))  # a seal being written
        while not started.is_set():
            await asyncio.sleep(0.01)
        sh.append(head)  # in the head only
        await sealer.snapshot(tmp_path / "snap" / "shard", with_head)
        sh.append(after)
        await sealer.close()

    asyncio.run(go())
    assert not (tmp_path / "snap" / "shard" / "wal").exists()
    assert _dump(sh) == _expected([sealed, head, after])
    sh.compact_all()  # the originals replaced: the snapshot's links keep their data
    sh.close()
    snap = _open(tmp_path / "snap" / "shard")
    assert _dump(snap) == _expected([sealed, head] if with_head else [sealed])
    snap.close()
    assert _dump(_open(tmp_path / "shard")) == _expected([sealed, head, after])


@pytest.mark.parametrize("compacted_first", [False, True])
def test_clean_tombstones_removes_deleted_data_from_head_and_files_now(tmp_path: Path, compacted_first: bool) -> None:
    from athens.model.matchers import Matcher, MatchOp
    from tests.shards.test_compact import CFG, _with_deleted_ranges
    from tests.shards.test_compact import _dump as dump_all

    sh, want = _with_deleted_ranges(tmp_path, compacted_first)
    sealer = Sealer(sh)
    assert sh.delete_series([Matcher(MatchOp.EQ, "i", "5")], -(2**62), 2**62) == 1  # whole
    want = {lb: ts for lb, ts in want.items() if lb.get("i") != "5"}

    async def go() -> None:
        sealer.tick(int(time.time() * 1000))  # a compaction step under way, unless compacted first
        await sealer.clean_tombstones()
        await sealer.close()

    asyncio.run(go())
    assert len(sh.tombstones) == 0 and sh.head.num_samples == 0
    assert dump_all(sh) == want
    assert sum(seg.samples for seg in sh.segments) == sum(len(ts) for ts in want.values())
    assert not any(sh.index.is_forgotten(seg.chunks.series).any() for seg in sh.segments)
    assert sh.compact_all() == 0
    sh.close()
    assert dump_all(_open(tmp_path, CFG)) == want
