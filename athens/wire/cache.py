"""The router's steady-state series cache: raw label bytes -> series.

Remote-write senders encode a series' labels byte-identically in every
request, so the raw label block of a TimeSeries is a key for the series.
An open-addressing table (one numpy array, probed by Numba) maps the
128-bit hash of those bytes to the series. The key is the full 128 bits,
not a 64-bit hash confirmed by a byte comparison: the comparison would cost
a second cache miss per series (into the stored bytes), while an
accidental collision among even 10^9 distinct label blocks has probability
about 10^-21 (docs/ingest.md).

An entry points to a *ref*: a small integer naming one distinct label set
(two different byte encodings of one label set, e.g. with an empty-valued
label, share a ref). Refs are found by label set in a second table, keyed
the same way by the 128-bit BLAKE2b of the label set's canonical bytes
(the cold path only: a series whose raw bytes the first table does not
know). The cache keeps no label bytes: every request carries the labels of
each series it names, so a batch that has to teach a worker a ref takes
them from its own request (scan.ScannedLabels). Refs are what the router
sends to workers instead of labels (athens/shards/ipc.py, APPEND_REFS).
The cache is bounded: when it holds `max_refs` label sets it is emptied
and a new RefSpace begins, so workers learn the new refs again; the steady
state never pays this. Under series churn (pods replaced, each with new
label sets) refs of series no longer sent would pile up to that bound
(~120 bytes each: 480 MB at the default); so at the first request of each
IDLE_WINDOW_S window the cache also starts afresh if more than half of its
refs (and at least CHURN_MIN_REFS) were named in neither of the last two
windows that had requests: the refs of live series are learnt again at
the cost of one cold lookup each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from hashlib import blake2b

import numpy as np

from athens import heap
from athens.kernels import kernel
from athens.model.batch import RefSpace
from athens.model.placement import placement_hash
from athens.wire.scan import Scan, canonical_labels

DEFAULT_MAX_REFS = 4_000_000
# Fill limit of the open-addressing tables. With linear probing at 0.8 a hit
# probes ~3 slots (24 bytes each: mostly one cache line), a miss ~13: at
# 400,000 series a lookup takes 22 ns a series instead of 20 at 0.4, and the
# tables take half the memory (~50 bytes a series).
MAX_LOAD = 0.8
# A ref not named for a whole window of this length is taken for a series
# no longer sent (remote write sends every live series at least once per
# scrape interval, and a batch is sent within seconds).
IDLE_WINDOW_S = 600.0
# Below this many refs the churn check does not empty the cache (~12 MB).
CHURN_MIN_REFS = 100_000


@kernel(cache=True)
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


@kernel(cache=True, inline="always")
def _insert(tab, h1, h2, ref_plus_1):  # pragma: no cover - jitted
    mask = tab.shape[0] - 1
    j = np.int64(h1 & np.uint64(mask))
    while tab[j, 2] != 0:
        j = (j + 1) & mask
    tab[j, 0] = h1
    tab[j, 1] = h2
    tab[j, 2] = ref_plus_1


@kernel(cache=True)
def insert_kernel(tab, h1, h2, refs):  # pragma: no cover - jitted
    """Enter keys (h1[i], h2[i]) -> refs[i], none of them in tab yet."""
    for i in range(refs.shape[0]):
        _insert(tab, h1[i], h2[i], np.uint64(refs[i] + 1))


@kernel(cache=True)
def rehash_kernel(old, new):  # pragma: no cover - jitted
    """Move the entries of an open-addressing table into a larger one; both
    tables of this module: slot by the key's low bits (column 0), empty
    when the last column (ref + 1) is 0."""
    mask = new.shape[0] - 1
    last = old.shape[1] - 1
    for i in range(old.shape[0]):
        if old[i, last] != 0:
            j = np.int64(old[i, 0] & np.uint64(mask))
            while new[j, last] != 0:
                j = (j + 1) & mask
            new[j, :] = old[i, :]


@kernel(cache=True)
def ident_refs_kernel(tab, k1, k2, num_refs, refs):  # pragma: no cover - jitted
    """refs[q] = the ref of the label set whose identity key is (k1[q],
    k2[q]); a key not known yet becomes ref num_refs, num_refs + 1, ...
    tab is uint64[cap, 3]: (key low, key high, ref + 1), 0 = empty.
    Returns how many refs were added."""
    mask = tab.shape[0] - 1
    n = num_refs
    for q in range(k1.shape[0]):
        a = k1[q]
        b = k2[q]
        j = np.int64(a & np.uint64(mask))
        while True:
            r1 = tab[j, 2]
            if r1 == 0:
                _insert(tab, a, b, np.uint64(n + 1))
                refs[q] = n
                n += 1
                break
            if tab[j, 0] == a and tab[j, 1] == b:
                refs[q] = np.int64(r1) - 1
                break
            j = (j + 1) & mask
    return n - num_refs


@kernel(cache=True)
def compact_kernel(entry_ref, nsamp, mark, uniq, first, idx):  # pragma: no cover - jitted
    """Distinct refs of the series that have samples, in order of first
    appearance (uniq), the series where each first appears (first), and
    each sample's index into them (idx). Series without samples do not
    appear, as in the reference decoder. `mark` (int32[num_refs], all 0:
    mark[r] is r's index + 1 while this runs) is restored before returning."""
    k = 0
    j = 0
    for i in range(entry_ref.shape[0]):
        c = nsamp[i]
        if c == 0:
            continue
        r = entry_ref[i]
        m = mark[r] - 1
        if m < 0:
            m = k
            mark[r] = k + 1
            uniq[k] = r
            first[k] = i
            k += 1
        for _ in range(c):
            idx[j] = m
            j += 1
    for q in range(k):
        mark[uniq[q]] = 0
    return k


def _room(tab: np.ndarray, n: int) -> np.ndarray:
    """tab, or a copy twice or more its size, so that n entries fill at most
    MAX_LOAD of it. Copies are fresh mappings: an outgrown table goes back
    to the kernel, not into a hole in the heap."""
    size = len(tab)
    if n <= MAX_LOAD * size:
        return tab
    while n > MAX_LOAD * size:
        size *= 2
    grown = heap.mapped_empty((size, tab.shape[1]), tab.dtype)
    rehash_kernel(tab, grown)
    return grown


def _grown(arr: np.ndarray, n: int) -> np.ndarray:
    """arr's contents at the start of a zeroed array of n, on a fresh mapping."""
    out = heap.mapped_empty((n,), arr.dtype)
    out[: len(arr)] = arr
    return out


class SeriesCache:
    """Raw-label-bytes -> ref, and ref -> (identity hash, placement hash)."""

    def __init__(
        self, max_refs: int = DEFAULT_MAX_REFS, idle_window_s: float = IDLE_WINDOW_S,
        churn_min_refs: int = CHURN_MIN_REFS, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_refs = max_refs
        self.idle_window_s = idle_window_s
        self.churn_min_refs = churn_min_refs
        self._clock = clock
        self.resets = 0
        self.churn_resets = 0  # of resets, those for refs no longer named
        self.hits = 0
        self.misses = 0
        self._window = self._window_now()
        self._clear()

    def _window_now(self) -> int:
        return int(self._clock() // self.idle_window_s) + 1  # 0 in _named: never

    def _clear(self) -> None:
        self.space = RefSpace()
        self.ref_hash = np.empty(1024, np.uint64)
        self.ref_place = np.empty(1024, np.uint64)
        self.num_refs = 0
        self._mark = np.zeros(1024, np.int32)
        self._named = np.zeros(1024, np.int32)  # by ref: the last window a request named it in
        self.ident_tab = np.zeros((1 << 11, 3), np.uint64)
        self.tab = np.zeros((1 << 12, 3), np.uint64)
        self.num_entries = 0

    def __len__(self) -> int:
        return self.num_refs

    # --- cold path: unseen series ----------------------------------------------------

    def _refs_for(self, canon: bytes, offs: list[int]) -> np.ndarray:
        """The ref of each label set canon[offs[q]:offs[q + 1]], registering new ones."""
        k = len(offs) - 1
        blocks = [canon[offs[q] : offs[q + 1]] for q in range(k)]
        hashes = np.fromiter(
            (int.from_bytes(blake2b(b, digest_size=8).digest(), "little") for b in blocks), np.uint64, k
        )
        keys = np.frombuffer(b"".join(blake2b(b, digest_size=16).digest() for b in blocks), np.uint64)
        self._reserve(k)
        refs = np.empty(k, np.int64)
        first = self.num_refs
        added = ident_refs_kernel(self.ident_tab, keys[0::2].copy(), keys[1::2].copy(), first, refs)
        if added:
            new_refs, at = np.unique(refs[refs >= first], return_index=True)
            qs = np.flatnonzero(refs >= first)[at]
            self.ref_hash[new_refs] = hashes[qs]
            self.ref_place[new_refs] = [placement_hash(blocks[q]) for q in qs.tolist()]
            self.num_refs = first + added
        return refs

    def _reserve(self, k: int) -> None:
        """Room for k more refs."""
        need = self.num_refs + k
        if need > len(self.ref_hash):
            # Fresh mappings: pages of the room not used yet are not committed.
            n = max(need, 2 * len(self.ref_hash))
            self.ref_hash = _grown(self.ref_hash, n)
            self.ref_place = _grown(self.ref_place, n)
            self._mark = _grown(self._mark, n)
            self._named = _grown(self._named, n)
        self.ident_tab = _room(self.ident_tab, need)

    def _add_entries(self, h1: np.ndarray, h2: np.ndarray, refs: np.ndarray) -> None:
        self.num_entries += len(refs)
        self.tab = _room(self.tab, self.num_entries)
        insert_kernel(self.tab, h1, h2, refs)

    # --- the request path ------------------------------------------------------------

    def resolve(self, sc: Scan) -> np.ndarray:
        """The ref of every TimeSeries of a scanned body (int32[num_series]).

        Raises BadDataError (400) for any series with invalid labels; the cache may
        then hold the valid series of the request, which is harmless.
        """
        n = sc.num_series
        window = self._window_now()
        churned = window != self._window and self._churned(window)
        if churned or self.num_refs + n > self.max_refs:
            self.resets += 1
            self.churn_resets += churned
            self._clear()
        out = np.empty(n, np.int32)
        misses = lookup_kernel(sc.lab_start, sc.lab_hash, sc.lab_hash2, self.tab, out)
        self.hits += n - misses
        if misses:
            self.misses += misses
            self._resolve_unseen(sc, out)
        self._named[out] = window
        return out

    def _churned(self, window: int) -> bool:
        """At the first request of a new window: whether more than half of
        the refs (and CHURN_MIN_REFS) were named in neither the last window
        that had requests nor the one before it (a pause in remote writing
        does not make the refs look unused; a window entered late in its
        span is not all there is)."""
        last, self._window = self._window, window
        if self.num_refs < self.churn_min_refs:
            return False
        recent = np.count_nonzero(self._named[: self.num_refs] >= last - 1)
        return self.num_refs > 2 * recent

    def _resolve_unseen(self, sc: Scan, out: np.ndarray) -> None:
        """Validate and register the series the table does not know.

        A Numba kernel validates the label rules (UTF-8 included) and writes
        each series' canonical `name 0xff value 0xff ...` bytes, whose
        BLAKE2b digests are the label set's key here and its series_hash().
        Python only slices and hashes them; no label is decoded.
        """
        which = np.flatnonzero(out < 0)
        out[which] = self._refs_for(*canonical_labels(sc, which))
        # Series with contiguous labels enter the table, once per distinct
        # 128-bit hash (the same series can occur twice in a body).
        keyed = which[sc.lab_start[which] >= 0]
        if len(keyed):
            h = np.stack((sc.lab_hash[keyed], sc.lab_hash2[keyed]), axis=1)
            _, first = np.unique(h, axis=0, return_index=True)
            keyed = keyed[np.sort(first)]
            self._add_entries(sc.lab_hash[keyed], sc.lab_hash2[keyed], out[keyed].astype(np.int64))

    def compact(
        self, refs: np.ndarray, nsamp: np.ndarray, n_samples: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(distinct refs with samples, the series where each first appears,
        int32 sample -> index into them)."""
        uniq = np.empty(len(refs), np.int32)
        first = np.empty(len(refs), np.int64)
        idx = np.empty(n_samples, np.int32)
        k = compact_kernel(refs, nsamp, self._mark, uniq, first, idx)
        return uniq[:k], first[:k], idx
