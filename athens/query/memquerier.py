"""An in-memory store implementing the Querier seam, for tests and the
conformance runner (the real storage is athens/shards)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher
from athens.model.placement import WITHOUT_NAME
from athens.model.series import Series


class MemQuerier:
    """Series kept as sorted numpy arrays; later appends overwrite equal timestamps."""

    def __init__(self) -> None:
        self._series: dict[Labels, tuple[np.ndarray, np.ndarray]] = {}

    def append(self, batch: WriteBatch) -> None:
        order = np.argsort(batch.series_idx, kind="stable")
        idx = batch.series_idx[order]
        bounds = np.searchsorted(idx, np.arange(len(batch.series) + 1))
        for i, lb in enumerate(batch.series):
            sel = order[bounds[i] : bounds[i + 1]]
            ts, vals = batch.ts[sel], batch.values[sel]
            old = self._series.get(lb)
            if old is not None:
                ts = np.concatenate([old[0], ts])
                vals = np.concatenate([old[1], vals])
            # Keep the last written value per timestamp.
            rev_ts = ts[::-1]
            _, first = np.unique(rev_ts, return_index=True)
            keep = len(ts) - 1 - first
            self._series[lb] = (ts[keep].astype(np.int64), vals[keep].astype(np.float64))

    def clear(self) -> None:
        self._series.clear()

    def select_sync(
        self, matchers: Sequence[Matcher], mint: int, maxt: int
    ) -> list[Series]:
        out = []
        for lb, (ts, vals) in self._series.items():
            if not all(m.matches(lb.get(m.name)) for m in matchers):
                continue
            a = int(np.searchsorted(ts, mint, "left"))
            b = int(np.searchsorted(ts, maxt, "right"))
            if b > a:
                out.append(Series(lb, ts[a:b], vals[a:b]))
        out.sort(key=lambda s: s.labels.sort_key())
        return out

    async def select(
        self, matchers: Sequence[Matcher], mint: int, maxt: int
    ) -> list[Series]:
        return self.select_sync(matchers, mint, maxt)


class ShardedMemQuerier:
    """N in-memory shards behind the router's planner/merge code path.

    Series go to shards by placement hash as the router routes them; select
    merges all shards, and pushed-down aggregations are evaluated per shard
    (athens/shards/evaluate.py) with their partials passed through the
    binary frame encoding, as they cross a process boundary in `athens serve`.
    With pushdown=False it only offers select (the unpushed plan).
    """

    def __init__(self, n: int = 2, pushdown: bool = True, placement: str = WITHOUT_NAME) -> None:
        self.shards = [MemQuerier() for _ in range(n)]
        self.placement = placement
        self.colocated = placement == WITHOUT_NAME
        if pushdown:
            self.evaluate_partials = self._evaluate_partials

    def append(self, batch: WriteBatch) -> None:
        own = batch.owners(self.placement, len(self.shards))
        for i, shard in enumerate(self.shards):
            mask = own == i
            if mask.any():
                shard.append(batch.select_series(mask))

    async def select(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> list[Series]:
        out = [s for shard in self.shards for s in shard.select_sync(matchers, mint, maxt)]
        out.sort(key=lambda s: s.labels.sort_key())
        return out

    async def _evaluate_partials(self, req: Any) -> list[Any]:
        import asyncio  # noqa: PLC0415

        from athens.shards import evaluate, ipc  # noqa: PLC0415

        parts = []
        req = replace(req, with_first=len(self.shards) > 1)  # as ScatterQuerier asks
        for i, shard in enumerate(self.shards):
            wire = b"".join(ipc.encode_frame(evaluate.eval_request(i + 1, req)))
            asked = evaluate.parse_eval(await _roundtrip(wire))
            p = await evaluate.evaluate_partial(asked, evaluate.whole(shard.select_sync))
            resp = await _roundtrip(b"".join(ipc.encode_frame(evaluate.partial_response(i + 1, p, asked.with_first))))
            parts.append(evaluate.parse_partial(resp, len(req.ts)))
            await asyncio.sleep(0)
        return parts


async def _roundtrip(data: bytes) -> Any:
    import asyncio  # noqa: PLC0415

    from athens.shards import ipc  # noqa: PLC0415

    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await ipc.read_frame(reader)
