"""Compaction and retention: fewer, fuller files; same samples; crash-safe at every step."""

from __future__ import annotations

import gc
import mmap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens import heap
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher, MatchOp
from athens.shards.compact import JOURNAL_NAME, _fewest_chunks, plan_compaction, plan_merge
from athens.shards.head import ClosedChunks, chunk_starts
from athens.shards.retention import plan_retention
from athens.shards.segment import SegmentInfo
from athens.shards.shard import Shard, ShardConfig

ALL = [Matcher(MatchOp.RE, "__name__", ".+")]
# Tiny time scales: 10 ms steps, chunks cut at 400 ms windows (40 samples),
# partitions of 400 ms and 1600 ms.
CFG = ShardConfig(
    wal_fsync="off", chunk_samples=120, chunk_window_ms=400, ooo_window_ms=50,
    compact_ranges_ms=(400, 1600), retention_ms=0,
)
# Merges of open time: no compaction range closes (1 s partitions of 10 ms
# steps), files are merged 3 at a time once 300 ms older than the newest.
MERGE_CFG = replace(CFG, compact_ranges_ms=(1_000_000,), merge_fanin=3, merge_after_ms=300)
# Retention of 1 s of 10 ms steps: the first 250 ms of data goes once the
# newest is past 1.25 s.
RETENTION_CFG = ShardConfig(
    wal_fsync="off", chunk_samples=8, chunk_window_ms=100, compact_ranges_ms=(), retention_ms=1000,
)
COMPACT_STEPS = ("compact_write", "compact_journal", "compact_publish", "compact_delete_inputs", "compact_done")


def _labels(i: int) -> Labels:
    return Labels([("__name__", "m"), ("i", str(i)), ("job", "j"), ("instance", f"h{i % 2}")])


def _write(sh: Shard, n_series: int, t0: int, t1: int, step: int = 10) -> dict:
    ts = np.arange(t0, t1, step, dtype=np.int64)
    items = [(_labels(i), ts, ts.astype(np.float64) * (i + 1)) for i in range(n_series)]
    r = sh.append(WriteBatch.from_series(items))
    assert r.accepted == n_series * len(ts)
    return {_labels(i): ts.tolist() for i in range(n_series)}


def _dump(sh: Shard) -> dict:
    out = {}
    for s in sh.select(ALL, -(2**62), 2**62):
        out[s.labels] = s.ts.tolist()
        assert np.all(np.diff(s.ts) > 0)  # sorted, no duplicates
        i = int(s.labels.get("i"))
        assert s.values.tolist() == (s.ts.astype(np.float64) * (i + 1)).tolist()
    return out


def _many_small_segments(path: Path, cfg: ShardConfig = CFG) -> tuple[Shard, dict]:
    sh = Shard(path, cfg)
    sh.open()
    want: dict = {}
    for k in range(12):  # 12 seals of 250 ms each, straddling partitions
        for lb, ts in _write(sh, 6, k * 250, (k + 1) * 250).items():
            want.setdefault(lb, []).extend(ts)
        sh.flush()
    return sh, want


def _with_deleted_ranges(path: Path, compacted_first: bool) -> tuple[Shard, dict]:
    """_many_small_segments (compacted or not) and samples in the head, then
    series i=1 deleted over [300, 1900] (files) and i=4 over [3100, 3200]
    (the head): the shard and what it holds now."""
    sh, want = _many_small_segments(path, CFG)
    if compacted_first:
        sh.compact_all()
    for lb, ts in _write(sh, 6, 3_000, 3_250).items():  # in the head
        want[lb].extend(ts)
    assert sh.delete_series([Matcher(MatchOp.EQ, "i", "1")], 300, 1_900) == 1
    assert sh.delete_series([Matcher(MatchOp.EQ, "i", "4")], 3_100, 3_200) == 1
    return sh, {lb: [t for t in ts if not (lb.get("i") == "1" and 300 <= t <= 1_900)
                     and not (lb.get("i") == "4" and 3_100 <= t <= 3_200)] for lb, ts in want.items()}


