"""The head: samples not yet sealed into a segment file, in memory.

Columnar: every series id owns one row of two 2-D arrays (timestamps and
values, CHUNK_SAMPLES wide) plus a fill count. A batch is sorted once by
(series, ts), validated by one Numba kernel pass (_classify), and scattered
into the rows by another (_place) that also cuts rows into closed chunks when
they are full or the next sample falls into another chunk window. The cut rows of a
batch are encoded together with chunkenc's batch encoder and kept as one
ClosedChunks block, so there is no Python loop per sample anywhere.

Acceptance rules (Prometheus' head, minus its out-of-order window):
  * ts older than the series' newest sample:  out_of_order, rejected;
  * ts equal to the newest sample, same value bits: duplicate, ignored;
  * ts equal, different bits: conflict, the first value is kept;
  * within one batch the samples of a series are taken sorted by ts (a
    batch is one request: its order is not an arrival order), and repeated
    timestamps follow the same duplicate/conflict rules, first one winning.
NaNs are compared by bit pattern, so the staleness marker
0x7ff0000000000002 is kept bit-exactly and differs from other NaNs.

Memory: a row costs 16 bytes x CHUNK_SAMPLES (1.9 KiB) for every series the
shard knows, active or not; reusing the rows of idle series is later work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from athens.shards import chunkenc

# A chunk is cut at 120 samples: Prometheus' choice, after which XOR/dod
# compression gains level off while decode cost for short queries grows.
CHUNK_SAMPLES = 120
# Chunks are also cut at 2 h boundaries (aligned to the epoch), so no chunk
# straddles a block boundary when segments are later time-partitioned.
CHUNK_WINDOW_MS = 2 * 3600 * 1000

INT64_MIN = np.iinfo(np.int64).min
INT64_MIN_C = -(2**63)  # the same, as a compile-time constant for kernels


@dataclass(slots=True)
class ClosedChunks:
    """A block of encoded chunks: chunk i is data[offsets[i]:offsets[i+1]]."""

    series: np.ndarray  # int64[k] series id per chunk
    mint: np.ndarray  # int64[k]
    maxt: np.ndarray  # int64[k]
    counts: np.ndarray  # int64[k] samples per chunk
    last_bits: np.ndarray  # uint64[k] bits of each chunk's last value
    data: np.ndarray  # uint8[]
    offsets: np.ndarray  # int64[k+1]

    def __len__(self) -> int:
        return int(self.series.shape[0])

    @classmethod
    def empty(cls) -> ClosedChunks:
        e = np.empty(0, np.int64)
        return cls(e, e, e, e, np.empty(0, np.uint64), np.empty(0, np.uint8), np.zeros(1, np.int64))

    @classmethod
    def encode(
        cls, series: np.ndarray, ts: np.ndarray, values: np.ndarray, starts: np.ndarray
    ) -> ClosedChunks:
        """Encode chunk i = samples starts[i]:starts[i+1] of series[i]."""
        if len(series) == 0:
            return cls.empty()
        data, offsets = chunkenc.encode_chunks(ts, values, starts)
        return cls(
            np.asarray(series, np.int64),
            ts[starts[:-1]].astype(np.int64),
            ts[starts[1:] - 1].astype(np.int64),
            np.diff(starts).astype(np.int64),
            np.ascontiguousarray(values[starts[1:] - 1]).view(np.uint64),
            np.asarray(data, np.uint8),
            np.asarray(offsets, np.int64),
        )

    def select(self, sel: np.ndarray) -> ClosedChunks:
        """The chunks at positions sel (int array), in that order, bytes gathered."""
        data, offsets = gather_chunks(self.data, self.offsets, sel)
        return ClosedChunks(
            self.series[sel], self.mint[sel], self.maxt[sel], self.counts[sel],
            self.last_bits[sel], data, offsets,
        )

    def decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series id per sample, ts, values) of all chunks, in chunk order."""
        if len(self) == 0:
            e = np.empty(0, np.int64)
            return e, e, np.empty(0, np.float64)
        ts, values, starts = chunkenc.decode_chunks(self.data, self.offsets)
        sids = np.repeat(self.series, np.diff(np.asarray(starts, np.int64)))
        return sids, np.asarray(ts, np.int64), np.asarray(values, np.float64)


def concat_chunks(blocks: list[ClosedChunks]) -> ClosedChunks:
    """One block holding all chunks of `blocks`, in order."""
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        return ClosedChunks.empty()
    if len(blocks) == 1:
        return blocks[0]
    shifts = np.cumsum([0] + [len(b.data) for b in blocks[:-1]])
    offsets = np.concatenate(
        [b.offsets[:-1] + s for b, s in zip(blocks, shifts)]
        + [np.array([shifts[-1] + len(blocks[-1].data)], np.int64)]
    )
    return ClosedChunks(
        np.concatenate([b.series for b in blocks]),
        np.concatenate([b.mint for b in blocks]),
        np.concatenate([b.maxt for b in blocks]),
        np.concatenate([b.counts for b in blocks]),
        np.concatenate([b.last_bits for b in blocks]),
        np.concatenate([b.data for b in blocks]),
        offsets.astype(np.int64),
    )


