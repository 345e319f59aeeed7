"""The router's steady-state series cache: raw label bytes -> series.

Remote-write senders encode a series' labels byte-identically in every
request, so the raw label block of a TimeSeries is a key for the series.
An open-addressing table (one numpy array, probed by Numba) maps the
128-bit hash of those bytes to the series. The key is the full 128 bits,
not a 64-bit hash confirmed by a byte comparison: the comparison would cost
a second cache miss per series (into a copy of the bytes) and about 150
bytes of memory per series, while an accidental collision among even 10^9
distinct label blocks has probability about 10^-21 (docs/ingest.md).

An entry points to a *ref*: a small integer naming one distinct label set
(two different byte encodings of one label set, e.g. with an empty-valued
label, share a ref). Refs are what the router sends to workers instead of
labels (athens/shards/ipc.py, APPEND_REFS). The cache is bounded: when it
holds `max_refs` label sets it is emptied and a new RefSpace begins, so
workers learn the new refs again; the steady state never pays this.
"""

from __future__ import annotations

from hashlib import blake2b

import numba
import numpy as np

from athens.model.batch import RefSpace
from athens.model.labels import Labels
from athens.wire.protobuf import ProtobufError
from athens.wire.scan import Scan, canonical_labels

DEFAULT_MAX_REFS = 4_000_000


@numba.njit(cache=True)
def lookup_kernel(lab_start, lab_hash, lab_hash2, tab, out):  # pragma: no cover - jitted
    """out[i] = ref of series i, or -1 (unseen, or labels not contiguous).

    tab is uint64[cap, 3]: (hash low lane, hash high lane, ref + 1), 0 = empty
    slot; one slot is one cache line at most, so a probe costs one miss.
    """
    mask = tab.shape[0] - 1
    misses = 0
    for i in range(lab_start.shape[0]):
        out[i] = -1
        if lab_start[i] < 0:
            misses += 1
            continue
        h1 = lab_hash[i]
        h2 = lab_hash2[i]
        j = np.int64(h1 & np.uint64(mask))
        while True:
            r = tab[j, 2]
            if r == 0:
                misses += 1
                break
            if tab[j, 0] == h1 and tab[j, 1] == h2:
                out[i] = np.int64(r) - 1
                break
            j = (j + 1) & mask
    return misses


@numba.njit(cache=True)
def insert_kernel(tab, h1, h2, ref):  # pragma: no cover - jitted
    mask = tab.shape[0] - 1
    j = np.int64(h1 & np.uint64(mask))
    while tab[j, 2] != 0:
        j = (j + 1) & mask
    tab[j, 0] = h1
    tab[j, 1] = h2
    tab[j, 2] = np.uint64(ref + 1)


@numba.njit(cache=True)
def rehash_kernel(old, new):  # pragma: no cover - jitted
    for j in range(old.shape[0]):
        if old[j, 2] != 0:
            insert_kernel(new, old[j, 0], old[j, 1], np.int64(old[j, 2]) - 1)


@numba.njit(cache=True)
def compact_kernel(entry_ref, nsamp, mark, uniq, idx):  # pragma: no cover - jitted
    """Distinct refs of the series that have samples, in order of first
    appearance (uniq), and each sample's index into them (idx). Series
    without samples do not appear, as in the reference decoder. `mark`
    (int32[num_refs], all -1) is restored before returning."""
    k = 0
    j = 0
    for i in range(entry_ref.shape[0]):
        c = nsamp[i]
        if c == 0:
            continue
        r = entry_ref[i]
        m = mark[r]
        if m < 0:
            m = k
            mark[r] = k
            uniq[k] = r
            k += 1
        for _ in range(c):
            idx[j] = m
            j += 1
    for q in range(k):
        mark[uniq[q]] = -1
    return k