def test_compaction_merges_closed_partitions_into_one_file_each(tmp_path: Path) -> None:
    sh, want = _many_small_segments(tmp_path)
    before = sh.stats()
    assert before["segments"] == 12
    jobs = sh.compact_all()
    assert jobs >= 2
    st = sh.stats()
    assert _dump(sh) == want
    assert st["segment_samples"] == before["segment_samples"] == 6 * 300
    # Closed partitions (newest 2990 - 400 => up to 2400) hold one file each.
    infos = sorted((s.info() for s in sh.segments), key=lambda i: i.mint)
    closed = [i for i in infos if i.maxt < 1600]
    assert len(closed) == 1 and closed[0].mint == 0  # the first 1600 ms partition
    # In the open 1600 ms partition, the closed 400 ms partitions hold one file each.
    for k in (4, 5):
        assert [(i.mint // 400, i.maxt // 400) for i in infos if i.mint // 400 == k] == [(k, k)]
    # Re-encoded into full chunks: one per series and 400 ms window where seals had cut two.
    assert st["segment_chunks"] < before["segment_chunks"]
    assert st["segment_bytes"] < before["segment_bytes"]
    # Nothing left to do, and a reopen sees the same.
    assert sh.compact_step() is None
    again = Shard(tmp_path, CFG)
    again.open()
    assert _dump(again) == want and again.stats()["segments"] == st["segments"]


def test_opening_seals_and_compaction_jobs_give_their_freed_heap_back(tmp_path: Path, monkeypatch) -> None:
    # Their temporaries are freed amid the heap, where glibc's trim threshold
    # never returns them (athens/heap.py): an open (the WAL replay), each seal
    # and each job trim when done.
    trims: list[int] = []
    monkeypatch.setattr(heap, "trim", lambda: trims.append(1) or True)
    sh, want = _many_small_segments(tmp_path)
    assert len(trims) == 1 + 12
    jobs = sh.compact_all()
    assert jobs >= 2 and len(trims) == 1 + 12 + jobs
    assert _dump(sh) == want


@pytest.mark.parametrize("cfg", [CFG, MERGE_CFG], ids=["compaction", "merge"])
@pytest.mark.parametrize("step", COMPACT_STEPS)
def test_crash_at_each_compaction_step_loses_and_duplicates_nothing(
    tmp_path: Path, step: str, cfg: ShardConfig
) -> None:
    sh, want = _many_small_segments(tmp_path, cfg)
    total = sh.stats()["segment_samples"]

    def fail(name: str) -> None:
        if name == step:
            raise RuntimeError(f"crash at {name}")

    sh.fault_hook = fail
    with pytest.raises(RuntimeError):
        sh.compact_all()
    crashed = Shard(tmp_path, cfg)
    crashed.open()
    assert _dump(crashed) == want
    assert crashed.stats()["segment_samples"] == total  # no file counted twice
    assert not (tmp_path / JOURNAL_NAME).exists()
    assert not list((tmp_path / "segments").glob("*.tmp"))
    crashed.compact_all()
    assert _dump(crashed) == want and crashed.stats()["segment_samples"] == total


def test_out_of_order_sample_behind_a_seal_is_merged_and_checked_against_segments(tmp_path: Path) -> None:
    sh = Shard(tmp_path, CFG)
    sh.open()
    lb = _labels(0)
    sh.append(WriteBatch.from_series([(lb, np.array([100, 120, 140]), np.array([100.0, 120.0, 140.0]))]))
    sh.flush()
    r = sh.append(
        WriteBatch.from_series([(lb, np.array([110, 120, 130, 40]), np.array([110.0, 5.0, 130.0, 40.0]))])
    )
    # 110 and 130 fill gaps (OOO), 120 conflicts with the sealed value, 40 is too old.
    assert (r.accepted, r.out_of_order, r.conflicts, r.too_old) == (2, 2, 1, 1)
    assert r.rejections() == {"older_than_ooo_window": 1, "duplicate_timestamp_different_value": 1}
    assert _dump(sh) == {lb: [100, 110, 120, 130, 140]}
    sh.flush()
    assert len(sh.segments) == 2  # overlapping in time until compacted
    crashed = Shard(tmp_path, CFG)
    crashed.open()
    assert _dump(crashed) == {lb: [100, 110, 120, 130, 140]}
    st = crashed.stats()
    assert st["samples"] == 5
    # Conflicts per producer: job/instance of the series.
    assert sh.stats()["conflicts_by_producer"] == {"j/h0": 1}


def test_plan_only_touches_closed_partitions_and_respects_the_byte_bound() -> None:
    def info(seq, mint, maxt, size=100):
        return SegmentInfo(seq, Path(f"{seq}"), 1, 1, mint, maxt, size)

    infos = [info(1, 0, 250), info(2, 250, 499), info(3, 500, 900)]
    plan = plan_compaction(infos, (400, 1600), watermark=850, max_bytes=10_000)
    assert plan is not None and plan.range_ms == 400 and plan.partition == 0
    assert plan.inputs == (1, 2)  # partition [0, 400) is closed; [400, 800) too, later
    assert plan_compaction(infos, (400, 1600), watermark=350, max_bytes=10_000) is None
    assert plan_compaction(infos, (400, 1600), watermark=850, max_bytes=150) is None
    one = [info(1, 0, 399), info(2, 400, 799)]
    assert plan_compaction(one, (400,), watermark=10_000, max_bytes=10_000) is None
    # ... unless a lone file is in a seal's format: it is rewritten once.
    sealed = [info(1, 0, 399), replace(info(2, 400, 799), compacted=False)]
    plan = plan_compaction(sealed, (400,), watermark=10_000, max_bytes=10_000)
    assert plan is not None and plan.inputs == (2,)


def test_retention_deletes_whole_files_by_age_and_by_size(tmp_path: Path) -> None:
    sh = Shard(tmp_path, RETENTION_CFG)
    sh.open()
    for k in range(8):
        _write(sh, 3, k * 250, (k + 1) * 250)
        sh.flush()
    assert sh.apply_retention() == 3  # files ending before 1990 - 1000
    got = _dump(sh)
    assert min(min(ts) for ts in got.values()) == 750
    st = sh.stats()
    assert st["retention_segments_deleted"] == 3 and st["samples"] == 3 * 125
    assert sh.label_values("i", [], 0, 700) == []  # ranges rebuilt
    infos = [s.info() for s in sh.segments]
    budget = sum(i.size for i in infos) - infos[0].size
    dels = plan_retention(infos, 2000, 0, budget, 0)
    assert [(d.seq, d.reason) for d in dels] == [(infos[0].seq, "size")]


def test_a_sample_from_the_future_does_not_make_retention_delete_recent_data(tmp_path: Path) -> None:
    # Retention was measured from the newest sample alone: one acknowledged
    # sample a year ahead deleted every file older than a year minus the
    # retention. It is measured from min(newest sample, wall clock) now.
    hour = 3600 * 1000
    sh = Shard(tmp_path, replace(RETENTION_CFG, retention_ms=2 * hour))
    sh.open()
    now = int(time.time() * 1000)
    _seal(sh, [_pod("old")], now - 3 * hour, now - 3 * hour + 1000)  # past retention by the wall clock
    _seal(sh, [_pod("recent")], now - 30 * 60 * 1000, now - 30 * 60 * 1000 + 1000)  # 100 samples
    _seal(sh, [_pod("future")], now + 365 * 24 * hour, now + 365 * 24 * hour + 10)

    def samples() -> dict:
        return {s.labels.get("pod"): len(s.ts) for s in sh.select(ALL, -(2**62), 2**62)}

    assert sh.apply_retention() == 1  # the wall clock's: only the 3 h old file goes
    assert samples() == {"recent": 100, "future": 1}
    assert sh.stats()["retention_samples_deleted"] == 100
    assert sh.apply_retention() == 0
    # The clock is injectable: 2 h on, the 30 min old file is past it too.
    assert sh.apply_retention(now_ms=now + 2 * hour) == 1
    assert samples() == {"future": 1}
    sh.close()


def test_plan_retention_measures_from_the_older_of_newest_sample_and_wall_clock() -> None:
    def info(seq, mint, maxt):
        return SegmentInfo(seq, Path(f"{seq}"), 1, 1, mint, maxt, 100)

    infos = [info(1, 0, 999), info(2, 1000, 1999), info(3, 10**12, 10**12)]

    def seqs(dels: list) -> list[int]:
        return [d.seq for d in dels]

    assert seqs(plan_retention(infos, 10**12, 500, 0, 0)) == [1, 2]  # newest alone (no clock)
    assert seqs(plan_retention(infos, 10**12, 500, 0, 0, now_ms=2200)) == [1]  # a future file
    assert seqs(plan_retention(infos, 10**12, 500, 0, 0, now_ms=10**13)) == [1, 2]  # all data past
    lo = -(2**63)
    assert plan_retention([info(1, lo, lo + 1)], lo + 1, 500, 0, 0, now_ms=0) == []


def test_reopening_without_writes_does_not_pile_up_wal_segments(tmp_path: Path) -> None:
    sh = Shard(tmp_path, CFG)
    sh.open()
    _write(sh, 2, 0, 100)
    sh.close()
    for _ in range(5):
        again = Shard(tmp_path, CFG)
        again.open()
        again.close()
    files = sorted((tmp_path / "wal").iterdir())
    assert len(files) == 2  # the written segment and one (reused) empty one
    assert again.stats()["wal_segments"] == 2


def test_a_job_advances_in_small_steps_while_the_shard_serves(tmp_path: Path, monkeypatch) -> None:
    import athens.shards.compact as compactmod

    monkeypatch.setattr(compactmod, "GROUP_SAMPLES", 40)  # ~ one series per step
    sh, want = _many_small_segments(tmp_path)
    total = sh.stats()["segment_samples"]
    steps = 0
    while True:
        res = sh.compact_step(budget_s=0.0)
        steps += 1
        if res is not None:
            break
        assert sh._job is not None and _dump(sh) == want  # inputs still served mid-job
        assert sh.stats()["segment_samples"] == total
    assert steps > 3
    # Closing in the middle of the next job leaves no partial files behind.
    assert sh.compact_step(budget_s=0.0) is None and sh._job is not None
    sh.close()
    assert not list((tmp_path / "segments").glob("*.tmp"))
    again = Shard(tmp_path, CFG)
    again.open()
    assert _dump(again) == want and again.stats()["segment_samples"] == total


def test_a_job_does_not_keep_the_chunk_pages_it_has_read_mapped(tmp_path: Path, monkeypatch) -> None:
    # A job reads each input once, in series order: the pages it has read
    # must not stay counted as the worker's memory until it is done.
    import athens.shards.compact as compactmod

    monkeypatch.setattr(compactmod, "GROUP_SAMPLES", 2_000)
    sh = Shard(tmp_path, CFG)
    sh.open()
    rng = np.random.default_rng(3)
    for k in range(12):  # 12 seals of 250 ms each of 300 series, values that do not compress
        ts = np.arange(k * 250, (k + 1) * 250, 10, dtype=np.int64)
        sh.append(WriteBatch.from_series([(_labels(i), ts, rng.standard_normal(len(ts))) for i in range(300)]))
        sh.flush()
    page_kb = mmap.PAGESIZE // 1024
    checked = 0
    while sh.compact_step(budget_s=0.0) is None:
        for seg in sh._job.inputs:
            assert seg._data_pages >= 4 * mmap.PAGESIZE
            mapped = heap._mappings_of(str(seg.path))
            assert mapped, "no /proc/self/smaps"
            rss_kb = sum(stats["Rss"] for *_, stats in mapped)
            index_kb = -(-(seg.size - seg._data_pages) // mmap.PAGESIZE) * page_kb
            assert rss_kb <= index_kb
            checked += 1
    assert checked >= 8


def test_compaction_re_encodes_into_long_chunks_bit_exactly(tmp_path: Path) -> None:
    cfg = ShardConfig(
        wal_fsync="off", chunk_samples=120, chunk_window_ms=4000, ooo_window_ms=0,
        compact_ranges_ms=(4000,), compact_chunk_samples=480, retention_ms=0,
    )
    sh = Shard(tmp_path, cfg)
    sh.open()
    rng = np.random.default_rng(5)
    want: dict = {}
    for k in range(10):  # 10 seals of 1000 samples per series, 1 ms apart
        ts = np.arange(k * 1000, (k + 1) * 1000, dtype=np.int64)
        items = [(_labels(i), ts, np.round(rng.standard_normal(1000), 3) * (i + 1)) for i in range(3)]
        for lb, t, v in items:
            want.setdefault(lb, ([], []))
            want[lb][0].extend(t.tolist())
            want[lb][1].extend(v.tolist())
        sh.append(WriteBatch.from_series(items))
        sh.flush()
    sh.compact_all()
    first = min(sh.segments, key=lambda s: s.mint)
    assert first.maxt == 3999
    assert first.chunks.counts.tolist() == ([480] * 8 + [160]) * 3  # 4000 = 8 x 480 + 160
    got = {s.labels: (s.ts.tolist(), s.values.tolist()) for s in sh.select(ALL, 0, 10**6)}
    assert got == {lb: (t, v) for lb, (t, v) in want.items()}


def test_a_planned_read_decodes_what_was_there_when_planned(tmp_path: Path) -> None:
    # Queries plan a read on the event loop and decode it on another thread
    # (PendingRead): appends, a seal (head reset), compaction and retention
    # that run in between change neither what it decodes nor its validity.
    sh, _ = _many_small_segments(tmp_path, replace(CFG, retention_ms=1000))
    _write(sh, 6, 3000, 3100)  # head: closed chunks and open rows
    ids = np.arange(len(sh.index), dtype=np.int64)
    before = sh._read_pieces(ids, -(2**62), 2**62)
    pending = sh.plan_read(ids, -(2**62), 2**62)
    _write(sh, 6, 3100, 3300)
    sh.flush()
    assert sh.compact_all() >= 1 and sh.apply_retention() >= 1
    gc.collect()
    got = pending.decode()
    assert len(got) == len(before)
    for a, b in zip(got, before):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)


def test_after_compaction_reads_meet_each_series_sources_in_time_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A compaction's outputs get new seqs but hold the oldest data: ordered by
    # seq, every read met them after newer seals and sorted each series again.
    sh, want = _many_small_segments(tmp_path)
    assert sh.compact_all() >= 2
    assert [s.seq for s in sh.segments] != sorted(s.seq for s in sh.segments)  # outputs are older data
    from athens.shards import head

    packed = []
    real = head.k_pack_groups
    monkeypatch.setattr(head, "k_pack_groups", lambda *a: packed.append(1) or real(*a))
    assert _dump(sh) == want
    assert packed == []
    again = Shard(tmp_path, CFG)
    again.open()  # the order holds after a reopen
    assert _dump(again) == want
    assert packed == []


def test_data_not_closed_yet_keeps_the_seal_format(tmp_path: Path) -> None:
    # A seal straddling a closed partition brings newer samples into the job:
    # those stay as seals write them (no zstd, the head's chunk cuts) until
    # their own partition closes.
    sh, want = _many_small_segments(tmp_path)
    open_from = sh.compaction_watermark() // 400 * 400  # 2400: the 400 ms partition holding the watermark
    assert sh.compact_all() >= 2
    assert _dump(sh) == want
    newer = [s for s in sh.segments if s.maxt >= open_from]
    older = [s for s in sh.segments if s.maxt < open_from]
    assert newer and older
    assert all(s.compacted for s in older)
    assert not any(s.compacted for s in newer)
    assert all(s._blocks is None for s in sh.segments)  # no zstd by default
    for s in newer:
        c = s.chunks
        assert (c.mint // 400 == c.maxt // 400).all() and (c.counts <= 120).all()
    # Once that time is closed too, it is compacted, even a file alone in its partition.
    for lb, ts in _write(sh, 6, 5000, 5010).items():
        want.setdefault(lb, []).extend(ts)
    sh.flush()
    assert sh.compact_all() >= 1
    assert _dump(sh) == want
    assert all(s.compacted for s in sh.segments if s.maxt < 4000)
    again = Shard(tmp_path, CFG)
    again.open()  # the mark is in the files: nothing is left to compact
    assert [s.compacted for s in again.segments] == [s.compacted for s in sh.segments]
    assert again.compact_all() == 0


def test_zstd_compaction_compresses_closed_partitions_only(tmp_path: Path) -> None:
    sh, want = _many_small_segments(tmp_path, replace(CFG, compact_zstd=True))
    open_from = sh.compaction_watermark() // 400 * 400
    assert sh.compact_all() >= 2
    assert _dump(sh) == want
    assert all((s._blocks is not None) == (s.maxt < open_from) for s in sh.segments)
    assert all(s.compacted == (s.maxt < open_from) for s in sh.segments)


def test_compaction_compression_flag_reaches_the_shard_config() -> None:
    from athens.config import ConfigError, ServeConfig
    from athens.shards.worker import shard_config

    assert not shard_config(ServeConfig()).compact_zstd
    assert shard_config(ServeConfig(compaction_compression="zstd")).compact_zstd
    with pytest.raises(ConfigError, match="compaction-compression"):
        ServeConfig(compaction_compression="lz4").validate()


def test_plan_merge_takes_the_oldest_files_of_the_lowest_full_level() -> None:
    def info(seq, mint, maxt, level=0, compacted=False, size=100):
        return SegmentInfo(seq, Path(f"{seq}.seg"), 1, 1, mint, maxt, size, 0, compacted, level)

    seals = [info(s, s * 100, s * 100 + 99) for s in range(1, 6)]
    plan = plan_merge(seals, 10_000, watermark=0, settled=10_000, fanin=3, max_bytes=1000)
    assert plan is not None and plan.inputs == (1, 2, 3) and plan.level == 1
    # The newest files wait until they are settled.
    assert plan_merge(seals, 10_000, 0, settled=398, fanin=3, max_bytes=1000) is None
    assert plan_merge(seals, 10_000, 0, settled=399, fanin=3, max_bytes=1000).inputs == (1, 2, 3)
    # The lowest level with enough files goes first; oldest by time, not seq.
    mixed = [info(9, 0, 99, level=1), info(10, 100, 199, level=1), info(11, 200, 299, level=1),
             info(7, 400, 499), info(6, 300, 399), info(8, 500, 599)]
    plan = plan_merge(mixed, 10_000, 0, 10_000, 3, 1000)
    assert plan.inputs == (6, 7, 8) and plan.level == 1
    plan = plan_merge(mixed[:4], 10_000, 0, 10_000, 3, 1000)
    assert plan.inputs == (9, 10, 11) and plan.level == 2
    # Not: compacted files, files starting in a closed partition (compaction's),
    # too many bytes, fanin 0.
    assert plan_merge([replace(i, compacted=True) for i in seals], 10_000, 0, 10_000, 3, 1000) is None
    assert plan_merge(seals, 200, watermark=300, settled=10_000, fanin=3, max_bytes=1000).inputs == (2, 3, 4)
    assert plan_merge(seals, 200, watermark=400, settled=10_000, fanin=3, max_bytes=1000) is None
    assert plan_merge(seals, 10_000, 0, 10_000, 3, max_bytes=299) is None
    assert plan_merge(seals, 10_000, 0, 10_000, 0, 1000) is None


def test_merges_place_each_series_chunks_side_by_side(tmp_path: Path) -> None:
    # Seals of whole chunk windows: their chunks are as long as they can be.
    cfg = replace(MERGE_CFG, chunk_window_ms=250)
    sh, want = _many_small_segments(tmp_path, cfg)  # 12 seals of 250 ms
    before = sh.stats()
    chunks = {s.seq: s.chunks for s in sh.segments}
    newest = max(s.maxt for s in sh.segments)
    jobs = sh.compact_all()
    st = sh.stats()
    # Settled: files ending by 2990 - 300, the first 10 seals: 9 of them -> 3
    # files of level 1 -> 1 of level 2; the 10th waits for two more, the
    # 11th and 12th (the newest 300 ms) for time to pass.
    assert jobs == 4 and st["merges"] == 4 and st["compactions"] == 0
    levels = sorted((s.level, s.mint, s.maxt) for s in sh.segments)
    assert [lv for lv, _, _ in levels] == [0, 0, 0, 2]
    assert [s.maxt for s in sh.segments if s.level == 0][-1] == newest
    assert _dump(sh) == want
    # The chunks are the seals' own, bytes and all, now in (series, time) order.
    assert st["segment_chunks"] == before["segment_chunks"]
    assert st["segment_samples"] == before["segment_samples"]
    merged = next(s for s in sh.segments if s.level == 2).chunks
    assert (np.diff(merged.series) >= 0).all()
    same = merged.series[1:] == merged.series[:-1]
    assert (merged.mint[1:][same] > merged.maxt[:-1][same]).all()
    orig = {}
    for c in chunks.values():
        for i in range(len(c)):
            orig[(int(c.series[i]), int(c.mint[i]))] = bytes(c.data[c.offsets[i] : c.offsets[i + 1]])
    for i in range(len(merged)):
        key = (int(merged.series[i]), int(merged.mint[i]))
        assert bytes(merged.data[merged.offsets[i] : merged.offsets[i + 1]]) == orig[key]
    assert sh.compact_step() is None
    again = Shard(tmp_path, cfg)
    again.open()
    assert _dump(again) == want and sorted(s.level for s in again.segments) == [0, 0, 0, 2]


def test_merges_repack_the_short_chunks_of_seals(tmp_path: Path) -> None:
    # Seals of 100 ms (10 samples a series) in 1 s chunk windows: what a
    # worker with many series seals. Merged 3 at a time, each series'
    # chunks are re-encoded into chunks of up to 120 samples within a window.
    cfg = replace(MERGE_CFG, chunk_window_ms=1000)
    sh = Shard(tmp_path, cfg)
    sh.open()
    want: dict = {}
    for k in range(10):
        for lb, ts in _write(sh, 6, k * 100, (k + 1) * 100).items():
            want.setdefault(lb, []).extend(ts)
        sh.flush()
    before = sh.stats()
    # Settled by 990 - 300: seals 1-6 -> 2 files of level 1; 7 waits for two more.
    assert sh.compact_all() == 2
    st = sh.stats()
    assert _dump(sh) == want
    assert st["segment_samples"] == before["segment_samples"]
    merged = [s.chunks for s in sh.segments if s.level == 1]
    assert len(merged) == 2
    for c in merged:
        assert (c.counts == 30).all() and len(c) == 6  # one chunk a series: 3 seals' 10 samples
    assert st["segment_chunks"] == before["segment_chunks"] - 2 * 6 * 2
    again = Shard(tmp_path, cfg)
    again.open()
    assert _dump(again) == want


def test_merged_series_whose_chunks_overlap_are_merged_sample_by_sample(tmp_path: Path) -> None:
    sh = Shard(tmp_path, replace(MERGE_CFG, ooo_window_ms=1000))
    sh.open()
    want: dict = {}
    for t0, t1 in ((0, 200), (200, 400), (100, 300), (400, 600), (600, 2000)):  # the third: out of order
        ts = np.arange(t0, t1, 10, dtype=np.int64)
        items = [(_labels(i), ts, ts.astype(np.float64) * (i + 1)) for i in range(4)]
        sh.append(WriteBatch.from_series(items))
        for i in range(4):
            want.setdefault(_labels(i), set()).update(ts.tolist())
        sh.flush()
    assert sh.compact_all() == 1
    merged = next(s for s in sh.segments if s.level == 1)
    c = merged.chunks
    same = c.series[1:] == c.series[:-1]
    assert (c.mint[1:][same] > c.maxt[:-1][same]).all()  # re-encoded: one run per series
    assert _dump(sh) == {lb: sorted(ts) for lb, ts in want.items()}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3000)), min_size=1, max_size=200),
       st.sets(st.integers(1, 199)), st.integers(1, 9), st.sampled_from([0, 100, 1000]))
