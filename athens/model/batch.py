"""The one internal write batch every ingest protocol is turned into.

Nothing downstream of the wire decoders knows whether samples came by remote
write 1.0, 2.0 or a test: they all become a WriteBatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from athens.model.labels import Labels
from athens.model.placement import WITHOUT_NAME, owners, placement_hash


class RefSpace:
    """Names one numbering of series refs (see WriteBatch.refs).

    The router's series cache starts a new RefSpace whenever it is emptied;
    a connection that taught a worker refs of an older space must teach the
    new ones again. Compared by identity.
    """

    __slots__ = ()


@dataclass(slots=True)
class WriteBatch:
    """Samples of many series, columnar.

    series:     the distinct series of the batch (labels sorted and validated);
                a list, or CanonicalLabels (ScannedLabels) from the compiled ingest path
    hashes:     uint64[len(series)], each series' identity hash
    places:     uint64[len(series)], each series' placement hash without its
                name (athens.model.placement); None where nothing routes the
                batch (a worker's batches)
    series_idx: int32[n], for each sample the index of its series in `series`
    ts:         int64[n] milliseconds
    values:     float64[n]
    refs:       optional int32[len(series)]: each series' ref in `space`, set
                by the compiled ingest path so the router can send refs to
                workers instead of labels; None elsewhere
    ids:        optional int64[len(series)]: each series' id in the shard
                that stores it, -1 where not known; set by a worker from what
                its connection's refs resolved to before, so the shard skips
                the label lookup (Shard.append); None: look every series up
    """

    series: Sequence[Labels]
    hashes: np.ndarray
    series_idx: np.ndarray
    ts: np.ndarray
    values: np.ndarray
    places: np.ndarray | None = None
    refs: np.ndarray | None = None
    space: RefSpace | None = None
    ids: np.ndarray | None = None

    @classmethod
    def empty(cls) -> WriteBatch:
        return cls(
            [],
            np.empty(0, np.uint64),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.float64),
            np.empty(0, np.uint64),
        )

    @classmethod
    def from_series(
        cls, items: list[tuple[Labels, np.ndarray, np.ndarray]]
    ) -> WriteBatch:
        """Build from (labels, ts, values) triples (tests, the PromQL test loader)."""
        series = [lb for lb, _, _ in items]
        hashes = np.array([lb.identity_hash() for lb in series], dtype=np.uint64)
        counts = [len(ts) for _, ts, _ in items]
        idx = np.repeat(np.arange(len(items), dtype=np.int32), counts)
        ts = (
            np.concatenate([np.asarray(t, np.int64) for _, t, _ in items])
            if items
            else np.empty(0, np.int64)
        )
        vals = (
            np.concatenate([np.asarray(v, np.float64) for _, _, v in items])
            if items
            else np.empty(0, np.float64)
        )
        return cls(series, hashes, idx, ts, vals, _places(series))

    @property
    def num_samples(self) -> int:
        return int(self.ts.shape[0])

    def owners(self, placement: str, n: int) -> np.ndarray:
        """The index of the worker (of n) owning each series under placement."""
        if placement != WITHOUT_NAME:
            return owners(self.hashes, n)
        return owners(self.places if self.places is not None else _places(self.series), n)

    def select_series(self, mask: np.ndarray) -> WriteBatch:
        """The sub-batch of the series where mask (bool[len(series)]) is set."""
        keep = np.flatnonzero(mask)
        remap = np.full(len(self.series), -1, dtype=np.int32)
        remap[keep] = np.arange(len(keep), dtype=np.int32)
        sample_mask = mask[self.series_idx]
        return WriteBatch(
            [self.series[i] for i in keep],
            self.hashes[keep],
            remap[self.series_idx[sample_mask]],
            self.ts[sample_mask],
            self.values[sample_mask],
            None if self.places is None else self.places[keep],
            None if self.refs is None else self.refs[keep],
            self.space,
            None if self.ids is None else self.ids[keep],
        )

    @classmethod
    def concat(cls, batches: list[WriteBatch]) -> WriteBatch:
        """One batch holding all samples of `batches` (series may repeat across
        them; Shard.append accepts that). Used by the worker's group commit."""
        if len(batches) == 1:
            return batches[0]
        series: list[Labels] = []
        offsets = []
        for b in batches:
            offsets.append(len(series))
            series.extend(b.series)
        return cls(
            series,
            np.concatenate([b.hashes for b in batches]),
            np.concatenate(
                [b.series_idx.astype(np.int32, copy=False) + np.int32(o) for b, o in zip(batches, offsets)]
            ),
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.values for b in batches]),
            ids=None if all(b.ids is None for b in batches) else np.concatenate(
                [np.full(len(b.series), -1, np.int64) if b.ids is None else b.ids for b in batches]
            ),
        )


class BatchBuilder:
    """Collects decoded series into one WriteBatch, merging a series sent twice.

    For the plain-Python decoders (the remote write 1.0 and 2.0
    references); the compiled path builds its arrays directly.
    """

    def __init__(self) -> None:
        self._index: dict[Labels, int] = {}
        self._series: list[Labels] = []
        self._idx: list[int] = []
        self._ts: list[int] = []
        self._vals: list[float] = []

    def add(self, labels: Labels, samples: list[tuple[float, int]]) -> None:
        """Add (value, timestamp) pairs of one series."""
        if not samples:
            return
        si = self._index.get(labels)
        if si is None:
            si = self._index[labels] = len(self._series)
            self._series.append(labels)
        self._idx.extend([si] * len(samples))
        self._vals.extend(v for v, _ in samples)
        self._ts.extend(t for _, t in samples)

    def build(self) -> WriteBatch:
        return WriteBatch(
            self._series,
            np.array([lb.identity_hash() for lb in self._series], dtype=np.uint64),
            np.array(self._idx, dtype=np.int32),
            np.array(self._ts, dtype=np.int64),
            np.array(self._vals, dtype=np.float64),
            _places(self._series),
        )


def _places(series: Sequence[Labels]) -> np.ndarray:
    return np.array([placement_hash(lb.canonical()) for lb in series], dtype=np.uint64)
