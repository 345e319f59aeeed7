"""The worker's group commit: merged batches, and the series ids each learns."""

from __future__ import annotations

import asyncio

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