def test_fewest_chunks_from_footers_is_what_re_encoding_makes(points, seals, width, window) -> None:
    pairs = sorted(set(points))
    sid = np.array([p[0] for p in pairs], np.int64)
    ts = np.array([p[1] for p in pairs], np.int64)
    # Chunks as seals leave them: the head's cuts plus a cut at every seal.
    cuts = set(chunk_starts(sid, ts, width, window).tolist()) | {i for i in seals if i < len(ts)}
    starts = np.array(sorted(cuts), np.int64)
    block = ClosedChunks.encode(sid[starts[:-1]], ts, ts.astype(np.float64), starts)
    assert _fewest_chunks(block, width, window) == len(chunk_starts(sid, ts, width, window)) - 1


def test_seal_merge_fanin_flag_reaches_the_shard_config() -> None:
    from athens.config import ConfigError, ServeConfig
    from athens.shards.worker import shard_config

    assert shard_config(ServeConfig()).merge_fanin == 4
    assert shard_config(ServeConfig(seal_merge_fanin=0)).merge_fanin == 0
    with pytest.raises(ConfigError, match="seal-merge-fanin"):
        ServeConfig(seal_merge_fanin=1).validate()


def _pod(name: str) -> Labels:
    return Labels([("__name__", "m"), ("pod", name)])


