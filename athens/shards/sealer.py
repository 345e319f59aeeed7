"""Seals a worker's head without stopping its event loop.

A seal used to run on the loop: writing 4 M samples into a segment held
every append and query of the worker for about a second. Now the loop only
freezes the head (Shard.begin_seal: a WAL rotation and an index fsync) and
publishes the result (Shard.finish_seal); the segment is written on a
thread (Shard.write_seal), which touches nothing but the frozen head, while
appends go to a fresh head and reads see both.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from athens.shards.shard import Shard


class Sealer:
    """Runs one shard's seals: one at a time, the writing on its own thread."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seal")
        self._writing: asyncio.Future[None] | None = None

    async def tick(self, now_ms: int) -> bool:
        """Housekeeping: seal when due (or retry a seal whose writing failed),
        then the rest (Shard.maintain). Returns whether it sealed."""
        shard = self.shard
        sealed = False
        if self._writing is None and (shard.sealing is not None or shard.seal_due(now_ms)):
            seal = shard.sealing or shard.begin_seal()
            self._writing = asyncio.get_running_loop().run_in_executor(self._pool, shard.write_seal, seal)
            try:
                await self._writing
            finally:
                self._writing = None
            shard.finish_seal(seal)  # unless a flush() finished it meanwhile
            sealed = True
        shard.maintain()
        return sealed

    async def flush(self) -> None:
        """Seal everything now (FLUSH, shutdown), after the seal being written."""
        if self._writing is not None:
            with contextlib.suppress(Exception):  # flush() writes it again if it failed
                await asyncio.shield(self._writing)
        self.shard.flush()

    def close(self) -> None:
        """Wait for a segment being written (the shard can then be closed)."""
        self._pool.shutdown(wait=True)
