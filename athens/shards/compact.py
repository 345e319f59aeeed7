"""Compaction: merge small sealed segments into one file per larger time range.

Every seal writes one segment holding whatever the head held (about
head_flush_interval of data, plus any out-of-order samples). Left alone, a
year would be tens of thousands of small files, each chunk of a series cut
short at the seal. Compaction rewrites them into one file per time partition
(epoch-aligned ranges, by default 1 day and then 7 days), re-encoding each
series' samples in the partition into full chunks (chunk_starts: the head's
cutting rules, with the longer compact_chunk_samples, 480 by default), so a
year ends up as about 52 weekly files.

One job = one partition that has closed (newer data has moved past it by at
least the out-of-order window): all segments touching it are read, merged
and split by partition. Until then, the seals of open time are merged a few
at a time, chunks copied as they are unless they are short enough to be worth
re-encoding (plan_merge, MERGE_REPACK_SHARE). Jobs are planned from file footers only and bounded
by compact_max_bytes of input. Within a job, series are processed in groups
of about GROUP_SAMPLES samples, so memory stays bounded however large the
inputs are, and housekeeping advances the current job for about
compact_step_seconds per tick (CompactionJob): a worker's on its seal
thread (athens/shards/sealer.py), so appends and queries go on meanwhile,
and between steps retention may abort the job.

Crash safety (a journal, docs/format/segment.md "Compaction journal"):
    1. write every output as NNNNNNNN.seg.tmp and fsync it;
    2. write compact.journal (inputs, outputs) via tmp + rename + dir fsync;
    3. rename the outputs into place (dir fsync);
    4. delete the inputs (dir fsync);
    5. delete the journal.
open() calls recover() first: a journal whose outputs are all present and
valid rolls forward (delete leftover inputs), otherwise rolls back (delete the
outputs that made it). Without a journal, only .seg.tmp files can be left,
and those are deleted. Either way each sample is in exactly one live file.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from athens.shards.head import (
    CHUNK_SAMPLES,
    CHUNK_WINDOW_MS,
    ClosedChunks,
    chunk_starts,
    concat_chunks,
    merge_pieces,
)
from athens.shards.segment import (
    MAX_LEVEL,
    SUFFIX,
    Segment,
    SegmentCorruptError,
    SegmentInfo,
    SegmentWriter,
    publish_segment,
    segment_name,
)
from athens.shards.tombstones import Tombstones
from athens.shards.wal import fsync_dir

log = logging.getLogger(__name__)

JOURNAL_NAME = "compact.journal"
JOURNAL_VERSION = 1

# A merge copies its inputs' chunks unless re-encoding them would leave at
# most this share of them. A seal cuts every series' open chunk, so with
# many series a worker's seals hold short chunks (at 4 M samples a seal, 40
# samples a series at 100,000 series, 4 at a million), each paying 48 bytes
# of file index and a chunk header, and copied they stay that short until
# the day's compaction. In process, 4 seals of 100,000 series x 40 samples
# merged: copied 9 ns a sample, re-encoded 44 (2.72 -> 1.80 bytes a sample,
# reading them all 91 -> 73 ms); of 400,000 x 10: 32 and 78 ns (8.21 ->
# 2.71 bytes, 250 -> 124 ms). Where the chunks are long already (the
# level after, or few series) they are copied: re-encoding would gain little.
MERGE_REPACK_SHARE = 2 / 3

# Samples decoded at once inside a job: ~6 MB of (id, ts, value) columns plus
# the merge sort's temporaries, and ~0.1-0.3 s of work (bench.storage measures
# 0.9-2.2 M samples/s through decode + merge + encode): the grain of a step.
GROUP_SAMPLES = 1 << 18

DAY_MS = 24 * 3600 * 1000
# 1 day, then 7 days: a closed day becomes one file, a closed week one file
# (13 files for the default 90 days of retention; Prometheus stops at 31 d or
# 10 % of retention, which we do not need as files are mmapped, not loaded).
DEFAULT_RANGES_MS = (DAY_MS, 7 * DAY_MS)


class JournalError(Exception):
    """The compaction journal is unreadable (it is written atomically, so this is disk damage)."""


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """One job: merge `inputs` (segment seqs) and split the result by `range_ms`."""

    inputs: tuple[int, ...]
    range_ms: int
    partition: int  # the closed partition that triggered the job (start = partition * range_ms)
    input_bytes: int
    level: int = 0  # > 0: a merge of open-time files (plan_merge) into one file of this level
    purge: bool = False  # one file rewritten without deleted series and ranges (plan_purge)


def plan_compaction(
    infos: Sequence[SegmentInfo],
    ranges_ms: Sequence[int],
    watermark: int,
    max_bytes: int,
) -> CompactionPlan | None:
    """The next job, or None when every closed partition is already one file.

    Each stretch of time is compacted at the largest range whose partition
    around it has closed (its end <= watermark): closed weeks into one file,
    closed days of the current week into one file each. Largest range first,
    oldest partition first. A partition needs work when two or more segments
    touch it or a segment touching it extends outside it. Candidates are only
    the partitions of segment endpoints: the oldest partition needing work is
    always one. A job over max_bytes is skipped, and that stretch is then
    left to the next smaller range. A lone file inside a closed partition
    needs work too if a seal wrote it (or a job, for time not closed then).
    """
    if not infos:
        return None
    ranges = sorted(ranges_ms, reverse=True)
    oversized: set[tuple[int, int]] = set()

    def handled_above(r: int, k: int) -> bool:
        for big in ranges:
            if big <= r:
                return False
            kb = (k * r) // big
            if (kb + 1) * big <= watermark and (big, kb) not in oversized:
                return True
        return False

    for r in ranges:
        lo = np.array([i.mint // r for i in infos], np.int64)
        hi = np.array([i.maxt // r for i in infos], np.int64)
        for k in sorted(set(lo.tolist()) | set(hi.tolist())):
            if (k + 1) * r > watermark:
                break
            if handled_above(r, k):
                continue
            touching = np.flatnonzero((lo <= k) & (hi >= k))
            if len(touching) == 1 and lo[touching[0]] == hi[touching[0]] and infos[touching[0]].compacted:
                continue
            size = sum(infos[i].size for i in touching)
            if size > max_bytes:
                oversized.add((r, k))
                continue
            return CompactionPlan(
                tuple(sorted(infos[i].seq for i in touching)), r, k, size
            )
    return None


def plan_merge(
    infos: Sequence[SegmentInfo], range_ms: int, watermark: int, settled: int, fanin: int, max_bytes: int
) -> CompactionPlan | None:
    """The next merge of files whose time is still open, or None.

    Until its partition (of range_ms, the smallest) closes, a day's data is
    one file per seal: a worker seals every 15 minutes (the head flush
    interval) or 4 M samples, and a read of a few series over the last day
    paid ~40 us per file it looked into (96-144 of them), a range over many
    series the scattered pages of every file. So files of the same merge
    level are merged `fanin` at a time, oldest first, into one of the next
    level, each series' chunks placed side by side as they are
    (CompactionJob; re-encoded where a seal left them short,
    MERGE_REPACK_SHARE): log_fanin(files) rewrites of the bytes until the
    partition closes and compaction re-encodes it.
    Candidates are not compacted, start in a partition that is still open
    (a file reaching back into a closed one is that partition's
    compaction's) and end at or before `settled`: the newest files stay as
    sealed, so instant queries and rules, which read only them, read a few
    packed files (an instant aggregation over 1,430 series of a merged file
    decoded its series' scattered newest chunks 22-35% slower than from the
    newest seal)."""
    if fanin < 2:
        return None
    levels: dict[int, list[SegmentInfo]] = {}
    for i in infos:
        if (
            not i.compacted and i.level < MAX_LEVEL and i.maxt <= settled
            and (i.mint // range_ms + 1) * range_ms > watermark
        ):
            levels.setdefault(i.level, []).append(i)
    for level in sorted(levels):
        group = sorted(levels[level], key=lambda i: (i.mint, i.seq))[:fanin]
        size = sum(i.size for i in group)
        if len(group) == fanin and size <= max_bytes:
            return CompactionPlan(tuple(sorted(i.seq for i in group)), range_ms, -1, size, level + 1)
    return None


def plan_purge(info: SegmentInfo, ranges_ms: Sequence[int]) -> CompactionPlan:
    """A job rewriting one file without the series and ranges deleted since
    it was written (CompactionJob's `dropped` and `hidden`): a compacted
    file into the layout of its partition again (the smallest range holding
    it whole), a merged file as a merge of its level, a seal's as
    compaction takes seals."""
    fits = [r for r in sorted(ranges_ms) if info.mint // r == info.maxt // r]
    r = fits[0] if fits else max(ranges_ms)
    level = 0 if info.compacted else info.level
    return CompactionPlan((info.seq,), r, info.mint // r, info.size, level, purge=True)


@dataclass(slots=True)
class CompactionResult:
    inputs: list[int]
    outputs: list[Path]
    samples_in: int
    samples_out: int
    bytes_in: int
    bytes_out: int


class CompactionJob:
    """One plan being executed, a few series groups at a time.

    advance() merges series groups until its deadline passes, so a job is
    done in steps of about compact_step_seconds from successive housekeeping
    ticks (on a worker, off its event loop). Only the last call
    publishes (steps 2-5 above). Until then the job has written nothing but
    .seg.tmp files: abort() deletes them, and so does open() after a crash.
    """

    def __init__(
        self,
        plan: CompactionPlan,
        segments: Sequence[Segment],
        shard_dir: Path,
        segments_dir: Path,
        alloc_seq: Callable[[], int],
        chunk_samples: int,
        step: Callable[[str], None] = lambda name: None,
        group_samples: int | None = None,
        open_from: int | None = None,
        open_chunking: tuple[int, int] = (CHUNK_SAMPLES, CHUNK_WINDOW_MS),
        compress: bool = False,
        dropped: Callable[[np.ndarray], np.ndarray] | None = None,
        hidden: Tombstones | None = None,
    ) -> None:
        inputs = sorted((s for s in segments if s.seq in plan.inputs), key=lambda s: s.seq)
        if [s.seq for s in inputs] != list(plan.inputs):
            raise ValueError("compaction plan names segments that are not open")
        self.plan = plan
        self.inputs = inputs
        self.shard_dir = shard_dir
        self.segments_dir = segments_dir
        self._alloc = alloc_seq
        self._width = chunk_samples
        self._step = step
        # Outputs that may hold samples from open_from on (time not closed
        # yet at the smallest range: a seal straddling the closed partition
        # brings it) are written as seals write, open_chunking = (samples,
        # window ms) and no zstd: that data is the most queried, and its
        # own partition is compacted again once it closes.
        self._open_from = open_from
        self._open_chunking = open_chunking
        self._compress = compress  # closed outputs in zstd blocks (ShardConfig.compact_zstd)
        # Series ids -> which are deleted (forgotten): their chunks are not written again.
        self._dropped = dropped
        # Deleted ranges of series (tombstones.py): their samples are not written again.
        self.hidden = hidden
        self._newest = max(s.maxt for s in inputs)
        self._boundary = max(s.wal_boundary for s in inputs)
        self._writers: dict[int, SegmentWriter] = {}
        nser = max(int(s.chunks.series.max()) for s in inputs) + 1
        per_series = np.zeros(nser, np.int64)
        for s in inputs:
            per_series += np.bincount(
                s.chunks.series, weights=s.chunks.counts, minlength=nser
            ).astype(np.int64)
        # Series-id groups of about group_samples samples each.
        group_samples = group_samples or GROUP_SAMPLES
        cum = np.cumsum(per_series)
        cuts = np.searchsorted(cum, np.arange(group_samples, int(cum[-1]), group_samples), "left")
        bounds = np.unique(np.concatenate(([0], cuts + 1, [nser])))
        self._groups = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        self._next = 0
        self.started = False

    @property
    def input_seqs(self) -> set[int]:
        return {s.seq for s in self.inputs}

    def advance(self, deadline: float | None = None) -> CompactionResult | None:
        """Merge groups until time.monotonic() >= deadline (None: to the end).

        Returns the result once the job is published, else None.
        """
        try:
            if not self.started:
                self._step("compact_write")
                self.started = True
            while self._next < len(self._groups):
                self._merge_group(*self._groups[self._next])
                for s in self.inputs:  # read once: their pages need not stay mapped
                    s.release_pages()
                self._next += 1
                if deadline is not None and time.monotonic() >= deadline:
                    if self._next < len(self._groups):
                        return None
            tmps = [w.finish() for w in self._writers.values()]
        except BaseException:
            self.abort()
            raise
        return self._publish(tmps)

    def _merge_group(self, a: int, b: int) -> None:
        blocks = []
        for s in self.inputs:
            ser = s.chunks.series
            i0 = int(np.searchsorted(ser, a, "left"))
            i1 = int(np.searchsorted(ser, b, "left"))
            positions = np.arange(i0, i1, dtype=np.int64)
            if self._dropped is not None and i1 > i0:
                positions = positions[~self._dropped(ser[i0:i1])]
            if len(positions):
                blocks.append(s.select(positions))
        if not blocks:  # the group's series were all deleted
            return
        hidden = self.hidden
        if hidden is not None and not any(hidden.overlaps(b.series, b.mint, b.maxt)[0].any() for b in blocks):
            hidden = None  # none of the group's chunks holds a deleted range (or there are none)
        placed = _side_by_side(blocks)
        if (placed is not None and self.plan.level and hidden is None
                and _fewest_chunks(placed, *self._open_chunking) > MERGE_REPACK_SHARE * len(placed)):
            self._writer(0, False).add(placed)
            return
        # Without overlaps, decoding the chunks in (series, time) order is
        # the merge: no sort of the samples (a third of a job's time).
        sid, ts, vals = placed.decode() if placed is not None else merge_pieces([b.decode() for b in blocks])
        if hidden is not None and len(ts):
            starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1], [True])))
            runs = sid[starts[:-1]]
            ts, vals, sizes = hidden.drop_hidden(runs, starts, ts, vals)
            sid = np.repeat(runs, sizes)
        if len(ts) == 0:
            return
        if self.plan.level:  # chunks overlapping in time or short, or samples left out: as a seal writes
            starts = chunk_starts(sid, ts, *self._open_chunking)
            self._writer(0, False).add(ClosedChunks.encode(sid[starts[:-1]], ts, vals, starts))
            return
        r = self.plan.range_ms
        first = int(ts.min()) // r
        part = None if int(ts.max()) // r == first else ts // r  # usually all in one partition
        for p in [first] if part is None else np.unique(part).tolist():
            if part is None:
                ps, pt, pv = sid, ts, vals
            else:
                m = part == p
                ps, pt, pv = sid[m], ts[m], vals[m]
            closed = self._open_from is None or min((p + 1) * r - 1, self._newest) < self._open_from
            if closed:
                # Cut by count only: a partition is one file, so no chunk
                # straddles its boundary. Chunks of one scrape target's series
                # then have the same cuts and timestamps, stored once per file.
                starts = chunk_starts(ps, pt, self._width, 0)
                block = ClosedChunks.encode(ps[starts[:-1]], pt, pv, starts, share_timestamps=True)
            else:
                starts = chunk_starts(ps, pt, *self._open_chunking)
                block = ClosedChunks.encode(ps[starts[:-1]], pt, pv, starts)
            self._writer(p, closed).add(block)

    def _writer(self, partition: int, closed: bool) -> SegmentWriter:
        """The output for `partition` (a merge has one: 0)."""
        w = self._writers.get(partition)
        if w is None:
            w = self._writers[partition] = SegmentWriter(
                self.segments_dir, self._alloc(), self._boundary,
                compacted=closed, compress=closed and self._compress, level=self.plan.level,
            )
        return w

    def _publish(self, tmps: list[Path]) -> CompactionResult:
        step = self._step
        finals = [t.with_name(t.name[: -len(".seg.tmp")] + SUFFIX) for t in tmps]
        inputs = [s.seq for s in self.inputs]
        step("compact_journal")
        write_journal(self.shard_dir, inputs, [int(f.name[: -len(SUFFIX)]) for f in finals])
        step("compact_publish")
        outputs = [publish_segment(t) for t in tmps]
        step("compact_delete_inputs")
        for s in self.inputs:
            s.path.unlink(missing_ok=True)
        fsync_dir(self.segments_dir)
        step("compact_done")
        remove_journal(self.shard_dir)
        return CompactionResult(
            inputs, outputs,
            sum(s.samples for s in self.inputs), sum(w.samples for w in self._writers.values()),
            sum(s.size for s in self.inputs), sum(p.stat().st_size for p in outputs),
        )

    def abort(self) -> None:
        """Drop the job's unpublished files (before the journal exists)."""
        for w in self._writers.values():
            if not w._f.closed:
                w._f.close()
            w.tmp.unlink(missing_ok=True)
        self._writers = {}


def _fewest_chunks(block: ClosedChunks, width: int, window_ms: int) -> int:
    """How many chunks re-encoding `block` (chunks in (series, time) order)
    makes: chunk_starts' cuts, counted from the chunks' footers (a chunk
    lies in one window, so each series and window needs ceil(samples /
    width))."""
    if len(block) == 0:
        return 0
    brk = block.series[1:] != block.series[:-1]
    if window_ms > 0:
        win = block.mint // window_ms
        brk |= win[1:] != win[:-1]
    starts = np.concatenate(([0], np.flatnonzero(brk) + 1))
    samples = np.add.reduceat(block.counts, starts)
    return int((-(-samples // width)).sum())


def _side_by_side(blocks: list[ClosedChunks]) -> ClosedChunks | None:
    """The chunks of `blocks` in (series, min time) order, bytes as they are,
    or None if chunks of one series overlap in time (then the samples must
    be merged) or some share timestamps (their sources are file-relative)."""
    if any(b.ts_ref is not None for b in blocks):
        return None
    block = concat_chunks(blocks)
    order = np.lexsort((block.mint, block.series))
    series, mint, maxt = block.series[order], block.mint[order], block.maxt[order]
    if np.any((series[1:] == series[:-1]) & (mint[1:] <= maxt[:-1])):
        return None
    return block.select(order)


def run_compaction(
    plan: CompactionPlan,
    segments: Sequence[Segment],
    shard_dir: Path,
    segments_dir: Path,
    alloc_seq: Callable[[], int],
    chunk_samples: int,
    step: Callable[[str], None] = lambda name: None,
    group_samples: int | None = None,
) -> CompactionResult:
    """Execute a plan in one go (steps above); returns the published outputs."""
    job = CompactionJob(
        plan, segments, shard_dir, segments_dir, alloc_seq, chunk_samples, step, group_samples,
    )
    res = job.advance(None)
    assert res is not None
    return res


# --- journal -------------------------------------------------------------------


def write_journal(shard_dir: Path, inputs: list[int], outputs: list[int]) -> None:
    """Atomically record a job about to publish `outputs` and delete `inputs`.

    JSON {"version", "inputs", "outputs"} followed by a line with its CRC-32.
    """
    body = json.dumps({"version": JOURNAL_VERSION, "inputs": inputs, "outputs": outputs})
    text = f"{body}\n{zlib.crc32(body.encode()):08x}\n"
    tmp = shard_dir / (JOURNAL_NAME + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, shard_dir / JOURNAL_NAME)
    fsync_dir(shard_dir)


def read_journal(shard_dir: Path) -> tuple[list[int], list[int]] | None:
    path = shard_dir / JOURNAL_NAME
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    if len(lines) != 2 or f"{zlib.crc32(lines[0].encode()):08x}" != lines[1]:
        raise JournalError(f"{path}: damaged")
    doc = json.loads(lines[0])
    if doc.get("version") != JOURNAL_VERSION:
        raise JournalError(f"{path}: unsupported version {doc.get('version')}")
    return [int(x) for x in doc["inputs"]], [int(x) for x in doc["outputs"]]


def remove_journal(shard_dir: Path) -> None:
    (shard_dir / JOURNAL_NAME).unlink(missing_ok=True)
    fsync_dir(shard_dir)


def recover(shard_dir: Path, segments_dir: Path) -> str | None:
    """Finish or undo a job interrupted by a crash. Returns what it did, or None.

    Roll forward when every output is present under its final name and
    passes verification (the inputs' data is then complete in the outputs);
    otherwise roll back by deleting the outputs. A damaged journal cannot
    tell which, so it is kept for an operator and the shard opens with
    whatever files exist (the read-time merge drops duplicates).
    """
    (shard_dir / (JOURNAL_NAME + ".tmp")).unlink(missing_ok=True)
    try:
        job = read_journal(shard_dir)
    except (JournalError, ValueError, KeyError) as e:
        log.error("compaction journal unreadable (%s); leaving it for inspection", e)
        bad = shard_dir / (JOURNAL_NAME + ".bad")
        os.replace(shard_dir / JOURNAL_NAME, bad)
        return "journal damaged"
    if job is None:
        return None
    inputs, outputs = job
    complete = True
    for seq in outputs:
        p = segments_dir / segment_name(seq)
        try:
            Segment(p, verify_data=True)
        except (OSError, SegmentCorruptError):
            complete = False
            break
    if complete:
        for seq in inputs:
            (segments_dir / segment_name(seq)).unlink(missing_ok=True)
        action = f"rolled forward: deleted inputs {inputs}"
    else:
        for seq in outputs:
            (segments_dir / segment_name(seq)).unlink(missing_ok=True)
            (segments_dir / f"{seq:08d}.seg.tmp").unlink(missing_ok=True)
        action = f"rolled back: deleted outputs {outputs}"
    fsync_dir(segments_dir)
    remove_journal(shard_dir)
    log.warning("interrupted compaction %s", action)
    return action