def _seal(sh: Shard, series: list[Labels], t0: int, t1: int, value: float = 1.0) -> np.ndarray:
    """Samples of `series` every 10 ms in [t0, t1), sealed into a segment; their ids."""
    ts = np.arange(t0, t1, 10, dtype=np.int64)
    r = sh.append(WriteBatch.from_series([(lb, ts, np.full(len(ts), value)) for lb in series]))
    assert r.accepted == len(series) * len(ts)
    sh.flush()
    return r.series_ids


def _old_then_new(path: Path, old: list[Labels], new: list[Labels]) -> tuple[Shard, np.ndarray]:
    """`old` written in [0, 500) ms, then `new` over [500, 2000) in six
    segments: retention (1 s) may delete the first file. The old ids."""
    sh = Shard(path, RETENTION_CFG)
    sh.open()
    old_ids = _seal(sh, old, 0, 500)
    for k in range(2, 8):
        _seal(sh, new, k * 250, (k + 1) * 250)
    return sh, old_ids


def test_series_retention_leaves_without_data_are_forgotten_for_good(tmp_path: Path) -> None:
    """Churn: old series whose files retention deletes leave the index
    (memory, label APIs), stay gone after a restart, and come back under a
    new id when written again; an append naming a forgotten id (an id a
    connection learnt before) reaches the series it is written for."""
    old = [_pod(f"old-{i}") for i in range(3)]
    sh, old_ids = _old_then_new(tmp_path, old, [_pod("new-0"), _pod("new-1")])
    assert sh.apply_retention() >= 1
    st = sh.stats()
    assert st["series"] == 2 and st["series_forgotten"] == 3
    assert sh.label_values("pod", [], -(2**62), 2**62) == ["new-0", "new-1"]
    assert sh.index.select([]).tolist() == sh.index.select([Matcher(MatchOp.RE, "pod", "new-.*")]).tolist()
    sh.close()

    sh = Shard(tmp_path, RETENTION_CFG)
    sh.open()
    assert sh.stats()["series"] == 2 and sh.index.is_forgotten(old_ids).all()
    back = sh.append(WriteBatch.from_series([(old[0], np.array([2000], np.int64), np.array([7.0]))]))
    assert back.accepted == 1 and back.series_ids[0] >= 5
    stale = WriteBatch.from_series([(old[1], np.array([2000], np.int64), np.array([8.0]))])
    stale.ids = old_ids[1:2]
    again = sh.append(stale)
    assert again.accepted == 1 and again.series_ids[0] not in old_ids
    got = {s.labels.get("pod"): s.values.tolist() for s in sh.select([Matcher(MatchOp.RE, "pod", "old-.*")], 0, 3000)}
    assert got == {"old-0": [7.0], "old-1": [8.0]}
    assert sh.label_values("pod", [], -(2**62), 2**62) == ["new-0", "new-1", "old-0", "old-1"]


