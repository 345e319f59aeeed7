"""The head: samples not yet sealed into a segment file, in memory.

Columnar: every series id owns one row of two 2-D arrays (timestamps and
values, CHUNK_SAMPLES wide) plus a fill count. A batch is sorted once by
(series, ts), validated by one Numba kernel pass (_classify), and scattered
into the rows by another (_place) that also cuts rows into closed chunks when
they are full or the next sample falls into another chunk window. The cut rows of a
batch are encoded together with chunkenc's batch encoder and kept as one
ClosedChunks block, so there is no Python loop per sample anywhere.

Acceptance rules (Prometheus' head, with an out-of-order window per series):
  * ts newer than the series' newest sample: in order, accepted;
  * ts equal to a stored sample's, same value bits: duplicate, ignored;
  * ts equal, different bits: conflict, the first value is kept;
  * ts older than the series' newest sample by at most the out-of-order
    window: accepted into the out-of-order (OOO) head unless the timestamp
    already holds a sample (then duplicate / conflict as above);
  * older than that: too old, rejected;
  * within one batch the samples of a series are taken sorted by ts (a
    batch is one request: its order is not an arrival order), and repeated
    timestamps follow the same duplicate/conflict rules, first one winning.
NaNs are compared by bit pattern, so the staleness marker
0x7ff0000000000002 is kept bit-exactly and differs from other NaNs.

Departure from Prometheus: its out-of-order window is measured from the
newest sample of the whole TSDB, ours from the series' own newest sample, so
a series whose sender lags behind the others is judged by its own clock.

The OOO head is a list of small sorted arrays (out-of-order data is rare by
assumption); reads merge it with the in-order data (merge_pieces), and a
seal re-chunks the series it touches so sealed chunks never overlap.

Memory: a row costs 16 bytes x CHUNK_SAMPLES (1.9 KiB) for every series
written since the last seal: a seal goes on with a successor head whose rows
take pages only once written, and gives the sealed head's pages back to the
kernel (Head.reset), so idle and departed series cost only their id's newest
(ts, value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from athens import heap
from athens.kernels import kernel
from athens.model.labels import Labels
from athens.model.series import LabelCodes, SeriesSet, StoredLabels, has_stale
from athens.shards import chunkenc
from athens.shards.tombstones import Tombstones

# A chunk is cut at 120 samples: Prometheus' choice, after which XOR/dod
# compression gains level off while decode cost for short queries grows.
CHUNK_SAMPLES = 120
# Chunks are also cut at 2 h boundaries (aligned to the epoch), so no chunk
# straddles a block boundary when segments are later time-partitioned.
CHUNK_WINDOW_MS = 2 * 3600 * 1000

# The open rows are kept in blocks of SLOT_BLOCK places: place j of series s
# at [j >> SLOT_SHIFT, s, j & SLOT_MASK] (Head.rows_shape). The first places
# of every series commit memory a block of 8 (64 bytes) at a time, not a
# whole row: the pages in use follow how full the rows are, not how many
# series there are. With whole rows a successor head filling while its
# predecessor was sealed touched every row's pages at once (~90 MB a worker
# at 50,000 series: the `medium` profile's peak). A series' samples still
# share cache lines, 8 to a line; 50,000 rows of 100 samples, in process:
# appends ~30% faster, reading 1,000 scattered rows 0.7 ms (0.54 with whole
# rows, 1.45 with one place per series per line), all rows 33 ms (83).
SLOT_SHIFT = 3
SLOT_BLOCK = 1 << SLOT_SHIFT
SLOT_MASK = SLOT_BLOCK - 1
# A row keeps its timestamps as int32 offsets from its first one (12 bytes a
# sample instead of 16): a row ends before its span would reach this (with
# the default 2-hour chunk windows it never does).
ROW_SPAN_MS = 2**31

# Samples per block of a seal (seal_blocks, encode_open_rows): bounds its
# temporaries (about 40 bytes a sample) whatever the head holds. They set the
# worker's heap high-water mark during a seal (given back after it, heap.py):
# `medium`, a worker at 50,000 series, heap after the first seal 110 MiB with
# 512k-sample blocks, 83-88 with 128k; the tree's peak 939-952 -> 893-896 MiB,
# seals as fast.
SEAL_GROUP_SAMPLES = 1 << 17

INT64_MIN = np.iinfo(np.int64).min
# The same, as compile-time constants for kernels: int64 scalars, so a variable
# they initialise is int64 (numba.pycc does not widen an integer literal).
INT64_MIN_C = np.int64(-(2**63))
INT64_MAX_C = np.int64(2**63 - 1)


@dataclass(slots=True)
class ClosedChunks:
    """A block of encoded chunks: chunk i is data[offsets[i]:offsets[i+1]].

    Chunks may share timestamps (chunkenc.shared_timestamps): then ts_ref[i]
    >= 0 is the chunk of (ts_data, ts_offsets) holding chunk i's timestamps
    - this block's own data when freshly encoded, the whole file in a
    segment, so a selection keeps them reachable without copying.
    """

    series: np.ndarray  # int64[k] series id per chunk
    mint: np.ndarray  # int64[k]
    maxt: np.ndarray  # int64[k]
    counts: np.ndarray  # int64[k] samples per chunk
    last_bits: np.ndarray  # uint64[k] bits of each chunk's last value
    data: np.ndarray  # uint8[]
    offsets: np.ndarray  # int64[k+1]
    ts_ref: np.ndarray | None = None  # int64[k], -1: own timestamps; None: all own
    ts_data: np.ndarray | None = None
    ts_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.series.shape[0])

    @classmethod
    def empty(cls) -> ClosedChunks:
        e = np.empty(0, np.int64)
        return cls(e, e, e, e, np.empty(0, np.uint64), np.empty(0, np.uint8), np.zeros(1, np.int64))

    @classmethod
    def encode(
        cls, series: np.ndarray, ts: np.ndarray, values: np.ndarray, starts: np.ndarray,
        share_timestamps: bool = False,
    ) -> ClosedChunks:
        """Encode chunk i = samples starts[i]:starts[i+1] of series[i]; with
        share_timestamps, a chunk whose timestamps equal an earlier one's
        refers to it instead of storing them."""
        if len(series) == 0:
            return cls.empty()
        ts_ref = chunkenc.shared_timestamps(ts, starts) if share_timestamps else None
        data, offsets = chunkenc.encode_chunks(ts, values, starts, ts_ref)
        return cls.sharing_within(
            np.asarray(series, np.int64),
            ts[starts[:-1]].astype(np.int64),
            ts[starts[1:] - 1].astype(np.int64),
            np.diff(starts).astype(np.int64),
            np.ascontiguousarray(values[starts[1:] - 1]).view(np.uint64),
            data,
            offsets,
            ts_ref,
        )

    @classmethod
    def sharing_within(
        cls, series: np.ndarray, mint: np.ndarray, maxt: np.ndarray, counts: np.ndarray,
        last_bits: np.ndarray, data: np.ndarray, offsets: np.ndarray, ts_ref: np.ndarray | None,
    ) -> ClosedChunks:
        """Chunks whose shared-timestamp sources (ts_ref, if any) are among
        themselves: (ts_data, ts_offsets) = (data, offsets)."""
        if ts_ref is None:
            return cls(series, mint, maxt, counts, last_bits, data, offsets)
        return cls(series, mint, maxt, counts, last_bits, data, offsets, ts_ref, data, offsets)

    def overlapping(self, ids: np.ndarray, want: np.ndarray, mint: int, maxt: int) -> np.ndarray:
        """Positions of the chunks of series `ids` (sorted; `want` is the same
        set as a bool mask indexed by id) overlapping [mint, maxt]. The
        chunks must be sorted by series (segments, the head's blocks)."""
        if len(ids) * 8 < len(self):
            # Few series: binary-search their runs (one kernel: a light
            # query reads every segment of its range this way).
            return k_runs_overlapping(self.series, self.mint, self.maxt, ids, mint, maxt)
        ok = self.series < len(want)
        hit = want[np.where(ok, self.series, 0)] & ok
        return np.flatnonzero(hit & (self.maxt >= mint) & (self.mint <= maxt))

    def select(self, sel: np.ndarray) -> ClosedChunks:
        """The chunks at positions sel (int array), in that order, bytes gathered."""
        data, offsets = gather_chunks(self.data, self.offsets, sel)
        return ClosedChunks(
            self.series[sel], self.mint[sel], self.maxt[sel], self.counts[sel],
            self.last_bits[sel], data, offsets,
            None if self.ts_ref is None else self.ts_ref[sel], self.ts_data, self.ts_offsets,
        )

    def decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series id per sample, ts, values) of all chunks, in chunk order."""
        if len(self) == 0:
            e = np.empty(0, np.int64)
            return e, e, np.empty(0, np.float64)
        ts, values, starts = chunkenc.decode_chunks(
            self.data, self.offsets, self.ts_ref, self.ts_data, self.ts_offsets
        )
        sids = np.repeat(self.series, np.diff(np.asarray(starts, np.int64)))
        return sids, np.asarray(ts, np.int64), np.asarray(values, np.float64)

    def locate(self, sel: np.ndarray) -> tuple[ClosedChunks, np.ndarray]:
        """Where the chunks at positions sel are: here (a segment's chunks
        may first need decompressing, Segment.locate)."""
        return self, sel

    def decode_into(
        self, positions: np.ndarray, dest: np.ndarray, ts_out: np.ndarray, values_out: np.ndarray
    ) -> int:
        """Chunk positions[i]'s samples to ts_out/values_out[dest[i] : dest[i]
        + counts[positions[i]]], decoded in place (no gathering copy); returns
        how many of the values are staleness markers."""
        return chunkenc.decode_chunks_into(
            self.data, self.offsets, self.counts[positions], dest, ts_out, values_out,
            self.ts_ref, self.ts_data, self.ts_offsets, positions,
        )


Piece = tuple[np.ndarray, np.ndarray, np.ndarray]
# Where chunks selected by position are: (block, positions in it).
Locate = Callable[[np.ndarray], tuple[ClosedChunks, np.ndarray]]


class PendingRead:
    """A read's pieces, oldest source first, captured at one instant and
    decoded later, possibly on another thread: chunk selections of immutable
    blocks (sealed segments, the head's closed chunks; a compaction or seal
    that replaces them leaves these alive) and copies of what appends change.
    So the event loop only plans a read and a low-priority thread decodes it."""

    def __init__(self, hidden: Tombstones | None = None) -> None:
        # (locate, positions) of chunks to decode, or (None, a piece as it is)
        self._parts: list[tuple[Locate | None, Any]] = []
        self.samples = 0  # samples the pieces hold (some may be outside the range)
        self.hidden = hidden  # the shard's tombstones when the read was planned: series() leaves them out

    def chunks(self, locate: Locate, sel: np.ndarray, samples: int) -> None:
        """The chunks `locate(sel)` finds (a block and positions in it)."""
        self._parts.append((locate, sel))
        self.samples += samples

    def piece(self, piece: Piece) -> None:
        self._parts.append((None, piece))
        self.samples += len(piece[1])

    def decode(self) -> list[Piece]:
        """The pieces (series per sample, ts, values), in the order added."""
        return [part if locate is None else ClosedChunks.select(*locate(part)).decode() for locate, part in self._parts]

    def series(
        self, ids: np.ndarray, ranks: np.ndarray, labels: Sequence[Labels], mint: int, maxt: int,
        index: LabelCodes | None = None,
    ) -> SeriesSet:
        """The read's series `ids` (sorted; `ranks` their label ranks) with
        their samples in [mint, maxt], in label order, each sorted by time
        with repeated timestamps dropped (the oldest source's sample kept);
        series without such samples are left out. With the shard's `index`,
        the answer's labels are StoredLabels.

        Chunks are decoded straight into their series' place in the answer
        (the sources of one series laid out oldest first): no per-sample
        series column, no regrouping copy. A chunk partly outside [mint,
        maxt] (at most a series' first and last per source) is decoded aside
        first and only its samples in range are placed, so every place is
        known exactly and the answer is not packed again, unless the sources
        of a series overlap in time (out-of-order data, files not yet
        compacted): then k_pack_groups sorts and dedupes it. Samples in a
        range deleted from their series (`hidden`) are left out last."""
        n = len(ids)
        by_rank = ids[np.argsort(ranks, kind="stable")]
        # Series id -> position in label order, at key[id - base]: sized by
        # the span of the read's ids, not by every id the shard has given
        # (under series churn millions, zeroed at every read).
        base = int(ids[0]) if n else 0
        key = np.zeros(int(ids[-1]) - base + 1 if n else 1, np.int64)
        key[by_rank - base] = np.arange(n, dtype=np.int64)
        parts = [part if locate is None else locate(part) for locate, part in self._parts]
        size = np.zeros(n + 1, np.int64)  # samples of key k at size[k + 1]
        last = np.full(n, INT64_MIN, np.int64)  # newest time placed per key so far
        ordered = True
        stale = 0  # staleness markers decoded (some may be outside the range)
        plans: list[tuple[Any, Any]] = []  # (piece, None) or (chunks, how to place them)
        for part in parts:
            if not isinstance(part[0], ClosedChunks):
                stale += has_stale(part[2].view(np.uint64))
                k_count_keys(part[0], part[1], key, base, mint, maxt, size)
                ordered &= k_runs_after(part[0], part[1], key, base, last)
                plans.append((part, None))
                continue
            block, where = part
            series, placed, inner, edge, estarts = k_plan_chunks(
                block.series, block.counts, block.mint, block.maxt, where, mint, maxt
            )
            aside = None
            if len(edge):
                ets = np.empty(int(estarts[-1]), np.int64)
                evals = np.empty(int(estarts[-1]), np.float64)
                stale += block.decode_into(where[edge], estarts[:-1], ets, evals)
                first, placed[edge] = k_runs_in_range(ets, estarts, mint, maxt)
                aside = (ets, evals, first)
            ordered &= k_key_chunks(series, placed, block.mint, block.maxt, where, key, base, size, last)
            plans.append((part, (series, inner, edge, placed, aside)))
        np.cumsum(size, out=size)
        pos = size[:-1].copy()  # next free place of each key
        out_t = np.empty(int(size[n]), np.int64)
        out_v = np.empty(int(size[n]), np.float64)
        for part, how in plans:
            if how is None:
                k_scatter_keys(part[0], part[1], part[2], key, base, mint, maxt, pos, out_t, out_v)
                continue
            block, where = part
            series, inner, edge, placed, aside = how
            dest, whole_at, whole_dest = k_take_places(series, placed, inner, where, key, base, pos)
            if len(whole_at):
                stale += block.decode_into(whole_at, whole_dest, out_t, out_v)
            if aside is not None:
                k_put_runs(*aside, dest[edge], placed[edge], out_t, out_v)
        if ordered:
            ts, values, sizes = out_t, out_v, np.diff(size)
        else:
            ts, values, sizes = k_pack_groups(out_t, out_v, size[:-1], pos, n, mint, maxt)
        if self.hidden is not None:
            starts = np.zeros(n + 1, np.int64)
            np.cumsum(sizes, out=starts[1:])
            ts, values, sizes = self.hidden.drop_hidden(by_rank, starts, ts, values)
        has = sizes > 0
        if index is not None and index.forgotten:
            # Forgotten since the read was planned: retention deleted their
            # last data meanwhile (as if it had run first).
            gone = index.is_forgotten(by_rank)
            if gone.any():
                kept_samples = ~np.repeat(gone, sizes)
                ts, values = ts[kept_samples], values[kept_samples]
                has &= ~gone
        offsets = np.zeros(int(has.sum()) + 1, np.int64)
        np.cumsum(sizes[has], out=offsets[1:])
        kept = by_rank[has]
        rows = [labels[i] for i in kept.tolist()]
        return SeriesSet(rows if index is None else StoredLabels(rows, kept, index), ts, values, offsets, stale == 0)


def concat_chunks(blocks: list[ClosedChunks]) -> ClosedChunks:
    """One block holding all chunks of `blocks`, in order (head chunks: none
    of them share timestamps)."""
    blocks = [b for b in blocks if len(b)]
    if any(b.ts_ref is not None for b in blocks):
        raise ValueError("concat_chunks: blocks with shared timestamps have separate bases")
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


def merge_blocks(older: ClosedChunks, newer: ClosedChunks) -> ClosedChunks:
    """The chunks of two blocks sorted by (series, mint), in one block
    sorted so, each chunk's bytes copied once (head chunks: none share
    timestamps). The newer block's chunks of a series start after the
    older's (in-order data), so ordering by series alone, stably, orders by
    (series, mint); timsort merges the two sorted runs in O(n).

    Concatenated and then gathered, the bytes were copied twice and held
    three times at once: the head's last merges before a seal, of blocks
    of a few MB, set a worker's memory peak during a burst of writes."""
    order = np.argsort(np.concatenate([older.series, newer.series]), kind="stable")
    sizes = np.concatenate([np.diff(older.offsets), np.diff(newer.offsets)])[order]
    offsets = np.zeros(len(order) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = np.empty(int(offsets[-1]), np.uint8)
    _gather_two(older.data, older.offsets, newer.data, newer.offsets, order, offsets, data)
    a, b = older, newer
    columns = (np.concatenate(pair)[order] for pair in (
        (a.series, b.series), (a.mint, b.mint), (a.maxt, b.maxt), (a.counts, b.counts), (a.last_bits, b.last_bits),
    ))
    return ClosedChunks(*columns, data, offsets)


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


@kernel(cache=True, nogil=True)
def k_runs_overlapping(series, cmint, cmaxt, ids, mint, maxt):  # pragma: no cover - jitted
    """Positions of the chunks of series ids (sorted; chunks sorted by
    series) overlapping [mint, maxt], ascending.

    Each id's run is found from where the last one ended: galloping, then
    bisecting the last stride. A bisection of the whole column per id
    touched ~18 cache lines of it at random (a 240,000-chunk file): the
    `long` profile's 12-hour aggregation over 2,925 series planned its 17
    slices over 5 files in 1.4-1.5 ms of this kernel, 0.8 galloping."""
    out = np.empty(max(16, 2 * ids.shape[0]), np.int64)
    n = 0
    m = series.shape[0]
    j = 0
    for i in ids:
        if j < m and series[j] < i:
            lo = j  # series[lo] < i
            hi = j + 1
            step = 1
            while hi < m and series[hi] < i:
                lo = hi
                step *= 2
                hi = lo + step
            j = lo + 1 + np.searchsorted(series[lo + 1 : min(hi, m)], i)
        while j < m and series[j] == i:
            if cmaxt[j] >= mint and cmint[j] <= maxt:
                if n == out.shape[0]:
                    grown = np.empty(2 * n, np.int64)
                    grown[:n] = out
                    out = grown
                out[n] = j
                n += 1
            j += 1
    return out[:n]


@kernel(cache=True, nogil=True)
def _gather(data, starts, new_off, out):  # pragma: no cover - jitted
    """out[new_off[i]:new_off[i+1]] = data[starts[i]:...] for every chunk i."""
    for i in range(starts.shape[0]):
        a = starts[i]
        b = new_off[i]
        out[b : new_off[i + 1]] = data[a : a + new_off[i + 1] - b]


@kernel(cache=True, nogil=True)
def _gather_two(a, a_off, b, b_off, order, new_off, out):  # pragma: no cover - jitted
    """out[new_off[i]:new_off[i+1]] = chunk order[i] of a's chunks followed by b's."""
    k_a = a_off.shape[0] - 1
    for i in range(order.shape[0]):
        j = order[i]
        lo = new_off[i]
        n = new_off[i + 1] - lo
        if j < k_a:
            s = a_off[j]
            out[lo : lo + n] = a[s : s + n]
        else:
            s = b_off[j - k_a]
            out[lo : lo + n] = b[s : s + n]


@kernel(cache=True, nogil=True)
def k_plan_chunks(bseries, bcounts, bmint, bmaxt, where, mint, maxt):  # pragma: no cover - jitted
    """For the chunks at positions `where` of a block (its columns): each
    one's series, the samples it places whole (its count if it lies inside
    [mint, maxt], else 0), whether it does, the chunks that do not (edge,
    indices into where) and their samples' starts when decoded aside."""
    n = where.shape[0]
    series = np.empty(n, np.int64)
    placed = np.empty(n, np.int64)
    inner = np.empty(n, np.bool_)
    m = 0
    for c in range(n):
        w = where[c]
        series[c] = bseries[w]
        inside = bmint[w] >= mint and bmaxt[w] <= maxt
        inner[c] = inside
        placed[c] = bcounts[w] if inside else 0
        m += not inside
    edge = np.empty(m, np.int64)
    estarts = np.zeros(m + 1, np.int64)
    j = 0
    for c in range(n):
        if not inner[c]:
            edge[j] = c
            estarts[j + 1] = estarts[j] + bcounts[where[c]]
            j += 1
    return series, placed, inner, edge, estarts


@kernel(cache=True, nogil=True)
def k_key_chunks(series, placed, bmint, bmaxt, where, key, base, bound, last):  # pragma: no cover - jitted
    """bound[key[series[c] - base] + 1] += placed[c] for every chunk c; returns
    whether every chunk starts after the newest time already placed for its
    key (last, advanced to each chunk's max time): then a key's samples,
    laid out source after source, are strictly increasing. Chunks of one
    series in a block are sorted by time and do not overlap."""
    ok = True
    for c in range(series.shape[0]):
        k = key[series[c] - base]
        bound[k + 1] += placed[c]
        w = where[c]
        if bmint[w] <= last[k]:
            ok = False
        if bmaxt[w] > last[k]:
            last[k] = bmaxt[w]
    return ok


@kernel(cache=True, nogil=True)
def k_take_places(series, lengths, inner, where, key, base, pos):  # pragma: no cover - jitted
    """Where each chunk goes: the next free place of its key (pos, advanced);
    and the block positions and places of the chunks placed whole (inner)."""
    n = series.shape[0]
    dest = np.empty(n, np.int64)
    m = 0
    for c in range(n):
        k = key[series[c] - base]
        dest[c] = pos[k]
        pos[k] += lengths[c]
        m += inner[c]
    whole_at = np.empty(m, np.int64)
    whole_dest = np.empty(m, np.int64)
    j = 0
    for c in range(n):
        if inner[c]:
            whole_at[j] = where[c]
            whole_dest[j] = dest[c]
            j += 1
    return dest, whole_at, whole_dest


@kernel(cache=True, nogil=True)
def k_count_keys(sid, ts, key, base, mint, maxt, bound):  # pragma: no cover - jitted
    """bound[key[sid[i] - base] + 1] += 1 for every sample i in [mint, maxt]
    (a run of one series' samples at a time: pieces come grouped by series)."""
    i = 0
    n = sid.shape[0]
    while i < n:
        s = sid[i]
        c = 0
        while i < n and sid[i] == s:
            t = ts[i]
            c += (t >= mint) & (t <= maxt)
            i += 1
        bound[key[s - base] + 1] += c


@kernel(cache=True, nogil=True)
def k_scatter_keys(sid, ts, vals, key, base, mint, maxt, pos, out_t, out_v):  # pragma: no cover - jitted
    """Each sample in [mint, maxt] to the next free place of its key (pos,
    advanced), a run of one series' samples at a time."""
    i = 0
    n = sid.shape[0]
    while i < n:
        s = sid[i]
        k = key[s - base]
        j = pos[k]
        while i < n and sid[i] == s:
            t = ts[i]
            if t >= mint and t <= maxt:
                out_t[j] = t
                out_v[j] = vals[i]
                j += 1
            i += 1
        pos[k] = j


@kernel(cache=True, nogil=True)
def k_runs_after(sid, ts, key, base, last):  # pragma: no cover - jitted
    """k_key_chunks' order check for a piece (runs of one series' samples), checking
    each sample: a piece is the head's data, small next to the chunks."""
    ok = True
    for i in range(sid.shape[0]):
        k = key[sid[i] - base]
        if ts[i] <= last[k]:
            ok = False
        else:
            last[k] = ts[i]
    return ok


@kernel(cache=True, nogil=True)
def k_runs_in_range(ts, starts, mint, maxt):  # pragma: no cover - jitted
    """Per chunk j = ts[starts[j]:starts[j+1]] (sorted): where its samples in
    [mint, maxt] begin, and how many there are."""
    k = starts.shape[0] - 1
    first = np.empty(k, np.int64)
    count = np.empty(k, np.int64)
    for j in range(k):
        a = starts[j]
        b = starts[j + 1]
        lo = a + np.searchsorted(ts[a:b], mint, "left")
        hi = a + np.searchsorted(ts[a:b], maxt, "right")
        first[j] = lo
        count[j] = max(hi - lo, 0)
    return first, count


@kernel(cache=True, nogil=True)
def k_put_runs(src_t, src_v, first, dest, counts, out_t, out_v):  # pragma: no cover - jitted
    """src_t/src_v[first[j]:first[j] + counts[j]] to out_t/out_v[dest[j]:] for every j."""
    for j in range(dest.shape[0]):
        a = first[j]
        d = dest[j]
        c = counts[j]
        out_t[d : d + c] = src_t[a : a + c]
        out_v[d : d + c] = src_v[a : a + c]


@kernel(cache=True, nogil=True)
def k_pack_groups(out_t, out_v, start, end, n, mint, maxt):  # pragma: no cover - jitted
    """Pack group k = start[k]:end[k] of (out_t, out_v) for k < n, in place:
    only samples in [mint, maxt], sorted by time (stable), repeated
    timestamps dropped (the first kept). Returns ts, values, group sizes."""
    sizes = np.zeros(n, np.int64)
    w = 0
    for k in range(n):
        a = w
        ordered = True
        for i in range(start[k], end[k]):
            t = out_t[i]
            if t < mint or t > maxt:
                continue
            if w > a and t <= out_t[w - 1]:
                ordered = False
            out_t[w] = t
            out_v[w] = out_v[i]
            w += 1
        if not ordered:
            order = np.argsort(out_t[a:w], kind="mergesort")
            seg_t = out_t[a:w][order]
            seg_v = out_v[a:w][order]
            w = a
            for i in range(seg_t.shape[0]):
                if w > a and seg_t[i] == out_t[w - 1]:
                    continue
                out_t[w] = seg_t[i]
                out_v[w] = seg_v[i]
                w += 1
        sizes[k] = w - a
    return out_t[:w], out_v[:w], sizes


@kernel(cache=True, inline="always")
def _window_end(t, window_ms):  # pragma: no cover - jitted
    """First timestamp after t's chunk window (floor windows; saturates)."""
    w = t // window_ms
    if w >= INT64_MAX_C // window_ms:
        return INT64_MAX_C
    return (w + 1) * window_ms


@kernel(cache=True, inline="always")
def _row_end(t0, window_ms):  # pragma: no cover - jitted
    """First timestamp a row begun at t0 cannot hold: its chunk window's end,
    or where the offset from t0 would no longer fit the row (ROW_SPAN_MS)."""
    end = INT64_MAX_C if t0 > INT64_MAX_C - ROW_SPAN_MS else t0 + ROW_SPAN_MS
    if window_ms > 0:
        end = min(end, _window_end(t0, window_ms))
    return end


@kernel(cache=True)
def _place(slots, ts, vals, width, buf_ts, buf_vals, row_t0, count, window_ms,
           cut_series, cut_starts, cut_ts, cut_vals):  # pragma: no cover - jitted
    """Append sorted accepted samples to their rows (of `width` places, laid
    out as Head's rows_shape; timestamps as offsets from row_t0), moving out
    rows that must be cut.

    A row is cut before a sample when it is full, the sample's chunk window
    (ts // window_ms) differs from the row's first sample's, or its offset
    would not fit (ROW_SPAN_MS). Cut rows are copied to cut_* (chunk i =
    cut_ts[cut_starts[i]:cut_starts[i+1]] of series cut_series[i]). Returns
    (chunks cut, samples cut).
    """
    ncut = 0
    nsamp = 0
    # End of the current row (_row_end), computed once per row: samples come
    # in increasing ts per series, so "another row" is t >= wend (two int64
    # divisions per sample were a third of this loop).
    prev = -1
    wend = INT64_MAX_C
    for i in range(slots.shape[0]):
        s = slots[i]
        t = ts[i]
        c = count[s]
        if s != prev:
            prev = s
            wend = INT64_MAX_C
            if c > 0:
                wend = _row_end(row_t0[s], window_ms)
        if c > 0:
            cut = c == width or t >= wend
            if cut:
                cut_series[ncut] = s
                cut_starts[ncut] = nsamp
                t0 = row_t0[s]
                for j in range(c):
                    cut_ts[nsamp + j] = t0 + buf_ts[j >> SLOT_SHIFT, s, j & SLOT_MASK]
                    cut_vals[nsamp + j] = buf_vals[j >> SLOT_SHIFT, s, j & SLOT_MASK]
                nsamp += c
                ncut += 1
                c = 0
        if c == 0:
            row_t0[s] = t
            wend = _row_end(t, window_ms)
        buf_ts[c >> SLOT_SHIFT, s, c & SLOT_MASK] = t - row_t0[s]
        buf_vals[c >> SLOT_SHIFT, s, c & SLOT_MASK] = vals[i]
        count[s] = c + 1
    cut_starts[ncut] = nsamp
    return ncut, nsamp


@kernel(cache=True, nogil=True)
def k_open_rows(buf_ts, buf_vals, row_t0, rows, starts, ts, vals):  # pragma: no cover - jitted
    """ts/vals[starts[i]:starts[i+1]] = the first places of row rows[i]."""
    for i in range(rows.shape[0]):
        r = rows[i]
        a = starts[i]
        t0 = row_t0[r]
        for j in range(starts[i + 1] - a):
            ts[a + j] = t0 + buf_ts[j >> SLOT_SHIFT, r, j & SLOT_MASK]
            vals[a + j] = buf_vals[j >> SLOT_SHIFT, r, j & SLOT_MASK]


def place_reference(slots, ts, vals, width, buf_ts, buf_vals, row_t0, count, window_ms,
                    cut_series, cut_starts, cut_ts, cut_vals):
    """The plain-Python twin of _place (same code, not compiled), for tests."""
    return _place.py_func(slots, ts, vals, width, buf_ts, buf_vals, row_t0, count, window_ms,
                          cut_series, cut_starts, cut_ts, cut_vals)


@kernel(cache=True)
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


# The shapes of a batch series_order tells apart.
IN_ORDER, GROUPED, SCATTERED = 0, 1, 2


@kernel(cache=True)
def series_order(slots, ts):  # pragma: no cover - jitted
    """(shape, order): how a batch stands to (series, ts) order.

    Remote-write batches list each series' samples together, oldest first:
    IN_ORDER if the series also come in slot order (the order they were
    first seen), else GROUPED with `order`, the permutation that sorts the
    series' runs (O(n + runs log runs), no sort of the samples). SCATTERED:
    a series' samples are split or out of time order; the caller sorts.
    """
    n = slots.shape[0]
    none = np.empty(0, np.int64)
    runs = 1 if n else 0
    in_order = True
    for i in range(1, n):
        if slots[i] != slots[i - 1]:
            runs += 1
            if slots[i] < slots[i - 1]:
                in_order = False
        elif ts[i] < ts[i - 1]:
            return SCATTERED, none
    if in_order:
        return IN_ORDER, none
    starts = np.empty(runs + 1, np.int64)
    keys = np.empty(runs, np.int64)
    r = 0
    for i in range(n):
        if i == 0 or slots[i] != slots[i - 1]:
            starts[r] = i
            keys[r] = slots[i]
            r += 1
    starts[runs] = n
    by_key = np.argsort(keys)
    for k in range(1, runs):
        if keys[by_key[k]] == keys[by_key[k - 1]]:
            return SCATTERED, none  # one series in two runs
    order = np.empty(n, np.int64)
    p = 0
    for k in range(runs):
        for j in range(starts[by_key[k]], starts[by_key[k] + 1]):
            order[p] = j
            p += 1
    return GROUPED, order


# Verdicts written by _classify, one per sample. Prepared.verdicts also
# uses V_OOO for an older sample accepted into the out-of-order head (then
# V_OLDER means refused as too old).
V_ACCEPT, V_DUPLICATE, V_CONFLICT, V_OLDER, V_OOO = 0, 1, 2, 3, 4
N_VERDICTS = 5


@kernel(cache=True)
def _classify(s, t, bits, last_ts, last_bits, verdict):  # pragma: no cover - jitted
    """Verdict per sample of a batch sorted by (series, ts), written to verdict[i].

    The reference of each sample is the series' newest sample so far (stored
    or accepted earlier in this batch): older is V_OLDER (an out-of-order
    candidate), the same ts is a duplicate (same bits) or a conflict (other
    bits), newer is accepted. Returns (duplicates, conflicts, older).
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
            verdict[i] = 3
        elif has_ref and ti == ref_t:
            if bits[i] == ref_b:
                dup += 1
                verdict[i] = 1
            else:
                conf += 1
                verdict[i] = 2
        else:
            verdict[i] = 0
            has_ref = True
            ref_t = ti
            ref_b = bits[i]
    return dup, conf, ooo


def classify_reference(s, t, bits, last_ts, last_bits, verdict):
    """The plain-Python twin of _classify (same code, not compiled), for tests."""
    return _classify.py_func(s, t, bits, last_ts, last_bits, verdict)


def _within(newest: np.ndarray, ts: np.ndarray, window_ms: int) -> np.ndarray:
    """newest - ts <= window_ms, elementwise, for ts <= newest (int64 arrays).

    `ts >= newest - window_ms` wraps around in int64 near the minimum
    timestamp (newest INT64_MIN+5, window 10 min: the bound turns into a
    huge positive number and a sample 4 ms older is refused). The difference
    taken in uint64 is exact: it lies in [0, 2**64 - 1] when ts <= newest.
    """
    diff = newest.view(np.uint64) - ts.view(np.uint64)
    return diff <= np.uint64(min(max(int(window_ms), 0), 2**64 - 1))


def chunk_starts(sids: np.ndarray, ts: np.ndarray, width: int, window_ms: int) -> np.ndarray:
    """Chunk boundaries for samples sorted by (series, ts): starts[i]..starts[i+1].

    A chunk ends where the series changes, the chunk window (ts // window_ms)
    changes, or it holds `width` samples: the same cuts the head makes, so
    re-chunked data (seal with OOO samples, compaction) has full chunks.
    """
    n = len(ts)
    if n == 0:
        return np.zeros(1, np.int64)
    brk = sids[1:] != sids[:-1]
    if window_ms > 0:
        win = ts // window_ms
        brk |= win[1:] != win[:-1]
    run_starts = np.concatenate(([0], np.flatnonzero(brk) + 1))
    run_len = np.diff(np.concatenate((run_starts, [n])))
    pos = np.arange(n, dtype=np.int64) - np.repeat(run_starts, run_len)
    return np.concatenate((np.flatnonzero(pos % width == 0), [n])).astype(np.int64)


def merge_pieces(
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate (series, ts, values) pieces and sort by (series, ts).

    Where a (series, ts) occurs more than once the earliest piece wins (the
    sort is stable), which is "the first value is kept": callers pass older
    sources first. Ingest never stores such pairs twice; this is the read-time
    safety net for overlapping sources (the OOO head, unmerged segments).
    """
    if not pieces:
        e = np.empty(0, np.int64)
        return e, e, np.empty(0, np.float64)
    sid = np.concatenate([p[0] for p in pieces]).astype(np.int64, copy=False)
    ts = np.concatenate([p[1] for p in pieces]).astype(np.int64, copy=False)
    vals = np.concatenate([p[2] for p in pieces]).astype(np.float64, copy=False)
    order = np.lexsort((ts, sid))
    sid, ts, vals = sid[order], ts[order], vals[order]
    if len(ts) > 1:
        keep = np.ones(len(ts), bool)
        keep[1:] = (sid[1:] != sid[:-1]) | (ts[1:] != ts[:-1])
        if not keep.all():
            sid, ts, vals = sid[keep], ts[keep], vals[keep]
    return sid, ts, vals


def resolve_against(
    existing: tuple[np.ndarray, np.ndarray, np.ndarray],
    sid: np.ndarray, ts: np.ndarray, vals: np.ndarray,
) -> np.ndarray:
    """Verdicts of candidate samples (sorted by series, ts) against stored data
    and against earlier candidates: V_ACCEPT, V_DUPLICATE or V_CONFLICT.

    Vectorised: stored samples (flag 0) and candidates (flag 1, in order) are
    sorted together by (series, ts, flag, position); the first of each
    (series, ts) group is the sample that stays, later ones compare bits.
    """
    esid, ets, evals = existing
    m = len(esid)
    all_sid = np.concatenate((esid, sid)).astype(np.int64, copy=False)
    all_ts = np.concatenate((ets, ts)).astype(np.int64, copy=False)
    all_bits = np.concatenate((evals, vals)).astype(np.float64, copy=False).view(np.uint64)
    pos = np.arange(len(all_sid), dtype=np.int64)
    order = np.lexsort((pos, all_ts, all_sid))
    s2, t2, b2 = all_sid[order], all_ts[order], all_bits[order]
    first = np.ones(len(order), bool)
    first[1:] = (s2[1:] != s2[:-1]) | (t2[1:] != t2[:-1])
    head_of_group = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    verdict_sorted = np.where(
        first, V_ACCEPT, np.where(b2 == b2[head_of_group], V_DUPLICATE, V_CONFLICT)
    ).astype(np.int8)
    verdict = np.empty(len(order), np.int8)
    verdict[order] = verdict_sorted
    return verdict[m:]


_EMPTY_I = np.empty(0, np.int64)
_EMPTY_F = np.empty(0, np.float64)
# The OOO head is folded into one piece when it has more than this many.
_OOO_PIECES_MAX = 32

Reader = Callable[[np.ndarray, int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]


@dataclass(slots=True)
class Prepared:
    """A validated batch: accepted samples sorted by (series, ts), and the verdicts.

    slots/ts/values are the in-order samples (for the open rows); ooo_* the
    accepted out-of-order ones (for the OOO head). conflict_ids holds the
    series id of every conflicting sample (for per-producer counting).
    """

    slots: np.ndarray  # int64[n] accepted in order
    ts: np.ndarray
    values: np.ndarray
    run_ids: np.ndarray  # distinct series of the in-order samples, in order
    run_counts: np.ndarray  # samples per distinct series
    accepted: int  # in order + out of order
    duplicates: int
    conflicts: int
    too_old: int  # rejected: older than the series' newest sample - OOO window
    ooo_slots: np.ndarray = field(default_factory=lambda: _EMPTY_I)
    ooo_ts: np.ndarray = field(default_factory=lambda: _EMPTY_I)
    ooo_values: np.ndarray = field(default_factory=lambda: _EMPTY_F)
    conflict_ids: np.ndarray = field(default_factory=lambda: _EMPTY_I)
    verdicts: np.ndarray | None = None

    @property
    def ooo_accepted(self) -> int:
        return int(len(self.ooo_ts))

    def wal_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(run ids, run counts, ts, values) of all accepted samples, grouped by
        series with increasing ts: the WAL SAMPLES record of this batch."""
        if not len(self.ooo_ts):
            return self.run_ids, self.run_counts, self.ts, self.values
        sid, ts, vals = merge_pieces(
            [(self.slots, self.ts, self.values), (self.ooo_slots, self.ooo_ts, self.ooo_values)]
        )
        brk = np.flatnonzero(sid[1:] != sid[:-1]) + 1
        starts = np.concatenate(([0], brk))
        return sid[starts], np.diff(np.concatenate((starts, [len(sid)]))), ts, vals


class Head:
    """In-memory open rows, closed chunks and out-of-order samples of one shard."""

    def __init__(self, chunk_samples: int = CHUNK_SAMPLES, window_ms: int = CHUNK_WINDOW_MS) -> None:
        self.width = chunk_samples
        self.window_ms = window_ms
        self.cap = 0
        # The open rows, in slot blocks (SLOT_BLOCK, rows_shape); timestamps
        # as int32 offsets from the row's first (row_t0, ROW_SPAN_MS).
        self.buf_ts = np.empty(self.rows_shape(0), np.int32)
        self.buf_vals = np.empty(self.rows_shape(0), np.float64)
        self.row_t0 = np.empty(0, np.int64)
        self.count = np.empty(0, np.int32)
        # Newest sample per series, including sealed data: the base of the
        # out-of-order / duplicate checks.
        self.last_ts = np.empty(0, np.int64)
        self.last_bits = np.empty(0, np.uint64)
        self.closed: list[ClosedChunks] = []
        # Out-of-order head: (series, ts, values) pieces, each sorted by (series, ts).
        self.ooo: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.ooo_samples = 0
        self.num_samples = 0
        self.min_time = np.iinfo(np.int64).max
        self.max_time = INT64_MIN

    def rows_shape(self, cap: int) -> tuple[int, int, int]:
        """(slot blocks, series, places per block) of rows for cap series."""
        return (-(-self.width // SLOT_BLOCK), cap, SLOT_BLOCK)

    def successor(self) -> Head:
        """An empty head that goes on from this one (the per-series newest
        sample is kept), while this one is sealed: it gets no more appends."""
        h = Head(self.width, self.window_ms)
        h.cap = self.cap
        h.buf_ts = heap.mapped_empty(self.rows_shape(self.cap), np.int32)  # pages committed on use
        h.buf_vals = heap.mapped_empty(self.rows_shape(self.cap), np.float64)
        h.row_t0 = np.zeros(self.cap, np.int64)
        h.count = np.zeros(self.cap, np.int32)
        h.last_ts = self.last_ts.copy()
        h.last_bits = self.last_bits.copy()
        return h

    def ensure(self, n_series: int) -> None:
        """Grow the per-series arrays to hold ids < n_series (doubling)."""
        if n_series <= self.cap:
            return
        cap = max(n_series, 2 * self.cap, 64)
        extra = cap - self.cap
        # Copy the slot blocks in use into fresh pages: the others' pages are
        # only committed once series write to them (concatenating, or copying
        # every block, would commit all of them).
        nb = -(-int(self.count.max()) // SLOT_BLOCK) if self.cap else 0
        for name, dtype in (("buf_ts", np.int32), ("buf_vals", np.float64)):
            grown = heap.mapped_empty(self.rows_shape(cap), dtype)
            grown[:nb, : self.cap] = getattr(self, name)[:nb]
            setattr(self, name, grown)
        self.count = np.concatenate([self.count, np.zeros(extra, np.int32)])
        self.row_t0 = np.concatenate([self.row_t0, np.zeros(extra, np.int64)])
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

    def prepare(
        self,
        slots: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        ooo_window_ms: int = 0,
        existing: Reader | None = None,
    ) -> Prepared:
        """Validate a batch against the head (and `existing`) without changing it.

        Samples older than their series' newest by at most ooo_window_ms are
        checked against the stored samples of their series in that range:
        `existing(ids, mint, maxt)` returns them as pieces (default: this
        head's own data; the shard adds its segments).
        """
        n = int(ts.shape[0])
        if n == 0:
            return Prepared(_EMPTY_I, _EMPTY_I, _EMPTY_F, _EMPTY_I, _EMPTY_I, 0, 0, 0, 0)
        self.ensure(int(slots.max()) + 1)
        # Own writable copies (a frame's arrays are read-only views), so the
        # kernels see one array type and the batch's order can be kept as is.
        slots = np.array(slots, np.int64)
        ts = np.array(ts, np.int64)
        values = np.array(values, np.float64)
        shape, order = series_order(slots, ts)
        if shape == IN_ORDER:
            s, t, v = slots, ts, values
            order = None  # the batch's own order
        elif shape == GROUPED:
            s, t, v = slots[order], ts[order], values[order]
        else:
            order, s, t = self._scattered_order(slots, ts)
            v = values[order]
        verdict = np.empty(n, np.int8)
        n_dup, n_conf, n_older = _classify(
            s, t, v.view(np.uint64), self.last_ts, self.last_bits, verdict
        )
        conflict_ids = s[verdict == V_CONFLICT] if n_conf else _EMPTY_I
        too_old = n_older
        ooo = (_EMPTY_I, _EMPTY_I, _EMPTY_F)
        if n_older and ooo_window_ms > 0:
            older = verdict == V_OLDER
            cs, ct, cv = s[older], t[older], v[older]
            in_window = _within(self.last_ts[cs], ct, ooo_window_ms)
            too_old = int((~in_window).sum())
            cs, ct, cv = cs[in_window], ct[in_window], cv[in_window]
            if len(cs):
                ids = np.unique(cs)
                reader = existing if existing is not None else self.read
                found = merge_pieces(reader(ids, int(ct.min()), int(ct.max())))
                cverdict = resolve_against(found, cs, ct, cv)
                verdict[np.flatnonzero(older)[in_window]] = np.where(
                    cverdict == V_ACCEPT, V_OOO, cverdict
                )
                n_dup += int((cverdict == V_DUPLICATE).sum())
                cconf = cverdict == V_CONFLICT
                if cconf.any():
                    n_conf += int(cconf.sum())
                    conflict_ids = np.concatenate((conflict_ids, cs[cconf]))
                ok = cverdict == V_ACCEPT
                ooo = (cs[ok], ct[ok], cv[ok])
        verdicts = None
        if n_dup or n_conf or n_older:  # else every sample is accepted as it is
            if order is None:
                verdicts = verdict
            else:
                verdicts = np.empty(n, np.int8)
                verdicts[order] = verdict
            keep = verdict == V_ACCEPT
            s, t, v = s[keep], t[keep], v[keep]
        if len(s):
            brk = np.flatnonzero(s[1:] != s[:-1]) + 1
            run_starts = np.concatenate(([0], brk))
            run_ids = s[run_starts]
            run_counts = np.diff(np.concatenate((run_starts, [len(s)])))
        else:
            run_ids = run_counts = _EMPTY_I
        return Prepared(
            s, t, v, run_ids, run_counts,
            accepted=int(len(s) + len(ooo[0])),
            duplicates=int(n_dup),
            conflicts=int(n_conf),
            too_old=int(too_old),
            ooo_slots=ooo[0], ooo_ts=ooo[1], ooo_values=ooo[2],
            conflict_ids=conflict_ids,
            verdicts=verdicts,
        )

    def _scattered_order(
        self, slots: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order, slots[order], ts[order]): the (series, ts) order of a batch
        whose series' samples are split or unsorted."""
        if len(slots) * 4 >= self.cap:
            # Big batches (and WAL replay groups) usually are time-ordered per
            # series: an O(n) stable grouping by series is then enough.
            order = group_order(slots, self.cap)
            s, t = slots[order], ts[order]
            if not np.any((s[1:] == s[:-1]) & (t[1:] < t[:-1])):
                return order, s, t
        order = np.lexsort((ts, slots))
        return order, slots[order], ts[order]

    def commit(self, p: Prepared) -> int:
        """Apply a prepared batch (validated against the current state). Returns chunks cut."""
        if len(p.ooo_ts):
            self.ooo.append((p.ooo_slots, p.ooo_ts, p.ooo_values))
            if len(self.ooo) > _OOO_PIECES_MAX:
                # Many small appends: fold the pieces into one sorted piece so
                # reads scan a few arrays, not one per append.
                self.ooo = [merge_pieces(self.ooo)]
            self.ooo_samples += len(p.ooo_ts)
            self.num_samples += len(p.ooo_ts)
            self.min_time = min(self.min_time, int(p.ooo_ts.min()))
            self.max_time = max(self.max_time, int(p.ooo_ts.max()))
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
            p.slots, p.ts, p.values, self.width, self.buf_ts, self.buf_vals, self.row_t0, self.count,
            self.window_ms, cut_series, cut_starts, cut_ts, cut_vals,
        )
        if ncut:
            self.closed.append(
                ClosedChunks.encode(
                    cut_series[:ncut], cut_ts[:nsamp], cut_vals[:nsamp], cut_starts[: ncut + 1]
                )
            )
            self._merge_closed()
        ends = np.cumsum(p.run_counts) - 1
        self.last_ts[p.run_ids] = p.ts[ends]
        self.last_bits[p.run_ids] = p.values[ends].view(np.uint64)
        self.num_samples += n
        self.min_time = min(self.min_time, int(p.ts.min()))
        self.max_time = max(self.max_time, int(p.ts.max()))
        return ncut

    def _merge_closed(self) -> None:
        """Merge the newest closed blocks while the older one is at most
        twice the newer: O(log n) blocks for reads to visit (one per commit
        that cut chunks made a light query scan hundreds), each chunk copied
        O(log n) times. Blocks stay sorted by (series, mint), as a commit
        cuts them, so reads of a few series binary-search them."""
        closed = self.closed
        while len(closed) >= 2 and len(closed[-2]) <= 2 * len(closed[-1]):
            closed[-2:] = [merge_blocks(closed[-2], closed[-1])]

    def _open_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(series per sample, ts, values, starts) of the open rows `rows`."""
        cnt = self.count[rows].astype(np.int64)
        rows = rows[cnt > 0]
        cnt = cnt[cnt > 0]
        starts = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(cnt, out=starts[1:])
        ts = np.empty(int(starts[-1]), np.int64)
        vals = np.empty(len(ts), np.float64)
        k_open_rows(self.buf_ts, self.buf_vals, self.row_t0, rows, starts, ts, vals)
        return np.repeat(rows, cnt), ts, vals, starts

    def _ends(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and last timestamps of the open rows `rows` (each holding samples)."""
        last = self.count[rows].astype(np.int64) - 1
        t0 = self.row_t0[rows]
        return t0, t0 + self.buf_ts[last >> SLOT_SHIFT, rows, last & SLOT_MASK]

    def read(
        self, ids: np.ndarray, mint: int, maxt: int
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pieces (series per sample, ts, values) of series `ids` overlapping [mint, maxt].

        In-order pieces come first (closed blocks oldest first, then the open
        rows), then out-of-order pieces, which overlap them in time: callers
        merge with merge_pieces. Samples outside the range may be included.
        """
        pending = PendingRead()
        self.plan_read(ids, mint, maxt, pending)
        return pending.decode()

    def plan_read(
        self, ids: np.ndarray, mint: int, maxt: int, pending: PendingRead, want: np.ndarray | None = None
    ) -> None:
        """Add read's pieces to `pending`: closed chunks (immutable) to be
        decoded later, the open rows (which appends change) copied now.
        `want`: ids as a bool mask indexed by id, if the caller has one."""
        ids = np.asarray(ids, np.int64)
        ids = ids[ids < self.cap]
        if len(ids) == 0 or self.num_samples == 0:
            return
        if want is None:
            want = np.zeros(max(self.cap, 1), bool)
            want[ids] = True
        for cc in self.closed:
            sel = cc.overlapping(ids, want, mint, maxt)
            if len(sel):
                pending.chunks(cc.locate, sel, int(cc.counts[sel].sum()))
        cnt = self.count[ids]
        rows = ids[cnt > 0]
        if len(rows):
            first, last = self._ends(rows)
            rows = rows[(first <= maxt) & (last >= mint)]
        sids, ts, vals, _ = self._open_rows(rows)
        if len(ts):
            pending.piece((sids, ts, vals))
        for osid, ots, ovals in self.ooo:
            sel = want[osid] & (ots >= mint) & (ots <= maxt)
            if sel.any():
                pending.piece((osid[sel], ots[sel], ovals[sel]))

    def series_time_ranges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, mint, maxt) of every series with data in the head."""
        ids_l, mint_l, maxt_l = [], [], []
        for cc in self.closed:
            ids_l.append(cc.series)
            mint_l.append(cc.mint)
            maxt_l.append(cc.maxt)
        rows = np.flatnonzero(self.count > 0)
        ids_l.append(rows)
        first, last = self._ends(rows)
        mint_l.append(first)
        maxt_l.append(last)
        for osid, ots, _ in self.ooo:
            ids_l.append(osid)
            mint_l.append(ots)
            maxt_l.append(ots)
        return np.concatenate(ids_l), np.concatenate(mint_l), np.concatenate(maxt_l)

    def all_chunks(self) -> ClosedChunks:
        """Every head sample as chunks sorted by (series, mint), in one block
        (seal_blocks, concatenated)."""
        return concat_chunks(list(self.seal_blocks()))

    def seal_blocks(self, group_samples: int = SEAL_GROUP_SAMPLES) -> Iterator[ClosedChunks]:
        """Every head sample as chunks (open rows encoded as short chunks),
        sorted by (series, mint): what a seal writes. Does not change the head.

        Yielded in blocks of about group_samples samples over consecutive
        series ids, so a seal holds one block's temporaries at a time (the
        whole head at once, 4 M samples, took ~180 MiB). Series with
        out-of-order samples are decoded, merged with them and re-chunked
        (chunk_starts), so their sealed chunks do not overlap.
        """
        n = self.cap
        per = self.count[:n].astype(np.int64)
        for cc in self.closed:
            per += np.bincount(cc.series, weights=cc.counts, minlength=n).astype(np.int64)
        for osid, _, _ in self.ooo:
            per += np.bincount(osid, minlength=n)
        cum = np.cumsum(per)
        total = int(cum[-1]) if n else 0
        cuts = np.searchsorted(cum, np.arange(group_samples, total, group_samples), "left") + 1
        bounds = np.unique(np.concatenate(([0], cuts, [n]))).tolist()
        for a, b in zip(bounds[:-1], bounds[1:]):
            block = self._chunks_between(a, b)
            if len(block):
                yield block

    def _chunks_between(self, a: int, b: int) -> ClosedChunks:
        """seal_blocks' block of series ids a <= id < b."""
        rows = a + np.flatnonzero(self.count[a:b] > 0)
        sids, ts, vals, starts = self._open_rows(rows)
        parts = []
        for cc in self.closed:  # each sorted by series
            i0, i1 = np.searchsorted(cc.series, [a, b]).tolist()
            if i1 > i0:
                parts.append(cc.select(np.arange(i0, i1)))
        allc = concat_chunks(parts + [ClosedChunks.encode(rows, ts, vals, starts)])
        ooo = []
        for osid, ots, ovals in self.ooo:
            m = (osid >= a) & (osid < b)
            if m.any():
                ooo.append((osid[m], ots[m], ovals[m]))
        if ooo:
            ooo_ids = np.unique(np.concatenate([o[0] for o in ooo]))
            touched = np.isin(allc.series, ooo_ids)
            pieces = [allc.select(np.flatnonzero(touched)).decode()] + ooo
            msid, mts, mvals = merge_pieces(pieces)
            starts = chunk_starts(msid, mts, self.width, self.window_ms)
            merged = ClosedChunks.encode(msid[starts[:-1]], mts, mvals, starts)
            allc = concat_chunks([allc.select(np.flatnonzero(~touched)), merged])
        if len(allc) == 0:
            return allc
        return allc.select(np.lexsort((allc.mint, allc.series)))

    def encode_open_rows(self, group_samples: int = SEAL_GROUP_SAMPLES) -> ClosedChunks:
        """The open rows as one block of (short) chunks, sorted by series.
        Does not change the head: a frozen head's seal thread calls it.
        Encoded a group of rows at a time: the temporaries of all rows at
        once would outweigh the rows themselves."""
        rows = np.flatnonzero(self.count > 0)
        per = max(1, group_samples // self.width)
        blocks = []
        for i in range(0, len(rows), per):
            _, ts, vals, starts = self._open_rows(rows[i : i + per])
            blocks.append(ClosedChunks.encode(rows[i : i + per], ts, vals, starts))
        return concat_chunks(blocks)

    def hold_rows_as(self, block: ClosedChunks) -> None:
        """Keep the open rows as `block` (encode_open_rows of this head, which
        got no samples since) and give the rows' pages back to the kernel.

        A frozen head does this first thing in its seal: its rows would
        otherwise stay resident while the segment is written (seconds), as
        the successor's rows fill with the next samples of the same series
        (at 50,000 series a shard's rows are ~90 MB)."""
        if len(block):
            self.closed.append(block)
        self._drop_rows()

    def reset(self) -> None:
        """Drop all samples after they were sealed; keep per-series newest ts.

        The rows' pages go back to the kernel (a row costs memory again only
        once its series gets a sample): the shard resets a sealed head before
        dropping it, so its freed rows do not come back to a successor as
        pages already committed."""
        self.closed = []
        self.ooo = []
        self.ooo_samples = 0
        self._drop_rows()
        self.num_samples = 0
        self.min_time = np.iinfo(np.int64).max
        self.max_time = INT64_MIN

    def _drop_rows(self) -> None:
        """Empty the open rows and give their pages back to the kernel."""
        self.count[:] = 0
        heap.release_pages(self.buf_ts)
        heap.release_pages(self.buf_vals)

    @property
    def num_chunks(self) -> int:
        return sum(len(c) for c in self.closed)


def warm_up() -> None:
    """Compile (or load from the cache) the head's kernels at worker start.

    A batch big enough for the O(n) grouping, rows that fill and are cut,
    and a read back: the first write and the first query must not pay
    ~0.6 s of compilation.
    """
    head = Head(chunk_samples=2)
    slots = np.array([0, 1, 0, 1, 0, 1], np.int64)
    ts = np.array([0, 0, 1000, 1000, 2000, 2000], np.int64)
    for sl in (slots, slots[::-1].copy()):
        head.commit(head.prepare(sl, ts, np.ones(len(ts))))
    head.read(np.array([0, 1], np.int64), 0, 2000)
    pending = PendingRead()
    head.plan_read(np.array([0, 1], np.int64), 0, 2000, pending)
    pending.series(np.array([0, 1], np.int64), np.array([1, 0], np.int64), [Labels(), Labels()], 0, 1000)
    # Chunks partly in range (decoded aside), and overlapping sources (packed).
    pending.series(np.array([0, 1], np.int64), np.array([1, 0], np.int64), [Labels(), Labels()], 500, 2500)
    k_pack_groups(ts.copy(), np.ones(len(ts)), np.zeros(1, np.int64), np.full(1, len(ts), np.int64), 1, 0, 2000)
    group_order(slots, 2)
    series_order(slots, ts)
    # Scattered chunks of head blocks (writeable) and of mapped segment files (read-only).
    data = np.arange(6, dtype=np.uint8)
    offsets = np.array([0, 2, 4, 6], np.int64)
    for buf in (data, np.frombuffer(data.tobytes(), np.uint8)):
        gather_chunks(buf, offsets, np.array([0, 2], np.int64))
    block = ClosedChunks(offsets[1:] // 2, offsets[:-1], offsets[:-1], offsets[1:], offsets[1:].astype(np.uint64),
                         data, offsets)
    merge_blocks(block, block)
    # Chunk columns of head blocks and of mapped index files.
    col = np.array([0, 1, 1], np.int64)
    for c in (col, np.frombuffer(col.tobytes(), np.int64)):
        k_runs_overlapping(c, c, c, np.array([1], np.int64), 0, 1)
        where = np.array([1, 2], np.int64)
        series, placed, _, _, _ = k_plan_chunks(c, c, c, c, where, 0, 1)
        k_key_chunks(series, placed, c, c, where, np.zeros(2, np.int64), 0, np.zeros(3, np.int64), np.zeros(2, np.int64))
