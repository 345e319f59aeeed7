"""Exemplars held by a shard: Prometheus' rules, its bound, and the log."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher, MatchOp
from athens.shards.exemplars import LOG_NAME, ExemplarStore
from athens.shards.shard import Shard, ShardConfig


def _tid(s: str) -> Labels:
    return Labels([("trace_id", s)])


def test_duplicates_add_nothing_and_older_or_long_ones_are_refused() -> None:
    store = ExemplarStore(10)
    res, stored = store.add([1, 1, 1, 1, 2, -1], [_tid("a"), _tid("a"), _tid("b"), _tid("x" * 121), _tid("c"),
                                                  _tid("d")], [5, 5, 5, 9, 1, 1], [1.0, 1.0, 2.0, 0.0, 3.0, 0.0])
    assert stored == [0, 4]
    assert (res.stored, res.duplicate, res.out_of_order, res.labels_too_long, res.unknown_series) == (2, 1, 1, 1, 1)
    assert res.written == 3 and res.rejected() == {"out_of_order": 1, "labels_too_long": 1, "unknown_series": 1}
    assert store.select([1, 2, 3], 0, 10) == [(1, [(_tid("a"), 5, 1.0)]), (2, [(_tid("c"), 1, 3.0)])]
    assert store.select([1, 2], 2, 10) == [(1, [(_tid("a"), 5, 1.0)])]


def test_the_oldest_of_all_series_goes_first_once_full() -> None:
    store = ExemplarStore(3)
    for t in range(5):
        store.add([t % 2], [_tid(str(t))], [t], [float(t)])
    assert len(store) == 3
    assert store.select([0, 1], 0, 10) == [(0, [(_tid("2"), 2, 2.0), (_tid("4"), 4, 4.0)]), (1, [(_tid("3"), 3, 3.0)])]
    assert store.held() == ([0, 1, 0], [_tid("2"), _tid("3"), _tid("4")], [2, 3, 4], [2.0, 3.0, 4.0])


def _shard(path: Path, capacity: int = 100) -> Shard:
    sh = Shard(path, ShardConfig(wal_fsync="off", max_exemplars=capacity))
    sh.open()
    return sh


def _series(i: int) -> Labels:
    return Labels([("__name__", "m"), ("i", str(i))])


def _write(sh: Shard, n: int, t0: int) -> None:
    sh.append(WriteBatch.from_series([(_series(i), np.array([t0]), np.array([1.0])) for i in range(n)]))


def _add(sh: Shard, series: list[int], t0: int) -> int:
    labels = [_series(i) for i in sorted(set(series))]
    idx = np.array([sorted(set(series)).index(i) for i in series], np.int64)
    ts = np.arange(t0, t0 + len(series), dtype=np.int64)
    return sh.append_exemplars(labels, idx, [_tid(f"{t0}-{k}") for k in range(len(series))], ts,
                               ts.astype(np.float64)).written


def _all(sh: Shard) -> list:
    return sh.select_exemplars([[Matcher(MatchOp.EQ, "__name__", "m")]], -(2**62), 2**62)


def test_a_shard_holds_exemplars_of_known_series_and_reads_them_back_after_a_crash(tmp_path: Path) -> None:
    sh = _shard(tmp_path)
    _write(sh, 3, 0)
    assert _add(sh, [0, 1, 1, 7], 100) == 3  # series 7 is unknown here
    assert _add(sh, [2], 200) == 1
    want = _all(sh)
    assert [(lb.get("i"), [t for _, t, _ in got]) for lb, got in want] == [("0", [100]), ("1", [101, 102]),
                                                                            ("2", [200])]
    one = sh.select_exemplars([[Matcher(MatchOp.EQ, "i", "1")], [Matcher(MatchOp.EQ, "i", "2")]], 102, 200)
    assert [(lb.get("i"), [t for _, t, _ in got]) for lb, got in one] == [("1", [102]), ("2", [200])]
    assert sh.stats()["exemplars"] == 4
    with open(tmp_path / LOG_NAME, "ab") as f:
        f.write(b"\x07torn")  # a write cut short by the crash
    crashed = _shard(tmp_path)  # no close: kill -9
    assert _all(crashed) == want
    assert crashed.replay_stats is not None and crashed.replay_stats.exemplars == 4
    assert _add(crashed, [2], 300) == 1  # appended after the cut tail
    crashed.close()
    assert len(_all(_shard(tmp_path))[-1][1]) == 2


def test_the_log_is_rewritten_with_what_is_held_and_none_are_kept_at_capacity_zero(tmp_path: Path) -> None:
    sh = _shard(tmp_path, capacity=4)
    _write(sh, 2, 0)
    for k in range(10):
        _add(sh, [k % 2], 100 + k)
    assert len(sh.exemplars) == 4
    assert (tmp_path / LOG_NAME).stat().st_size < 6 * 60  # rewritten, not ten records
    want = _all(sh)
    sh.close()
    assert _all(_shard(tmp_path, capacity=4)) == want
    none = _shard(tmp_path / "none", capacity=0)
    _write(none, 1, 0)
    assert _add(none, [0], 100) == 0 and _all(none) == []