def test_a_read_planned_before_its_series_were_forgotten_leaves_them_out(tmp_path: Path) -> None:
    sh = Shard(tmp_path, RETENTION_CFG)
    sh.open()
    old, kept = _pod("old"), _pod("kept")
    _seal(sh, [old, kept], 0, 500, 2.0)
    _seal(sh, [kept], 1500, 2000, 3.0)
    ids = sh.index.select([])
    pending = sh.plan_read(ids, 0, 2000)  # a slice of a query, decoded later on a thread
    rank = sh.label_rank()[ids]
    assert sh.apply_retention() == 1 and sh.stats()["series_forgotten"] == 1
    got = pending.series(ids, rank, sh.index.labels, 0, 2000, sh.index)
    assert [s.labels.get("pod") for s in got] == ["kept"]
    assert got[0].values.tolist() == [2.0] * 50 + [3.0] * 50


def test_many_series_are_forgotten_a_batch_a_pass_and_one_written_again_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import athens.shards.shard as shardmod

    monkeypatch.setattr(shardmod, "FORGET_BATCH", 2)
    old = [_pod(f"old-{i}") for i in range(5)]
    sh, _ = _old_then_new(tmp_path, old, [_pod("new")])
    assert sh.apply_retention() >= 1
    assert sh.stats()["series_forgotten"] == 2
    # old-4 is written again before its turn: it has data, so it stays.
    sh.append(WriteBatch.from_series([(old[4], np.array([1000], np.int64), np.array([5.0]))]))
    assert sh.apply_retention() == 0 and sh.stats()["series_forgotten"] == 4
    assert sh.apply_retention() == 0 and sh.stats()["series_forgotten"] == 4
    assert sh.label_values("pod", [], -(2**62), 2**62) == ["new", "old-4"]


