"""SeriesSet: many series as concatenated arrays, equal to the list of Series."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from athens.model.labels import Labels
from athens.model.series import STALE_NAN, Series, SeriesSet, StoredLabels, has_stale
from athens.shards.index import SeriesIndex


def _series(sizes: list[int]) -> list[Series]:
    out, t = [], 0
    for i, n in enumerate(sizes):
        ts = np.arange(t, t + n, dtype=np.int64)
        out.append(Series(Labels([("__name__", f"m{i}")]), ts, ts.astype(np.float64) / 2))
        t += n
    return out


def _same(a: object, b: list[Series]) -> bool:
    got = list(a)  # type: ignore[call-overload]
    return len(got) == len(b) and all(
        x.labels == y.labels and np.array_equal(x.ts, y.ts) and np.array_equal(x.values, y.values)
        for x, y in zip(got, b)
    )


sizes = st.lists(st.integers(0, 5), max_size=8)


@given(sizes, st.integers(-10, 10), st.integers(-10, 10))
def test_indexing_and_slicing_match_the_list(sz: list[int], lo: int, hi: int) -> None:
    series = _series(sz)
    ss = SeriesSet.of(series)
    assert len(ss) == len(series) and _same(ss, series)
    assert _same(ss[lo:hi], series[lo:hi])
    for i in range(-len(series), len(series)):
        assert _same([ss[i]], [series[i]])
    with pytest.raises(IndexError):
        ss[len(series)]


@given(st.lists(sizes, max_size=4))
def test_concat_is_the_joined_list(parts: list[list[int]]) -> None:
    lists = [_series(p) for p in parts]
    joined = SeriesSet.concat([SeriesSet.of(x) for x in lists])
    assert _same(joined, [s for x in lists for s in x])
    assert SeriesSet.of(joined) is joined


@given(sizes, st.randoms(use_true_random=False))
def test_take_is_the_list_in_that_order(sz: list[int], rnd) -> None:  # type: ignore[no-untyped-def]
    series = _series(sz)
    ss = SeriesSet.of(series)
    order = list(range(len(series)))
    rnd.shuffle(order)
    assert _same(ss.take(order), [series[i] for i in order])
    assert ss.take(list(range(len(series)))) is ss


def test_slices_are_contiguous_and_offsets_checked() -> None:
    ss = SeriesSet.of(_series([1, 2, 3]))
    with pytest.raises(ValueError):
        ss[::2]
    with pytest.raises(ValueError):
        SeriesSet([Labels()], ss.ts, ss.values, np.zeros(1, np.int64))


def test_has_stale_finds_only_the_marker() -> None:
    near = np.array([0x7FF0000000000000, 0x7FF0000000000001, 0x7FF0000000000003], np.uint64)  # +Inf, NaNs
    vals = np.concatenate([np.array([1.0, np.nan, -np.inf, 0.0] * 3000), near.view(np.float64)])
    assert not has_stale(vals.view(np.uint64))
    vals[-1] = STALE_NAN
    assert has_stale(vals.view(np.uint64))


def test_stale_free_survives_slices_takes_and_concats_of_stale_free_sets() -> None:
    def make(flag: bool) -> SeriesSet:
        return SeriesSet([Labels([("i", "0")]), Labels([("i", "1")])], np.arange(4), np.zeros(4),
                         np.array([0, 2, 4]), flag)

    free, unknown = make(True), make(False)
    assert free[0:1].stale_free and free.take([1, 0]).stale_free
    assert SeriesSet.concat([free, free]).stale_free
    assert not SeriesSet.concat([free, unknown]).stale_free and not unknown[0:1].stale_free


def test_stored_labels_keep_their_ids_through_takes_slices_and_concats() -> None:
    labels = [Labels([("i", str(i))]) for i in range(6)]
    ids = np.array([10, 11, 12, 13, 14, 15], np.int64)
    stored = StoredLabels(labels, ids, SeriesIndex())
    taken = stored.take(np.array([4, 1], np.int64))
    assert isinstance(taken, StoredLabels) and list(taken) == [labels[4], labels[1]] and taken.ids.tolist() == [14, 11]
    sliced = stored.take(slice(2, 4))
    assert list(sliced) == labels[2:4] and sliced.ids.tolist() == [12, 13]
    ss = SeriesSet(stored, np.arange(6, dtype=np.int64), np.zeros(6), np.arange(7, dtype=np.int64))
    part = ss[1:3]
    assert isinstance(part.labels, StoredLabels) and part.labels.ids.tolist() == [11, 12]
    both = SeriesSet.concat([ss[:2], ss[4:]])
    assert isinstance(both.labels, StoredLabels) and both.labels.ids.tolist() == [10, 11, 14, 15]
    # Anything else is a plain list: the ids cannot drift from their rows.
    assert type(stored[1:3]) is list and type(list(stored)) is list
    mixed = SeriesSet.concat([ss[:2], SeriesSet(labels[:1], np.zeros(1, np.int64), np.zeros(1), np.arange(2))])
    assert type(mixed.labels) is list
    other = SeriesSet(StoredLabels(labels[:1], ids[:1], SeriesIndex()), np.zeros(1, np.int64), np.zeros(1), np.arange(2))
    assert type(SeriesSet.concat([ss[:2], other]).labels) is list  # two shards' ids do not mix
    with pytest.raises(ValueError, match="label sets for"):
        StoredLabels(labels, ids[:2], stored.index)
