"""Seals a worker's head without stopping its event loop.

A seal used to run on the loop: writing 4 M samples into a segment held
every append and query of the worker for about a second. Now the loop only
freezes the head (Shard.begin_seal: a WAL rotation and an index fsync),
swaps the frozen head's open rows for their encoded chunks (encoded on a
thread) and publishes the result (Shard.finish_seal); the segment is
written on a thread (Shard.write_seal), which touches nothing but the
frozen head, while appends go to a fresh head, reads see both, and
housekeeping (the WAL's batch fsync, retention) goes on. Compaction steps
run on the same thread, the loop only planning a job and swapping its
outputs in.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from athens.log import kv
from athens.shards.compact import CompactionJob
from athens.shards.shard import Seal, Shard

log = logging.getLogger("athens.worker")


class Sealer:
    """Runs one shard's seals and compaction steps: one at a time each, the
    work on their own thread."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seal")
        self._task: asyncio.Task[None] | None = None
        self._compacting: asyncio.Task[None] | None = None

    def tick(self, now_ms: int) -> None:
        """Housekeeping: start a seal when due (or retry one that failed),
        fsync the WAL in batch mode, apply retention and start a compaction
        step, without waiting for the seal or the step. While a step runs
        it owns the compaction job, and retention (which may abort the job)
        waits for it too. Steps wait while the head is filling its second
        half (Shard.compaction_waits)."""
        shard = self.shard
        loop = asyncio.get_running_loop()
        if self._task is None and shard.sealing is not None:  # a seal that failed: retried once a tick
            self._task = loop.create_task(self._seal(shard.sealing))
        self.seal_if_due(now_ms)
        shard.sync_wal()
        if self._compacting is None:
            shard.apply_retention()
            job = None if shard.compaction_waits() else shard.compaction_job()
            if job is not None:
                self._compacting = loop.create_task(self._compact(job))

    def seal_if_due(self, now_ms: int) -> None:
        """Start a seal if the head is due (never while one is on or failed).

        Called after every commit as well as from tick(): at the tick alone,
        a worker taking 3 M samples a second (a sender catching up) let its
        head grow to twice its sample threshold between checks, and the
        head's rows (12 bytes a sample) with it."""
        if self._task is None and self.shard.seal_due(now_ms):
            self._task = asyncio.get_running_loop().create_task(self._seal(self.shard.begin_seal()))

    async def _compact(self, job: CompactionJob) -> None:
        # A step merges series groups for compact_step_seconds: on the loop
        # that held every append and query for as long, once a second for
        # as long as a job lasts (a day's partition: minutes at a million
        # series).
        shard = self.shard
        try:
            res = await asyncio.get_running_loop().run_in_executor(
                self._pool, shard.advance_compaction, job, shard.config.compact_step_seconds
            )
            if res is not None:
                shard.finish_compaction(job, res)
        except Exception as e:  # the job is dropped; the next tick plans again
            log.exception("compaction failed", extra=kv(err=str(e)))
        finally:
            self._compacting = None

    async def _seal(self, seal: Seal) -> None:
        loop = asyncio.get_running_loop()
        try:
            # The frozen head's open rows become chunks first, so their pages
            # are free again while the segment is written.
            rows = await loop.run_in_executor(self._pool, seal.head.encode_open_rows)
            if self.shard.sealing is seal:
                seal.head.hold_rows_as(rows)  # on the loop: reads plan there
            await loop.run_in_executor(self._pool, self.shard.write_seal, seal)
            self.shard.finish_seal(seal)  # unless a flush() finished it meanwhile
        except Exception as e:  # the frozen head stays readable; the next tick retries
            log.exception("seal failed", extra=kv(err=str(e)))
        finally:
            self._task = None

    async def flush(self) -> None:
        """Seal everything now (FLUSH, shutdown), after the seal being written."""
        if self._task is not None:
            await asyncio.shield(self._task)
        self.shard.flush()

    async def snapshot(self, dest: Path, with_head: bool) -> None:
        """Shard.snapshot into dest, with the head sealed first (with_head),
        once no seal is being written and no compaction step runs: the
        segments and the index are then what a restart would open."""
        while self._task is not None or self._compacting is not None:
            for task in (self._task, self._compacting):
                if task is not None:
                    await asyncio.shield(task)
        # From here to the end nothing awaits: no tick starts a seal or a step.
        if with_head:
            self.shard.flush()
        self.shard.snapshot(dest)

    async def clean_tombstones(self) -> None:
        """Prometheus' clean_tombstones: every sample of a deleted series or
        range still in the head or on disk is removed now, and the spent
        tombstones dropped. Once no seal is being written and no compaction
        step runs, the head is sealed (if a tombstone may hold its samples)
        and compaction jobs run to the end, one after another, until none is
        left: the last of them rewrite the files still holding deleted data
        (Shard._plan_purge). Appends and queries go on meanwhile; the jobs
        hold tick()'s compaction slot."""
        while self._task is not None or self._compacting is not None:
            for task in (self._task, self._compacting):
                if task is not None:
                    await asyncio.shield(task)
        shard = self.shard
        if len(shard.tombstones):
            shard.flush()
        self._compacting = task = asyncio.get_running_loop().create_task(self._compact_all())
        await asyncio.shield(task)

    async def _compact_all(self) -> None:
        shard = self.shard
        loop = asyncio.get_running_loop()
        try:
            while (job := shard.compaction_job()) is not None:
                res = await loop.run_in_executor(self._pool, shard.advance_compaction, job, None)
                if res is not None:
                    shard.finish_compaction(job, res)
        finally:
            self._compacting = None

    async def close(self) -> None:
        """Let a seal being written and a compaction step finish (the shard
        can then be closed)."""
        for task in (self._task, self._compacting):
            if task is not None:
                await asyncio.shield(task)
        self._pool.shutdown(wait=True)