def test_series_a_deletion_left_unforgotten_before_a_crash_are_forgotten_after_it(tmp_path: Path) -> None:
    sh = Shard(tmp_path, RETENTION_CFG)
    sh.open()
    _seal(sh, [_pod("old")], 0, 500)
    _seal(sh, [_pod("new")], 1500, 2000)
    first = sh.segments[0].path
    sh.close()
    first.unlink()  # retention deleted it; the process died before the FORGOTTEN record
    sh = Shard(tmp_path, RETENTION_CFG)
    sh.open()
    assert sh.stats()["series"] == 2
    assert sh.apply_retention() == 0  # nothing more to delete; the leftover is forgotten
    assert sh.stats()["series"] == 1 and sh.label_values("pod", [], -(2**62), 2**62) == ["new"]
    sh.close()
    again = Shard(tmp_path, RETENTION_CFG)
    again.open()
    assert again.stats()["series"] == 1


def test_no_series_is_forgotten_while_a_segment_is_set_aside_as_corrupt(tmp_path: Path) -> None:
    sh, _ = _old_then_new(tmp_path, [_pod("old")], [_pod("new")])
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "00000099.seg").write_bytes(b"unreadable")
    assert sh.apply_retention() >= 1
    assert sh.stats()["series_forgotten"] == 0 and sh.stats()["series"] == 2
    (tmp_path / "corrupt" / "00000099.seg").unlink()
    sh.close()
    sh = Shard(tmp_path, RETENTION_CFG)
    sh.open()
    sh.apply_retention()
    assert sh.stats()["series"] == 1


