"""Head: vectorised appends keep every accepted sample, bit-exact, in order."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from athens.model.series import STALE_NAN, STALE_NAN_BITS
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.model.labels import Labels
from athens.shards.head import (
    CHUNK_WINDOW_MS,
    ClosedChunks,
    GROUPED,
    Head,
    IN_ORDER,
    PendingRead,
    SCATTERED,
    V_ACCEPT,
    V_CONFLICT,
    V_DUPLICATE,
    V_OLDER,
    V_OOO,
    _place,
    chunk_starts,
    concat_chunks,
    k_runs_overlapping,
    merge_blocks,
    merge_pieces,
    place_reference,
    series_order,
)


def _append(head: Head, slots, ts, vals):
    p = head.prepare(np.asarray(slots, np.int64), np.asarray(ts, np.int64), np.asarray(vals, np.float64))
    head.commit(p)
    return p


def _read(head: Head, sid: int, mint: int = -(2**62), maxt: int = 2**62):
    pieces = head.read(np.array([sid]), mint, maxt)
    if not pieces:
        return np.empty(0, np.int64), np.empty(0)
    ts = np.concatenate([p[1] for p in pieces])
    vals = np.concatenate([p[2] for p in pieces])
    return ts, vals


def test_staleness_nan_is_stored_bit_exactly_in_open_rows_and_closed_chunks() -> None:
    head = Head(chunk_samples=4)
    other_nan = np.array([0x7FF8000000000001], np.uint64).view(np.float64)[0]
    vals = np.array([1.0, STALE_NAN, other_nan, -0.0, STALE_NAN, 2.0])
    _append(head, [0] * 6, np.arange(6) * 1000, vals)
    assert head.num_chunks == 1  # first 4 cut, 2 open
    ts, out = _read(head, 0)
    assert ts.tolist() == [0, 1000, 2000, 3000, 4000, 5000]
    assert out.view(np.uint64).tolist() == vals.view(np.uint64).tolist()
    assert out.view(np.uint64)[1] == STALE_NAN_BITS


def test_duplicates_conflicts_and_out_of_order_are_counted() -> None:
    head = Head()
    _append(head, [0, 0, 1], [1000, 2000, 5000], [1.0, 2.0, 3.0])
    p = _append(
        head,
        [0, 0, 0, 1, 1, 1, 1],
        [2000, 2000, 1500, 5000, 6000, 6000, 6000],
        [2.0, 9.0, 1.0, 3.0, 4.0, 4.0, 7.0],
    )
    # series 0: 2000 same bits -> dup, 2000 other -> conflict, 1500 -> ooo
    # series 1: 5000 same -> dup, 6000 new, 6000 same -> dup, 6000 other -> conflict
    assert (p.accepted, p.duplicates, p.conflicts, p.too_old) == (1, 3, 2, 1)
    ts, vals = _read(head, 1)
    assert ts.tolist() == [5000, 6000] and vals.tolist() == [3.0, 4.0]  # first value kept


def test_nan_duplicates_compare_by_bits() -> None:
    head = Head()
    _append(head, [0], [1000], [STALE_NAN])
    p = _append(head, [0, 0], [1000, 1000], [STALE_NAN, np.nan])
    assert (p.duplicates, p.conflicts) == (1, 1)


def test_batch_samples_are_sorted_per_series_before_validation() -> None:
    head = Head()
    p = _append(head, [3, 1, 3, 1], [20, 10, 10, 5], [4.0, 2.0, 3.0, 1.0])
    assert p.accepted == 4 and p.too_old == 0
    assert _read(head, 3)[0].tolist() == [10, 20]
    assert _read(head, 1)[1].tolist() == [1.0, 2.0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 4)), max_size=30), st.booleans())
def test_series_order_is_the_stable_sort_without_sorting_samples(pairs, grouped) -> None:
    """IN_ORDER exactly when the batch is already sorted; GROUPED's order is
    the stable (series, ts) sort; SCATTERED only when a series' samples are
    split or go back in time."""
    if grouped:  # each series' samples together and oldest first, series in drawn order
        first = {sl: i for i, (sl, _) in reversed(list(enumerate(pairs)))}
        pairs = sorted(pairs, key=lambda p: (first[p[0]], p[1]))
    slots = np.array([p[0] for p in pairs], np.int64)
    ts = np.array([p[1] for p in pairs], np.int64)
    want = np.lexsort((ts, slots))
    shape, order = series_order(slots, ts)
    if shape == IN_ORDER:
        assert want.tolist() == list(range(len(pairs)))
    elif shape == GROUPED:
        assert order.tolist() == want.tolist()
    else:
        assert shape == SCATTERED and not grouped
        runs = [sl for i, sl in enumerate(slots.tolist()) if i == 0 or slots[i - 1] != sl]
        back = any(slots[i] == slots[i - 1] and ts[i] < ts[i - 1] for i in range(1, len(pairs)))
        assert back or len(runs) > len(set(runs))
    if want.tolist() == list(range(len(pairs))):
        assert shape == IN_ORDER


def test_chunks_cut_at_120_samples_and_at_2h_boundaries() -> None:
    head = Head()
    ts = np.concatenate([np.arange(250) * 1000, CHUNK_WINDOW_MS + np.arange(5) * 1000])
    _append(head, np.zeros(len(ts)), ts, np.arange(len(ts), dtype=np.float64))
    closed = head.closed[0]
    assert closed.counts.tolist() == [120, 120, 10]
    assert closed.maxt[-1] == 249_000
    assert head.count[0] == 5
    allc = head.all_chunks()
    assert allc.counts.tolist() == [120, 120, 10, 5]
    assert np.all(allc.mint // CHUNK_WINDOW_MS == allc.maxt // CHUNK_WINDOW_MS)
    got_ts, got_vals = _read(head, 0)
    assert got_ts.tolist() == ts.tolist() and got_vals.tolist() == list(range(len(ts)))


def test_negative_timestamps_use_floor_windows() -> None:
    head = Head()
    _append(head, [0, 0], [-1, 0], [1.0, 2.0])
    assert head.all_chunks().counts.tolist() == [1, 1]


def test_many_series_many_samples_round_trip_across_batches() -> None:
    rng = np.random.default_rng(1)
    head = Head()
    n_series, per = 1000, 100
    expect_ts = {i: [] for i in range(n_series)}
    for batch in range(3):
        slots = np.repeat(np.arange(n_series), per)
        ts = np.tile(np.arange(per) * 15_000, n_series) + batch * per * 15_000
        vals = rng.standard_normal(len(ts))
        perm = rng.permutation(len(ts))
        p = _append(head, slots[perm], ts[perm], vals[perm])
        assert p.accepted == len(ts)
        for i in (0, 517, 999):
            expect_ts[i].extend(ts[slots == i].tolist())
    assert head.num_samples == 3 * n_series * per
    for i in (0, 517, 999):
        assert _read(head, i)[0].tolist() == expect_ts[i]
    assert len(head.all_chunks()) == n_series * 3  # 300 samples = 120 + 120 + 60


def test_rows_spanning_more_than_int32_offsets_are_cut() -> None:
    # Without chunk windows a row could span any time; its timestamps are
    # int32 offsets from its first, so it is cut before they would overflow.
    head = Head(chunk_samples=120, window_ms=0)
    ts = np.array([-(2**40), -(2**40) + 1, 0, 2**31 - 1, 2**31, 2**33, 2**62], np.int64)
    _append(head, np.zeros(len(ts)), ts, np.arange(len(ts), dtype=np.float64))
    assert head.all_chunks().counts.tolist() == [2, 2, 1, 1, 1]
    got_ts, got_vals = _read(head, 0)
    assert got_ts.tolist() == ts.tolist() and got_vals.tolist() == list(range(len(ts)))


@pytest.mark.skipif(sys.platform != "linux", reason="pages are released with Linux's madvise")
def test_reset_after_a_seal_gives_the_rows_memory_back() -> None:
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    head = Head()
    n = 30_000  # full rows of 120 samples, 12 bytes each: 43 MB, every page written
    _append(head, np.repeat(np.arange(n), 120), np.tile(np.arange(1, 121) * 1_000, n), np.ones(120 * n))
    assert head.count.max() == 120 and not head.closed
    before = proc.memory_info().rss
    head.reset()
    assert before - proc.memory_info().rss > 35 << 20
    # Rows fill again from their first place; newest timestamps are kept.
    assert _append(head, [7, 7], [120_000, 121_000], [5.0, 6.0]).accepted == 1
    assert _read(head, 7)[0].tolist() == [121_000] and head.count[7] == 1


@pytest.mark.skipif(sys.platform != "linux", reason="RSS of untouched anonymous pages")
def test_rows_commit_memory_by_slot_not_by_series() -> None:
    # Slot-major rows: the first samples of many series commit a few slot
    # rows (what a seal's successor head does while the seal runs), not
    # every series' whole row (144 MB here).
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    head = Head()
    n = 100_000
    head.ensure(n)
    before = proc.memory_info().rss
    _append(head, np.repeat(np.arange(n), 2), np.tile([1_000, 2_000], n), np.ones(2 * n))
    assert proc.memory_info().rss - before < 40 << 20


def test_read_filters_chunks_by_time_and_reset_keeps_newest_ts() -> None:
    head = Head(chunk_samples=10)
    _append(head, np.zeros(100), np.arange(100), np.ones(100))
    ts, _ = _read(head, 0, 45, 52)
    assert ts.min() <= 45 and ts.max() >= 52 and len(ts) == 20  # two whole chunks
    head.reset()
    assert head.num_samples == 0 and _read(head, 0)[0].size == 0
    p = head.prepare(np.array([0, 0]), np.array([99, 100]), np.array([1.0, 1.0]))
    assert (p.duplicates, p.accepted) == (1, 1)


@pytest.mark.parametrize("seed", range(5))
def test_place_kernel_agrees_with_its_python_twin(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, width, nser = 500, 7, 13
    slots = np.sort(rng.integers(0, nser, n))
    ts = np.empty(n, np.int64)
    for s in range(nser):
        m = slots == s
        ts[m] = np.cumsum(rng.integers(1, 5000, m.sum()))
    vals = rng.standard_normal(n)
    outs = []
    for fn in (_place, place_reference):
        shape = Head(width).rows_shape(nser)  # as Head keeps its rows
        buf_ts = np.zeros(shape, np.int32)
        buf_vals = np.zeros(shape)
        row_t0 = np.zeros(nser, np.int64)
        count = np.zeros(nser, np.int32)
        cs, cst = np.zeros(n + nser, np.int64), np.zeros(n + nser + 1, np.int64)
        ct, cv = np.zeros(n), np.zeros(n)
        ct = ct.astype(np.int64)
        r = fn(slots, ts, vals, width, buf_ts, buf_vals, row_t0, count, 10_000, cs, cst, ct, cv)
        outs.append((r, buf_ts, buf_vals, row_t0, count, cs, cst, ct, cv))
    for a, b in zip(outs[0], outs[1]):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("seed", range(5))
def test_classify_kernel_agrees_with_its_python_twin(seed: int) -> None:
    from athens.shards.head import INT64_MIN, _classify, classify_reference

    rng = np.random.default_rng(seed)
    n, nser = 400, 9
    s = np.sort(rng.integers(0, nser, n))
    t = np.empty(n, np.int64)
    for i in range(nser):
        m = s == i
        t[m] = np.sort(rng.integers(0, 30, m.sum()))
    bits = rng.integers(0, 3, n).astype(np.uint64)
    last_ts = np.where(rng.random(nser) < 0.3, INT64_MIN, rng.integers(0, 30, nser)).astype(np.int64)
    last_bits = rng.integers(0, 3, nser).astype(np.uint64)
    k1, k2 = np.empty(n, np.int8), np.empty(n, np.int8)
    assert _classify(s, t, bits, last_ts, last_bits, k1) == classify_reference(s, t, bits, last_ts, last_bits, k2)
    assert np.array_equal(k1, k2)
    counts = _classify(s, t, bits, last_ts, last_bits, k1)
    assert [int((k1 == v).sum()) for v in (1, 2, 3)] == list(counts)
    assert (k1 == 0).sum() + sum(counts) == n


def test_gather_chunks_matches_plain_slicing() -> None:
    from athens.shards.head import gather_chunks

    rng = np.random.default_rng(0)
    lens = rng.integers(1, 50, 30)
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    data = rng.integers(0, 256, offsets[-1]).astype(np.uint8)
    for sel in (np.array([3, 7, 8, 29]), np.arange(5, 12), np.array([4]), np.array([9, 2])):
        got, off = gather_chunks(data, offsets, sel)
        want = b"".join(data[offsets[i] : offsets[i + 1]].tobytes() for i in sel)
        assert got.tobytes() == want
        assert np.diff(off).tolist() == lens[sel].tolist() and off[0] == 0


# --- out-of-order head ------------------------------------------------------------


def _ooo_append(head: Head, slots, ts, vals, window: int):
    p = head.prepare(
        np.asarray(slots, np.int64), np.asarray(ts, np.int64), np.asarray(vals, np.float64), window
    )
    head.commit(p)
    return p


def test_out_of_order_within_window_is_accepted_and_older_is_rejected() -> None:
    head = Head(chunk_samples=4)
    _ooo_append(head, [0] * 5, [100, 200, 300, 400, 500], [1.0] * 5, 1000)
    p = _ooo_append(head, [0, 0, 0, 0, 0], [250, 250, 300, 300, -600], [7.0, 8.0, 1.0, 2.0, 0.0], 1000)
    # 250 new (first wins, second conflicts), 300 stored: same bits dup, other conflict; -600 too old.
    assert (p.accepted, p.ooo_accepted, p.duplicates, p.conflicts, p.too_old) == (1, 1, 1, 2, 1)
    assert p.conflict_ids.tolist() == [0, 0]
    merged = merge_pieces(head.read(np.array([0]), -(2**62), 2**62))
    assert merged[1].tolist() == [100, 200, 250, 300, 400, 500]
    assert merged[2].tolist() == [1.0, 1.0, 7.0, 1.0, 1.0, 1.0]
    sealed = head.all_chunks()
    assert sealed.decode()[1].tolist() == [100, 200, 250, 300, 400, 500]
    assert np.all(sealed.mint[1:] > sealed.maxt[:-1])  # re-chunked: chunks do not overlap
    assert sealed.counts.tolist() == [4, 2]


def test_out_of_order_window_does_not_wrap_around_at_the_ends_of_int64() -> None:
    # newest - window wrapped in int64 near the minimum timestamp: a sample
    # 4 ms older than INT64_MIN+5 was refused as older than a 10 min window.
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    window = 10 * 60 * 1000
    head = Head(chunk_samples=4)
    _ooo_append(head, [0, 1, 2], [lo + 5, lo + window + 10, hi], [1.0] * 3, window)
    p = _ooo_append(
        head, [0, 0, 1, 1, 2], [lo + 1, lo + 3, lo + 10, lo + 9, lo + 1], [2.0] * 5, window
    )
    # series 0: both 4 and 2 ms back; series 1: exactly the window back, and
    # one ms more (too old); series 2: 2**64 - 2 ms back (too old).
    assert (p.ooo_accepted, p.too_old) == (3, 2)
    assert p.verdicts.tolist() == [V_OOO, V_OOO, V_OOO, V_OLDER, V_OLDER]
    assert merge_pieces(head.read(np.array([0]), lo + 1, lo + 5))[1].tolist() == [lo + 1, lo + 3, lo + 5]
    # The replay window (2**62) near the minimum as well.
    head2 = Head(chunk_samples=4)
    _ooo_append(head2, [0], [lo + 5], [1.0], 2**62)
    assert _ooo_append(head2, [0], [lo + 1], [2.0], 2**62).ooo_accepted == 1


def test_chunk_starts_cuts_by_series_window_and_width() -> None:
    sids = np.array([0, 0, 0, 0, 0, 1, 1, 1], np.int64)
    ts = np.array([1, 2, 3, 11, 12, 1, 2, 3], np.int64)
    assert chunk_starts(sids, ts, 2, 10).tolist() == [0, 2, 3, 5, 7, 8]
    assert chunk_starts(sids, ts, 120, 0).tolist() == [0, 5, 8]


_sample = st.tuples(st.integers(0, 3), st.integers(0, 60), st.sampled_from([0.0, 1.0, STALE_NAN]))


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(st.lists(_sample, min_size=1, max_size=25), min_size=1, max_size=8),
    window=st.sampled_from([0, 5, 20, 1000]),
    arrange=st.sampled_from(["as drawn", "sorted", "series reversed"]),
)
def test_merge_of_in_order_and_ooo_heads_equals_a_sorted_reference(batches, window, arrange) -> None:
    """Whatever arrives in whatever order, the head's merged view (and what a
    seal would write) is the sorted set of accepted samples, first value kept.
    Batches in (series, ts) order, or grouped by series in another series
    order, take prepare's paths that sort no samples."""
    head = Head(chunk_samples=3, window_ms=16)
    ref: dict[tuple[int, int], int] = {}
    newest: dict[int, int] = {}
    for batch in batches:
        if arrange != "as drawn":
            batch = sorted(batch, key=lambda x: x[:2])
        if arrange == "series reversed":  # stable: each series' samples stay oldest first
            batch = sorted(batch, key=lambda x: -x[0])
        slots, ts, vals = (np.array(c) for c in zip(*batch))
        acc = too_old = 0
        verdicts = np.full(len(ts), -1)
        # Reference: per series in ts order (stable), newest taken before the batch.
        before = dict(newest)
        for i in np.lexsort((ts, slots)).tolist():
            s, t, b = int(slots[i]), int(ts[i]), int(np.float64(vals[i]).view(np.uint64))
            if s in before and t < before[s] - window:
                too_old += 1
                verdicts[i] = V_OLDER
            elif (s, t) not in ref:
                verdicts[i] = V_OOO if s in newest and t < newest[s] else V_ACCEPT
                ref[(s, t)] = b
                newest[s] = max(newest.get(s, t), t)
                acc += 1
            else:
                verdicts[i] = V_DUPLICATE if ref[(s, t)] == b else V_CONFLICT
        p = _ooo_append(head, slots, ts, vals.astype(np.float64), window)
        assert (p.accepted, p.too_old) == (acc, too_old)
        # Each sample's verdict, in the batch's order (what group commits split by).
        got = np.full(len(ts), V_ACCEPT) if p.verdicts is None else p.verdicts
        assert got.tolist() == verdicts.tolist()
    want = sorted(ref.items())
    sid, t, v = merge_pieces(head.read(np.arange(4), -(2**62), 2**62))
    assert list(zip(zip(sid.tolist(), t.tolist()), v.view(np.uint64).tolist())) == want
    # A seal writes blocks of consecutive series, each sorted by (series, mint).
    for group in (1, 5, 1 << 20):
        blocks = list(head.seal_blocks(group))
        assert all(len(b) for b in blocks)
        for older, newer in zip(blocks, blocks[1:]):
            assert older.series[-1] < newer.series[0]
        sealed = concat_chunks(blocks)
        assert np.all(np.lexsort((sealed.mint, sealed.series)) == np.arange(len(sealed)))
        ssid, st_, sv = sealed.decode()
        assert list(zip(zip(ssid.tolist(), st_.tolist()), sv.view(np.uint64).tolist())) == want
        assert np.all(sealed.counts <= 3)
        assert np.all(sealed.mint // 16 == sealed.maxt // 16)  # one chunk window each


def test_many_small_out_of_order_appends_are_folded_into_few_pieces() -> None:
    head = Head()
    _ooo_append(head, [0, 1], [10_000, 10_000], [1.0, 1.0], 60_000)
    for k in range(100):
        _ooo_append(head, [k % 2], [9_000 - k], [float(k)], 60_000)
    assert len(head.ooo) <= 33 and head.ooo_samples == 100
    sid, ts, vals = merge_pieces(head.read(np.array([0, 1]), 0, 20_000))
    assert len(ts) == 102 and np.all(np.diff(ts[sid == 0]) > 0)
    assert vals[(sid == 1) & (ts == 9_000 - 99)].tolist() == [99.0]


def test_closed_blocks_are_merged_to_few_sorted_ones_and_reads_stay_exact() -> None:
    # Scrapes fill the rows of different series at different times, so most
    # commits cut a few chunks; reads must not visit one block per commit.
    head = Head(chunk_samples=4)
    rng = np.random.default_rng(7)
    n, want = 50, {}
    t = np.zeros(n, np.int64)
    for k in range(400):
        ids = np.sort(rng.choice(n, 7, replace=False))
        t[ids] += rng.integers(1, 30, len(ids))
        vals = rng.standard_normal(len(ids))
        _append(head, ids, t[ids], vals)
        for i, ts, v in zip(ids.tolist(), t[ids].tolist(), vals.tolist()):
            want.setdefault(i, []).append((ts, v))
    assert head.num_chunks > 300 and len(head.closed) <= 2 * int(np.log2(head.num_chunks)) + 1
    for cc in head.closed:
        assert np.all(np.diff(cc.series) >= 0)
    for sid in (0, 17, 49):
        ts, vals = _read(head, sid)
        order = np.argsort(ts, kind="stable")
        assert list(zip(ts[order].tolist(), vals[order].tolist())) == want[sid]
    few = head.read(np.array([3, 4]), -(2**62), 2**62)
    many = head.read(np.arange(n), -(2**62), 2**62)
    assert sum(len(p[1]) for p in few) == len(want[3]) + len(want[4])
    assert sum(len(p[1]) for p in many) == sum(len(v) for v in want.values())


_source = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 40), st.integers(0, 3)), max_size=20)


