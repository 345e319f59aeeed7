"""WAL: records round-trip, torn tails and flipped bytes end replay exactly there."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from athens.model.labels import Labels
from athens.shards import wal as walmod
from athens.shards.wal import WAL


def _samples_record(seed: int, k: int = 3, per: int = 4) -> bytes:
    rng = np.random.default_rng(seed)
    ids = np.arange(k, dtype=np.int64) + seed
    counts = np.full(k, per, np.int64)
    ts = np.arange(k * per, dtype=np.int64) * 1000 + seed
    vals = rng.standard_normal(k * per)
    return walmod.frame(walmod.REC_SAMPLES, walmod.encode_samples(ids, counts, ts, vals))


def _replay(directory: Path) -> tuple[list[tuple[int, bytes]], walmod.WALReplayResult]:
    res = walmod.WALReplayResult()
    recs = [(t, bytes(p)) for t, p in WAL(directory).replay(res)]
    return recs, res


def test_labels_encoding_round_trips_unicode_and_empty_sets() -> None:
    for lb in (Labels(), Labels([("__name__", "up"), ("job", "ä\xff\n\"x")])):
        buf = walmod.encode_labels(lb)
        out, end = walmod.decode_labels(buf)
        assert out == lb and end == len(buf)


def test_records_round_trip_through_segments(tmp_path: Path) -> None:
    w = WAL(tmp_path, fsync="always")
    w.open_for_append()
    series = [(0, 123, Labels([("a", "1")])), (1, 2**64 - 1, Labels([("a", "2"), ("b", "x")]))]
    w.append(walmod.frame(walmod.REC_SERIES, walmod.encode_series(series)))
    ids = np.array([0, 1])
    counts = np.array([2, 1])
    ts = np.array([5, 6, -7], np.int64)
    vals = np.array([1.5, np.nan, -0.0])
    w.append(walmod.frame(walmod.REC_SAMPLES, walmod.encode_samples(ids, counts, ts, vals)))
    w.close()
    recs, res = _replay(tmp_path)
    assert [t for t, _ in recs] == [walmod.REC_SERIES, walmod.REC_SAMPLES]
    assert walmod.decode_series(recs[0][1]) == series
    rid, rc, rts, rv = walmod.decode_samples(recs[1][1])
    assert rid.tolist() == [0, 1] and rc.tolist() == [2, 1] and rts.tolist() == [5, 6, -7]
    assert rv.view(np.uint64).tolist() == vals.view(np.uint64).tolist()
    assert res.truncated_segment is None and res.bytes_dropped == 0


def test_segments_rotate_by_size_and_truncate_before(tmp_path: Path) -> None:
    w = WAL(tmp_path, segment_bytes=4096, fsync="off")
    w.open_for_append()
    recs = [_samples_record(i, k=10, per=10) for i in range(20)]  # ~1.7 KB each
    for r in recs:
        w.append(r)
    segs = w.segment_numbers()
    assert len(segs) >= 5
    got, _ = _replay(tmp_path)
    assert [walmod.frame(t, p) for t, p in got] == recs
    n = w.rotate()
    assert w.truncate_before(n) == len(segs)
    assert w.segment_numbers() == [n]
    w.close()


def _three_records(tmp_path: Path) -> tuple[Path, list[bytes]]:
    w = WAL(tmp_path, fsync="off")
    w.open_for_append()
    recs = [_samples_record(i) for i in range(3)]
    for r in recs:
        w.append(r)
    w.close()
    return w.segment_path(1), recs


def test_torn_tail_at_every_byte_of_last_record_drops_only_it(tmp_path: Path) -> None:
    path, recs = _three_records(tmp_path / "src")
    full = path.read_bytes()
    start = len(recs[0]) + len(recs[1])
    for cut in range(start, len(full)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / path.name).write_bytes(full[:cut])
        got, res = _replay(d)
        assert [walmod.frame(t, p) for t, p in got] == recs[:2], cut
        assert (d / path.name).stat().st_size == start
        assert res.bytes_dropped == cut - start


def test_flipped_byte_ends_replay_and_moves_later_segments_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, recs = _three_records(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(recs[0]) + 20] ^= 0x01  # inside the second record's payload
    path.write_bytes(bytes(data))
    later = tmp_path / "00000002"
    later.write_bytes(recs[2])
    with caplog.at_level(logging.WARNING):
        got, res = _replay(tmp_path)
    assert [walmod.frame(t, p) for t, p in got] == recs[:1]
    assert res.truncated_segment == 1 and res.truncated_at == len(recs[0])
    assert path.stat().st_size == len(recs[0])
    assert not later.exists() and (tmp_path / "corrupt" / "00000002").exists()
    assert "truncating" in caplog.text


def test_bad_length_and_type_fields_are_corruption_not_huge_reads(tmp_path: Path) -> None:
    rec = _samples_record(1)
    for mutate in (lambda b: b[:0] + (2**31).to_bytes(4, "little") + b[4:], lambda b: b[:8] + b"\x09" + b[9:]):
        assert walmod.valid_prefix(mutate(rec)) == 0
    assert walmod.valid_prefix(rec + rec) == 2 * len(rec)


def test_fsync_modes(tmp_path: Path) -> None:
    rec = _samples_record(0)
    always = WAL(tmp_path / "a", fsync="always")
    always.open_for_append()
    always.append(rec)
    always.append(rec)
    assert always.fsyncs == 2
    batch = WAL(tmp_path / "b", fsync="batch", batch_interval=1.0)
    batch.open_for_append()
    batch.append(rec)
    batch.append(rec)
    assert batch.fsyncs == 0
    t = batch._last_sync
    assert not batch.maybe_sync(t + 0.5)
    assert batch.maybe_sync(t + 1.5) and batch.fsyncs == 1
    assert not batch.maybe_sync(t + 10)  # nothing new written
    off = WAL(tmp_path / "o", fsync="off")
    off.open_for_append()
    off.append(rec)
    assert not off.maybe_sync(1e12) and off.fsyncs == 0
    with pytest.raises(ValueError):
        WAL(tmp_path, fsync="sometimes")


def test_samples_record_length_is_checked() -> None:
    payload = walmod.encode_samples(np.array([1]), np.array([2]), np.array([1, 2]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        walmod.decode_samples(payload[:-8])


def test_zeroed_tail_is_dropped(tmp_path: Path) -> None:
    path, recs = _three_records(tmp_path)
    with open(path, "ab") as f:
        f.write(bytes(4096))  # a zero-filled page after a crash
    got, res = _replay(tmp_path)
    assert [walmod.frame(t, p) for t, p in got] == recs
    assert path.stat().st_size == sum(len(r) for r in recs) and res.bytes_dropped == 4096