def test_the_index_file_is_rewritten_at_open_once_forgotten_series_outnumber_the_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import athens.shards.shard as shardmod

    monkeypatch.setattr(shardmod, "REWRITE_MIN_FORGOTTEN", 0)
    sh, old_ids = _old_then_new(tmp_path, [_pod(f"old-{i}") for i in range(3)], [_pod("new")])
    sh.apply_retention()
    want = {s.labels: s.ts.tolist() for s in sh.select([], -(2**62), 2**62)}
    sh.close()
    before = sh.index_path.stat().st_size
    sh = Shard(tmp_path, RETENTION_CFG)
    sh.open()
    assert sh.index_path.stat().st_size < before
    assert {s.labels: s.ts.tolist() for s in sh.select([], -(2**62), 2**62)} == want
    assert sh.index.is_forgotten(old_ids).all() and sh.stats()["series"] == 1
    late = sh.append(WriteBatch.from_series([(_pod("late"), np.array([1995], np.int64), np.array([1.0]))]))
    assert late.series_ids.tolist() == [4]  # after every id given before, forgotten or not
    sh.close()
    sh = Shard(tmp_path, RETENTION_CFG)
    sh.open()
    assert sorted(s.labels.get("pod") for s in sh.select([], -(2**62), 2**62)) == ["late", "new"]


def test_by_default_seals_merge_once_a_quarter_hour_older_than_the_newest(tmp_path: Path) -> None:
    # A worker with many series seals every ~10 minutes of data (its head
    # fills): an hour is 6 seals of short chunks. Instant queries and rules
    # read the newest quarter hour, which stays in its seals.
    sh = Shard(tmp_path, ShardConfig(wal_fsync="off", retention_ms=0))
    sh.open()
    day = 1_800_000_000_000 // 86_400_000 * 86_400_000
    minute = 60_000
    for k in range(6):
        _write(sh, 20, day + k * 10 * minute, day + (k + 1) * 10 * minute, step=15_000)
        sh.flush()
    assert sh.compact_all() == 1
    merged = [s for s in sh.segments if s.level == 1]
    assert len(merged) == 1 and merged[0].maxt < day + 40 * minute
    assert sorted(s.mint for s in sh.segments if s.level == 0) == [day + 40 * minute, day + 50 * minute]
