"""The worker's group commit: merged batches, and the series ids each learns."""

from __future__ import annotations

import asyncio
import os

import numpy as np

from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.shards import appendq
from athens.shards.appendq import AppendQueue
from athens.shards.shard import Shard, ShardConfig


def _batch(names: str, t: int) -> WriteBatch:
    return WriteBatch.from_series(
        [(Labels([("__name__", n)]), np.array([t]), np.array([float(t)])) for n in names]
    )


def test_each_merged_batch_learns_the_ids_of_its_own_series(tmp_path) -> None:
    sh = Shard(tmp_path / "s", ShardConfig(wal_fsync="off"))
    sh.open()
    learnt: dict[str, list[int]] = {}

    async def go() -> list[dict]:
        q = AppendQueue(sh, max_queued_samples=1000, linger_s=0.0)
        futs = [q.submit(_batch(names, 1), lambda ids, n=names: learnt.setdefault(n, ids.tolist()))
                for names in ("ab", "cb", "d")]
        await q.drain()
        return [await f for f in futs]

    answers = asyncio.run(go())
    assert answers[0].get("group") == 3  # one commit for all three
    assert learnt == {"ab": [0, 1], "cb": [2, 1], "d": [3]}
    sh.close()


def test_a_batch_trimmed_by_the_series_cap_learns_nothing(tmp_path) -> None:
    sh = Shard(tmp_path / "s", ShardConfig(wal_fsync="off"))
    sh.open()
    learnt: list[list[int]] = []

    async def go() -> None:
        q = AppendQueue(sh, max_queued_samples=1000, max_series=2, linger_s=0.0)
        fut = q.submit(_batch("abc", 1), lambda ids: learnt.append(ids.tolist()))
        await q.drain()
        assert (await fut)["rejected"]["series_limit"] == 1

    asyncio.run(go())
    assert learnt == [] and len(sh.index) == 2
    sh.close()


def test_busy_only_while_appends_queue_up_behind_commits(tmp_path, monkeypatch) -> None:
    # Queries on the worker are paced while busy(): a trickle of writes,
    # each committed before the next arrives, must not count.
    sh = Shard(tmp_path / "s", ShardConfig(wal_fsync="off"))
    sh.open()
    monkeypatch.setattr(appendq, "MAX_GROUP_SAMPLES", 1)  # one job per commit

    async def go() -> tuple[bool, bool]:
        q = AppendQueue(sh, max_queued_samples=1000, linger_s=0.0)
        q.start()
        await q.submit(_batch("a", 1))
        alone = q.busy()
        await asyncio.gather(q.submit(_batch("a", 2)), q.submit(_batch("a", 3)))
        return alone, q.busy()

    assert asyncio.run(go()) == (False, True)
    sh.close()


def _committed_together(sh: Shard, batches: list[WriteBatch]) -> list[dict]:
    """The answers to batches queued at once (one group commit)."""

    async def go() -> list[dict]:
        q = AppendQueue(sh, max_queued_samples=1000)
        futs = [q.submit(b) for b in batches]
        await q.drain()
        return [await f for f in futs]

    return asyncio.run(go())


def test_merged_batches_are_each_answered_with_their_own_verdicts(tmp_path) -> None:
    # A group commit must not hand one request another's refusals: the
    # router answers 400 and the written-samples header from these counts.
    sh = Shard(tmp_path / "s", ShardConfig(wal_fsync="off", ooo_window_ms=0))
    sh.open()
    sh.append(_batch("ab", 100))

    a, c, dup, conflict = _committed_together(sh, [
        _batch("ab", 50),  # both older than the newest sample: refused
        _batch("c", 60),  # new series: accepted
        _batch("a", 100),  # the same sample again: an ignored duplicate
        WriteBatch.from_series([(Labels([("__name__", "b")]), np.array([100]), np.array([7.0]))]),
    ])
    assert a["group"] == 4
    assert (a["accepted"], a["too_old"], a["rejected"]) == (0, 2, {"older_than_ooo_window": 2})
    assert (c["accepted"], c["too_old"], c["rejected"]) == (1, 0, {})
    assert (dup["accepted"], dup["duplicates"], dup["rejected"]) == (0, 1, {})
    assert conflict["rejected"] == {"duplicate_timestamp_different_value": 1}
    sh.close()


def test_merged_out_of_order_samples_are_counted_for_their_own_batch(tmp_path) -> None:
    sh = Shard(tmp_path / "s", ShardConfig(wal_fsync="off", ooo_window_ms=1000))
    sh.open()
    sh.append(_batch("a", 5000))

    fresh, ooo, old = _committed_together(sh, [_batch("b", 10), _batch("a", 4500), _batch("a", 10)])
    assert (fresh["accepted"], fresh["out_of_order"], fresh["rejected"]) == (1, 0, {})
    assert (ooo["accepted"], ooo["out_of_order"], ooo["rejected"]) == (1, 1, {})
    assert (old["accepted"], old["rejected"]) == (0, {"older_than_ooo_window": 1})
    sh.close()


def test_exemplars_queued_together_are_logged_with_one_fsync_after_the_rounds_samples(tmp_path,
                                                                                      monkeypatch) -> None:
    sh = Shard(tmp_path / "s", ShardConfig(wal_fsync="always"))
    sh.open()
    synced: list[bool] = []  # per fsync: whether it was the exemplar log
    real_fsync = os.fsync
    log_path = str(tmp_path / "s" / "exemplars")

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") == log_path)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def exemplar(name: str, t: int) -> tuple:
        series = [Labels([("__name__", name)])]
        return (series, np.array([0]), [Labels([("trace_id", f"{name}{t}")])], np.array([t]),
                np.array([1.0]), None)

    async def go() -> list[dict]:
        q = AppendQueue(sh, max_queued_samples=1000, linger_s=0.0)
        # The series a and b arrive in the same round as their exemplars.
        futs = [q.submit(_batch("ab", 1)), *(q.submit_exemplars(*exemplar(n, t)) for n, t in
                                             (("a", 1), ("b", 1), ("c", 1)))]
        await q.drain()
        return [await f for f in futs[1:]]

    answers = asyncio.run(go())
    assert answers == [{"written": 1, "rejected": {}}, {"written": 1, "rejected": {}},
                       {"written": 0, "rejected": {"unknown_series": 1}}]
    assert synced.count(True) == 1  # the exemplar log, once for the round
    assert len(sh.exemplars) == 2
    sh.close()
