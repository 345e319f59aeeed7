"""Shard: what append() acknowledged is selectable, across flushes, reopens and crashes.

"Crash" here is kill -9 equivalent: a second Shard is opened on the same
directory while the first is neither flushed nor closed (every acknowledged
byte was write()n, so it is in the page cache the second one reads).
"""

from __future__ import annotations

import gc
import logging
import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from athens.config import ConfigError, ServeConfig
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher, MatchOp
from athens.model.series import STALE_NAN
from athens.shards import shard as shard_mod
from athens.shards.shard import FLUSH_STEPS, Shard, ShardConfig
from athens.shards.worker import shard_config

ALL = [Matcher(MatchOp.RE, "__name__", ".+")]
FAST = ShardConfig(wal_fsync="off")


def _labels(i: int, name: str = "m") -> Labels:
    return Labels([("__name__", name), ("i", str(i)), ("parity", "even" if i % 2 == 0 else "odd")])


def _batch(n_series: int, t0: int, per: int = 1, step: int = 15_000, seed: int = 0) -> WriteBatch:
    rng = np.random.default_rng(seed + t0)
    items = []
    for i in range(n_series):
        ts = t0 + np.arange(per, dtype=np.int64) * step
        items.append((_labels(i), ts, rng.standard_normal(per)))
    return WriteBatch.from_series(items)


def _open(path: Path, cfg: ShardConfig = FAST) -> Shard:
    sh = Shard(path, cfg)
    sh.open()
    return sh


def _dump(sh: Shard, matchers=ALL, mint: int = -(2**62), maxt: int = 2**62) -> dict:
    return {
        s.labels: (s.ts.tolist(), s.values.view(np.uint64).tolist())
        for s in sh.select(matchers, mint, maxt)
    }


def _expected(batches: list[WriteBatch]) -> dict:
    out: dict = {}
    for b in batches:
        for i, lb in enumerate(b.series):
            m = b.series_idx == i
            ts, vs = out.setdefault(lb, ([], []))
            ts.extend(b.ts[m].tolist())
            vs.extend(b.values[m].view(np.uint64).tolist())
    return out


def test_append_select_flush_close_reopen(tmp_path: Path) -> None:
    sh = _open(tmp_path, ShardConfig())
    batches = [_batch(20, 0, per=150), _batch(20, 150 * 15_000, per=50)]
    for b in batches:
        r = sh.append(b)
        assert r.accepted == b.num_samples and r.out_of_order == 0
    want = _expected(batches)
    assert _dump(sh) == want
    sh.flush()
    assert sh.stats()["head_samples"] == 0 and sh.stats()["segments"] == 1
    assert _dump(sh) == want
    later = _batch(20, 200 * 15_000, per=3)
    sh.append(later)
    want = _expected(batches + [later])
    assert _dump(sh) == want
    sh.close()
    again = _open(tmp_path)
    assert _dump(again) == want
    st = again.replay_stats
    assert st is not None and st.samples_replayed == later.num_samples
    assert st.segments == 1 and st.series_from_file == 20


