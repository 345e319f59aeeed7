"""Series data as it crosses the storage/query seam."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, overload

import numpy as np

from athens.kernels import kernel
from athens.model.labels import METRIC_NAME, Labels

# Prometheus' staleness marker: a NaN with this exact bit pattern. It must be
# stored and returned bit-exactly; arithmetic NaNs are different values.
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
# For kernels comparing bit patterns: a uint64 (a Python int against uint64
# would be compared as float64, equal to +Inf's bits).
STALE_NAN_U64 = np.uint64(STALE_NAN_BITS)


def is_stale(values: np.ndarray) -> np.ndarray:
    """Element-wise: is this float64 the staleness marker?"""
    return values.view(np.uint64) == STALE_NAN_U64


@kernel(cache=True, nogil=True)
def has_stale(bits: np.ndarray) -> bool:
    """Whether any of these float64 bit patterns is the staleness marker (one
    read, no temporaries: range selectors check every sample they read)."""
    n = bits.shape[0]
    for start in range(0, n, 4096):
        found = 0
        for i in range(start, min(start + 4096, n)):  # no early exit: vectorised
            found += bits[i] == STALE_NAN_U64
        if found:
            return True
    return False


class LabelCodes(Protocol):
    """A shard index's numbering of its series' labels (SeriesIndex)."""

    def value_codes(self, name: str) -> tuple[np.ndarray, int]:
        """(codes, n): codes[id] in 1..n numbers series id's value of `name`, 0: none."""
        ...

    def name_sets(self) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """(codes, sets): sets[codes[id] - 1] is series id's tuple of label names."""
        ...

    def has_label(self, name: str) -> bool:
        """Whether any series has label `name`."""
        ...

    @property
    def forgotten(self) -> int:
        """How many ids were forgotten (their label sets gone)."""
        ...

    def is_forgotten(self, ids: np.ndarray) -> np.ndarray:
        """Whether each id was forgotten."""
        ...


