"""Tombstones: merging ranges, the sample filter and the overlap test against
plain-Python references, and the file's crash story."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.shards.tombstones import FILE_NAME, Tombstones, TombstonesCorruptError

RANGES = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 60), st.integers(0, 30)), max_size=12)


def _build(ranges: list[tuple[int, int, int]]) -> Tombstones:
    t = Tombstones.empty()
    for sid, lo, width in ranges:
        t = t.add(np.array([sid], np.int64), np.array([lo]), np.array([lo + width]))
    return t


def _hidden(ranges: list[tuple[int, int, int]], sid: int, ts: int) -> bool:
    return any(s == sid and lo <= ts <= lo + w for s, lo, w in ranges)


@settings(max_examples=200, deadline=None)
@given(RANGES)
def test_ranges_are_merged_per_series(ranges: list[tuple[int, int, int]]) -> None:
    t = _build(ranges)
    ids, lo, hi = (c.tolist() for c in t.columns())
    assert sorted(zip(ids, lo)) == list(zip(ids, lo))
    for k in range(1, len(ids)):  # disjoint and not touching within a series
        assert ids[k] != ids[k - 1] or lo[k] > hi[k - 1] + 1
    for sid in range(5):  # the same samples hidden as by the ranges added
        for ts in range(95):
            assert _hidden(ranges, sid, ts) == any(s == sid and a <= ts <= b for s, a, b in zip(ids, lo, hi))


@settings(max_examples=300, deadline=None)
@given(RANGES, st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(0, 100), max_size=20)), max_size=6))
def test_dropping_and_overlaps_agree_with_the_ranges(ranges: list[tuple[int, int, int]],
                                                     runs: list[tuple[int, list[int]]]) -> None:
    t = _build(ranges)
    run_ids = np.array([sid for sid, _ in runs], np.int64)
    samples = [sorted(set(ts)) for _, ts in runs]
    starts = np.concatenate(([0], np.cumsum([len(ts) for ts in samples]))).astype(np.int64)
    ts = np.array([x for run in samples for x in run], np.int64)
    values = ts * 0.5
    kept = [[x for x in run if not _hidden(ranges, sid, x)] for (sid, _), run in zip(runs, samples)]
    got_ts, got_values, sizes = t.drop_hidden(run_ids, starts, ts, values)
    assert sizes.tolist() == [len(k) for k in kept]
    assert got_ts.tolist() == [x for k in kept for x in k]
    assert got_values.tolist() == [x * 0.5 for k in kept for x in k]
    lo = np.array([min(run, default=0) for run in samples], np.int64)
    hi = np.array([max(run, default=-1) for run in samples], np.int64)
    row_hit, tomb_hit = t.overlaps(run_ids, lo, hi)
    rows = list(zip(*(c.tolist() for c in t.columns())))
    assert row_hit.tolist() == [any(s == sid and a <= h and b >= l for s, a, b in rows)
                                for sid, l, h in zip(run_ids.tolist(), lo.tolist(), hi.tolist())]
    assert tomb_hit.tolist() == [any(s == sid and a <= h and b >= l
                                     for sid, l, h in zip(run_ids.tolist(), lo.tolist(), hi.tolist()))
                                 for s, a, b in rows]


def test_the_file_round_trips_and_an_empty_set_removes_it(tmp_path: Path) -> None:
    t = _build([(3, 10, 5), (1, -(2**62), 2**62), (3, 40, 0)])
    t.save(tmp_path)
    assert Tombstones.load(tmp_path) == t
    (tmp_path / (FILE_NAME + ".tmp")).write_bytes(b"half a save")  # a crash while saving
    assert Tombstones.load(tmp_path) == t
    assert not (tmp_path / (FILE_NAME + ".tmp")).exists()
    Tombstones.empty().save(tmp_path)
    assert not (tmp_path / FILE_NAME).exists()
    assert len(Tombstones.load(tmp_path)) == 0


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic"])
def test_a_damaged_file_is_refused(tmp_path: Path, damage: str) -> None:
    _build([(1, 0, 9), (2, 5, 5)]).save(tmp_path)
    path = tmp_path / FILE_NAME
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-9]
    elif damage == "flip":
        raw[20] ^= 1
    else:
        raw[0:8] = b"NOTATOMB"
    path.write_bytes(bytes(raw))
    with pytest.raises(TombstonesCorruptError):
        Tombstones.load(tmp_path)
