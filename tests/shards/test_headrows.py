"""The head's encoded open rows: what is appended is read back bit-exactly,
freed blocks are reused, and regular data takes a few bits a sample."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.model.series import STALE_NAN_BITS
from athens.shards.headrows import BLOCK_WORDS, OpenRows
from athens.shards.head import _place


def _place_all(rows: OpenRows, slots, ts, vals, width: int = 120, window_ms: int = 0):
    """_place a sorted batch as Head.commit does; returns the cut chunks' (series, ts, value bits)."""
    slots, ts = np.asarray(slots, np.int64), np.asarray(ts, np.int64)
    vbits = np.asarray(vals, np.float64).view(np.uint64)
    n = len(slots)
    rows.ensure(int(slots.max()) + 1 if n else 0)
    rows.reserve(n)
    touched = int(rows.count[np.unique(slots)].sum()) if n else 0
    cs, cst = np.empty(n + 1, np.int64), np.empty(n + 2, np.int64)
    ct, cv = np.empty(n + touched, np.int64), np.empty(n + touched, np.uint64)
    ncut, nsamp = _place(slots, ts, vbits, width, rows.pool, rows.nxt, rows.alloc, rows.state, rows.count,
                         window_ms, cs, cst, ct, cv)
    return np.repeat(cs[:ncut], np.diff(cst[: ncut + 1])), ct[:nsamp], cv[:nsamp]


# Values whose bit patterns stress the XOR stream: repeats, sign flips,
# NaN payloads (the staleness marker), infinities, subnormals, zeros.
_value_bits = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1 << 63, int(STALE_NAN_BITS), 0x7FF8000000000000, 0x7FF0000000000000,
                     0xFFF0000000000000, 1, 0x3FF0000000000000]),
)


@settings(max_examples=60, deadline=None)
@given(
    series=st.lists(
        st.tuples(
            st.integers(-(2**40), 2**40),  # first timestamp
            st.lists(st.one_of(st.integers(1, 20), st.just(15_000), st.integers(1, 2**31 - 1)),
                     min_size=0, max_size=300),  # gaps
            st.lists(_value_bits, min_size=1, max_size=301),
        ),
        min_size=1, max_size=6,
    ),
    batches=st.integers(1, 5),
    width=st.sampled_from([1, 2, 7, 120]),
)
def test_rows_give_back_what_was_appended(series, batches, width) -> None:
    """Appended in several batches, cut at `width` samples or where a row's
    span would reach 2**31 ms: the cut chunks and the open rows together
    hold every sample, bit-exactly, in order."""
    sids, tss, bits = [], [], []
    for s, (t0, gaps, vals) in enumerate(series):
        n = min(len(gaps) + 1, len(vals))
        t = t0 + np.concatenate(([0], np.cumsum(np.asarray(gaps[: n - 1], np.int64))))
        sids.append(np.full(n, s, np.int64))
        tss.append(t)
        bits.append(np.asarray(vals[:n], np.uint64))
    sid, ts, vb = np.concatenate(sids), np.concatenate(tss), np.concatenate(bits)
    rows = OpenRows()
    got_s, got_t, got_b = [], [], []
    # Each batch takes the next part of every series, sorted by series.
    cuts = np.linspace(0, 1, batches + 1)
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        parts = []
        for s in range(len(series)):
            idx = np.flatnonzero(sid == s)
            parts.append(idx[int(lo * len(idx)) : int(hi * len(idx))])
        take = np.concatenate(parts)
        cs, ct, cv = _place_all(rows, sid[take], ts[take], vb[take].view(np.float64), width)
        got_s.append(cs)
        got_t.append(ct)
        got_b.append(cv)
    osid, ots, ovals, _ = rows.read(np.arange(len(series), dtype=np.int64))
    got_s.append(osid)
    got_t.append(ots)
    got_b.append(ovals.view(np.uint64))
    gs, gt, gb = np.concatenate(got_s), np.concatenate(got_t), np.concatenate(got_b)
    order = np.lexsort((gt, gs))
    assert gs[order].tolist() == sid.tolist()
    assert gt[order].tolist() == ts.tolist()
    assert gb[order].tolist() == vb.tolist()
    assert (rows.count <= width).all()
    first, last = rows.ends(np.flatnonzero(rows.count > 0))
    assert (last - first < 2**31).all()


def test_cut_rows_blocks_are_reused() -> None:
    rows = OpenRows()
    rng = np.random.default_rng(3)
    n_series, per = 50, 10
    for k in range(30):  # 30 rounds, each cutting every row (width 10)
        slots = np.repeat(np.arange(n_series), per)
        ts = k * 1_000_000 + np.tile(np.arange(per) * 1000, n_series)
        _place_all(rows, slots, ts, rng.standard_normal(len(slots)), width=per)
    # A row of 10 random values is ~100 bytes: 4 blocks. Never more in use
    # at once than two rounds' worth (a row is cut at its 11th sample).
    assert int(rows.alloc[0]) <= 2 * n_series * 4


def test_regular_data_takes_a_few_bits_a_sample() -> None:
    rows = OpenRows()
    n_series, n = 1000, 120
    slots = np.repeat(np.arange(n_series), n)
    ts = np.tile(np.arange(n) * 15_000, n_series)
    counter = np.tile(np.arange(n, dtype=np.float64) * 4096, n_series)  # steps of one exponent bit
    _place_all(rows, slots, ts, counter, width=n)
    blocks = int(rows.alloc[0])
    assert blocks * BLOCK_WORDS * 8 / (n_series * n) < 3  # bytes a sample, blocks included
    _, got_ts, got_vals, _ = rows.read(np.arange(n_series, dtype=np.int64))
    assert got_ts.tolist() == ts.tolist() and got_vals.tolist() == counter.tolist()


def test_drop_empties_the_rows_and_restarts_the_pool() -> None:
    rows = OpenRows()
    _place_all(rows, np.zeros(5), np.arange(5) * 1000, np.arange(5.0))
    rows.drop()
    assert rows.count.sum() == 0 and int(rows.alloc[0]) == 0
    _place_all(rows, np.zeros(2), [9_000, 10_000], [1.5, 2.5])
    _, ts, vals, _ = rows.read(np.array([0], np.int64))
    assert ts.tolist() == [9_000, 10_000] and vals.tolist() == [1.5, 2.5]