def test_select_filters_by_matchers_and_time(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    sh.append(_batch(10, 0, per=100, step=1000))
    sh.flush()
    sh.append(_batch(10, 100_000, per=100, step=1000))
    got = sh.select([Matcher(MatchOp.EQ, "parity", "odd")], 50_500, 150_000)
    assert [s.labels.get("i") for s in got] == ["1", "3", "5", "7", "9"]
    for s in got:
        assert s.ts.tolist() == list(range(51_000, 150_001, 1000))
    assert len(sh.select(ALL, 10**9, 10**10)) == 0
    assert len(sh.select([Matcher(MatchOp.EQ, "__name__", "nope")], 0, 10**9)) == 0
    assert sh.label_names([], 0, 10**9) == ["__name__", "i", "parity"]
    assert sh.label_values("parity", [Matcher(MatchOp.EQ, "i", "2")], 0, 10**9) == ["even"]
    assert sh.label_values("i", [], 10**9, 10**10) == []
    sh.append(WriteBatch.from_series([(_labels(10), np.array([10**9 + 5]), np.array([1.0]))]))
    assert sh.label_values("i", [], 10**9, 10**10) == ["10"]  # some series in range, not all
    assert sh.label_values("i", [], 0, 10**9) == [str(i) for i in range(10)]


def test_staleness_markers_survive_flush_and_reopen(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    b = WriteBatch.from_series([(_labels(0), np.array([1, 2, 3]), np.array([1.0, STALE_NAN, 2.0]))])
    sh.append(b)
    want = _expected([b])
    sh.flush()
    assert _dump(_open(tmp_path)) == want


def test_rejections_are_counted_and_not_stored(tmp_path: Path) -> None:
    sh = _open(tmp_path, ShardConfig(wal_fsync="off", ooo_window_ms=0))
    lb = _labels(0)
    sh.append(WriteBatch.from_series([(lb, np.array([10, 20]), np.array([1.0, 2.0]))]))
    sh.flush()
    r = sh.append(
        WriteBatch.from_series([(lb, np.array([5, 20, 20, 30]), np.array([9.0, 2.0, 3.0, 4.0]))])
    )
    assert (r.accepted, r.duplicates, r.conflicts, r.too_old) == (1, 1, 1, 1)
    assert r.rejections() == {"older_than_ooo_window": 1, "duplicate_timestamp_different_value": 1}
    assert r.to_meta()["rejected"] == r.rejections() and r.to_meta()["accepted"] == 1
    assert _dump(sh)[lb][0] == [10, 20, 30]
    st = sh.stats()
    assert st["samples_rejected"] == {"older_than_ooo_window": 1, "duplicate_timestamp_different_value": 1}
    assert st["conflicts_by_producer"] == {"/": 1}
    assert st["samples_duplicate"] == 1 and st["samples_appended"] == 3
    # After reopen the sealed newest sample is still known bit-exactly.
    again = _open(tmp_path)
    r = again.append(WriteBatch.from_series([(lb, np.array([30]), np.array([4.0]))]))
    assert r.duplicates == 1


def test_hash_collision_in_a_batch_keeps_two_series(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    a, b = _labels(1), _labels(2)
    batch = WriteBatch(
        [a, b], np.array([99, 99], np.uint64), np.array([0, 1], np.int32),
        np.array([1, 1], np.int64), np.array([1.0, 2.0]),
    )
    assert sh.append(batch).accepted == 2
    assert sh.stats()["series_hash_collisions"] == 1
    sh.flush()
    again = _open(tmp_path)
    got = _dump(again)
    assert got[a][1] == np.array([1.0]).view(np.uint64).tolist()
    assert got[b][1] == np.array([2.0]).view(np.uint64).tolist()


def test_crash_after_append_loses_nothing_acknowledged(tmp_path: Path) -> None:
    for mode in ("always", "batch", "off"):
        d = tmp_path / mode
        cfg = ShardConfig(wal_fsync=mode)
        sh = _open(d, cfg)
        batches = [_batch(30, 0, per=5), _batch(40, 100_000, per=5)]
        for b in batches:
            sh.append(b)
        crashed = _open(d, cfg)  # sh is never closed
        assert _dump(crashed) == _expected(batches)


@pytest.mark.parametrize("step", FLUSH_STEPS)
def test_crash_at_each_flush_step_recovers_exactly(tmp_path: Path, step: str) -> None:
    sh = _open(tmp_path)
    first = _batch(25, 0, per=130)
    sh.append(first)
    sh.flush()  # one clean segment first
    batches = [first, _batch(25, 130 * 15_000, per=40), _batch(30, 170 * 15_000, per=2)]
    sh.append(batches[1])
    sh.append(batches[2])

    def fail(name: str) -> None:
        if name == step:
            raise RuntimeError(f"injected crash before {name}")

    sh.fault_hook = fail
    with pytest.raises(RuntimeError):
        sh.flush()
    want = _expected(batches)
    crashed = _open(tmp_path)
    assert _dump(crashed) == want
    assert not list((tmp_path / "segments").glob("*.tmp"))
    # The recovered shard keeps working: append, flush, crash again.
    more = _batch(30, 10**9, per=1)
    crashed.append(more)
    crashed.flush()
    want = _expected(batches + [more])
    assert _dump(_open(tmp_path)) == want


def test_crash_after_segment_published_does_not_duplicate(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    b = _batch(5, 0, per=10)
    sh.append(b)

    def fail(name: str) -> None:
        if name == "truncate_wal":
            raise RuntimeError("crash")

    sh.fault_hook = fail
    with pytest.raises(RuntimeError):
        sh.flush()
    crashed = _open(tmp_path)
    st = crashed.replay_stats
    assert st is not None and st.wal_segments_already_sealed >= 1 and st.samples_replayed == 0
    assert st.samples_replayed == 0
    assert _dump(crashed) == _expected([b])


def test_torn_wal_tail_loses_only_the_last_batch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sh = _open(tmp_path)
    b1, b2 = _batch(10, 0, per=3), _batch(10, 100_000, per=3)
    sh.append(b1)
    sh.append(b2)
    wal_file = sorted((tmp_path / "wal").iterdir())[-1]
    size = wal_file.stat().st_size
    os.truncate(wal_file, size - 7)
    with caplog.at_level(logging.WARNING):
        crashed = _open(tmp_path)
    assert _dump(crashed) == _expected([b1])
    assert "truncating" in caplog.text
    # The lost batch can be written again (it was never acknowledged to anyone
    # in a real torn write) and is accepted.
    assert crashed.append(b2).accepted == b2.num_samples


def test_corrupt_segment_is_moved_aside_and_shard_keeps_running(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    b1 = _batch(10, 0, per=3)
    sh.append(b1)
    sh.flush()
    b2 = _batch(10, 100_000, per=3)
    sh.append(b2)
    sh.flush()
    seg1 = tmp_path / "segments" / "00000001.seg"
    buf = bytearray(seg1.read_bytes())
    buf[30] ^= 0xFF
    seg1.write_bytes(bytes(buf))
    again = _open(tmp_path)
    assert (tmp_path / "corrupt" / "00000001.seg").exists()
    assert again.stats()["segments_corrupt"] == 1
    assert _dump(again) == _expected([b2])
    # New segments do not reuse the moved-aside number.
    again.append(_batch(10, 10**9))
    assert again.flush().name == "00000003.seg"


def test_flush_tick_seals_by_size_and_age(tmp_path: Path) -> None:
    sh = _open(tmp_path, ShardConfig(wal_fsync="batch", head_flush_samples=100, head_flush_age_ms=60_000))
    sh.append(_batch(10, 0, per=5))
    assert not sh.flush_tick(1_000_000)
    assert not sh.flush_tick(1_059_999)
    assert sh.flush_tick(1_060_000)
    assert sh.stats()["segments"] == 1
    sh.append(_batch(10, 10**6, per=10))
    assert sh.flush_tick(2_000_000)
    assert sh.stats()["segments"] == 2 and sh.stats()["head_samples"] == 0


def test_seal_phase_seals_the_first_head_early_and_keeps_the_offset(tmp_path: Path) -> None:
    # Two workers' shards filling at the same rate: phases 0 and 1/2 seal
    # half a cycle apart, by size and by age alike.
    by_size = [_open(tmp_path / f"s{p}", ShardConfig(wal_fsync="off", head_flush_samples=100, seal_phase=p))
               for p in (0.0, 0.5)]
    sealed: list[list[int]] = [[], []]
    for k in range(30):  # 10 samples a step
        for i, sh in enumerate(by_size):
            sh.append(_batch(10, k * 15_000))
            if sh.flush_tick(1_000_000):
                sealed[i].append(k)
    assert sealed == [[9, 19, 29], [4, 14, 24]]
    by_age = [_open(tmp_path / f"a{p}", ShardConfig(wal_fsync="off", head_flush_age_ms=60_000, seal_phase=p))
              for p in (0.0, 0.5)]
    sealed = [[], []]
    for k in range(16):  # a tick every 10 s
        for i, sh in enumerate(by_age):
            sh.append(_batch(10, k * 15_000))
            if sh.flush_tick(k * 10_000):
                sealed[i].append(k)
    assert sealed == [[6, 13], [3, 10]]
    with pytest.raises(ValueError):
        ShardConfig(seal_phase=1.0)
    assert [shard_config(ServeConfig(workers=4), i).seal_phase for i in range(4)] == [0, 0.25, 0.5, 0.75]


def test_head_max_samples_flag_reaches_the_shard_config() -> None:
    assert shard_config(ServeConfig()).head_flush_samples == 4_000_000
    assert shard_config(ServeConfig(head_max_samples=30_000_000)).head_flush_samples == 30_000_000
    with pytest.raises(ConfigError, match="head-max-samples"):
        ServeConfig(head_max_samples=0).validate()


def test_wal_is_truncated_after_flush_and_ids_are_stable(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    sh.append(_batch(10, 0))
    sh.flush()
    assert sh.stats()["wal_bytes"] == 0
    sh.close()
    again = _open(tmp_path)
    newer = WriteBatch.from_series([(_labels(0, "other"), np.array([1]), np.array([1.0]))])
    again.append(newer)
    again.append(_batch(10, 10**6))
    assert again.index.labels[10] == _labels(0, "other")
    third = _open(tmp_path)
    assert third.index.labels == again.index.labels


def test_a_batch_gives_its_new_series_ids_by_metric_name_then_labels(tmp_path: Path) -> None:
    """Chunks are laid out in id order, so one metric's series must get
    neighbouring ids even when a write interleaves metrics (as a scrape
    of one target after another does)."""
    sh = _open(tmp_path)
    sh.append(_batch(1, 0))  # an id already taken keeps its place
    arrived = [_labels(i, name) for i in (3, 1, 2) for name in ("zeta", "alpha")]
    arrived.append(_labels(0))  # known: not renumbered
    r = sh.append(WriteBatch.from_series([(lb, np.array([1]), np.array([1.0])) for lb in arrived]))
    assert [sh.index.labels[i] for i in range(len(sh.index))] == [
        _labels(0), *(_labels(i, "alpha") for i in (1, 2, 3)), *(_labels(i, "zeta") for i in (1, 2, 3)),
    ]
    assert [sh.index.labels[i] for i in r.series_ids.tolist()] == arrived  # each sample went to its own series
    assert _dump(sh)[_labels(2, "zeta")][0] == [1]


def test_reads_leave_segment_pages_mapped_only_up_to_a_bound(tmp_path: Path, monkeypatch) -> None:
    from athens import heap
    from athens.shards import shard as shardmod

    monkeypatch.setattr(shardmod, "RELEASE_READ_SAMPLES", 5_000)
    sh = _open(tmp_path)
    rng = np.random.default_rng(5)
    ts = np.arange(0, 2_400_000, 15_000, dtype=np.int64)  # values that do not compress
    sh.append(WriteBatch.from_series([(_labels(i), ts, rng.standard_normal(len(ts))) for i in range(40)]))
    sh.flush()
    (seg,) = sh.segments

    def resident_kb() -> int:
        mapped = heap._mappings_of(str(seg.path))
        assert mapped, "no /proc/self/smaps"
        return sum(stats["Rss"] for *_, stats in mapped)

    # The footer's pages, which release_read_pages leaves mapped.
    index_kb = -(-(seg.size - seg._data_pages) // mmap.PAGESIZE) * (mmap.PAGESIZE // 1024)

    def chunk_kb() -> int:  # resident KiB of the file beyond its footer's pages
        return resident_kb() - index_kb

    one = [Matcher(MatchOp.EQ, "i", "7")]
    assert len(_dump(sh, one)) == 1  # 160 samples: below the bound, the pages stay
    assert not sh.release_read_pages()
    assert chunk_kb() > 0
    assert len(_dump(sh)) == 40  # 6,400 samples: past it
    assert chunk_kb() > 0
    assert sh.release_read_pages()
    assert chunk_kb() <= 0
    assert len(_dump(sh, one)) == 1  # read back from the page cache
    assert not sh.release_read_pages()
    assert chunk_kb() > 0
    sh.unmap_segments()  # a quiet spell: the footers go as well
    assert resident_kb() == 0
    sh.close()
    del sh
    gc.collect()  # the closed shard's mapping goes with it
    sh = _open(tmp_path)  # opening reads every footer, and leaves none mapped
    (seg,) = sh.segments
    assert resident_kb() == 0


def test_stats_shape(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    sh.append(_batch(3, 0, per=2))
    st = sh.stats()
    for key in ("series", "samples_appended", "samples_rejected", "samples_duplicate",
                "samples_conflict", "head_samples", "segments", "bytes_on_disk", "wal_bytes"):
        assert key in st
    assert st["series"] == 3 and st["head_samples"] == 6 and st["wal_bytes"] > 0


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        ShardConfig(wal_fsync="sometimes")
    with pytest.raises(ValueError):
        ShardConfig(ooo_window_ms=-1)
    with pytest.raises(ValueError):
        ShardConfig(chunk_window_ms=20, compact_ranges_ms=(30,))
    with pytest.raises(ValueError):
        ShardConfig(chunk_window_ms=20, compact_ranges_ms=(40, 60))


def test_label_rank_takes_in_new_series_and_stays_the_label_order(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    rng = np.random.default_rng(3)
    names = [f"s{i:03d}" for i in rng.permutation(300)]
    for lo, hi in ((0, 150), (150, 151), (151, 190), (190, 300)):
        sh.append(WriteBatch.from_series(
            [(Labels([("__name__", "m"), ("k", n)]), np.array([1000], np.int64), np.ones(1)) for n in names[lo:hi]]
        ))
        labels = sh.index.labels
        rank = sh.label_rank()
        assert sorted(range(len(labels)), key=lambda i: labels[i].pairs) == np.argsort(rank).tolist()
        assert [s.labels.get("k") for s in sh.select(ALL, 0, 2000)] == sorted(names[:hi])
    sh.close()


def test_label_rank_orders_new_series_before_and_after_they_are_folded_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # New series get fractional ranks between their neighbours until more
    # than UNFOLDED_MAX wait; forgetting folds them in first.
    monkeypatch.setattr(shard_mod, "UNFOLDED_MAX", 5)
    sh = _open(tmp_path)
    rng = np.random.default_rng(11)
    seen = 0
    for step in range(40):
        k = int(rng.integers(1, 9))
        sh.append(WriteBatch.from_series(
            [(Labels([("__name__", f"m{rng.integers(3)}"), ("k", f"{rng.integers(10**6):06d}")]),
              np.array([1000], np.int64), np.ones(1)) for _ in range(k)]
        ))
        if step % 7 == 6:  # forget a few, as a retention pass does
            live = np.flatnonzero(~sh.index.is_forgotten(np.arange(len(sh.index))))
            sh.index.forget(np.sort(rng.choice(live, size=min(3, len(live)), replace=False)))
            sh.label_rank(fold=True)
        labels = sh.index.labels
        live_ids = [i for i in range(len(labels)) if labels[i] is not None]
        rank = sh.label_rank()
        want = sorted(live_ids, key=lambda i: labels[i].pairs)  # type: ignore[union-attr]
        assert sorted(live_ids, key=lambda i: rank[i]) == want, step
        seen = max(seen, len(sh._unfolded))
    assert 0 < seen <= 5 + 8  # both paths taken
    sh.close()


def test_group_order_is_a_stable_argsort() -> None:
    from athens.shards.head import group_order

    rng = np.random.default_rng(3)
    keys = rng.integers(0, 50, 10_000)
    assert np.array_equal(group_order(keys, 50), np.argsort(keys, kind="stable"))
    assert np.array_equal(group_order.py_func(keys, 50), np.argsort(keys, kind="stable"))


# --- real kill -9 -------------------------------------------------------------

_WRITER = r"""
import sys
from pathlib import Path
import numpy as np
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.shards.shard import Shard, ShardConfig

sh = Shard(Path(sys.argv[1]), ShardConfig(wal_fsync="off", head_flush_samples=5000))
sh.open()
k = 0
while True:
    items = [(Labels([("__name__", "m"), ("i", str(i))]), np.array([k]), np.array([float(k)]))
             for i in range(50)]
    sh.append(WriteBatch.from_series(items))
    sh.flush_tick(0)  # seals every 100 batches, so kills also land in flushes
    print(k, flush=True)
    k += 1
"""


def test_kill_9_loses_no_acknowledged_sample(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    acked = -1
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None
        target = acked + 150 + 37 * round_
        for line in proc.stdout:
            acked = int(line)
            if acked >= target:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        sh = _open(tmp_path)
        got = sh.select([Matcher(MatchOp.EQ, "__name__", "m")], 0, 10**9)
        assert len(got) == 50
        assert len({len(s.ts) for s in got}) == 1  # one WAL write per batch: all or none
        for s in got:
            # Everything acknowledged is there, in order, exactly once (the
            # writer may have got further than the acknowledgements we read).
            assert len(s.ts) >= acked + 1
            assert s.ts.tolist() == list(range(len(s.ts)))
            assert s.values.tolist() == [float(t) for t in s.ts]
        acked = int(got[0].ts[-1])
        sh.close()


# --- model-based: random appends, flushes, crashes and reopens -----------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_op = st.one_of(
    st.tuples(
        st.just("append"),
        st.lists(
            st.tuples(st.integers(0, 5), st.integers(0, 100), st.sampled_from([0.0, 1.0, 2.5, STALE_NAN])),
            min_size=1, max_size=30,
        ),
    ),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("compact"), st.none()),
    st.tuples(st.just("crash"), st.none()),
    st.tuples(st.just("reopen"), st.none()),
)


def _model_append(model: dict, samples: list, window: int) -> tuple[int, int, int, int, int]:
    """Sequential reference of the acceptance rules (per series, batch sorted by ts).

    model[sid] is a sorted list of (ts, bits). Returns (accepted, duplicates,
    conflicts, too_old, out_of_order accepted).
    """
    acc = dup = conf = old = ooo = 0
    by_series: dict[int, list] = {}
    for sid, t, v in samples:
        by_series.setdefault(sid, []).append((t, v))
    for sid, pts in by_series.items():
        pts.sort(key=lambda p: p[0])  # stable: first of equal ts wins
        series = model.setdefault(sid, [])
        newest = series[-1][0] if series else None
        stored = dict(series)
        for t, v in pts:
            bits = np.array([v]).view(np.uint64)[0]
            if newest is not None and t < newest - window:
                old += 1
            elif t in stored:
                if bits == stored[t]:
                    dup += 1
                else:
                    conf += 1
            else:
                stored[t] = bits
                acc += 1
                ooo += newest is not None and t < newest
        series[:] = sorted(stored.items())
    return acc, dup, conf, old, ooo


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(_op, min_size=1, max_size=14), window=st.sampled_from([0, 10, 30, 1000]),
    lo=st.integers(-1, 101), width=st.integers(0, 60),
)
def test_shard_matches_a_sequential_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list, window: int, lo: int, width: int
) -> None:
    """Appends (in order and out of order), seals, compactions, crashes and
    reopens in any order: the shard holds exactly what the model accepted,
    and a select of [lo, lo + width] exactly that part of it."""
    d = tmp_path_factory.mktemp("model")
    cfg = ShardConfig(
        wal_fsync="off", chunk_samples=4, chunk_window_ms=10, ooo_window_ms=window,
        compact_ranges_ms=(20, 40), compact_chunk_samples=6,
    )
    sh = _open(d, cfg)
    model: dict = {}
    for kind, arg in ops:
        if kind == "append":
            items = {}
            for sid, t, v in arg:
                items.setdefault(sid, ([], []))
                items[sid][0].append(t)
                items[sid][1].append(v)
            batch = WriteBatch.from_series(
                [(_labels(sid), np.array(ts), np.array(vs)) for sid, (ts, vs) in items.items()]
            )
            r = sh.append(batch)
            got_r = (r.accepted, r.duplicates, r.conflicts, r.too_old, r.out_of_order)
            assert got_r == _model_append(model, arg, window)
        elif kind == "flush":
            sh.flush()
        elif kind == "compact":
            sh.flush()
            sh.compact_all()
        elif kind == "crash":
            sh = _open(d, cfg)
        else:
            sh.close()
            sh = _open(d, cfg)
        for mint, maxt in ((-(2**62), 2**62), (lo, lo + width)):
            got = {int(s.labels.get("i")): list(zip(s.ts.tolist(), s.values.view(np.uint64).tolist()))
                   for s in sh.select(ALL, mint, maxt)}
            want = {k: [p for p in v if mint <= p[0] <= maxt] for k, v in model.items()}
            assert got == {k: v for k, v in want.items() if v}


def test_many_small_wal_segments_replay_and_truncate(tmp_path: Path) -> None:
    cfg = ShardConfig(wal_fsync="off", wal_segment_bytes=4096)
    sh = _open(tmp_path, cfg)
    batches = [_batch(20, k * 45_000, per=3) for k in range(30)]  # ~1.1 KB each
    for b in batches[:20]:
        sh.append(b)
    assert len(sh.wal.segment_numbers()) > 5
    sh.flush()
    assert sh.wal.segment_numbers() == [sh.wal.current_segment]
    for b in batches[20:]:
        sh.append(b)
    crashed = _open(tmp_path, cfg)
    assert _dump(crashed) == _expected(batches)
    st = crashed.replay_stats
    assert st is not None and st.samples_replayed == sum(b.num_samples for b in batches[20:])


def test_append_uses_known_series_ids_and_reports_them(tmp_path) -> None:
    sh = Shard(tmp_path / "s", ShardConfig(wal_fsync="off"))
    sh.open()
    a, b = Labels([("__name__", "a")]), Labels([("__name__", "b")])
    first = sh.append(WriteBatch.from_series([(a, np.array([1]), np.array([1.0])), (b, np.array([1]), np.array([2.0]))]))
    assert first.series_ids.tolist() == [0, 1] and "series_ids" not in first.to_meta()
    hinted = WriteBatch.from_series([(b, np.array([2]), np.array([3.0])), (a, np.array([2]), np.array([4.0]))])
    hinted.ids = np.array([1, -1])  # b known, a looked up
    second = sh.append(hinted)
    assert second.series_ids.tolist() == [1, 0] and second.accepted == 2
    got = {s.labels: s.values.tolist() for s in sh.select(ALL, 0, 10)}
    assert got == {a: [1.0, 4.0], b: [2.0, 3.0]}
    bad = WriteBatch.from_series([(a, np.array([3]), np.array([5.0]))])
    bad.ids = np.array([5])
    with pytest.raises(ValueError, match="series id"):
        sh.append(bad)
    sh.close()


def test_series_time_range_takes_every_out_of_order_sample_of_a_batch(tmp_path: Path) -> None:
    # Two out-of-order samples of one series in one batch: the series' range
    # (which selects skip series by) must reach the older one.
    sh = _open(tmp_path, ShardConfig(wal_fsync="off", ooo_window_ms=10))
    sh.append(WriteBatch.from_series([(_labels(0), np.array([2]), np.array([0.0]))]))
    sh.append(WriteBatch.from_series([(_labels(0), np.array([0, 1]), np.array([5.0, 6.0]))]))
    got = sh.select(ALL, 0, 0)
    assert [(s.ts.tolist(), s.values.tolist()) for s in got] == [([0], [5.0])]


def test_out_of_order_window_near_the_minimum_timestamp(tmp_path: Path) -> None:
    # newest - window wrapped in int64: INT64_MIN+1, 4 ms older than the
    # series' newest INT64_MIN+5, was refused as older_than_ooo_window (the
    # default 10 min window), and a WAL replay dropped it the same way.
    lo = int(np.iinfo(np.int64).min)
    sh = _open(tmp_path)
    assert sh.append(WriteBatch.from_series([(_labels(0), np.array([lo + 5]), np.array([1.0]))])).accepted == 1
    r = sh.append(WriteBatch.from_series([(_labels(0), np.array([lo + 1]), np.array([2.0]))]))
    assert (r.accepted, r.out_of_order, r.too_old) == (1, 1, 0)
    want = [([lo + 1, lo + 5], [2.0, 1.0])]

    def got(shard: Shard) -> list:
        return [(s.ts.tolist(), s.values.tolist()) for s in shard.select(ALL, lo + 1, lo + 5)]

    assert got(sh) == want
    crashed = _open(tmp_path)  # kill -9: both samples come back from the WAL
    assert got(crashed) == want
    crashed.flush()
    crashed.close()
    assert got(_open(tmp_path)) == want


def test_deleted_series_are_gone_durably_and_a_label_set_written_again_is_new(tmp_path: Path) -> None:
    even, odd = [Matcher(MatchOp.EQ, "parity", "even")], [Matcher(MatchOp.EQ, "parity", "odd")]
    sh = _open(tmp_path)
    sealed, head = _batch(10, 0, per=20), _batch(10, 20 * 15_000, per=5)
    sh.append(sealed)
    sh.flush()
    sh.append(head)
    assert sh.delete_series(even, 10, 5) == 0  # an empty range deletes nothing
    assert sh.delete_series(even, 0, 25 * 15_000) == 5  # a range holding all their samples
    want = {lb: v for lb, v in _expected([sealed, head]).items() if lb.get("parity") == "odd"}
    assert _dump(sh) == want
    assert sh.label_values("parity", [], -(2**62), 2**62) == ["odd"]
    assert sh.delete_series(even, -(2**62), 2**62) == 0  # a retry finds nothing
    assert len(sh.tombstones) == 0
    again = _batch(10, 10**9, per=2)
    sh.append(again)  # the even label sets are new series now: only these samples
    want = _expected([sealed, head, again])
    want = {lb: v if lb.get("parity") == "odd" else (v[0][-2:], v[1][-2:]) for lb, v in want.items()}
    assert _dump(sh) == want
    assert sh.stats()["series_deleted"] == 5
    crashed = _open(tmp_path)  # kill -9: the deletion is in the index file, the WAL replays the rest
    assert _dump(crashed) == want
    crashed.flush()
    crashed.close()
    assert _dump(_open(tmp_path)) == want


@pytest.mark.parametrize("compacted_first", [False, True])
def test_compaction_rewrites_every_file_holding_deleted_series(tmp_path: Path, compacted_first: bool) -> None:
    """Compaction leaves deleted series out of its outputs, and files it
    would not take again (closed partitions, the open day's seals) are
    rewritten without them, once each."""
    from tests.shards.test_compact import CFG, _many_small_segments
    from tests.shards.test_compact import _dump as dump_all

    sh, want = _many_small_segments(tmp_path, CFG)
    if compacted_first:
        sh.compact_all()
    gone = [Matcher(MatchOp.EQ, "instance", "h0")]
    gone_ids = sh.index.select(gone)
    assert sh.delete_series(gone, -(2**62), 2**62) == 3
    want = {lb: ts for lb, ts in want.items() if lb.get("instance") != "h0"}
    assert sh.compact_all() > 0
    assert dump_all(sh) == want
    assert sum(seg.samples for seg in sh.segments) == sum(len(ts) for ts in want.values())
    assert not any(np.isin(seg.chunks.series, gone_ids).any() for seg in sh.segments)
    assert sh.stats()["purges"] > 0
    assert sh.compact_all() == 0  # each file once: nothing left to rewrite
    sh.close()
    assert dump_all(_open(tmp_path, CFG)) == want


def _within(want: dict, hidden: list[tuple[str, int, int]]) -> dict:
    """want ({labels: (ts, value bits)}) without the samples in the (instance, mint, maxt) ranges."""
    out = {}
    for lb, (ts, vs) in want.items():
        kept = [(t, v) for t, v in zip(ts, vs)
                if not any(lb.get("i") == i and lo <= t <= hi for i, lo, hi in hidden)]
        if kept:
            out[lb] = ([t for t, _ in kept], [v for _, v in kept])
    return out


def test_a_deleted_range_is_left_out_of_reads_durably(tmp_path: Path) -> None:
    sh = _open(tmp_path)
    sealed, head = _batch(6, 0, per=20), _batch(6, 20 * 15_000, per=5)
    sh.append(sealed)
    sh.flush()
    sh.append(head)
    one, two = [Matcher(MatchOp.EQ, "i", "1")], [Matcher(MatchOp.RE, "i", "[23]")]
    # Across the sealed file and the head; ranges of one series merge.
    assert sh.delete_series(one, 15 * 15_000, 22 * 15_000) == 1
    assert sh.delete_series(one, 10 * 15_000, 16 * 15_000) == 1
    assert sh.delete_series(two, -(2**62), 3 * 15_000) == 2
    assert sh.delete_series(two, 10**9, 2 * 10**9) == 0  # no samples there: nothing recorded
    assert sh.delete_series([Matcher(MatchOp.EQ, "i", "5")], 24 * 15_000, 2**62) == 1
    hidden = [("1", 10 * 15_000, 22 * 15_000), ("2", 0, 3 * 15_000), ("3", 0, 3 * 15_000),
              ("5", 24 * 15_000, 24 * 15_000)]
    # Clamped to each series' samples, as Prometheus clamps a block's.
    assert [t.tolist() for t in sh.tombstones.columns()] == [
        [1, 2, 3, 5], [10 * 15_000, 0, 0, 24 * 15_000], [22 * 15_000, 3 * 15_000, 3 * 15_000, 24 * 15_000]]
    want = _within(_expected([sealed, head]), hidden)
    assert _dump(sh) == want
    later = WriteBatch.from_series([(_labels(5), np.array([30 * 15_000]), np.array([5.0]))])
    sh.append(later)  # past the series' newest sample when it was deleted: not hidden
    want = _within(_expected([sealed, head, later]), hidden)
    assert _dump(sh) == want
    # Reads of part of the time, and of series the ranges do not touch.
    part = {lb: ([t for t in ts if 12 * 15_000 <= t <= 24 * 15_000],) for lb, (ts, _) in want.items()}
    assert {lb: (s.ts.tolist(),) for lb in part for s in sh.select([Matcher(MatchOp.EQ, "i", lb.get("i"))],
                                                                  12 * 15_000, 24 * 15_000)} == part
    assert sh.stats()["series_ranges_deleted"] == 5 and sh.stats()["tombstones"] == 4
    # A sample written into a deleted range later is hidden too, as in Prometheus.
    sh.append(WriteBatch.from_series([(_labels(1), np.array([11 * 15_000 + 1]), np.array([7.0]))]))
    assert _dump(sh) == want
    crashed = _open(tmp_path)  # kill -9: the tombstones file, then the WAL replayed
    assert _dump(crashed) == want
    crashed.flush()
    crashed.close()
    assert _dump(_open(tmp_path)) == want


@pytest.mark.parametrize("compacted_first", [False, True])
def test_compaction_removes_deleted_ranges_then_drops_their_tombstones(tmp_path: Path, compacted_first: bool) -> None:
    from tests.shards.test_compact import CFG, _with_deleted_ranges
    from tests.shards.test_compact import _dump as dump_all

    sh, want = _with_deleted_ranges(tmp_path, compacted_first)
    assert dump_all(sh) == want
    assert sh.compact_all() > 0
    assert dump_all(sh) == want
    # Every file rewritten without the first range's samples: its tombstone
    # is spent; the second's samples are in the head.
    on_disk = sum(seg.samples for seg in sh.segments) + sh.head.num_samples
    assert on_disk == sum(len(ts) for ts in want.values()) + 11
    assert [t.tolist() for t in sh.tombstones.columns()] == [[4], [3_100], [3_200]]
    assert (sh.stats()["purges"] > 0) == compacted_first  # else compaction's own outputs left them out
    assert sh.compact_all() == 0
    sh.flush()  # the head's samples into a file, which compaction then rewrites
    assert sh.compact_all() > 0 and len(sh.tombstones) == 0
    assert sum(seg.samples for seg in sh.segments) == sum(len(ts) for ts in want.values())
    assert not (tmp_path / "tombstones").exists()
    sh.close()
    assert dump_all(_open(tmp_path, CFG)) == want


def test_tombstones_stay_while_a_segment_file_is_set_aside_as_corrupt(tmp_path: Path) -> None:
    # An operator may put the file back, deleted samples and all.
    from tests.shards.test_compact import CFG, _many_small_segments

    sh, _ = _many_small_segments(tmp_path, CFG)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "00000099.seg").write_bytes(b"")
    assert sh.delete_series([Matcher(MatchOp.EQ, "i", "1")], 300, 1_900) == 1
    sh.compact_all()
    assert len(sh.tombstones) == 1
    (tmp_path / "corrupt" / "00000099.seg").unlink()
    sh.compact_all()
    assert len(sh.tombstones) == 0


def test_a_snapshot_keeps_the_deleted_ranges_of_its_segments(tmp_path: Path) -> None:
    sh = _open(tmp_path / "shard")
    batch = _batch(4, 0, per=20)
    sh.append(batch)
    sh.flush()
    assert sh.delete_series([Matcher(MatchOp.EQ, "i", "1")], 5 * 15_000, 9 * 15_000) == 1
    sh.snapshot(tmp_path / "snap")
    want = _within(_expected([batch]), [("1", 5 * 15_000, 9 * 15_000)])
    assert _dump(_open(tmp_path / "snap")) == _dump(sh) == want


def test_a_series_deleted_range_by_range_is_forgotten_once_compaction_removed_its_samples(tmp_path: Path) -> None:
    from tests.shards.test_compact import CFG

    sh = _open(tmp_path, CFG)
    batch = _batch(3, 0, per=20, step=10)
    sh.append(batch)
    sh.flush()
    one = [Matcher(MatchOp.EQ, "i", "1")]
    assert sh.delete_series(one, 0, 50) == 1
    assert sh.delete_series(one, 50, 2**62) == 1  # the rest: a second range, not "whole" by the old ranges
    assert sh.label_values("i", [], 0, 2**62) == ["0", "1", "2"]  # listed while its samples are on disk
    sh.compact_all()
    sh.apply_retention()
    assert sh.label_values("i", [], 0, 2**62) == ["0", "2"] and len(sh.tombstones) == 0
    assert sh.index.live == 2 and sh.stats()["series_forgotten"] == 1  # forgotten, as retention forgets
    want = {lb: v for lb, v in _expected([batch]).items() if lb.get("i") != "1"}
    assert _dump(sh) == want
    sh.close()
    assert _dump(_open(tmp_path, CFG)) == want