class SeriesCache:
    """Raw-label-bytes -> ref, and ref -> (Labels, identity hash)."""

    def __init__(self, max_refs: int = DEFAULT_MAX_REFS) -> None:
        self.max_refs = max_refs
        self.resets = 0
        self.hits = 0
        self.misses = 0
        self._clear()

    def _clear(self) -> None:
        self.space = RefSpace()
        self.ref_labels = np.empty(1024, dtype=object)
        self.ref_hash = np.empty(1024, np.uint64)
        self.num_refs = 0
        self._by_labels: dict[Labels, int] = {}
        self._mark = np.full(1024, -1, np.int32)
        self.tab = np.zeros((1 << 12, 3), np.uint64)
        self.num_entries = 0

    def __len__(self) -> int:
        return self.num_refs

    # --- cold path: unseen series ----------------------------------------------------

    def _ref_for(self, labels: Labels, identity: int) -> int:
        ref = self._by_labels.get(labels)
        if ref is not None:
            return ref
        ref = self.num_refs
        if ref >= len(self.ref_labels):
            n = 2 * len(self.ref_labels)
            self.ref_labels = np.concatenate((self.ref_labels, np.empty(n - ref, dtype=object)))
            self.ref_hash = np.concatenate((self.ref_hash, np.empty(n - ref, np.uint64)))
            self._mark = np.concatenate((self._mark, np.full(n - ref, -1, np.int32)))
        self.ref_labels[ref] = labels
        self.ref_hash[ref] = identity
        self._by_labels[labels] = ref
        self.num_refs = ref + 1
        return ref

    def _add_entry(self, h1: int, h2: int, ref: int) -> None:
        self.num_entries += 1
        if 2 * self.num_entries > len(self.tab):
            grown = np.zeros((2 * len(self.tab), 3), np.uint64)
            rehash_kernel(self.tab, grown)
            self.tab = grown
        insert_kernel(self.tab, np.uint64(h1), np.uint64(h2), ref)

    # --- the request path ------------------------------------------------------------

    def resolve(self, sc: Scan) -> np.ndarray:
        """The ref of every TimeSeries of a scanned body (int32[num_series]).

        Raises BadDataError (400) for any series with invalid labels; the cache may
        then hold the valid series of the request, which is harmless.
        """
        n = sc.num_series
        if self.num_refs + n > self.max_refs:
            self.resets += 1
            self._clear()
        out = np.empty(n, np.int32)
        misses = lookup_kernel(sc.lab_start, sc.lab_hash, sc.lab_hash2, self.tab, out)
        self.hits += n - misses
        if misses:
            self.misses += misses
            self._resolve_unseen(sc, out)
        return out

    def _resolve_unseen(self, sc: Scan, out: np.ndarray) -> None:
        """Validate and register the series the table does not know.

        A Numba kernel validates the label rules and writes each series'
        canonical `name 0xff value 0xff ...` bytes; Python only splits and
        decodes them (UTF-8 check) and hashes them once with BLAKE2b, which
        is exactly series_hash() of the label set.
        """
        which = np.flatnonzero(out < 0)
        canon, offs = canonical_labels(sc, which)
        contiguous = (sc.lab_start[which] >= 0).tolist()
        h1s = sc.lab_hash[which].tolist()
        h2s = sc.lab_hash2[which].tolist()
        seen: dict[tuple[int, int], int] = {}
        for q, i in enumerate(which.tolist()):
            key = (h1s[q], h2s[q]) if contiguous[q] else None
            if key is not None and key in seen:
                out[i] = seen[key]
                continue
            block = canon[offs[q] : offs[q + 1]]
            try:
                it = iter([p.decode() for p in block.split(b"\xff")[:-1]])
            except UnicodeDecodeError:
                raise ProtobufError("label name or value is not valid UTF-8") from None
            labels = Labels.from_sorted(tuple(zip(it, it)))
            ref = self._ref_for(labels, int.from_bytes(blake2b(block, digest_size=8).digest(), "little"))
            out[i] = ref
            if key is not None:
                seen[key] = ref
                self._add_entry(key[0], key[1], ref)

    def compact(self, refs: np.ndarray, nsamp: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """(distinct refs with samples, int32 sample -> index into them)."""
        uniq = np.empty(len(refs), np.int32)
        idx = np.empty(n_samples, np.int32)
        k = compact_kernel(refs, nsamp, self._mark, uniq, idx)
        return uniq[:k], idx
