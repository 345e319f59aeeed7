"""Series index: matchers select exactly what Prometheus' semantics say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.model.labels import Labels
from athens.model.matchers import Matcher, MatchOp
from athens.shards import index as index_module
from athens.shards.index import IndexCorruptError, SeriesIndex, _union, in_sorted, regex_literal_prefix

SERIES = [
    Labels([("__name__", "http_requests_total"), ("job", "api"), ("code", "200")]),
    Labels([("__name__", "http_requests_total"), ("job", "api"), ("code", "500")]),
    Labels([("__name__", "http_requests_total"), ("job", "web")]),
    Labels([("__name__", "up"), ("job", "api"), ("instance", "a:9100")]),
    Labels([("__name__", "up"), ("job", "apiserver")]),
    Labels([("__name__", "up"), ("job", "foo\nbar")]),
    Labels([("__name__", "node_load1")]),
    Labels([("job", "api"), ("code", "")]),  # empty value == absent
]

MATCHERS = [
    Matcher(MatchOp.EQ, "job", "api"),
    Matcher(MatchOp.EQ, "job", ""),
    Matcher(MatchOp.NE, "job", ""),
    Matcher(MatchOp.NE, "job", "api"),
    Matcher(MatchOp.EQ, "nosuch", ""),
    Matcher(MatchOp.NE, "nosuch", ""),
    Matcher(MatchOp.EQ, "nosuch", "x"),
    Matcher(MatchOp.NE, "nosuch", "x"),
    Matcher(MatchOp.RE, "job", "api|web"),
    Matcher(MatchOp.NRE, "job", "api|web"),
    Matcher(MatchOp.RE, "job", "api.*"),
    Matcher(MatchOp.RE, "job", "ap.?"),
    Matcher(MatchOp.RE, "job", "a.*r"),
    Matcher(MatchOp.NRE, "job", "api.*"),
    Matcher(MatchOp.RE, "job", ".*"),
    Matcher(MatchOp.RE, "job", ".+"),
    Matcher(MatchOp.NRE, "job", ".*"),
    Matcher(MatchOp.NRE, "job", ".+"),
    Matcher(MatchOp.RE, "job", "api|"),
    Matcher(MatchOp.RE, "job", "foo.bar"),
    Matcher(MatchOp.RE, "job", "foo.*"),  # the prefix path, over a value with a newline
    Matcher(MatchOp.NRE, "job", "foo\n.*"),
    Matcher(MatchOp.RE, "job", "(?i:API)"),
    Matcher(MatchOp.RE, "code", "5.."),
    Matcher(MatchOp.NRE, "code", "5.."),
    Matcher(MatchOp.RE, "__name__", "http_.*"),
    Matcher(MatchOp.RE, "nosuch", ".*"),
    Matcher(MatchOp.RE, "nosuch", ".+"),
]


def _index() -> SeriesIndex:
    idx = SeriesIndex()
    for lb in SERIES:
        idx.add(lb, lb.identity_hash())
    return idx


def _brute(matchers: list[Matcher]) -> list[int]:
    return [i for i, lb in enumerate(SERIES) if all(m.matches(lb.get(m.name)) for m in matchers)]


@pytest.mark.parametrize("m", MATCHERS, ids=str)
def test_single_matcher_agrees_with_brute_force(m: Matcher) -> None:
    assert _index().select([m]).tolist() == _brute([m])


def test_matcher_pairs_agree_with_brute_force() -> None:
    idx = _index()
    for a in MATCHERS:
        for b in MATCHERS:
            assert idx.select([a, b]).tolist() == _brute([a, b]), (a, b)


def test_empty_matcher_list_selects_everything() -> None:
    assert _index().select([]).tolist() == list(range(len(SERIES)))


def test_missing_label_matches_empty_string() -> None:
    idx = _index()
    assert idx.select([Matcher(MatchOp.EQ, "code", "")]).tolist() == [2, 3, 4, 5, 6, 7]
    assert idx.select([Matcher(MatchOp.NE, "instance", "a:9100"), Matcher(MatchOp.EQ, "__name__", "up")]).tolist() == [4, 5]


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [("abc", "abc"), ("abc.*", "abc"), ("ab?c", "a"), ("ab+c", "ab"), ("ab*", "a"),
     ("a{2}", ""), ("a|b", ""), ("(?i)abc", ""), ("ab\\.c", "ab"), (".*", ""), ("ab[c]", "ab")],
)
def test_regex_literal_prefix(pattern: str, prefix: str) -> None:
    assert regex_literal_prefix(pattern) == prefix


def test_label_names_and_values_restricted_to_ids() -> None:
    idx = _index()
    assert idx.label_names() == ["__name__", "code", "instance", "job"]
    assert idx.label_names(np.array([2, 6])) == ["__name__", "job"]
    assert idx.label_values("job") == ["api", "apiserver", "foo\nbar", "web"]
    assert idx.label_values("job", np.array([0, 4])) == ["api", "apiserver"]
    assert idx.label_values("code", np.array([6, 7])) == []
    assert idx.label_values("code", np.array([1, 2, 3, 4, 5])) == ["500"]
    assert idx.label_values("code", np.array([2, 3, 4, 5, 6])) == []
    assert idx.label_values("nosuch") == []


def test_small_selections_walk_their_label_sets_large_ones_use_codes() -> None:
    idx = SeriesIndex()
    sets = [Labels([("__name__", f"m{i % 3}"), ("pod", f"p{i}")] + ([("zone", f"z{i % 2}")] if i % 5 else []))
            for i in range(100)]
    for lb in sets:
        idx.add(lb, lb.identity_hash())

    def brute(ids: np.ndarray) -> tuple[list[str], list[str]]:
        chosen = [sets[i] for i in ids.tolist()]
        return sorted({n for lb in chosen for n, _ in lb}), sorted({lb.get("zone") for lb in chosen} - {""})

    small, large = np.array([0, 5]), np.arange(0, 100, 2)
    assert (idx.label_names(small), idx.label_values("zone", small)) == brute(small)
    assert "zone" not in idx._codes and None not in idx._codes  # walked, nothing numbered
    assert (idx.label_names(large), idx.label_values("zone", large)) == brute(large)  # numbered now
    assert "zone" in idx._codes and None in idx._codes
    assert (idx.label_names(small), idx.label_values("zone", small)) == brute(small)  # from the codes kept


def test_hash_collision_gets_a_distinct_id_and_survives_reload(tmp_path: Path) -> None:
    idx = SeriesIndex()
    a, b = Labels([("a", "1")]), Labels([("a", "2")])
    assert idx.add(a, 42) == 0
    assert idx.add(b, 42) == 1
    assert idx.hash_collisions == 1
    assert idx.lookup([b, a, Labels([("a", "3")])], np.array([42, 42, 42], np.uint64)).tolist() == [1, 0, -1]
    path = tmp_path / "series.idx"
    assert idx.persist(path) == 2
    again = SeriesIndex()
    assert again.load(path) == 2
    assert again.labels == [a, b] and again.hash_of(1) == 42 and again.hash_collisions == 1


def test_lookup_finds_every_label_set_through_table_growth_and_hash_clashes() -> None:
    rng = np.random.default_rng(5)
    idx = SeriesIndex()
    known: dict[Labels, tuple[int, int]] = {}  # labels -> (id, hash)
    for i in range(5000):  # the table grows from 1024 slots several times
        lb = Labels([("i", str(i))])
        h = int(rng.integers(0, 300)) << 40  # many label sets per hash
        known[lb] = (idx.add(lb, h), h)
        if rng.random() < 0.02:
            asked = list(known)[-50:] + [Labels([("i", f"x{i}")])]
            hashes = np.array([known[lb][1] if lb in known else h for lb in asked], np.uint64)
            want = [known[lb][0] if lb in known else -1 for lb in asked]
            assert idx.lookup(asked, hashes).tolist() == want
    every = list(known)
    got = idx.lookup(every, np.array([known[lb][1] for lb in every], np.uint64))
    assert got.tolist() == [known[lb][0] for lb in every] == list(range(5000))
    # the same label set under a hash it was not added with is not found
    assert idx.lookup(every[:1], np.array([known[every[0]][1] + 1], np.uint64)).tolist() == [-1]


def test_postings_are_int32_arrays_read_as_sorted_int64_ids() -> None:
    idx = _index()
    got = idx.postings("job", "api")
    assert got.dtype == np.int64 and got.tolist() == [0, 1, 3, 7]
    idx.add(Labels([("job", "api"), ("x", "1")]), 9)  # appending drops the cached copy
    assert idx.postings("job", "api").tolist() == [0, 1, 3, 7, 8]
    assert got.tolist() == [0, 1, 3, 7]  # a copy handed out earlier is unchanged


def test_hash_collisions_are_counted_however_often_they_are_asked_for() -> None:
    # Counted lazily, over the series added since the last count.
    rng = np.random.default_rng(3)
    idx = SeriesIndex()
    hashes: list[int] = []
    want = 0
    for i in range(3000):  # past the hashes' first capacity
        h = int(rng.integers(0, 400)) << 50  # many clashes, all 64 bits used
        assert idx.add(Labels([("i", str(i))]), h) == i
        want += h in hashes
        hashes.append(h)
        if rng.random() < 0.05:
            assert idx.hash_collisions == want
    assert idx.hash_collisions == want
    assert [idx.hash_of(i) for i in range(3000)] == hashes


def test_persist_appends_only_new_series_and_torn_tail_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "series.idx"
    idx = _index()
    idx.persist(path)
    size1 = path.stat().st_size
    extra = Labels([("__name__", "late")])
    idx.add(extra, 7)
    assert idx.persist(path) == 1
    assert idx.persist(path) == 0
    full = path.read_bytes()
    path.write_bytes(full[:-3])
    again = SeriesIndex()
    assert again.load(path) == len(SERIES)
    assert path.stat().st_size == size1
    assert again.select([Matcher(MatchOp.EQ, "job", "web")]).tolist() == [2]


def test_persist_writes_a_record_per_slice_and_a_torn_one_loses_only_its_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "PERSIST_RECORD_SERIES", 3)
    path = tmp_path / "series.idx"
    idx = SeriesIndex()
    series = [Labels([("i", str(i))]) for i in range(8)]
    for lb in series[:2]:
        idx.add(lb, lb.identity_hash())
    assert idx.persist(path) == 2
    for lb in series[2:]:
        idx.add(lb, lb.identity_hash())
    assert idx.persist(path) == 6  # records of 3 and 3
    again = SeriesIndex()
    assert again.load(path) == 8 and again.labels == series
    path.write_bytes(path.read_bytes()[:-5])  # the last record torn
    again = SeriesIndex()
    assert again.load(path) == 5 and again.labels == series[:5]
    assert again.persisted == 5


def test_register_rejects_contradicting_records() -> None:
    idx = _index()
    assert not idx.register(0, 1, SERIES[0])
    with pytest.raises(IndexCorruptError, match="series id 0 is"):
        idx.register(0, 1, Labels([("x", "y")]))
    with pytest.raises(IndexCorruptError, match="recorded but only"):
        idx.register(len(SERIES) + 5, 1, Labels([("x", "y")]))


def test_value_codes_number_each_value_once_and_follow_new_series() -> None:
    idx = SeriesIndex()
    for i in range(6):
        lb = Labels([("__name__", "m"), ("i", str(i))] + ([("mode", "user" if i % 3 else "idle")] if i % 2 else []))
        idx.add(lb, lb.identity_hash())
    codes, n = idx.value_codes("mode")
    user, idle = codes[1], codes[3]
    assert n == 2 and {user, idle} == {1, 2} and codes[:6].tolist() == [0, user, 0, idle, 0, user]  # absent: 0
    assert idx.value_codes("nobody")[1] == 0
    for i, mode in ((6, "idle"), (7, "steal")):
        late = Labels([("__name__", "m"), ("mode", mode), ("i", str(i))])
        idx.add(late, late.identity_hash())
    codes, n = idx.value_codes("mode")
    assert n == 3 and codes[6] == idle and codes[7] == 3  # numbered at the next call, by the same numbers
    codes, sets = idx.name_sets()
    assert [sets[k - 1] for k in codes[:8].tolist()] == [
        ("__name__", "i"), ("__name__", "i", "mode"), ("__name__", "i"), ("__name__", "i", "mode"),
        ("__name__", "i"), ("__name__", "i", "mode"), ("__name__", "i", "mode"), ("__name__", "i", "mode"),
    ]
    for k in range(index_module.MAX_CODED_NAMES + 5):
        idx.value_codes(f"name{k}")
    assert len(idx._codes) == index_module.MAX_CODED_NAMES and "mode" not in idx._codes


def test_value_codes_while_series_are_added_on_another_thread() -> None:
    # Evaluation threads number values while the event loop adds series:
    # every id below the count a call saw has its value's number.
    import sys
    import threading
    import time

    idx = SeriesIndex()
    stop = threading.Event()
    seen: list[tuple[np.ndarray, int]] = []

    def number() -> None:
        while not stop.is_set():
            n = len(idx)
            idx._codes.pop("v", None)  # numbered from the postings afresh each time
            codes, _ = idx.value_codes("v")
            seen.append((codes[:n].copy(), n))
            time.sleep(0)

    t = threading.Thread(target=number)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads far more often than every 5 ms
    t.start()
    try:
        for i in range(3000):
            lb = Labels([("__name__", "m"), ("i", str(i)), ("v", str(i % 7))])
            idx.add(lb, lb.identity_hash())
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(interval)
    codes, n = idx.value_codes("v")
    assert n == 7
    by_value = {str(i % 7): int(codes[i]) for i in range(7)}
    assert sorted(by_value.values()) == list(range(1, 8))
    want = np.array([by_value[str(i % 7)] for i in range(3000)], np.int32)
    assert np.array_equal(codes[:3000], want)
    assert seen
    for got, upto in seen:  # each call's numbers: one per value, the same for every series of it
        pairs = set(zip([str(i % 7) for i in range(upto)], got.tolist()))
        assert len(pairs) == min(upto, 7) and 0 not in {c for _, c in pairs}


_ids = st.sets(st.integers(0, 200), max_size=60).map(lambda s: np.array(sorted(s), np.int64))


@given(_ids, _ids)
def test_in_sorted_is_isin(a: np.ndarray, b: np.ndarray) -> None:
    assert in_sorted(a, b).tolist() == np.isin(a, b).tolist()


@given(st.integers(1, 400), st.lists(st.integers(-1, 7), max_size=400), st.sets(st.integers(0, 7)))
def test_union_of_one_names_postings_is_their_sorted_ids(n: int, value_of: list[int], chosen: set[int]) -> None:
    """Postings of several values of one name are disjoint: the union is
    their ids sorted, by a sort (few ids) or a mask of all n (many)."""
    value_of = value_of[:n]  # series id -> its value (-1: none)
    postings = [np.array([i for i, v in enumerate(value_of) if v == k], np.int64) for k in range(8)]
    got = _union([postings[k] for k in sorted(chosen)], n)
    want = sorted(i for i, v in enumerate(value_of) if v in chosen)
    assert got.tolist() == want
    assert got.dtype == np.int64


# --- forgetting series (retention left them without data) ---------------------


def _brute_live(matchers: list[Matcher], gone: set[int]) -> list[int]:
    return [i for i in _brute(matchers) if i not in gone]


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, len(SERIES) - 1)), st.sets(st.integers(0, len(SERIES) - 1)))
def test_forgotten_series_are_in_no_selection_listing_or_lookup(first: set[int], then: set[int]) -> None:
    idx = _index()
    gone = first | then
    assert idx.forget(np.array(sorted(first), np.int64)) == len(first)
    assert idx.forget(np.array(sorted(gone), np.int64)) == len(then - first)  # again: not counted twice
    assert idx.live == len(SERIES) - len(gone) and len(idx) == len(SERIES)
    for a in MATCHERS:
        assert idx.select([a]).tolist() == _brute_live([a], gone), a
    assert idx.select([]).tolist() == _brute_live([], gone)
    live = [lb for i, lb in enumerate(SERIES) if i not in gone]
    assert idx.label_names() == sorted({n for lb in live for n, _ in lb})
    assert idx.label_values("job") == sorted({lb.get("job") for lb in live} - {""})
    codes, n = idx.value_codes("job")
    assert n == len(idx.label_values("job"))
    assert len({int(codes[i]) for i in range(len(SERIES)) if i not in gone and SERIES[i].get("job")}) == n
    idx.name_sets()  # forgotten ids have no name set
    found = idx.lookup(SERIES, np.array([lb.identity_hash() for lb in SERIES], np.uint64))
    assert [i for i, sid in enumerate(found.tolist()) if sid < 0] == sorted(gone)


def test_a_forgotten_label_set_written_again_gets_a_new_id_and_no_collision() -> None:
    idx = _index()
    lb = SERIES[3]
    idx.forget(np.array([3]))
    assert idx.lookup([lb], np.array([lb.identity_hash()], np.uint64)).tolist() == [-1]
    sid = idx.add(lb, lb.identity_hash())
    assert sid == len(SERIES) and idx.hash_collisions == 0
    assert idx.lookup([lb], np.array([lb.identity_hash()], np.uint64)).tolist() == [sid]
    assert idx.select([Matcher(MatchOp.EQ, "instance", "a:9100")]).tolist() == [sid]
    assert idx.is_forgotten(np.array([3, sid])).tolist() == [True, False]


def test_forgotten_series_stay_forgotten_after_reload_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "series.idx"
    idx = _index()
    idx.persist(path)
    idx.persist_forgotten(path, np.array([1, 4]))
    idx.forget(np.array([1, 4]))
    extra = Labels([("__name__", "late")])
    idx.add(extra, extra.identity_hash())
    idx.persist(path)
    again = SeriesIndex()
    assert again.load(path) == len(SERIES) + 1
    assert again.live == len(SERIES) - 1 and again.forgotten == 2
    assert again.select([]).tolist() == [0, 2, 3, 5, 6, 7, 8]
    # A WAL segment not deleted yet may still hold a forgotten series' record.
    assert again.register(1, SERIES[1].identity_hash(), SERIES[1]) is False
    assert again.labels[1] is None


def test_a_version_1_file_is_marked_version_2_before_its_first_forgotten_record(tmp_path: Path) -> None:
    path = tmp_path / "series.idx"
    idx = _index()
    idx.persist(path)
    data = bytearray(path.read_bytes())
    data[8:12] = (1).to_bytes(4, "little")  # as written before FORGOTTEN records existed
    path.write_bytes(bytes(data))
    v1 = SeriesIndex()
    assert v1.load(path) == len(SERIES)
    v1.persist_forgotten(path, np.array([0]))
    assert path.read_bytes()[8:12] == (2).to_bytes(4, "little")
    again = SeriesIndex()
    again.load(path)
    assert again.is_forgotten(np.array([0, 1])).tolist() == [True, False]


def test_a_forgotten_record_naming_an_unknown_id_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "series.idx"
    idx = _index()
    idx.persist(path)
    idx.persist_forgotten(path, np.array([1, len(SERIES) + 5]))
    with pytest.raises(IndexCorruptError, match="never recorded"):
        SeriesIndex().load(path)


def test_a_label_set_forgotten_and_written_again_is_no_collision_after_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "series.idx"
    idx = _index()
    idx.persist(path)
    idx.persist_forgotten(path, np.array([2]))
    idx.forget(np.array([2]))
    idx.add(SERIES[2], SERIES[2].identity_hash())
    idx.persist(path)
    assert idx.hash_collisions == 0
    again = SeriesIndex()
    again.load(path)
    assert again.hash_collisions == 0
    assert again.select([Matcher(MatchOp.EQ, "job", "web")]).tolist() == [len(SERIES)]


def test_a_rewritten_file_keeps_every_id_without_the_forgotten_label_sets(tmp_path: Path) -> None:
    path = tmp_path / "series.idx"
    idx = SeriesIndex()
    many = [Labels([("__name__", "m"), ("pod", f"p{i}")]) for i in range(50)]
    for lb in many:
        idx.add(lb, lb.identity_hash())
    idx.persist(path)
    gone = np.array([i for i in range(50) if i % 7 != 3], np.int64)  # runs of both kinds
    idx.persist_forgotten(path, gone)
    idx.forget(gone)
    before = path.stat().st_size
    assert idx.rewrite(path) > 0 and path.stat().st_size < before / 3
    again = SeriesIndex()
    assert again.load(path) == 7  # the live ones' records
    assert len(again) == 50 and again.live == 7 and again.hash_collisions == 0
    assert again.select([]).tolist() == [i for i in range(50) if i % 7 == 3]
    assert [lb.get("pod") for lb in again.labels if lb is not None] == [f"p{i}" for i in range(3, 50, 7)]
    back = many[0]
    assert again.lookup([back], np.array([back.identity_hash()], np.uint64)).tolist() == [-1]
    assert again.add(back, back.identity_hash()) == 50
    again.persist(path)
    third = SeriesIndex()
    third.load(path)
    assert third.select([Matcher(MatchOp.EQ, "pod", "p0")]).tolist() == [50]


def test_an_unfinished_rewrite_is_removed_and_the_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "series.idx"
    idx = _index()
    idx.persist(path)
    (tmp_path / ("series.idx" + index_module.REWRITE_SUFFIX)).write_bytes(b"half written")
    assert SeriesIndex().load(path) == len(SERIES)
    assert not (tmp_path / ("series.idx" + index_module.REWRITE_SUFFIX)).exists()


def test_forgotten_ids_of_a_rewritten_file_must_follow_on(tmp_path: Path) -> None:
    path = tmp_path / "series.idx"
    idx = _index()
    idx.persist(path)
    with open(path, "ab") as f:  # ids 10.. after 8 series: 8 and 9 skipped
        f.write(index_module.walmod.frame(index_module.walmod.REC_FORGOTTEN,
                                          index_module.walmod.encode_ids(np.array([10, 11]))))
    with pytest.raises(IndexCorruptError, match="skip"):
        SeriesIndex().load(path)