def gather_chunks(
    data: np.ndarray, offsets: np.ndarray, sel: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Copy chunks `sel` of (data, offsets) into a new contiguous (data, offsets).

    A run of consecutive chunks (the common case: all chunks of a segment
    overlapping a range) is a single slice, without copying.
    """
    sel = np.asarray(sel, np.int64)
    k = len(sel)
    if k and sel[-1] - sel[0] == k - 1 and (k < 2 or np.all(np.diff(sel) == 1)):
        lo, hi = int(offsets[sel[0]]), int(offsets[sel[-1] + 1])
        return data[lo:hi], offsets[sel[0] : sel[-1] + 2] - lo
    starts = offsets[sel]
    new_off = np.zeros(k + 1, np.int64)
    np.cumsum(offsets[sel + 1] - starts, out=new_off[1:])
    out = np.empty(int(new_off[-1]), np.uint8)
    _gather(data, starts, new_off, out)
    return out, new_off


@numba.njit(cache=True)
def _gather(data, starts, new_off, out):  # pragma: no cover - jitted
    """out[new_off[i]:new_off[i+1]] = data[starts[i]:...] for every chunk i."""
    for i in range(starts.shape[0]):
        a = starts[i]
        n = new_off[i + 1] - new_off[i]
        b = new_off[i]
        for j in range(n):
            out[b + j] = data[a + j]


@numba.njit(cache=True)
def _place(slots, ts, vals, buf_ts, buf_vals, count, window_ms,
           cut_series, cut_starts, cut_ts, cut_vals):  # pragma: no cover - jitted
    """Append sorted accepted samples to their rows, moving out rows that must be cut.

    A row is cut before a sample when it is full or the sample's chunk window
    (ts // window_ms) differs from the row's first sample's. Cut rows are
    copied to cut_* (chunk i = cut_ts[cut_starts[i]:cut_starts[i+1]] of
    series cut_series[i]). Returns (chunks cut, samples cut).
    """
    width = buf_ts.shape[1]
    ncut = 0
    nsamp = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        t = ts[i]
        c = count[s]
        if c > 0:
            cut = c == width
            if not cut and window_ms > 0:
                cut = (t // window_ms) != (buf_ts[s, 0] // window_ms)
            if cut:
                cut_series[ncut] = s
                cut_starts[ncut] = nsamp
                for j in range(c):
                    cut_ts[nsamp + j] = buf_ts[s, j]
                    cut_vals[nsamp + j] = buf_vals[s, j]
                nsamp += c
                ncut += 1
                c = 0
        buf_ts[s, c] = t
        buf_vals[s, c] = vals[i]
        count[s] = c + 1
    cut_starts[ncut] = nsamp
    return ncut, nsamp


def place_reference(slots, ts, vals, buf_ts, buf_vals, count, window_ms,
                    cut_series, cut_starts, cut_ts, cut_vals):
    """The plain-Python twin of _place (same code, not compiled), for tests."""
    return _place.py_func(slots, ts, vals, buf_ts, buf_vals, count, window_ms,
                          cut_series, cut_starts, cut_ts, cut_vals)


@numba.njit(cache=True)
def group_order(keys, nkeys):  # pragma: no cover - jitted
    """Stable counting sort: the permutation that orders `keys` (0 <= key < nkeys).

    O(n + nkeys) where np.argsort(kind="stable") is O(n log n): select()
    and WAL replay group millions of samples by series id.
    """
    counts = np.zeros(nkeys + 1, np.int64)
    for i in range(keys.shape[0]):
        counts[keys[i] + 1] += 1
    for k in range(nkeys):
        counts[k + 1] += counts[k]
    order = np.empty(keys.shape[0], np.int64)
    for i in range(keys.shape[0]):
        k = keys[i]
        order[counts[k]] = i
        counts[k] += 1
    return order


@numba.njit(cache=True)
def _classify(s, t, bits, last_ts, last_bits, keep):  # pragma: no cover - jitted
    """Verdict per sample of a batch sorted by (series, ts); keep[i] = accepted.

    The reference of each sample is the series' newest sample so far (stored
    or accepted earlier in this batch): older is out of order, the same ts is
    a duplicate (same bits) or a conflict (other bits), newer is accepted.
    Returns (duplicates, conflicts, out_of_order).
    """
    dup = 0
    conf = 0
    ooo = 0
    prev = -1
    has_ref = False
    ref_t = 0
    ref_b = np.uint64(0)
    for i in range(s.shape[0]):
        si = s[i]
        if si != prev:
            prev = si
            ref_t = last_ts[si]
            ref_b = last_bits[si]
            has_ref = ref_t != INT64_MIN_C
        ti = t[i]
        if has_ref and ti < ref_t:
            ooo += 1
            keep[i] = False
        elif has_ref and ti == ref_t:
            if bits[i] == ref_b:
                dup += 1
            else:
                conf += 1
            keep[i] = False
        else:
            keep[i] = True
            has_ref = True
            ref_t = ti
            ref_b = bits[i]
    return dup, conf, ooo


def classify_reference(s, t, bits, last_ts, last_bits, keep):
    """The plain-Python twin of _classify (same code, not compiled), for tests."""
    return _classify.py_func(s, t, bits, last_ts, last_bits, keep)


@dataclass(slots=True)
class Prepared:
    """A validated batch: accepted samples sorted by (series, ts), and the verdicts."""

    slots: np.ndarray  # int64[n] accepted
    ts: np.ndarray
    values: np.ndarray
    run_ids: np.ndarray  # distinct series of the accepted samples, in order
    run_counts: np.ndarray  # samples per distinct series
    accepted: int
    duplicates: int
    conflicts: int
    out_of_order: int


class Head:
    """In-memory open rows and closed chunks of every series of one shard."""

    def __init__(self, chunk_samples: int = CHUNK_SAMPLES, window_ms: int = CHUNK_WINDOW_MS) -> None:
        self.width = chunk_samples
        self.window_ms = window_ms
        self.cap = 0
        self.buf_ts = np.empty((0, chunk_samples), np.int64)
        self.buf_vals = np.empty((0, chunk_samples), np.float64)
        self.count = np.empty(0, np.int32)
        # Newest sample per series, including sealed data: the base of the
        # out-of-order / duplicate checks.
        self.last_ts = np.empty(0, np.int64)
        self.last_bits = np.empty(0, np.uint64)
        self.closed: list[ClosedChunks] = []
        self.num_samples = 0
        self.min_time = np.iinfo(np.int64).max
        self.max_time = INT64_MIN

    def ensure(self, n_series: int) -> None:
        """Grow the per-series arrays to hold ids < n_series (doubling)."""
        if n_series <= self.cap:
            return
        cap = max(n_series, 2 * self.cap, 64)
        extra = cap - self.cap
        w = self.width
        self.buf_ts = np.concatenate([self.buf_ts, np.empty((extra, w), np.int64)])
        self.buf_vals = np.concatenate([self.buf_vals, np.empty((extra, w), np.float64)])
        self.count = np.concatenate([self.count, np.zeros(extra, np.int32)])
        self.last_ts = np.concatenate([self.last_ts, np.full(extra, INT64_MIN, np.int64)])
        self.last_bits = np.concatenate([self.last_bits, np.zeros(extra, np.uint64)])
        self.cap = cap

    def set_sealed_last(self, ids: np.ndarray, maxt: np.ndarray, bits: np.ndarray) -> None:
        """Raise series' newest (ts, value bits) to what sealed segments hold."""
        if len(ids) == 0:
            return
        self.ensure(int(ids.max()) + 1)
        newer = maxt > self.last_ts[ids]
        self.last_ts[ids[newer]] = maxt[newer]
        self.last_bits[ids[newer]] = bits[newer]

    def prepare(self, slots: np.ndarray, ts: np.ndarray, values: np.ndarray) -> Prepared:
        """Validate a batch against the head without changing it."""
        n = int(ts.shape[0])
        if n == 0:
            e = np.empty(0, np.int64)
            return Prepared(e, e, np.empty(0, np.float64), e, e, 0, 0, 0, 0)
        self.ensure(int(slots.max()) + 1)
        slots = np.asarray(slots, np.int64)
        ts = np.asarray(ts, np.int64)
        order = None
        if n * 4 >= self.cap:
            # Big batches (and WAL replay groups) usually arrive time-ordered
            # per series: an O(n) stable grouping by series is then enough.
            order = group_order(slots, self.cap)
            s, t = slots[order], ts[order]
            if np.any((s[1:] == s[:-1]) & (t[1:] < t[:-1])):
                order = None
        if order is None:
            order = np.lexsort((ts, slots))
            s, t = slots[order], ts[order]
        v = np.asarray(values, np.float64)[order]
        keep = np.empty(n, np.bool_)
        n_dup, n_conf, n_ooo = _classify(
            s, t, v.view(np.uint64), self.last_ts, self.last_bits, keep
        )
        s, t, v = s[keep], t[keep], v[keep]
        if len(s):
            brk = np.flatnonzero(s[1:] != s[:-1]) + 1
            run_starts = np.concatenate(([0], brk))
            run_ids = s[run_starts]
            run_counts = np.diff(np.concatenate((run_starts, [len(s)])))
        else:
            run_ids = run_counts = np.empty(0, np.int64)
        return Prepared(
            s, t, v, run_ids, run_counts,
            accepted=int(len(s)),
            duplicates=int(n_dup),
            conflicts=int(n_conf),
            out_of_order=int(n_ooo),
        )

    def commit(self, p: Prepared) -> int:
        """Apply a prepared batch (validated against the current state). Returns chunks cut."""
        n = len(p.slots)
        if n == 0:
            return 0
        self.ensure(int(p.run_ids.max()) + 1)
        touched = int(self.count[p.run_ids].sum())
        k_cap = n + len(p.run_ids)
        cut_series = np.empty(k_cap, np.int64)
        cut_starts = np.empty(k_cap + 1, np.int64)
        cut_ts = np.empty(n + touched, np.int64)
        cut_vals = np.empty(n + touched, np.float64)
        ncut, nsamp = _place(
            p.slots, p.ts, p.values, self.buf_ts, self.buf_vals, self.count,
            self.window_ms, cut_series, cut_starts, cut_ts, cut_vals,
        )
        if ncut:
            self.closed.append(
                ClosedChunks.encode(
                    cut_series[:ncut], cut_ts[:nsamp], cut_vals[:nsamp], cut_starts[: ncut + 1]
                )
            )
        ends = np.cumsum(p.run_counts) - 1
        self.last_ts[p.run_ids] = p.ts[ends]
        self.last_bits[p.run_ids] = p.values[ends].view(np.uint64)
        self.num_samples += n
        self.min_time = min(self.min_time, int(p.ts.min()))
        self.max_time = max(self.max_time, int(p.ts.max()))
        return ncut

    def _open_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(series per sample, ts, values, starts) of the open rows `rows`."""
        cnt = self.count[rows].astype(np.int64)
        rows = rows[cnt > 0]
        cnt = cnt[cnt > 0]
        mask = np.arange(self.width) < cnt[:, None]
        starts = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(cnt, out=starts[1:])
        return (
            np.repeat(rows, cnt),
            self.buf_ts[rows][mask],
            self.buf_vals[rows][mask],
            starts,
        )

    def read(
        self, ids: np.ndarray, mint: int, maxt: int
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pieces (series per sample, ts, values) of series `ids` overlapping [mint, maxt].

        Pieces are in time order per series (closed blocks oldest first, then
        the open rows); samples outside the range may be included.
        """
        ids = np.asarray(ids, np.int64)
        ids = ids[ids < self.cap]
        if len(ids) == 0 or self.num_samples == 0:
            return []
        want = np.zeros(self.cap, bool)
        want[ids] = True
        pieces = []
        for cc in self.closed:
            sel = np.flatnonzero(want[cc.series] & (cc.maxt >= mint) & (cc.mint <= maxt))
            if len(sel):
                pieces.append(cc.select(sel).decode())
        cnt = self.count[ids]
        rows = ids[cnt > 0]
        if len(rows):
            first = self.buf_ts[rows, 0]
            last = self.buf_ts[rows, self.count[rows] - 1]
            rows = rows[(first <= maxt) & (last >= mint)]
        sids, ts, vals, _ = self._open_rows(rows)
        if len(ts):
            pieces.append((sids, ts, vals))
        return pieces

    def series_time_ranges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, mint, maxt) of every series with data in the head."""
        ids_l, mint_l, maxt_l = [], [], []
        for cc in self.closed:
            ids_l.append(cc.series)
            mint_l.append(cc.mint)
            maxt_l.append(cc.maxt)
        rows = np.flatnonzero(self.count > 0)
        ids_l.append(rows)
        mint_l.append(self.buf_ts[rows, 0])
        maxt_l.append(self.buf_ts[rows, self.count[rows] - 1])
        return np.concatenate(ids_l), np.concatenate(mint_l), np.concatenate(maxt_l)

    def all_chunks(self) -> ClosedChunks:
        """Every head sample as chunks (open rows encoded as short chunks),
        sorted by (series, mint): what a seal writes. Does not change the head."""
        rows = np.flatnonzero(self.count > 0)
        sids, ts, vals, starts = self._open_rows(rows)
        open_cc = ClosedChunks.encode(rows[self.count[rows] > 0], ts, vals, starts)
        allc = concat_chunks(self.closed + [open_cc])
        if len(allc) == 0:
            return allc
        order = np.lexsort((allc.mint, allc.series))
        return allc.select(order)

    def reset(self) -> None:
        """Drop all samples after they were sealed; keep per-series newest ts."""
        self.closed = []
        self.count[:] = 0
        self.num_samples = 0
        self.min_time = np.iinfo(np.int64).max
        self.max_time = INT64_MIN

    @property
    def num_chunks(self) -> int:
        return sum(len(c) for c in self.closed)