class StoredLabels(list[Labels]):
    """The label sets of stored series, with their ids in the shard that
    holds them and its index: grouping then compares small integers from
    arrays, not label sets (at 22,792 series, the group key of each and
    their numbering were ~70% of a worker's instant `sum by`).

    The ids belong to these rows only: anything that builds another list
    (a comprehension, a slice, a copy) gets a plain list, and take() is the
    one way to keep them."""

    __slots__ = ("ids", "index")

    def __init__(self, items: Iterable[Labels], ids: np.ndarray, index: LabelCodes) -> None:
        super().__init__(items)
        if len(self) != len(ids):
            raise ValueError(f"{len(self)} label sets for {len(ids)} ids")
        self.ids = ids
        self.index = index

    def take(self, rows: np.ndarray | slice) -> StoredLabels:
        """The label sets at positions (or the slice) rows, ids with them."""
        items = list.__getitem__(self, rows) if isinstance(rows, slice) else [self[i] for i in rows.tolist()]
        return StoredLabels(items, self.ids[rows], self.index)

    @staticmethod
    def concat(parts: Sequence[Sequence[Labels]]) -> list[Labels]:
        """The parts' label sets in order: stored if every part is, by one shard."""
        items = [lb for p in parts for lb in p]
        first = parts[0] if parts else None
        if isinstance(first, StoredLabels) and all(
            isinstance(p, StoredLabels) and p.index is first.index for p in parts
        ):
            return StoredLabels(items, np.concatenate([p.ids for p in parts]), first.index)
        return items

    def same_values(self, names: Iterable[str]) -> bool:
        """Whether every row has the same value (or none) of each of `names`
        (names no series has are not numbered for it)."""
        for name in names:
            if not self.index.has_label(name):
                continue
            col = self.index.value_codes(name)[0][self.ids]
            if len(col) and (col != col[0]).any():
                return False
        return True

    def group_ids(self, names: Iterable[str], without: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """Each row's group by its values of `names` (without: of every other
        label but the metric name), numbered in order of first appearance
        as the label sets' keys would be, and each group's first row; None
        if the combined key needs more than 62 bits."""
        index = self.index
        keyed = set(names)
        if without:
            sets_of, sets = index.name_sets()
            present = np.unique(sets_of[self.ids]).tolist()
            keyed = {n for k in present for n in sets[k - 1]} - keyed - {METRIC_NAME}
        key = np.zeros(len(self), np.int64)
        span = 1
        for name in sorted(keyed):
            col, n = index.value_codes(name)
            span *= n + 1
            if span > 1 << 62:
                return None
            key *= n + 1
            key += col[self.ids]
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        number = np.empty(len(order), np.int64)
        number[order] = np.arange(len(order))
        return number[inverse.ravel()], first[order]


@dataclass(frozen=True, slots=True)
class Series:
    """One series' raw samples in a time range, sorted by timestamp.

    ts: int64 milliseconds since the epoch; values: float64, stale markers kept.
    """

    labels: Labels
    ts: np.ndarray
    values: np.ndarray


class SeriesSet(Sequence[Series]):
    """Many series' samples concatenated: series i is labels[i] with
    ts[offsets[i]:offsets[i+1]] and the same slice of values.

    What a shard reads for a query: consumers working on all series at once
    (the engine's selectors) take the arrays as they are; indexing makes
    Series one at a time. Making a Series per series only to concatenate
    them again was a fifth of a worker's time in a pushed-down sum(rate()).

    stale_free: known to hold no staleness marker (a shard's read counts
    them as it decodes), so consumers need not scan every value for them;
    False means not known.
    """

    __slots__ = ("labels", "ts", "values", "offsets", "stale_free")

    def __init__(
        self, labels: list[Labels], ts: np.ndarray, values: np.ndarray, offsets: np.ndarray,
        stale_free: bool = False,
    ) -> None:
        if len(offsets) != len(labels) + 1:
            raise ValueError("a SeriesSet needs one offset more than series")
        self.labels = labels
        self.ts = ts
        self.values = values
        self.offsets = offsets
        self.stale_free = stale_free

    def __len__(self) -> int:
        return len(self.labels)

    @overload
    def __getitem__(self, i: int) -> Series: ...

    @overload
    def __getitem__(self, i: slice) -> SeriesSet: ...

    def __getitem__(self, i: int | slice) -> Series | SeriesSet:
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self.labels))
            if step != 1:
                raise ValueError("SeriesSet slices are contiguous")
            hi = max(lo, hi)
            a, b = int(self.offsets[lo]), int(self.offsets[hi])
            labels = self.labels
            rows = labels.take(slice(lo, hi)) if isinstance(labels, StoredLabels) else labels[lo:hi]
            return SeriesSet(rows, self.ts[a:b], self.values[a:b], self.offsets[lo : hi + 1] - a, self.stale_free)
        n = len(self.labels)
        if not -n <= i < n:
            raise IndexError("SeriesSet index out of range")
        i %= n
        a, b = self.offsets[i], self.offsets[i + 1]
        return Series(self.labels[i], self.ts[a:b], self.values[a:b])

    @classmethod
    def of(cls, series: Sequence[Series]) -> SeriesSet:
        """The same series as a SeriesSet (itself if it is one)."""
        if isinstance(series, SeriesSet):
            return series
        offsets = np.zeros(len(series) + 1, np.int64)
        if not series:
            return cls([], np.empty(0, np.int64), np.empty(0, np.float64), offsets)
        np.cumsum([len(s.ts) for s in series], out=offsets[1:])
        return cls(
            [s.labels for s in series],
            np.concatenate([s.ts for s in series]).astype(np.int64, copy=False),
            np.concatenate([s.values for s in series]).astype(np.float64, copy=False),
            offsets,
        )

    def take(self, order: Sequence[int]) -> SeriesSet:
        """The series at positions `order`, in that order (samples gathered
        with one index array, not a slice per series)."""
        idx = np.asarray(order, np.int64)
        if len(idx) == len(self.labels) and np.array_equal(idx, np.arange(len(idx))):
            return self
        starts = self.offsets[:-1][idx]
        sizes = self.offsets[1:][idx] - starts
        offsets = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        pos = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - starts, sizes)
        return SeriesSet(
            [self.labels[i] for i in idx.tolist()], self.ts[pos], self.values[pos], offsets, self.stale_free
        )

    @classmethod
    def concat(cls, sets: Sequence[SeriesSet]) -> SeriesSet:
        if len(sets) == 1:
            return sets[0]
        if not sets:
            return cls.of([])
        sizes = np.concatenate([np.diff(s.offsets) for s in sets])
        offsets = np.zeros(len(sizes) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        return cls(
            StoredLabels.concat([s.labels for s in sets]),
            np.concatenate([s.ts for s in sets]),
            np.concatenate([s.values for s in sets]),
            offsets,
            all(s.stale_free for s in sets),
        )
