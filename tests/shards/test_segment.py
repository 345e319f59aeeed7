"""Segment files: what is written reads back; any damage is detected at open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from athens import heap
from athens.model.series import STALE_NAN
from athens.shards.head import Head
from athens.shards.segment import (
    HEADER_SIZE,
    TAIL_SIZE,
    Segment,
    SegmentCorruptError,
    SegmentWriter,
    publish_segment,
    write_segment_tmp,
)


def _head() -> tuple[Head, dict[int, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(7)
    head = Head()
    data = {}
    slots, tss, vals = [], [], []
    for sid in (0, 3, 4):
        n = int(rng.integers(1, 400))
        ts = np.cumsum(rng.integers(1, 60_000, n))
        v = rng.standard_normal(n)
        v[n // 2] = STALE_NAN
        data[sid] = (ts, v)
        slots.append(np.full(n, sid))
        tss.append(ts)
        vals.append(v)
    p = head.prepare(np.concatenate(slots), np.concatenate(tss), np.concatenate(vals))
    head.commit(p)
    return head, data


def _write(tmp_path: Path) -> tuple[Path, dict[int, tuple[np.ndarray, np.ndarray]]]:
    head, data = _head()
    tmp = write_segment_tmp(tmp_path, 1, head.seal_blocks())
    assert tmp.name == "00000001.seg.tmp"
    return publish_segment(tmp), data


def test_written_segment_reads_back_bit_exactly(tmp_path: Path) -> None:
    path, data = _write(tmp_path)
    assert path.name == "00000001.seg" and not (tmp_path / "00000001.seg.tmp").exists()
    seg = Segment(path)
    assert seg.seq == 1
    assert seg.samples == sum(len(t) for t, _ in data.values())
    assert seg.mint == min(t[0] for t, _ in data.values())
    assert seg.maxt == max(t[-1] for t, _ in data.values())
    for sid, (ts, v) in data.items():
        want = np.zeros(5, bool)
        want[sid] = True
        sids, got_ts, got_v = seg.read(np.array([sid]), want, -(2**62), 2**62)
        assert np.all(sids == sid)
        assert got_ts.tolist() == ts.tolist()
        assert got_v.view(np.uint64).tolist() == v.view(np.uint64).tolist()
    ids, maxt, bits = seg.series_last()
    assert ids.tolist() == [0, 3, 4]
    assert maxt.tolist() == [data[i][0][-1] for i in (0, 3, 4)]
    assert bits.tolist() == [data[i][1][-1:].view(np.uint64)[0] for i in (0, 3, 4)]
    ids, lo, hi = seg.series_ranges()
    assert lo.tolist() == [data[i][0][0] for i in (0, 3, 4)]


def test_opening_leaves_no_page_of_the_file_resident(tmp_path: Path) -> None:
    # Checking the CRCs reads the whole file through the mapping; a restarted
    # worker must not keep all its segments in memory because of it.
    path, data = _write(tmp_path)
    seg = Segment(path, verify_data=True)
    mapped = heap._mappings_of(str(path))
    assert mapped and sum(stats["Rss"] for *_, stats in mapped) == 0
    sid = next(iter(data))
    want = np.zeros(5, bool)
    want[sid] = True
    assert seg.read(np.array([sid]), want, -(2**62), 2**62)[1].tolist() == data[sid][0].tolist()


def test_read_selects_only_overlapping_chunks(tmp_path: Path) -> None:
    path, data = _write(tmp_path)
    seg = Segment(path)
    want = np.ones(5, bool)
    ids = np.arange(5)
    assert seg.read(ids, want, seg.maxt + 1, seg.maxt + 10) is None
    ts0 = data[0][0]
    _, got_ts, _ = seg.read(ids, want, int(ts0[0]), int(ts0[0]))
    assert int(ts0[0]) in got_ts.tolist() and len(got_ts) <= 120 * 3


def test_few_series_lookup_and_mask_scan_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    head = Head(chunk_samples=3)
    n = 400
    slots = np.repeat(np.arange(n), 7)
    ts = np.tile(np.arange(7) * 1000, n)
    head.commit(head.prepare(slots, ts, rng.standard_normal(len(ts))))
    seg = Segment(publish_segment(write_segment_tmp(tmp_path, 1, head.seal_blocks())))
    for ids in (np.array([0]), np.array([3, 77, 399]), np.array([5, 500]), np.arange(0, n, 2)):
        want = np.zeros(600, bool)
        want[ids] = True
        for mint, maxt in ((0, 10**6), (2500, 3500), (6001, 9000)):
            fast = seg.read(ids, want, mint, maxt)
            ref = seg.chunks
            sel = np.flatnonzero(want[ref.series] & (ref.maxt >= mint) & (ref.mint <= maxt))
            if len(sel) == 0:
                assert fast is None
                continue
            slow = ref.select(sel).decode()
            for a, b in zip(fast, slow):
                assert np.array_equal(a, b)


@pytest.mark.parametrize("where", ["data", "index", "tail", "header"])
def test_flipped_byte_is_detected(tmp_path: Path, where: str) -> None:
    path, _ = _write(tmp_path)
    buf = bytearray(path.read_bytes())
    pos = {
        "data": HEADER_SIZE + 10,
        "index": len(buf) - TAIL_SIZE - 20,
        "tail": len(buf) - 3,
        "header": 2,
    }[where]
    buf[pos] ^= 0x40
    path.write_bytes(bytes(buf))
    with pytest.raises(SegmentCorruptError):
        Segment(path)


def test_data_damage_is_missed_only_when_verification_is_off(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    buf = bytearray(path.read_bytes())
    buf[HEADER_SIZE + 10] ^= 0x40
    path.write_bytes(bytes(buf))
    Segment(path, verify_data=False)  # the index is intact


def test_truncated_segment_is_detected(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    full = path.read_bytes()
    for cut in (0, 10, len(full) // 2, len(full) - 1):
        path.write_bytes(full[:cut])
        with pytest.raises(SegmentCorruptError):
            Segment(path)


def test_empty_segment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_segment_tmp(tmp_path, 1, Head().seal_blocks())


def test_wal_boundary_is_stored_and_version_1_files_still_read(tmp_path: Path) -> None:
    import struct
    import zlib

    head, data = _head()
    chunks = head.all_chunks()
    seg = Segment(publish_segment(write_segment_tmp(tmp_path, 1, [chunks], wal_boundary=17)))
    assert seg.wal_boundary == 17 and seg.info().wal_boundary == 17
    # A version 1 file: same layout, field reserved (0). Rewrite version and
    # field, and the index CRC that covers the field.
    raw = bytearray(seg.path.read_bytes())
    struct.pack_into("<I", raw, 8, 1)
    idx_off, idx_len = struct.unpack_from("<QQ", raw, len(raw) - TAIL_SIZE)
    struct.pack_into("<I", raw, idx_off + 4, 0)
    struct.pack_into("<I", raw, len(raw) - TAIL_SIZE + 16, zlib.crc32(raw[idx_off : idx_off + idx_len]))
    old = tmp_path / "00000002.seg"
    old.write_bytes(bytes(raw))
    v1 = Segment(old)
    assert v1.wal_boundary == 0 and v1.samples == seg.samples


def test_merge_level_is_stored_beside_the_other_flags(tmp_path: Path) -> None:
    head, _ = _head()
    chunks = head.all_chunks()
    assert Segment(publish_segment(write_segment_tmp(tmp_path, 1, [chunks]))).level == 0
    for seq, (level, compacted) in enumerate(((1, False), (255, True)), start=2):
        w = SegmentWriter(tmp_path, seq, compacted=compacted, level=level)
        w.add(chunks)
        seg = Segment(publish_segment(w.finish()))
        assert (seg.level, seg.compacted) == (level, compacted)
        assert (seg.info().level, seg.info().compacted) == (level, compacted)
        assert seg.samples == chunks.counts.sum()
    with pytest.raises(ValueError, match="merge level"):
        SegmentWriter(tmp_path, 9, level=256)


def test_segment_writer_in_blocks_equals_one_shot(tmp_path: Path) -> None:
    from athens.shards.segment import SegmentWriter

    head, _ = _head()
    chunks = head.all_chunks()
    one = write_segment_tmp(tmp_path, 1, [chunks], 5)
    w = SegmentWriter(tmp_path, 2, 5)
    k = len(chunks)
    for a, b in ((0, 1), (1, k // 2), (k // 2, k)):
        w.add(chunks.select(np.arange(a, b)))
    two = w.finish()
    assert one.read_bytes() == two.read_bytes()


def test_segments_reach_the_file_in_writes_of_a_piece_at_most(tmp_path: Path, monkeypatch) -> None:
    # Large writes become large page-cache folios, and a read fault maps the
    # whole folio into the reader (segment.WRITE_PIECE).
    from athens.shards import segment

    sizes: list[int] = []

    class Recording:
        def __init__(self, f) -> None:  # type: ignore[no-untyped-def]
            self.f = f

        def write(self, b) -> int:  # type: ignore[no-untyped-def]
            sizes.append(memoryview(b).nbytes)
            return self.f.write(b)

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.f, name)

    rng = np.random.default_rng(5)
    n_series, n = 3000, 40
    head = Head()
    sids = np.repeat(np.arange(n_series), n)
    ts = np.tile(np.arange(n) * 15_000, n_series)
    p = head.prepare(sids, ts, rng.standard_normal(len(ts)))
    head.commit(p)
    chunks = head.all_chunks()
    plain = write_segment_tmp(tmp_path, 1, [chunks], 5)
    monkeypatch.setattr(segment, "open", lambda *a, **k: Recording(open(*a, **k)), raising=False)
    pieces = write_segment_tmp(tmp_path, 2, [chunks], 5)
    assert plain.stat().st_size > 4 * segment.WRITE_PIECE
    assert max(sizes) == segment.WRITE_PIECE
    assert pieces.read_bytes() == plain.read_bytes()


def _target_chunks(n_series: int = 6, n: int = 50) -> tuple:
    """Chunks of one scrape target's series (jittered, identical timestamps),
    two chunks per series, plus one series scraped on other times."""
    from athens.shards.head import ClosedChunks, chunk_starts

    rng = np.random.default_rng(3)
    ts = 1_700_000_000_000 + np.arange(n) * 15_000 + rng.integers(-5, 6, n)
    other = ts + 1
    sids = np.repeat(np.arange(n_series + 1), n)
    all_ts = np.concatenate([ts] * n_series + [other])
    vals = rng.integers(0, 1000, len(all_ts)).astype(np.float64)
    starts = chunk_starts(sids, all_ts, n // 2, 0)
    chunks = ClosedChunks.encode(sids[starts[:-1]], all_ts, vals, starts, share_timestamps=True)
    return chunks, sids, all_ts, vals


def test_shared_timestamps_are_stored_once_and_read_back(tmp_path: Path) -> None:
    import struct

    from athens.shards.segment import FLAG_SHARED_TS

    chunks, sids, ts, vals = _target_chunks()
    # Series 1..5 refer to series 0's two chunks; the last series has its own.
    assert chunks.ts_ref.tolist() == [-1, -1] + [0, 1] * 5 + [-1, -1]
    seg = Segment(publish_segment(write_segment_tmp(tmp_path, 1, [chunks])))
    assert struct.unpack_from("<I", seg.path.read_bytes(), 12)[0] == FLAG_SHARED_TS
    plain = type(chunks).encode(chunks.series, ts, vals, np.arange(0, len(ts) + 1, 25))
    # The 10 sharing chunks drop 24 jittered timestamps of 4 bits each.
    assert len(plain.data) - len(chunks.data) >= 10 * 24 * 4 // 8
    n_ids = int(sids.max()) + 1
    for ids in ([0], [3], [6], [2, 5], list(range(n_ids))):
        want = np.zeros(n_ids, bool)
        want[ids] = True
        got = seg.read(np.array(ids), want, -(2**62), 2**62)
        m = want[sids]
        assert got[0].tolist() == sids[m].tolist()
        assert got[1].tolist() == ts[m].tolist()
        assert got[2].tolist() == vals[m].tolist()


def test_files_without_sharing_have_no_shared_timestamps_column(tmp_path: Path) -> None:
    import struct

    head, _ = _head()
    seg = Segment(publish_segment(write_segment_tmp(tmp_path, 1, head.seal_blocks())))
    assert struct.unpack_from("<I", seg.path.read_bytes(), 8) == (3,)
    assert struct.unpack_from("<I", seg.path.read_bytes(), 12) == (0,)
    assert seg.chunks.ts_ref is None


@pytest.mark.parametrize("bad", ["forward", "to_a_sharer", "other_count"])
def test_inconsistent_shared_timestamps_are_detected(tmp_path: Path, bad: str) -> None:
    chunks, *_ = _target_chunks()
    ref = chunks.ts_ref.copy()
    if bad == "forward":
        ref[0] = 2
    elif bad == "to_a_sharer":
        ref[4] = 2
    else:
        ref[2] = len(ref) - 1  # the last series' chunk: other timestamps, its own count
        chunks.counts[-1] += 1
    chunks.ts_ref = ref
    path = publish_segment(write_segment_tmp(tmp_path, 1, [chunks]))
    with pytest.raises(SegmentCorruptError, match="shared-timestamp"):
        Segment(path)


def _big_chunks() -> tuple:
    """~300 KiB of chunks: several blocks, shared timestamps included. The
    first half of the series is constant (blocks zstd shrinks), the second
    full-precision noise (blocks stored as is)."""
    from athens.shards.head import ClosedChunks, chunk_starts

    rng = np.random.default_rng(5)
    n_series, n = 400, 240
    ts = 1_700_000_000_000 + np.arange(n) * 15_000 + rng.integers(-5, 6, n)
    sids = np.repeat(np.arange(n_series), n)
    all_ts = np.tile(ts, n_series)
    vals = rng.standard_normal(len(all_ts))  # full-precision floats: ~8 bytes each
    vals[::7] = np.round(vals[::7], 2)
    vals[: n_series // 2 * n] = np.repeat(np.arange(n_series // 2, dtype=np.float64), n)
    starts = chunk_starts(sids, all_ts, 120, 0)
    chunks = ClosedChunks.encode(sids[starts[:-1]], all_ts, vals, starts, share_timestamps=True)
    return chunks, sids, all_ts, vals


def _write_compressed(tmp_path: Path) -> tuple:
    from athens.shards.segment import SegmentWriter

    chunks, sids, ts, vals = _big_chunks()
    w = SegmentWriter(tmp_path, 1, compress=True)
    w.add(chunks)
    return publish_segment(w.finish()), sids, ts, vals


def test_compressed_segment_reads_back_and_is_smaller(tmp_path: Path) -> None:
    import struct

    from athens.shards.segment import FLAG_SHARED_TS, FLAG_ZSTD, ZSTD_BLOCK_BYTES, ZSTD_MIN_SAVING

    path, sids, ts, vals = _write_compressed(tmp_path)
    seg = Segment(path)
    assert struct.unpack_from("<I", path.read_bytes(), 12)[0] == FLAG_ZSTD | FLAG_SHARED_TS
    assert seg.compacted  # as files from before FLAG_COMPACTED: only compaction wrote zstd
    raw, on_disk = seg.chunk_bytes
    assert raw > 4 * ZSTD_BLOCK_BYTES and on_disk < raw
    raw_sizes, file_sizes = (np.diff(x) for x in seg._blocks)
    stored_as_is = raw_sizes == file_sizes
    assert stored_as_is.any() and not stored_as_is.all()
    assert np.all(file_sizes[~stored_as_is] <= raw_sizes[~stored_as_is] * (1 - ZSTD_MIN_SAVING))
    n_ids = int(sids.max()) + 1
    rng = np.random.default_rng(1)
    for ids in ([0], [399], sorted(rng.choice(n_ids, 3, replace=False)), list(range(n_ids))):
        want = np.zeros(n_ids, bool)
        want[ids] = True
        for mint, maxt in ((-(2**62), 2**62), (int(ts[100]), int(ts[130]))):
            got = seg.read(np.array(ids), want, mint, maxt)
            m = want[sids]
            # whole chunks overlapping the range come back
            chunk_hit = np.repeat((seg.chunks.maxt >= mint) & (seg.chunks.mint <= maxt), seg.chunks.counts)
            m &= chunk_hit
            assert got[0].tolist() == sids[m].tolist()
            assert got[1].tolist() == ts[m].tolist()
            assert got[2].view(np.uint64).tolist() == vals[m].view(np.uint64).tolist()


def test_compressed_blocks_do_not_depend_on_how_chunks_were_added(tmp_path: Path) -> None:
    from athens.shards.head import ClosedChunks
    from athens.shards.segment import SegmentWriter

    chunks, *_ = _big_chunks()
    plain = ClosedChunks(chunks.series, chunks.mint, chunks.maxt, chunks.counts, chunks.last_bits,
                         *_without_sharing(chunks))
    files = []
    for seq, cuts in ((1, [0, len(plain)]), (2, [0, 1, 7, len(plain) // 2, len(plain)])):
        w = SegmentWriter(tmp_path, seq, compress=True)
        for a, b in zip(cuts[:-1], cuts[1:]):
            w.add(plain.select(np.arange(a, b)))
        files.append(w.finish().read_bytes())
    assert files[0] == files[1]


def _without_sharing(chunks) -> tuple[np.ndarray, np.ndarray]:
    from athens.shards import chunkenc

    _, ts, values = chunks.decode()
    return chunkenc.encode_chunks(ts, values, np.concatenate(([0], np.cumsum(chunks.counts))))


@pytest.mark.parametrize("offset", [0, 100])
def test_damaged_compressed_block_is_detected(tmp_path: Path, offset: int) -> None:
    from athens.shards.chunkenc import ChunkFormatError

    path, sids, *_ = _write_compressed(tmp_path)
    buf = bytearray(path.read_bytes())
    buf[HEADER_SIZE + offset] ^= 0x55
    path.write_bytes(bytes(buf))
    with pytest.raises(SegmentCorruptError, match="data CRC"):
        Segment(path)
    # Without the CRC check at open (as for uncompressed files, a changed
    # byte may then go unnoticed): a block that does not decompress, or not
    # to its size, is a SegmentCorruptError, never a crash.
    seg = Segment(path, verify_data=False)
    want = np.ones(int(sids.max()) + 1, bool)
    if offset == 0:  # the zstd frame's magic number
        with pytest.raises(SegmentCorruptError, match="block 0"):
            seg.read(np.flatnonzero(want), want, -(2**62), 2**62)
    else:
        try:
            seg.read(np.flatnonzero(want), want, -(2**62), 2**62)
        except (SegmentCorruptError, ChunkFormatError):
            pass


def test_inconsistent_block_table_is_detected(tmp_path: Path) -> None:
    import struct
    import zlib

    path, *_ = _write_compressed(tmp_path)
    raw = bytearray(path.read_bytes())
    idx_off, idx_len = struct.unpack_from("<QQ", raw, len(raw) - TAIL_SIZE)
    # The block table is last: raw starts then file starts, n+1 each; move
    # the second block's raw start off its chunk boundary.
    end = idx_off + idx_len
    seg = Segment(path)
    nb1 = len(seg._blocks[0])
    struct.pack_into("<q", raw, end - 16 * nb1 + 8, int(seg._blocks[0][1]) + 1)
    struct.pack_into("<I", raw, len(raw) - TAIL_SIZE + 16, zlib.crc32(raw[idx_off:end]))
    path.write_bytes(bytes(raw))
    with pytest.raises(SegmentCorruptError, match="block table"):
        Segment(path)