@settings(max_examples=150, deadline=None)
@given(
    sources=st.lists(st.tuples(st.booleans(), _source), min_size=1, max_size=5),
    ranks=st.permutations(range(5)),
    mint=st.integers(-1, 41), width=st.integers(0, 45),
    data=st.data(),
)
def test_pending_read_series_equals_a_merge_reference(sources, ranks, mint, width, data) -> None:
    """Sources as encoded chunks (up to 3 samples each; a subset of a block's
    chunks read where they lie) or raw pieces, overlapping in time and
    repeating timestamps: each series comes back in label order with its
    samples in range, time-sorted, the oldest source's sample kept for a
    repeated timestamp (values compared bit for bit: value 3 stands for the
    staleness marker). The set is stale-free exactly when no read sample,
    in range or not, is a marker."""
    maxt = mint + width
    shift = data.draw(st.sampled_from([0, 1000]))  # the read's ids need not start at 0
    pending = PendingRead()
    ref: dict[int, dict[int, int]] = {}
    read_stale = False
    for as_chunks, samples in sources:
        by_series: dict[int, list[tuple[int, float]]] = {}
        for (s, t), v in sorted(dict(((s, t), v) for s, t, v in reversed(samples)).items()):
            # a source: one sample per (series, ts)
            by_series.setdefault(s, []).append((t, STALE_NAN if v == 3 else float(v)))
        if not by_series:
            continue
        sids = np.array(sorted(by_series), np.int64)
        ts = np.array([t for s in sids.tolist() for t, _ in by_series[s]], np.int64)
        vals = np.array([v for s in sids.tolist() for _, v in by_series[s]], np.float64)
        per_sample = np.repeat(sids, [len(by_series[s]) for s in sids.tolist()]) + shift
        read = np.ones(len(ts), bool)
        if as_chunks:  # chunks of up to 3 samples: inside the range, across its ends, outside
            starts = chunk_starts(per_sample, ts, 3, 0)
            cc = ClosedChunks.encode(per_sample[starts[:-1]], ts, vals, starts)
            keep = np.array(data.draw(st.lists(st.booleans(), min_size=len(cc), max_size=len(cc))), bool)
            read = np.repeat(keep, np.diff(starts))
            pending.chunks(cc.locate, np.flatnonzero(keep), int(cc.counts[keep].sum()))
        else:
            pending.piece((per_sample, ts, vals))
        read_stale |= bool((vals[read].view(np.uint64) == STALE_NAN_BITS).any())
        for s, t, v in zip(per_sample[read].tolist(), ts[read].tolist(), vals[read].view(np.uint64).tolist()):
            if mint <= t <= maxt:
                ref.setdefault(s - shift, {}).setdefault(t, v)
    ids = np.arange(5, dtype=np.int64) + shift
    labels = [Labels([("i", str(i))]) for i in range(5)]
    got = pending.series(ids, np.array(ranks, np.int64), [Labels()] * shift + labels, mint, maxt)
    want = [(labels[i], sorted(ref[i].items())) for i in sorted(range(5), key=lambda i: ranks[i]) if ref.get(i)]
    assert [(lb, list(zip(s.ts.tolist(), s.values.view(np.uint64).tolist()))) for lb, s in zip(got.labels, got)] == want
    assert got.stale_free is not read_stale


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 60), max_size=300),
    st.lists(st.integers(0, 70), min_size=1, max_size=50),
    st.integers(0, 120),
    st.integers(0, 60),
    st.randoms(use_true_random=False),
)
def test_the_chunks_of_some_series_in_a_range_equal_a_mask(series, ids, mint, width, rnd) -> None:
    series = np.sort(np.asarray(series, np.int64))
    cmint = np.asarray([rnd.randrange(0, 100) for _ in series], np.int64)
    cmaxt = cmint + np.asarray([rnd.randrange(0, 40) for _ in series], np.int64)
    ids = np.unique(np.asarray(ids, np.int64))
    maxt = mint + width
    want = np.flatnonzero(np.isin(series, ids) & (cmaxt >= mint) & (cmint <= maxt))
    assert np.array_equal(k_runs_overlapping(series, cmint, cmaxt, ids, mint, maxt), want)


