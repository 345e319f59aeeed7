"""The head's open rows: each series' newest samples (up to a chunk's
worth, head.CHUNK_SAMPLES) as a bit stream in a pool of linked blocks.

Raw rows (an int32 timestamp offset and a float64 a sample, 12 bytes)
were most of a worker's head: a seal every 4 M samples leaves ~40 samples
a row at 100,000 series, 48 MiB resident at the end of `medium`'s ingest,
a sixth of the tree's peak. Encoded as below the benchmark's samples take
~4 bytes (1-19 bits of timestamp, 3-4 bytes of XOR'd value).

Layout: state[s] holds series s's row in ROW_FIELDS int64s (one cache
line): the first and last timestamps, the last delta, the last value's
bits, the XOR window, the row's first and current block and the bits used
in the current block; count[s] is its number of samples. A block is
BLOCK_WORDS uint64s (pool[b]); nxt[b] is the row's next block. The blocks
of a row that is cut into a chunk go to a free list, which allocation takes
from first, else the next never-used block: the pool's pages are committed
as far as the rows ever reached at once.

A row's stream, bits LSB-first in each word, words and blocks in order:
  first sample   value bits (64); its timestamp is state's T0
  each next      timestamp: delta-of-delta (this delta minus the previous,
                 the first against 0):
                   '0' dod 0, '10' + 8 bits of zigzag(dod), '110' + 16,
                   '111' + 32 (a row spans less than 2**31 ms: always enough)
                 value: XOR with the previous value's bits, Gorilla's as
                 chunkenc's XOR stream (the 5-bit lead capped at 31):
                   '0' equal, '10' + the window's bits,
                   '11' + 5 bits lead + 6 bits (length - 1) + the bits
A sample takes at most 35 + 77 bits, less than a block, so it starts at
most one new block (OpenRows.reserve).
"""

from __future__ import annotations

import numpy as np

from athens import heap
from athens.kernels import kernel
from athens.shards.chunkenc import _clz, _ctz, _mask, _unzigzag, _zigzag

# state columns
T0, LAST, DELTA, BITS, WIN, FIRST, CUR, BIT = range(8)
ROW_FIELDS = 8
BLOCK_WORDS = 4
BLOCK_BITS = 64 * BLOCK_WORDS
# Blocks a new pool holds (grown by doubling, OpenRows.reserve).
MIN_POOL_BLOCKS = 4096

_U0 = np.uint64(0)
_U1 = np.uint64(1)


@kernel(cache=True, inline="always")
def _alloc(pool, nxt, alloc):  # pragma: no cover - jitted
    """A zeroed block: the free list's first, else the next never used
    (alloc = [blocks ever used, head of the free list or -1])."""
    b = alloc[1]
    if b >= 0:
        alloc[1] = nxt[b]
    else:
        b = alloc[0]
        alloc[0] = b + 1
    for w in range(BLOCK_WORDS):
        pool[b, w] = _U0
    nxt[b] = -1
    return b


@kernel(cache=True, inline="always")
def _put(pool, nxt, alloc, blk, bit, v, n):  # pragma: no cover - jitted
    """Append the low n (<= 64) bits of v (no higher bits set) at the
    cursor (blk, bit); returns the cursor after them."""
    while n > 0:
        if bit == BLOCK_BITS:
            nb = _alloc(pool, nxt, alloc)
            nxt[blk] = nb
            blk = nb
            bit = 0
        o = bit & 63
        take = min(n, 64 - o)
        pool[blk, bit >> 6] |= v << np.uint64(o)
        v = _U0 if take == 64 else v >> np.uint64(take)
        n -= take
        bit += take
    return blk, bit


@kernel(cache=True, inline="always")
def _get(pool, nxt, blk, bit, n):  # pragma: no cover - jitted
    """The next n (<= 64) bits at the cursor, and the cursor after them."""
    v = _U0
    got = 0
    while got < n:
        if bit == BLOCK_BITS:
            blk = nxt[blk]
            bit = 0
        o = bit & 63
        take = min(n - got, 64 - o)
        v |= ((pool[blk, bit >> 6] >> np.uint64(o)) & _mask(take)) << np.uint64(got)
        got += take
        bit += take
    return v, blk, bit


