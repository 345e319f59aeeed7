"""WorkerServer's housekeeping: what a quiet spell gives back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from athens import heap
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher, MatchOp
from athens.shards.shard import Shard, ShardConfig
from athens.shards.worker import WorkerServer


def test_a_quiet_spell_unmaps_the_segment_pages_reads_left_mapped(tmp_path: Path) -> None:
    shard = Shard(tmp_path, ShardConfig(wal_fsync="off"))
    shard.open()
    ts = np.arange(0, 600_000, 15_000, dtype=np.int64)
    shard.append(WriteBatch.from_series([(Labels([("__name__", "m"), ("i", str(i))]), ts, ts * 1.0)
                                         for i in range(20)]))
    shard.flush()
    (seg,) = shard.segments

    def resident_kb() -> int:
        mapped = heap._mappings_of(str(seg.path))
        assert mapped, "no /proc/self/smaps"
        return sum(stats["Rss"] for *_, stats in mapped)

    (s,) = shard.select([Matcher(MatchOp.EQ, "i", "3")], 0, 600_000)  # a light read: its pages stay
    assert len(s.ts) == 40 and resident_kb() > 0
    now = [0.0]
    server = WorkerServer(shard, 0)
    server.quiet = heap.QuietTrim(60.0, clock=lambda: now[0])

    async def ticks() -> list[int]:  # housekeeping runs on the worker's loop
        seen = []
        for t in (0.0, 61.0):  # queries may still come; then a minute without any
            now[0] = t
            server.tick(1_000_000)
            seen.append(resident_kb())
        return seen

    before, after = asyncio.run(ticks())
    assert before > 0 and after == 0
    shard.close()