def _block(rng: np.random.Generator, series: list[int]) -> ClosedChunks:
    """A block of one to three chunks a series, sorted by (series, mint)."""
    sid, ts, vals, starts = [], [], [], [0]
    for s in sorted(series):
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(1, 6))
            t0 = ts[-1] + 1 if sid and sid[-1] == s else int(rng.integers(0, 100))
            sid += [s] * n
            ts += list(range(t0, t0 + n))
            vals += rng.standard_normal(n).tolist()
            starts.append(len(ts))
    starts_a = np.asarray(starts, np.int64)
    return ClosedChunks.encode(np.asarray(sid, np.int64)[starts_a[:-1]], np.asarray(ts, np.int64),
                               np.asarray(vals), starts_a)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=30), st.lists(st.integers(0, 20), min_size=1, max_size=30),
       st.integers(0, 2**32))
def test_merging_two_head_blocks_equals_concatenating_and_sorting_them(a, b, seed) -> None:
    rng = np.random.default_rng(seed)
    older, newer = _block(rng, a), _block(rng, b)
    both = concat_chunks([older, newer])
    want = both.select(np.argsort(both.series, kind="stable"))
    got = merge_blocks(older, newer)
    for name in ("series", "mint", "maxt", "counts", "last_bits", "offsets", "data"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert got.ts_ref is None