@kernel(cache=True, inline="always")
def start_row(pool, nxt, alloc, state, s, t, vb):  # pragma: no cover - jitted
    """Begin series s's row with the sample (t, value bits vb)."""
    b = _alloc(pool, nxt, alloc)
    pool[b, 0] = vb
    state[s, T0] = t
    state[s, LAST] = t
    state[s, DELTA] = 0
    state[s, BITS] = np.int64(vb)
    state[s, WIN] = -1
    state[s, FIRST] = b
    state[s, CUR] = b
    state[s, BIT] = 64


@kernel(cache=True, inline="always")
def append_sample(pool, nxt, alloc, state, s, t, vb):  # pragma: no cover - jitted
    """Append (t, value bits vb) to series s's row (t after its last)."""
    blk = state[s, CUR]
    bit = state[s, BIT]
    delta = t - state[s, LAST]
    dod = delta - state[s, DELTA]
    if dod == 0:
        blk, bit = _put(pool, nxt, alloc, blk, bit, _U0, 1)
    else:
        z = _zigzag(dod)
        if z < np.uint64(256):
            blk, bit = _put(pool, nxt, alloc, blk, bit, _U1 | (z << np.uint64(2)), 10)
        elif z < np.uint64(65536):
            blk, bit = _put(pool, nxt, alloc, blk, bit, np.uint64(3) | (z << np.uint64(3)), 19)
        else:
            blk, bit = _put(pool, nxt, alloc, blk, bit, np.uint64(7) | (z << np.uint64(3)), 35)
    x = vb ^ np.uint64(state[s, BITS])
    if x == _U0:
        blk, bit = _put(pool, nxt, alloc, blk, bit, _U0, 1)
    else:
        lz = min(_clz(x), 31)
        tz = _ctz(x)
        win = state[s, WIN]
        lead = win & 255
        trail = win >> 8
        if win >= 0 and lz >= lead and tz >= trail:
            blk, bit = _put(pool, nxt, alloc, blk, bit, _U1, 2)
            blk, bit = _put(pool, nxt, alloc, blk, bit, x >> np.uint64(trail), 64 - lead - trail)
        else:
            sig = 64 - lz - tz
            head = np.uint64(3) | (np.uint64(lz) << np.uint64(2)) | (np.uint64(sig - 1) << np.uint64(7))
            blk, bit = _put(pool, nxt, alloc, blk, bit, head, 13)
            blk, bit = _put(pool, nxt, alloc, blk, bit, x >> np.uint64(tz), sig)
            state[s, WIN] = lz | (tz << 8)
    state[s, LAST] = t
    state[s, DELTA] = delta
    state[s, BITS] = np.int64(vb)
    state[s, CUR] = blk
    state[s, BIT] = bit


@kernel(cache=True, inline="always")
def decode_row(pool, nxt, state, s, n, ts, vbits, a):  # pragma: no cover - jitted
    """Series s's row (n samples) to ts/vbits[a : a + n]."""
    blk = state[s, FIRST]
    prev = pool[blk, 0]
    bit = 64
    t = state[s, T0]
    ts[a] = t
    vbits[a] = prev
    delta = 0
    lead = 0
    trail = 0
    for i in range(1, n):
        f, blk, bit = _get(pool, nxt, blk, bit, 1)
        if f != _U0:
            f, blk, bit = _get(pool, nxt, blk, bit, 1)
            if f == _U0:
                z, blk, bit = _get(pool, nxt, blk, bit, 8)
            else:
                f, blk, bit = _get(pool, nxt, blk, bit, 1)
                z, blk, bit = _get(pool, nxt, blk, bit, 16 if f == _U0 else 32)
            delta += _unzigzag(z)
        t += delta
        f, blk, bit = _get(pool, nxt, blk, bit, 1)
        if f != _U0:
            f, blk, bit = _get(pool, nxt, blk, bit, 1)
            if f != _U0:
                w, blk, bit = _get(pool, nxt, blk, bit, 11)
                lead = np.int64(w & np.uint64(31))
                trail = 64 - lead - (np.int64(w >> np.uint64(5)) + 1)
            x, blk, bit = _get(pool, nxt, blk, bit, 64 - lead - trail)
            prev ^= x << np.uint64(trail)
        ts[a + i] = t
        vbits[a + i] = prev


