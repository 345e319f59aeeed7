"""Exemplars: labelled points (a trace id, say) that remote write carries
beside a series' samples, kept for /api/v1/query_exemplars."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from athens.model.labels import Labels
from athens.model.placement import WITHOUT_NAME, owners, placement_hash

# Prometheus' ExemplarMaxLabelSetLength: the runes of an exemplar's label
# names and values together.
MAX_LABEL_RUNES = 128


def exemplar_labels(pairs: list[tuple[str, str]]) -> Labels:
    """An exemplar's label set from the pairs a request sent: any order,
    empty values dropped as in series labels, a name sent twice keeping its
    last value (Prometheus checks nothing but the length, and a malformed
    exemplar must not cost the request its samples)."""
    return Labels(dict(pairs).items())


@dataclass(slots=True)
class ExemplarBatch:
    """The exemplars of one write request, grouped by nothing: exemplar i
    belongs to series[series_idx[i]] (which need not have samples in the
    request: the series may exist already). The series' identity and
    placement hashes (WriteBatch's) are computed when first asked for,
    unless the decoder had them already."""

    series: list[Labels]
    series_idx: np.ndarray  # int64[n]
    labels: list[Labels]
    ts: np.ndarray  # int64[n], ms
    values: np.ndarray  # float64[n]
    hashes: np.ndarray | None = None  # uint64[len(series)]
    places: np.ndarray | None = None  # uint64[len(series)]

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls) -> ExemplarBatch:
        return cls([], np.empty(0, np.int64), [], np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def of(cls, items: list[tuple[Labels, Labels, int, float]]) -> ExemplarBatch:
        """From (series labels, exemplar labels, timestamp ms, value) in request order."""
        index: dict[Labels, int] = {}
        idx = [index.setdefault(series, len(index)) for series, _, _, _ in items]
        return cls(
            list(index), np.array(idx, np.int64), [lb for _, lb, _, _ in items],
            np.array([t for _, _, t, _ in items], np.int64), np.array([v for _, _, _, v in items], np.float64),
        )

    def identity_hashes(self) -> np.ndarray:
        if self.hashes is None:
            self.hashes = np.array([lb.identity_hash() for lb in self.series], np.uint64)
        return self.hashes

    def owners(self, placement: str, n: int) -> np.ndarray:
        """The index of the worker (of n) owning each series, as WriteBatch.owners."""
        if placement != WITHOUT_NAME:
            return owners(self.identity_hashes(), n)
        if self.places is None:
            self.places = np.array([placement_hash(lb.canonical()) for lb in self.series], np.uint64)
        return owners(self.places, n)

    def of_series(self, keep: np.ndarray) -> ExemplarBatch:
        """The exemplars of the series where keep (bool[len(series)]) is set."""
        rows = np.flatnonzero(keep[self.series_idx])
        remap = np.cumsum(keep) - 1
        return ExemplarBatch(
            [s for s, k in zip(self.series, keep.tolist()) if k], remap[self.series_idx[rows]],
            [self.labels[i] for i in rows.tolist()], self.ts[rows], self.values[rows],
            None if self.hashes is None else self.hashes[keep],
            None if self.places is None else self.places[keep],
        )
