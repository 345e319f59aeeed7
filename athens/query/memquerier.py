"""An in-memory store implementing the Querier seam, for tests and the
conformance runner (the real storage is athens/shards)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher
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
        out.sort(key=lambda s: s.labels)
        return out

    async def select(
        self, matchers: Sequence[Matcher], mint: int, maxt: int
    ) -> list[Series]:
        return self.select_sync(matchers, mint, maxt)