@kernel(cache=True, inline="always")
def free_row(nxt, alloc, state, s):  # pragma: no cover - jitted
    """Give series s's blocks to the free list (its count is the caller's)."""
    nxt[state[s, CUR]] = alloc[1]
    alloc[1] = state[s, FIRST]


@kernel(cache=True, nogil=True)
def k_decode_rows(pool, nxt, state, count, rows, starts, ts, vbits):  # pragma: no cover - jitted
    """ts/vbits[starts[i]:starts[i+1]] = the samples of row rows[i]."""
    for i in range(rows.shape[0]):
        r = rows[i]
        decode_row(pool, nxt, state, r, count[r], ts, vbits, starts[i])


class OpenRows:
    """The open rows of one head (see the module doc)."""

    def __init__(self, cap: int = 0) -> None:
        self.count = np.zeros(cap, np.int32)
        # Pages committed as series get samples (a seal's successor head
        # starts with room for every series).
        self.state = heap.mapped_empty((cap, ROW_FIELDS), np.int64)
        self.pool = np.zeros((0, BLOCK_WORDS), np.uint64)
        self.nxt = np.zeros(0, np.int32)
        self.alloc = np.array([0, -1], np.int64)

    def ensure(self, cap: int) -> None:
        """Room for series ids < cap (new rows empty)."""
        n = len(self.count)
        if cap > n:
            self.count = np.concatenate([self.count, np.zeros(cap - n, np.int32)])
            state = heap.mapped_empty((cap, ROW_FIELDS), np.int64)
            state[:n] = self.state
            self.state = state

    def reserve(self, samples: int) -> None:
        """Room for `samples` more samples: a block each at most."""
        used = int(self.alloc[0])
        if len(self.pool) - used >= samples:
            return
        cap = max(2 * len(self.pool), used + samples, MIN_POOL_BLOCKS)
        # Fresh pages, committed as written: the unused tail of a doubling
        # costs nothing, and the outgrown pool goes back to the kernel.
        pool = heap.mapped_empty((cap, BLOCK_WORDS), np.uint64)
        nxt = heap.mapped_empty((cap,), np.int32)
        pool[:used] = self.pool[:used]
        nxt[:used] = self.nxt[:used]
        self.pool, self.nxt = pool, nxt

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(series per sample, ts, values, starts) of the rows `rows` that hold samples."""
        cnt = self.count[rows].astype(np.int64)
        rows = rows[cnt > 0]
        cnt = cnt[cnt > 0]
        starts = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(cnt, out=starts[1:])
        ts = np.empty(int(starts[-1]), np.int64)
        vals = np.empty(len(ts), np.float64)
        k_decode_rows(self.pool, self.nxt, self.state, self.count, rows, starts, ts, vals.view(np.uint64))
        return np.repeat(rows, cnt), ts, vals, starts

    def ends(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and last timestamps of the rows `rows` (each holding samples)."""
        return self.state[rows, T0], self.state[rows, LAST]

    def drop(self) -> None:
        """Empty every row and give the pool's pages back to the kernel."""
        self.count[:] = 0
        self.alloc[:] = (0, -1)
        heap.release_pages(self.pool)
        heap.release_pages(self.nxt)

    @property
    def nbytes(self) -> int:
        """Bytes the rows hold in use: state and the blocks ever used."""
        used = int(self.alloc[0])
        return self.count.nbytes + self.state.nbytes + used * (8 * BLOCK_WORDS + 4)
