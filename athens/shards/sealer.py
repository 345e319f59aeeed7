"""Seals a worker's head without stopping its event loop.

A seal used to run on the loop: writing 4 M samples into a segment held
every append and query of the worker for about a second. Now the loop only
freezes the head (Shard.begin_seal: a WAL rotation and an index fsync),
swaps the frozen head's open rows for their encoded chunks (encoded on a
thread) and publishes the result (Shard.finish_seal); the segment is
written on a thread (Shard.write_seal), which touches nothing but the
frozen head, while appends go to a fresh head, reads see both, and
housekeeping (the WAL's batch fsync, compaction, retention) goes on.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from athens.log import kv
from athens.shards.shard import Seal, Shard

log = logging.getLogger("athens.worker")


class Sealer:
    """Runs one shard's seals: one at a time, the writing on its own thread."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seal")
        self._task: asyncio.Task[None] | None = None

    def tick(self, now_ms: int) -> None:
        """Housekeeping: start a seal when due (or retry one that failed),
        then the rest (Shard.maintain), without waiting for the seal."""
        shard = self.shard
        if self._task is None and (shard.sealing is not None or shard.seal_due(now_ms)):
            self._task = asyncio.get_running_loop().create_task(self._seal(shard.sealing or shard.begin_seal()))
        shard.maintain()

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

    async def close(self) -> None:
        """Let a seal being written finish (the shard can then be closed)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        self._pool.shutdown(wait=True)
