"""One shard's storage engine: WAL + head + sealed segments + series index.

The worker process wraps a Shard; everything here is synchronous and
single-threaded (one request at a time), which is what makes the flush
sequence below crash-safe without locks. The one exception is step 3,
which the worker runs on a thread (write_seal) so appends and queries go on
during a seal: it reads only the frozen head, which nothing else changes.

Directory layout:
    <path>/series.idx          series registry (docs/format/index.md)
    <path>/wal/00000001 ...    write-ahead log (docs/format/wal.md)
    <path>/segments/00000001.seg ...   sealed data (docs/format/segment.md)
    <path>/corrupt/            segments that failed verification, moved aside
    <path>/compact.journal     an unfinished compaction job (athens/shards/compact.py)
    <path>/tombstones          deleted ranges of series (athens/shards/tombstones.py)
    <path>/exemplars           the exemplar log (athens/shards/exemplars.py)

Durability argument. append() writes the WAL (one write, at most one fsync)
before it touches the head, so an acknowledged sample is in the page cache
(or on disk, per wal_fsync) before the caller hears back. flush() seals in
steps, each of which leaves a state open() recovers from:
    1. rotate the WAL: everything in the head is in segments < B; freeze
       the head and append to a fresh one (begin_seal; reads see both);
    2. persist the series index (fsync): every id in the head is durable;
    3. write the segment to a tmp file and fsync it (write_seal);
    4. rename it into place and fsync the directory (finish_seal);
    5. drop the frozen head;
    6. delete WAL segments < B.
A crash before 4 leaves only a tmp file (deleted on open) and the WAL replays
everything; a crash after 4 but before 6 leaves WAL segments the new segment
already holds: the segment records the WAL boundary B, and open() deletes WAL
segments below the highest boundary of any segment before replaying, so
nothing is duplicated (this also holds for out-of-order samples, which a
per-series "newest sealed timestamp" rule could not tell apart).

flush_tick() also runs compaction (compact.py, one bounded job per tick) and
retention (retention.py); both have their own crash story there.
"""

from __future__ import annotations

import heapq
import logging
import os
import shutil
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from athens import heap
from athens.model.batch import WriteBatch
from athens.model.labels import INTERNER, Labels
from athens.model.matchers import Matcher
from athens.model.series import SeriesSet
from athens.shards import compact as compactmod
from athens.shards import wal as walmod
from athens.shards.exemplars import DEFAULT_CAPACITY, AddResult, Exemplar, ExemplarLog, ExemplarStore
from athens.shards.head import (
    CHUNK_SAMPLES,
    CHUNK_WINDOW_MS,
    INT64_MIN,
    N_VERDICTS,
    V_ACCEPT,
    V_CONFLICT,
    V_DUPLICATE,
    V_OLDER,
    V_OOO,
    Head,
    PendingRead,
    Prepared,
)
from athens.shards.retention import DEFAULT_RETENTION_MS, plan_retention
from athens.shards.index import SeriesIndex
from athens.shards.tombstones import Tombstones
from athens.shards.segment import (
    SUFFIX,
    TMP_SUFFIX,
    Segment,
    SegmentCorruptError,
    SegmentInfo,
    publish_segment,
    write_segment_tmp,
)

log = logging.getLogger(__name__)

INT64_MAX = np.iinfo(np.int64).max

# Replay applies WAL samples to the head in groups of about this many: large
# enough that per-group overhead (sort, kernel call) vanishes, small enough to
# bound the temporary arrays.
_REPLAY_GROUP_SAMPLES = 1 << 20

# Out-of-order window: 10 minutes covers a remote_write sender retrying or
# catching up after a short outage, and a scrape target whose clock is a bit
# behind, while the OOO head (and the re-chunking at seal) stays small.
DEFAULT_OOO_WINDOW_MS = 10 * 60 * 1000
# Replay accepts every logged sample that is not already stored: the window
# was applied when it was acknowledged.
_REPLAY_WINDOW_MS = 2**62

# Compacted data is re-encoded into chunks of up to 1440 samples (6 h at a
# 15 s interval) rather than the head's 120: the footer entry (48-56 bytes)
# and the chunk header (~25 bytes) are then paid per 1440 samples.
# bench/storage.py: 0.4 bytes per sample less than 120-sample chunks at 480,
# another ~0.1 at 1440 (cut at 2 h, 480 was the most possible). Older data
# is read in longer ranges, so the coarser time granularity of chunk
# selection costs little: a 1 h query over day-old data decodes up to 6 h
# per series (~7 us). A departure from Prometheus, whose blocks keep
# 120-sample chunks; VictoriaMetrics' blocks hold up to 8192.
COMPACT_CHUNK_SAMPLES = 1440
# How much older than the shard's newest sample a seal's data must end
# before merges of open time take it (compact.plan_merge). Instant queries
# and rules read the newest lookback (5 min) plus their range, so they keep
# reading only the seals newer than this, packed and pruned by time. Until
# merged, a worker with many series holds its seals' short chunks (40
# samples at 100,000 series), each with 48 bytes of footer that every read
# of the file consults: `medium` (one worker, 6 seals in its hour, none
# merged at 1 h) mapped 91 MiB of segments during its query list, 70 with
# four of them merged (55 -> 40 MB of files), and its range queries took
# 0.75-0.96 of their time (bodies identical). A merge rewrites the same
# bytes whenever it runs, so merging sooner costs no more CPU.
MERGE_AFTER_MS = 15 * 60 * 1000

# Segment samples reads may plan before the chunk pages they mapped are
# unmapped again (Shard.release_read_pages). Read through the mapping, a
# page stays counted in the worker's memory until released: the `long`
# profile's query list left 44 of its 66 MB of segments mapped in the
# worker. Released after every query, the pages a query maps again cost
# light queries 20-30% (bench.ab, `long`, one worker: 0.35-0.45 ms on 1.5-2
# ms instants); after this many samples, a 12-hour query over a few
# thousand series releases what it mapped (the next one maps it again in
# 184 faults: inside the noise of its 55-60 ms), and the light queries in
# between leave theirs for the next release.
RELEASE_READ_SAMPLES = 1 << 20

# Compaction steps wait while the head holds more than this share of its
# seal threshold (Shard.compaction_waits).
COMPACT_HEAD_SHARE = 0.5

# Series a retention pass forgets at most (Shard._forget_dataless; ~2 us
# each on the loop, so ~0.1 s); the rest go at the next passes, one a tick.
FORGET_BATCH = 50_000
# At open, the index file is rewritten without the label sets of forgotten
# series (SeriesIndex.rewrite) once they outnumber the live ones and this:
# they are parsed at every open until then.
REWRITE_MIN_FORGOTTEN = 10_000
# New series ranked between their neighbours in the label order before the
# order is rebuilt with them (Shard.label_rank), or 1/64 of it if more.
UNFOLDED_MAX = 4096

# Conflict counters per producer ("job/instance" of the series) are capped so
# a misbehaving fleet cannot grow the stats without bound.
_MAX_PRODUCERS = 1000

FLUSH_STEPS = (
    "rotate_wal",
    "persist_index",
    "write_segment",
    "publish_segment",
    "reset_head",
    "truncate_wal",
)


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """How one shard stores data. Frozen: a worker builds it once from ServeConfig.

    wal_fsync: "always" fsyncs before append() returns; "batch" fsyncs from
        flush_tick() at most every wal_batch_interval_s; "off" never. Every
        mode write()s before returning, so kill -9 loses nothing acknowledged.
    head_flush_samples / head_flush_age_ms: flush_tick() seals the head when
        it holds this many samples, or has held data this long.
    seal_phase: the first head after open() is sealed at (1 - seal_phase)
        of both thresholds, later ones at the thresholds. Workers that fill
        at the same rate and start together (a node's) get phases i/N and
        so seal one after another, not all at once: a seal's CPU, fsyncs
        and transient memory (`medium`, 2 workers: +29 MiB each) add up.
    chunk_samples / chunk_window_ms: chunks are cut at 120 samples and at
        2 h boundaries of the epoch.
    ooo_window_ms: samples up to this much older than their series' newest
        sample are accepted into the out-of-order head; older ones are
        rejected ("older_than_ooo_window"). 0 rejects anything out of order.
    verify_segments_on_open: check each segment's data CRC when opening
        (reads every segment once; the index CRC is always checked).
    retention_ms / retention_bytes: delete segment files whose data is older
        than min(newest sample, wall clock) minus retention_ms, and the
        oldest files while the shard is over retention_bytes (0 disables
        either).
    compact_ranges_ms: time partitions compaction merges into, ascending,
        each a multiple of the previous and of chunk_window_ms; () disables.
    compact_max_bytes: a compaction job reads at most this many bytes.
    compact_step_seconds: flush_tick advances a compaction job for about
        this long (one series group at least), then returns to serving.
    compact_chunk_samples: chunk length compaction re-encodes into (cut by
        count only, within the partition): longer than the head's, see above.
    compact_zstd: compaction stores a closed partition's chunk bytes in zstd
        blocks: 3-5% smaller files, whose reads decompress or copy whole
        16 KiB blocks (docs/format/segment.md).
    merge_fanin / merge_after_ms: files of time not closed yet are merged
        this many at a time (compact.plan_merge) when no compaction is due,
        once their newest sample is merge_after_ms older than the shard's;
        merge_fanin 0 disables.
    max_exemplars: exemplars held (exemplars.py); 0 stores none.
    """

    wal_fsync: str = "always"
    wal_segment_bytes: int = 64 << 20
    wal_batch_interval_s: float = 1.0
    head_flush_samples: int = 4_000_000
    head_flush_age_ms: int = 2 * 3600 * 1000
    seal_phase: float = 0.0
    chunk_samples: int = CHUNK_SAMPLES
    chunk_window_ms: int = CHUNK_WINDOW_MS
    ooo_window_ms: int = DEFAULT_OOO_WINDOW_MS
    verify_segments_on_open: bool = True
    retention_ms: int = DEFAULT_RETENTION_MS
    retention_bytes: int = 0
    compact_ranges_ms: tuple[int, ...] = compactmod.DEFAULT_RANGES_MS
    compact_max_bytes: int = 256 << 20
    compact_step_seconds: float = 0.25
    compact_chunk_samples: int = COMPACT_CHUNK_SAMPLES
    compact_zstd: bool = False
    merge_fanin: int = 4
    merge_after_ms: int = MERGE_AFTER_MS
    max_exemplars: int = DEFAULT_CAPACITY

    def __post_init__(self) -> None:
        if self.wal_fsync not in walmod.FSYNC_MODES:
            raise ValueError(f"wal_fsync must be one of {walmod.FSYNC_MODES}")
        if self.wal_segment_bytes < 4096:
            raise ValueError("wal_segment_bytes must be at least 4096")
        if not 1 <= self.chunk_samples <= 65535 or not 1 <= self.compact_chunk_samples <= 65535:
            raise ValueError("chunk_samples and compact_chunk_samples must be in 1..65535")
        if self.chunk_window_ms < 0 or self.head_flush_samples < 1 or self.head_flush_age_ms < 0:
            raise ValueError("chunk_window_ms, head_flush_* must be positive")
        if not 0 <= self.seal_phase < 1:
            raise ValueError("seal_phase must be in [0, 1)")
        if self.merge_fanin < 0 or self.merge_fanin == 1 or self.merge_after_ms < 0:
            raise ValueError("merge_fanin must be 0 (off) or at least 2, merge_after_ms >= 0")
        if self.ooo_window_ms < 0 or self.retention_ms < 0 or self.retention_bytes < 0:
            raise ValueError("ooo_window_ms, retention_ms, retention_bytes must be >= 0")
        prev = self.chunk_window_ms or 1
        for r in self.compact_ranges_ms:
            if r <= 0 or r % prev:
                raise ValueError(
                    "compact_ranges_ms must ascend, each a multiple of the previous "
                    "and of chunk_window_ms"
                )
            prev = r


@dataclass(slots=True)
class AppendResult:
    """Verdicts of one append: accepted samples are durable in the WAL.

    accepted counts in-order and out-of-order samples; out_of_order is the
    part of them that went to the out-of-order head; too_old were refused.
    """

    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    too_old: int = 0
    out_of_order: int = 0
    new_series: int = 0
    # The shard's id of each series of the batch, and each sample's verdict
    # (Prepared.verdicts): not part of the IPC answer.
    series_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False)
    verdicts: np.ndarray | None = field(default=None, repr=False)

    def split(self, sizes: Sequence[int]) -> list[AppendResult]:
        """The results of the parts of a merged batch (their sample counts, in
        order), each counted from its own samples; new_series stays the
        whole batch's (a series new to the batch may be in several parts)."""
        if self.verdicts is None:  # every sample accepted in order
            return [AppendResult(accepted=n, new_series=self.new_series) for n in sizes]
        k = len(sizes)
        part = np.repeat(np.arange(k), sizes)
        counts = np.bincount(part * N_VERDICTS + self.verdicts, minlength=k * N_VERDICTS)
        return [
            AppendResult(
                accepted=int(c[V_ACCEPT] + c[V_OOO]),
                duplicates=int(c[V_DUPLICATE]),
                conflicts=int(c[V_CONFLICT]),
                too_old=int(c[V_OLDER]),
                out_of_order=int(c[V_OOO]),
                new_series=self.new_series,
            )
            for c in counts.reshape(k, N_VERDICTS).tolist()
        ]

    def rejections(self) -> dict[str, int]:
        """Refused samples by reason (exact duplicates are ignored, not refused).

        Keys are written into the router's 400 message ("3 older_than_ooo_window").
        """
        out = {}
        if self.too_old:
            out["older_than_ooo_window"] = self.too_old
        if self.conflicts:
            out["duplicate_timestamp_different_value"] = self.conflicts
        return out

    def to_meta(self) -> dict[str, Any]:
        """The IPC answer (docs/format/ipc.md): counts plus `rejected` by reason."""
        meta: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("series_ids", "verdicts")
        }
        meta["rejected"] = self.rejections()
        return meta


@dataclass(slots=True)
class ReplayStats:
    """What open() found and did."""

    series: int = 0
    series_from_file: int = 0
    segments: int = 0
    segments_corrupt: int = 0
    wal_segments: int = 0
    wal_records: int = 0
    wal_samples: int = 0
    samples_replayed: int = 0
    wal_segments_already_sealed: int = 0
    compaction_recovery: str | None = None
    samples_unknown_series: int = 0
    wal_bytes_dropped: int = 0
    wal_truncated_segment: int | None = None
    exemplars: int = 0  # read back from the exemplar log
    open_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _data_order(seg: Segment) -> tuple[int, int]:
    """The order of a shard's segments, and so of a read's sources: by newest
    sample, then seq. A read places each series' chunks source by source and
    sorts a series again only where a source's chunks start before the
    previous source's end. In seq order a compaction's output (a new seq,
    old data) came after the seals it is older than, and after the first
    compaction every series of a long read was sorted again: a 12-hour read
    of 2,925 series took 329 ms instead of 91."""
    return seg.maxt, seg.seq


def _folded(
    order: np.ndarray, keys: list[tuple[tuple[str, str], ...]],
    items: list[tuple[tuple[tuple[str, str], ...], int, int]],
) -> tuple[np.ndarray, list[tuple[tuple[str, str], ...]]]:
    """The order (ids, their pairs) with `items` inserted: (pairs, id,
    insertion point), sorted by pairs."""
    merged: list[tuple[tuple[str, str], ...]] = []
    prev = 0
    for key, _, a in items:
        merged += keys[prev:a]
        merged.append(key)
        prev = a
    merged += keys[prev:]
    return np.insert(order, [a for _, _, a in items], [sid for _, sid, _ in items]), merged


def _in_label_order(series: Sequence[Labels], new: np.ndarray) -> list[tuple[Labels, int]]:
    """(label set, position) of the batch positions `new`, in the order of
    their label sets (the metric name first, as `__name__` sorts before
    lower-case names): the order new series get their ids in. Each label set
    is read once: a batch's may be bytes decoded on every access
    (CanonicalLabels). Segments keep chunks in id order, so ids given in
    arrival order (a scrape's series are one target's, a write request's
    those of many targets) spread a metric's chunks over whole files, and a
    query of one metric touched pages all over them. A write request brings
    a fleet's series by the thousand (at start, when targets appear), so
    ordering each batch's clusters a metric's series into a few runs a
    file."""
    return sorted(((series[i], i) for i in new.tolist()), key=lambda e: e[0].pairs)


class ShardClosedError(Exception):
    """The shard is not open (open() not called, or closed)."""


@dataclass(slots=True)
class Seal:
    """A head being sealed: frozen (no more appends), the series index
    persisted and its segment `seq` written to `tmp` (off the loop,
    write_seal), then published (finish_seal); the WAL segments before
    `boundary` hold its samples and the SERIES records of its new series."""

    head: Head
    boundary: int
    seq: int
    t0: float
    index_persisted: bool = False
    tmp: Path | None = None


class Shard:
    """The storage engine of one hash-range shard."""

    def __init__(self, path: Path, config: ShardConfig | None = None) -> None:
        self.path = Path(path)
        self.config = config if config is not None else ShardConfig()
        cfg = self.config
        self.index = SeriesIndex()
        self.head = Head(cfg.chunk_samples, cfg.chunk_window_ms)
        self.wal = walmod.WAL(
            self.path / "wal", cfg.wal_segment_bytes, cfg.wal_fsync, cfg.wal_batch_interval_s
        )
        self.segments: list[Segment] = []  # in data order (_data_order)
        # Per-series [min, max] timestamp over segments + head: lets
        # select/label queries skip series without data in range.
        self._smin = np.empty(0, np.int64)
        self._smax = np.empty(0, np.int64)
        self._wal_series = 0  # series whose SERIES record is in the WAL or index file
        self._read_samples = 0  # segment samples reads planned since release_read_pages
        self._next_seq = 1
        self._seq_lock = threading.Lock()
        # Series ids in label order with their pairs, and rank[id] (see
        # label_rank); the series added since the order was last rebuilt,
        # sorted: (pairs, id, insertion point in the order).
        self._label_order: tuple[np.ndarray, list[tuple[tuple[str, str], ...]], np.ndarray] = (
            np.empty(0, np.int64), [], np.empty(0, np.float64)
        )
        self._unfolded: list[tuple[tuple[tuple[str, str], ...], int, int]] = []
        self._dataless = np.empty(0, np.int64)  # series to forget (_forget_dataless)
        self._head_since_ms: int | None = None
        self._first_head = True  # sealed early by config.seal_phase
        # The frozen head whose segment is being written (begin_seal).
        self.sealing: Seal | None = None
        self._job: compactmod.CompactionJob | None = None
        # Deleted ranges of series (delete_series), left out of every read.
        self.tombstones = Tombstones.empty()
        self.exemplars = ExemplarStore(cfg.max_exemplars)
        self._exemplar_log = ExemplarLog(self.path, cfg.wal_fsync)
        # Seqs of segment files holding no chunk of a deleted series and no
        # sample in a deleted range; which deletion they were checked after.
        self._no_deleted: set[int] = set()
        self._deletions = 0
        self._job_deletions = 0  # self._deletions when the job in progress was planned
        self._tombstones_checked: tuple[int, int] | None = None  # (_deletions, _next_seq) then
        self._open = False
        # Tests set this to raise between flush steps (see FLUSH_STEPS).
        self.fault_hook: Callable[[str], None] | None = None
        self.counters = {
            "samples_appended": 0,
            "samples_out_of_order": 0,
            "samples_duplicate": 0,
            "samples_rejected_too_old": 0,
            "samples_rejected_conflict": 0,
            "appends": 0,
            "flushes": 0,
            "segments_corrupt": 0,
            "compactions": 0,
            "merges": 0,
            "compaction_samples_in": 0,
            "compaction_samples_out": 0,
            "retention_segments_deleted": 0,
            "retention_samples_deleted": 0,
            "series_forgotten": 0,
            "series_deleted": 0,
            "series_ranges_deleted": 0,
            "purges": 0,
        }
        # Conflicting samples by producer ("job/instance" of their series).
        self.conflicts_by_producer: dict[str, int] = {}
        self.last_flush_seconds = 0.0
        self.replay_stats: ReplayStats | None = None

    @property
    def index_path(self) -> Path:
        return self.path / "series.idx"

    @property
    def segments_dir(self) -> Path:
        return self.path / "segments"

    # --- open / replay -------------------------------------------------------------

    def open(self) -> ReplayStats:
        """Load index and segments, replay the WAL, and get ready for appends."""
        t0 = time.monotonic()
        st = ReplayStats()
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        st.series_from_file = self.index.load(self.index_path)
        self.tombstones = Tombstones.load(self.path)
        if self.index.forgotten > max(REWRITE_MIN_FORGOTTEN, self.index.live):
            saved = self.index.rewrite(self.index_path)
            log.info("series index rewritten without %d forgotten series: %d bytes less",
                     self.index.forgotten, saved)
        st.compaction_recovery = compactmod.recover(self.path, self.segments_dir)
        self._load_segments(st)
        boundary = max((seg.wal_boundary for seg in self.segments), default=0)
        st.wal_segments_already_sealed = self.wal.truncate_before(boundary)
        self._replay_wal(st)
        st.exemplars = self._exemplar_log.replay(self.exemplars)
        self.wal.open_for_append()
        self._wal_series = len(self.index)
        self._grow_ranges(len(self.index))
        if self.config.retention_ms > 0 or self.config.retention_bytes > 0:
            self._find_dataless()  # what a deletion left unforgotten when the process stopped
        self.label_rank()  # sorted here, not by the first read after a restart
        heap.trim()  # the replay's temporaries, as after a seal
        st.series = len(self.index)
        st.open_seconds = round(time.monotonic() - t0, 6)
        self.replay_stats = st
        self._open = True
        log.info("shard %s opened: %s", self.path, st)
        return st

    def _load_segments(self, st: ReplayStats) -> None:
        max_seq = 0
        for p in sorted(self.segments_dir.iterdir()):
            if p.name.endswith(TMP_SUFFIX):
                log.warning("removing unfinished segment %s", p)
                p.unlink()
                continue
            if not p.name.endswith(SUFFIX):
                continue
            try:
                max_seq = max(max_seq, int(p.name[: -len(SUFFIX)]))
                seg = Segment(p, verify_data=self.config.verify_segments_on_open)
            except (SegmentCorruptError, ValueError) as e:
                self._move_aside(p, e, st)
                continue
            self.segments.append(seg)
            st.segments += 1
        corrupt = self.path / "corrupt"
        if corrupt.exists():
            for p in corrupt.iterdir():
                if p.name.endswith(SUFFIX) and p.name[: -len(SUFFIX)].isdigit():
                    max_seq = max(max_seq, int(p.name[: -len(SUFFIX)]))
        self._next_seq = max_seq + 1
        self.segments.sort(key=_data_order)
        for seg in self.segments:
            ids, maxt, bits = seg.series_last()
            self.head.set_sealed_last(ids, maxt, bits)
            ids, lo, hi = seg.series_ranges()
            self._note_ranges(ids, lo, hi)
            seg.unmap()

    def _move_aside(self, p: Path, err: Exception, st: ReplayStats) -> None:
        aside = self.path / "corrupt"
        aside.mkdir(exist_ok=True)
        log.error("segment %s is corrupt (%s); moving it to %s", p, err, aside)
        os.replace(p, aside / p.name)
        st.segments_corrupt += 1
        self.counters["segments_corrupt"] += 1

    def _replay_wal(self, st: ReplayStats) -> None:
        res = walmod.WALReplayResult()
        group: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        group_n = 0
        for rtype, payload in self.wal.replay(res):
            if rtype == walmod.REC_SERIES:
                for sid, h, labels in walmod.decode_series(payload, INTERNER):
                    self.index.register(sid, h, labels)
                continue
            ids, counts, ts, values = walmod.decode_samples(payload)
            st.wal_samples += len(ts)
            sids = np.repeat(ids.astype(np.int64), counts)
            keep = sids < len(self.index)
            if not keep.all():
                st.samples_unknown_series += int((~keep).sum())
                log.error("WAL samples for unknown series ids dropped")
            if self.index.forgotten:  # deleted (delete_series) before their WAL segment was
                keep[keep] = ~self.index.is_forgotten(sids[keep])
            if keep.all():
                group.append((sids, ts, values))  # views into the segment's bytes
            else:
                group.append((sids[keep], ts[keep], values[keep]))
            group_n += len(group[-1][0])
            if group_n >= _REPLAY_GROUP_SAMPLES:
                st.samples_replayed += self._apply_replay_group(group)
                group, group_n = [], 0
        st.samples_replayed += self._apply_replay_group(group)
        st.wal_segments = res.segments
        st.wal_records = res.records
        st.wal_bytes_dropped = res.bytes_dropped
        st.wal_truncated_segment = res.truncated_segment

    def _apply_replay_group(self, group: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> int:
        if not group:
            return 0
        sids = np.concatenate([g[0] for g in group])
        ts = np.concatenate([g[1] for g in group])
        vals = np.concatenate([g[2] for g in group])
        self._grow_ranges(len(self.index))
        p = self.head.prepare(sids, ts, vals, _REPLAY_WINDOW_MS, self._read_pieces)
        rejected = len(ts) - p.accepted
        if rejected:
            log.warning("WAL replay: %d samples already stored (duplicates)", rejected)
        self._commit(p)
        return p.accepted

    # --- ranges ----------------------------------------------------------------------

    def _grow_ranges(self, n: int) -> None:
        if n > len(self._smin):
            extra = max(n, 2 * len(self._smin), 64) - len(self._smin)
            self._smin = np.concatenate([self._smin, np.full(extra, INT64_MAX, np.int64)])
            self._smax = np.concatenate([self._smax, np.full(extra, INT64_MIN, np.int64)])

    def _note_ranges(self, ids: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self._grow_ranges(int(ids.max()) + 1)
        # ufunc.at: ids may repeat (several out-of-order samples of a series),
        # and a fancy assignment would keep only the last one's bound.
        np.minimum.at(self._smin, ids, lo)
        np.maximum.at(self._smax, ids, hi)

    # --- append ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise ShardClosedError(f"shard {self.path} is not open")

    def append(self, batch: WriteBatch) -> AppendResult:
        """Validate, log to the WAL, and apply a batch. See AppendResult."""
        self._check_open()
        index = self.index
        if batch.ids is None:
            ids = index.lookup(batch.series, batch.hashes)
        else:  # ids the caller already knows; look up only the rest
            ids = np.array(batch.ids, np.int64)
            if len(ids) and int(ids.max()) >= len(index):
                raise ValueError("batch names a series id this shard does not have")
            # An id learnt before its series was forgotten: looked up again
            # (the label set gets a new id).
            ids[index.is_forgotten(np.maximum(ids, 0)) & (ids >= 0)] = -1
            miss = np.flatnonzero(ids < 0)
            if len(miss):
                ids[miss] = index.lookup([batch.series[i] for i in miss.tolist()], batch.hashes[miss])
        new = np.flatnonzero(ids < 0)
        n_new = 0
        if len(new):
            added: dict[tuple[tuple[str, str], ...], int] = {}  # a label set twice in one batch
            for lb, i in _in_label_order(batch.series, new):
                sid = added.get(lb.pairs)
                if sid is None:
                    sid = added[lb.pairs] = index.add(lb, int(batch.hashes[i]))
                ids[i] = sid
            n_new = len(added)
        slots = ids[batch.series_idx] if batch.num_samples else np.empty(0, np.int64)
        self._grow_ranges(len(index))
        p = self.head.prepare(
            slots, batch.ts, batch.values, self.config.ooo_window_ms, self._read_pieces
        )
        parts = []
        if self._wal_series < len(index):
            entries = [
                (i, index.hash_of(i), index.labels[i]) for i in range(self._wal_series, len(index))
            ]
            parts.append(walmod.frame(walmod.REC_SERIES, walmod.encode_series(entries)))
        if p.accepted:
            parts.append(walmod.frame(walmod.REC_SAMPLES, walmod.encode_samples(*p.wal_columns())))
        if parts:
            self.wal.append(b"".join(parts))
        self._wal_series = len(index)
        self._grow_ranges(len(index))
        self._commit(p)
        c = self.counters
        c["appends"] += 1
        c["samples_appended"] += p.accepted
        c["samples_out_of_order"] += p.ooo_accepted
        c["samples_duplicate"] += p.duplicates
        c["samples_rejected_conflict"] += p.conflicts
        c["samples_rejected_too_old"] += p.too_old
        if p.conflicts:
            self._count_conflicts(p.conflict_ids)
        return AppendResult(
            p.accepted, p.duplicates, p.conflicts, p.too_old, p.ooo_accepted, n_new, ids, p.verdicts
        )

    def _count_conflicts(self, ids: np.ndarray) -> None:
        """Attribute conflicting samples to their producer (job/instance labels)."""
        uniq, n = np.unique(ids, return_counts=True)
        labels = self.index.labels
        by = self.conflicts_by_producer
        for sid, k in zip(uniq.tolist(), n.tolist()):
            lb = labels[sid]
            key = f"{lb.get('job') or ''}/{lb.get('instance') or ''}"
            if key not in by and len(by) >= _MAX_PRODUCERS:
                key = "(other)"
            by[key] = by.get(key, 0) + k

    def _commit(self, p: Prepared) -> None:
        if not p.accepted:
            return
        self.head.commit(p)
        if len(p.ts):
            ends = np.cumsum(p.run_counts)
            self._note_ranges(p.run_ids, p.ts[ends - p.run_counts], p.ts[ends - 1])
        if len(p.ooo_ts):
            self._note_ranges(p.ooo_slots, p.ooo_ts, p.ooo_ts)

    def _read_pieces(
        self, ids: np.ndarray, mint: int, maxt: int
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Raw (series, ts, values) pieces of `ids` (sorted) from every source, oldest first."""
        return self.plan_read(ids, mint, maxt).decode()

    def plan_read(self, ids: np.ndarray, mint: int, maxt: int) -> PendingRead:
        """_read_pieces as of now, to decode later (on any thread)."""
        want = np.zeros(max(len(self.index), len(self._smin), 1), bool)
        want[ids] = True
        pending = PendingRead(self.tombstones if len(self.tombstones) else None)
        for seg in self.segments:
            sel = seg.overlapping(ids, want, mint, maxt)
            if sel is not None:
                n = int(seg.chunks.counts[sel].sum())
                pending.chunks(seg.locate, sel, n)
                self._read_samples += n
        for head in self.heads():
            head.plan_read(ids, mint, maxt, pending, want)
        return pending

    def release_read_pages(self) -> bool:
        """Unmap the segment pages reads mapped (Segment.release_pages) once
        they have planned RELEASE_READ_SAMPLES samples since the last time;
        for when no read is in flight (one still decoding maps its pages
        back). Returns whether it did."""
        if self._read_samples < RELEASE_READ_SAMPLES:
            return False
        self._read_samples = 0
        for seg in self.segments:
            seg.release_pages()
        return True

    def unmap_segments(self) -> None:
        """Unmap every segment page reads have mapped, footers too
        (Segment.unmap): for a worker that has answered no query for a
        while."""
        for seg in self.segments:
            seg.unmap()

    def heads(self) -> list[Head]:
        """The heads with data not in a segment, oldest first."""
        return [self.head] if self.sealing is None else [self.sealing.head, self.head]

    # --- queries ---------------------------------------------------------------------

    def _ids_in_range(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> np.ndarray:
        ids = self.index.select(matchers)
        n = len(ids)
        if n and n == len(self.index) and n <= len(self._smin):
            # Every series (the label APIs without match[]): compare the
            # ranges in place, and usually keep them all, without gathers.
            inr = (self._smin[:n] <= maxt) & (self._smax[:n] >= mint)
            return ids if inr.all() else ids[inr]
        if n:
            ids = ids[(self._smin[ids] <= maxt) & (self._smax[ids] >= mint)]
        return ids

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> SeriesSet:
        """Series matching all matchers with their samples in [mint, maxt], sorted by labels."""
        self._check_open()
        ids = self._ids_in_range(matchers, mint, maxt)
        if len(ids) == 0:
            return SeriesSet.of([])
        pending = self.plan_read(ids, mint, maxt)
        return pending.series(ids, self.label_rank()[ids], self.index.labels, mint, maxt, self.index)

    def label_rank(self, fold: bool = False) -> np.ndarray:
        """rank[id]: ids sorted by rank are in label order (float64; a
        forgotten id's rank is never read).

        The order is kept as an array of ids with their label sets' pairs
        beside it in a list (bisected in C), not re-sorted per read: a full
        sort of 100k label sets took ~0.4 s. Series added since it was last
        rebuilt get fractional ranks between their neighbours in it, so a
        read after new series costs a bisect per new series and a copy of
        the rank array, not a rebuild of the order (under churn, 275,000
        live series and 1 M ids a rebuild took ~15 ms, at every read after
        new series); the order takes them in once they number UNFOLDED_MAX or
        1/64 of it, or when `fold` asks (after series were forgotten: the
        rebuilt order leaves them out).
        """
        order, keys, rank = self._label_order
        n = len(self.index)
        if len(rank) == n and not fold:
            return rank
        labels = self.index.labels
        new = sorted((lb.pairs, sid) for sid in range(len(rank), n) if (lb := labels[sid]) is not None)
        unfolded = list(heapq.merge(self._unfolded, [(key, sid, bisect_right(keys, key)) for key, sid in new]))
        if fold or len(unfolded) > max(UNFOLDED_MAX, len(order) // 64):
            order, keys = _folded(order, keys, unfolded)
            keep = ~self.index.is_forgotten(order)
            if not keep.all():  # series forgotten since the order took them in
                order = order[keep]
                keys = [k for k, kept in zip(keys, keep.tolist()) if kept]
            rank = np.empty(n, np.float64)
            rank[order] = np.arange(len(order), dtype=np.float64)
            unfolded = []
        else:
            rank = np.concatenate((rank, np.empty(n - len(rank), np.float64)))
            if unfolded:
                ids = np.fromiter((sid for _, sid, _ in unfolded), np.int64, len(unfolded))
                at = np.fromiter((a for _, _, a in unfolded), np.float64, len(unfolded))
                # Between the ranks at - 1 and at of the order's neighbours,
                # in their own order where several share a place.
                rank[ids] = at - 1 + np.arange(1, len(ids) + 1) / (len(ids) + 1)
        self._unfolded = unfolded
        self._label_order = (order, keys, rank)  # one assignment: readers on other threads
        return rank

    def label_names(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> list[str]:
        """Label names of series matching `matchers` (all if empty) with data in range.

        "Data in range" is judged from each series' [first, last] timestamp,
        like Prometheus' block-level check: a gap covering the whole range
        still counts.
        """
        self._check_open()
        ids = self._ids_in_range(matchers, mint, maxt)
        return self.index.label_names(ids)

    def label_values(
        self, name: str, matchers: Sequence[Matcher], mint: int, maxt: int
    ) -> list[str]:
        """Values of label `name` among series matching `matchers` with data in range."""
        self._check_open()
        ids = self._ids_in_range(matchers, mint, maxt)
        return self.index.label_values(name, ids)

    # --- sealing -------------------------------------------------------------------------

    def _step(self, name: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(name)

    def flush(self) -> Path | None:
        """Seal the whole head into a new segment and drop the WAL it made redundant.

        A seal begun off the loop (begin_seal) is finished first. Returns the
        new segment's path (None if the head was empty).
        """
        self._check_open()
        if self.sealing is not None:
            self.finish_seal(self.sealing)
        return self.finish_seal(self.begin_seal())

    def seal_due(self, now_ms: int) -> bool:
        """Whether the head should be sealed now: it holds head_flush_samples
        samples or has held data for head_flush_age_ms (and no seal is on)."""
        if self.head.num_samples == 0:
            self._head_since_ms = None
            return False
        if self._head_since_ms is None:
            self._head_since_ms = now_ms
        cfg = self.config
        scale = 1.0 - cfg.seal_phase if self._first_head else 1.0
        return self.sealing is None and (
            self.head.num_samples >= cfg.head_flush_samples * scale
            or now_ms - self._head_since_ms >= cfg.head_flush_age_ms * scale
        )

    def compaction_waits(self) -> bool:
        """Whether compaction steps should wait for the head's next seal: it
        holds more than COMPACT_HEAD_SHARE of head_flush_samples.

        A worker's memory peaks as its head fills; a step's temporaries (a
        series group decoded and re-encoded, the inputs' pages mapped) on
        top of that raised the peak. `long` ingested, one worker: the
        worker's anonymous memory peaked at 95-100 MiB in the two seal
        cycles a day's compaction ran through, 80-88 MiB in the others;
        with the steps held to the first half of each cycle, 80-88 in all.
        A head that fills slowly (time-based seals) stays under the share,
        and a job waits at most for one seal."""
        return self.head.num_samples > COMPACT_HEAD_SHARE * self.config.head_flush_samples

    def begin_seal(self) -> Seal:
        """Freeze the head for sealing and go on with an empty one.

        Appends and reads continue meanwhile: the frozen head gets no more
        samples and is read next to the new one until finish_seal publishes
        its segment. The WAL is rotated here, so the segments before the
        boundary hold exactly the frozen head (they are replayed if the seal
        never finishes)."""
        self._check_open()
        if self.sealing is not None:
            raise RuntimeError("a seal is already in progress")
        t0 = time.monotonic()
        self._step("rotate_wal")
        boundary = self.wal.rotate()
        frozen = self.head
        self.head = frozen.successor()
        self._head_since_ms = None
        self._first_head = False
        seq = self._alloc_seq() if frozen.num_samples else self._next_seq
        self.sealing = Seal(frozen, boundary, seq, t0)
        return self.sealing

    def write_seal(self, seal: Seal) -> None:
        """Persist the series index and write the frozen head's segment file
        (not yet visible). Touches only the frozen head and the index's
        series so far (an append-only list): may run on another thread while
        the loop appends. The index goes first, and every seal, even of an
        empty head: the WAL segments finish_seal drops hold the SERIES
        records of series it does not yet have. On the loop, persisting the
        200,000 new series of a worker at `medium --series 400000` stalled
        writes and reads for ~0.5 s."""
        if not seal.index_persisted:
            self._step("persist_index")
            self.index.persist(self.index_path)
            seal.index_persisted = True
        if seal.head.num_samples and seal.tmp is None:
            self._step("write_segment")
            seal.tmp = write_segment_tmp(self.segments_dir, seal.seq, seal.head.seal_blocks(), seal.boundary)

    def finish_seal(self, seal: Seal) -> Path | None:
        """Publish the seal's segment (writing it first if need be), drop the
        frozen head and the WAL it made redundant. Returns the segment's path."""
        if self.sealing is not seal:
            return None  # finished already
        self.write_seal(seal)
        final = seg = None
        if seal.tmp is not None:
            self._step("publish_segment")
            final = publish_segment(seal.tmp)
            seg = Segment(final, verify_data=False)
            self.segments.append(seg)
            self.segments.sort(key=_data_order)
        self._step("reset_head")
        seal.head.reset()
        self.sealing = None
        self._step("truncate_wal")
        self.wal.truncate_before(seal.boundary)
        heap.trim()  # the seal's temporaries, freed amid the heap (heap.py)
        self.counters["flushes"] += 1
        self.last_flush_seconds = time.monotonic() - seal.t0
        if seg is not None:
            log.info(
                "sealed %s: %d chunks, %d samples in %.3fs",
                final, len(seg.chunks), seg.samples, self.last_flush_seconds,
            )
        return final

    def flush_tick(self, now: int | None = None) -> bool:
        """Housekeeping, called about once a second with wall-clock ms.

        fsyncs the WAL in batch mode, seals the head when seal_due, then
        runs a compaction step and applies retention, all on the caller's
        thread (a worker's Sealer does the same with the seal and the
        compaction step off its loop). Returns whether it sealed.
        """
        self._check_open()
        now_ms = int(time.time() * 1000) if now is None else int(now)
        sealed = self.seal_due(now_ms)
        if sealed:
            self.flush()
        self.sync_wal()
        self.compact_step(self.config.compact_step_seconds)
        self.apply_retention()
        return sealed

    def sync_wal(self) -> bool:
        """Batch mode: fsync the WAL (and the exemplar log) if it is due.
        Returns whether it did."""
        self._check_open()
        synced = self.wal.maybe_sync()
        if synced:
            self._exemplar_log.sync()
        return synced

    # --- exemplars -------------------------------------------------------------------

    def append_exemplars(
        self, series: Sequence[Labels], series_idx: np.ndarray, labels: Sequence[Labels], ts: np.ndarray,
        values: np.ndarray, hashes: np.ndarray | None = None, sync: bool = True,
    ) -> AddResult:
        """Hold exemplars of known series (exemplars.py's rules): exemplar
        i belongs to series[series_idx[i]], whose identity hash is
        hashes[series_idx[i]] (computed if not given). Logged before this
        returns; with sync False, durable once commit_exemplars() returns
        (the append queue's group commit)."""
        self._check_open()
        if hashes is None:
            hashes = np.array([lb.identity_hash() for lb in series], np.uint64)
        ids = self.index.lookup(series, hashes)[series_idx].tolist()
        ts_l, values_l = ts.tolist(), values.tolist()
        res, stored = self.exemplars.add(ids, labels, ts_l, values_l)
        if stored:
            self._exemplar_log.append(self.exemplars, [ids[i] for i in stored], [labels[i] for i in stored],
                                      [ts_l[i] for i in stored], [values_l[i] for i in stored], sync)
        return res

    def commit_exemplars(self) -> None:
        """Make the exemplars logged with sync=False durable as the fsync policy asks."""
        self._exemplar_log.commit()

    def select_exemplars(
        self, matcher_sets: Sequence[Sequence[Matcher]], mint: int, maxt: int
    ) -> list[tuple[Labels, list[Exemplar]]]:
        """(series labels, exemplars in [mint, maxt]) of the series any
        matcher set selects, as Prometheus' exemplar Select."""
        self._check_open()
        ids = np.unique(np.concatenate([self.index.select(ms) for ms in matcher_sets] or [np.empty(0, np.int64)]))
        ids = np.intersect1d(ids, self.exemplars.series_ids(), assume_unique=True)  # not a loop over every id
        labels = self.index.labels
        return [(labels[sid], got) for sid, got in self.exemplars.select(ids.tolist(), mint, maxt)]

    # --- compaction and retention ----------------------------------------------------

    def _newest_ts(self) -> int:
        newest = max((seg.maxt for seg in self.segments), default=INT64_MIN)
        for head in self.heads():
            if head.num_samples:
                newest = max(newest, head.max_time)
        return newest

    def compaction_watermark(self) -> int:
        """Partitions ending at or before this are closed: no new data expected.

        The newest sample minus the out-of-order window (and at least one
        chunk window), and never past the oldest sample still in the head.
        """
        cfg = self.config
        wm = self._newest_ts() - max(cfg.ooo_window_ms, cfg.chunk_window_ms)
        for head in self.heads():
            if head.num_samples:
                wm = min(wm, head.min_time)
        return wm

    def compact_step(self, budget_s: float | None = None) -> compactmod.CompactionResult | None:
        """Advance compaction: start the next job if none is running, and work
        on it for about budget_s seconds (None: finish it). Returns the result
        when a job completes."""
        job = self.compaction_job()
        if job is None:
            return None
        res = self.advance_compaction(job, budget_s)
        if res is not None:
            self.finish_compaction(job, res)
        return res

    def compaction_job(self) -> compactmod.CompactionJob | None:
        """The compaction job in progress, or the next one planned now."""
        self._check_open()
        cfg = self.config
        if self._job is None:
            if not cfg.compact_ranges_ms or len(self.segments) == 0:
                return None
            watermark = self.compaction_watermark()
            infos = [seg.info() for seg in self.segments]
            smallest = min(cfg.compact_ranges_ms)
            plan = compactmod.plan_compaction(
                infos, cfg.compact_ranges_ms, watermark, cfg.compact_max_bytes
            ) or compactmod.plan_merge(
                infos, smallest, watermark, self._newest_ts() - cfg.merge_after_ms,
                cfg.merge_fanin, cfg.compact_max_bytes,
            )
            if plan is None and (self.index.forgotten or len(self.tombstones)):
                plan = self._plan_purge()
            if plan is None:
                return None
            self._job_deletions = self._deletions
            self._job = compactmod.CompactionJob(
                plan, self.segments, self.path, self.segments_dir, self._alloc_seq,
                cfg.compact_chunk_samples, self._step,
                open_from=watermark // smallest * smallest,
                open_chunking=(cfg.chunk_samples, cfg.chunk_window_ms),
                compress=cfg.compact_zstd,
                dropped=self.index.is_forgotten,
                hidden=self.tombstones,
            )
            self._job_seconds = 0.0
        return self._job

    def _plan_purge(self) -> compactmod.CompactionPlan | None:
        """A job rewriting the oldest segment file that holds chunks of
        deleted series or chunks overlapping a deleted range (delete_series:
        a file compaction will not take again, a closed week's, would keep
        them until retention), if any. Each file is checked once after each
        deletion, a pass over its chunks' columns; once none is left, the
        tombstones are dropped that the heads do not need either."""
        hidden = self.tombstones
        for seg in self.segments:
            if seg.seq in self._no_deleted:
                continue
            c = seg.chunks
            if self.index.is_forgotten(c.series).any() or hidden.overlaps(c.series, c.mint, c.maxt)[0].any():
                return compactmod.plan_purge(seg.info(), self.config.compact_ranges_ms)
            self._no_deleted.add(seg.seq)
        self._drop_spent_tombstones()
        return None

    def _drop_spent_tombstones(self) -> None:
        """Drop the tombstones no sample needs: no segment file holds one in
        their range (_plan_purge checked), nor does any head, or their
        series is forgotten. Checked again after each deletion and each new
        file (a seal moves head samples into one). None while segment files
        are set aside as corrupt (_move_aside): an operator may put one
        back, with deleted samples in it."""
        hidden = self.tombstones
        state = (self._deletions, self._next_seq)
        if not len(hidden) or state == self._tombstones_checked or self._corrupt_files():
            return
        self._tombstones_checked = state
        needed = np.zeros(len(hidden), bool)
        for head in self.heads():
            if head.num_samples:
                needed |= hidden.overlaps(*head.series_time_ranges())[1]
        needed &= ~self.index.is_forgotten(hidden.ids)
        if needed.all():
            return
        self.tombstones = hidden.only(needed)
        self.tombstones.save(self.path)
        log.info("dropped %d tombstones: no file or head holds their samples (%d left)",
                 len(hidden) - len(self.tombstones), len(self.tombstones))

    def advance_compaction(
        self, job: compactmod.CompactionJob, budget_s: float | None
    ) -> compactmod.CompactionResult | None:
        """Work on `job` for about budget_s seconds (None: to its end); the
        result once it is published (finish_compaction must then follow).
        Touches only the job (and allocates segment seqs): may run on
        another thread while the shard serves, provided nothing else
        compacts or applies retention meanwhile."""
        t0 = time.monotonic()
        try:
            res = job.advance(None if budget_s is None else t0 + budget_s)
        except BaseException:
            self._job = None
            raise
        self._job_seconds += time.monotonic() - t0
        return res

    def finish_compaction(self, job: compactmod.CompactionJob, res: compactmod.CompactionResult) -> None:
        """Swap a finished job's inputs for its outputs."""
        self._job = None
        gone = set(res.inputs)
        self.segments = [seg for seg in self.segments if seg.seq not in gone]
        self.segments.extend(Segment(p, verify_data=False) for p in res.outputs)
        self.segments.sort(key=_data_order)
        if job.hidden is self.tombstones and self._job_deletions == self._deletions:
            # Written without every chunk of a deleted series and every
            # sample in a deleted range: nothing for _plan_purge to check.
            self._no_deleted.update(int(p.name[: -len(SUFFIX)]) for p in res.outputs)
        if job.hidden is not None and len(job.hidden) and res.samples_out < res.samples_in:
            # Samples were left out: the series' time ranges may have shrunk,
            # and a series whose every sample was in deleted ranges is
            # forgotten as retention forgets one (_forget_dataless).
            self._rebuild_ranges()
            self._find_dataless()
        heap.trim()  # the job's temporaries, as after a seal
        c = self.counters
        c["purges" if job.plan.purge else "merges" if job.plan.level else "compactions"] += 1
        c["compaction_samples_in"] += res.samples_in
        c["compaction_samples_out"] += res.samples_out
        log.info(
            "%s %d segment(s) (%d bytes, %d samples) into %d (%d bytes, %d samples), "
            "%s, in %.3fs of work",
            "rewrote without deleted data" if job.plan.purge else "merged" if job.plan.level else "compacted",
            len(res.inputs), res.bytes_in, res.samples_in, len(res.outputs), res.bytes_out, res.samples_out,
            f"level {job.plan.level}" if job.plan.level else f"range {job.plan.range_ms} ms", self._job_seconds,
        )

    def _alloc_seq(self) -> int:
        """A new segment seq (seals on the loop, compaction maybe on a thread)."""
        with self._seq_lock:
            seq = self._next_seq
            self._next_seq += 1
            return seq

    def compact_all(self, max_jobs: int = 10_000) -> int:
        """Run compaction jobs until none is left (tests, benchmarks). Returns jobs run."""
        n = 0
        if self._job is not None and self.compact_step() is not None:
            n += 1
        while n < max_jobs and self.compact_step() is not None:
            n += 1
        return n

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete segment files past the time or size limit. Returns how many.

        The time limit is measured from the newest sample, but never from
        later than now_ms (wall-clock ms; None reads the clock): a sample
        from the future must not delete data within the retention period of
        the real time (retention.py). flush_tick() and Sealer.tick() do not
        pass their `now` here: tests drive those with a seal-age clock that
        has nothing to do with their samples' timestamps.
        """
        self._check_open()
        cfg = self.config
        if not self.segments or (cfg.retention_ms <= 0 and cfg.retention_bytes <= 0):
            self._forget_dataless()  # what deleted ranges left without data (finish_compaction)
            return 0
        other = 0
        if cfg.retention_bytes > 0:
            other = self.wal.size_bytes() + (
                self.index_path.stat().st_size if self.index_path.exists() else 0
            )
        infos: list[SegmentInfo] = [seg.info() for seg in self.segments]
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        dels = plan_retention(
            infos, self._newest_ts(), cfg.retention_ms, cfg.retention_bytes, other, now_ms
        )
        if not dels:
            self._forget_dataless()  # what an earlier deletion left to forget
            return 0
        gone = {d.seq for d in dels}
        if self._job is not None and gone & self._job.input_seqs:
            self._job.abort()
            self._job = None
        for seg in self.segments:
            if seg.seq in gone:
                seg.path.unlink(missing_ok=True)
        walmod.fsync_dir(self.segments_dir)
        self.segments = [seg for seg in self.segments if seg.seq not in gone]
        c = self.counters
        c["retention_segments_deleted"] += len(dels)
        c["retention_samples_deleted"] += sum(d.samples for d in dels)
        for d in dels:
            log.info("retention (%s): deleted segment %08d (%d samples)", d.reason, d.seq, d.samples)
        self._rebuild_ranges()
        self._find_dataless()
        self._forget_dataless()
        return len(dels)

    def _find_dataless(self) -> None:
        """The series to forget: left without a sample, after churn most
        series ever seen. Only those already in the index file (their SERIES
        record precedes the FORGOTTEN one); one written since but with no
        sample (all refused) goes after a later deletion. None while segment
        files are set aside as corrupt (_move_aside): their series may have
        data there, if an operator puts a file back."""
        if self._corrupt_files():
            self._dataless = np.empty(0, np.int64)
            return
        n = min(self.index.persisted, len(self._smin))
        dataless = np.flatnonzero(self._smin[:n] == INT64_MAX)
        self._dataless = dataless[~self.index.is_forgotten(dataless)]

    def _corrupt_files(self) -> bool:
        """Whether segment files are set aside as corrupt (_move_aside)."""
        return any((self.path / "corrupt").glob("*" + SUFFIX))

    def _forget_dataless(self) -> None:
        """Forget (index.py) up to FORGET_BATCH of the series the last
        deletion left without data, the rest at the next calls: ~2 us a
        series on the loop. One written again meanwhile is kept."""
        index = self.index
        dataless, self._dataless = self._dataless[:FORGET_BATCH], self._dataless[FORGET_BATCH:]
        dataless = dataless[(self._smin[dataless] == INT64_MAX) & ~index.is_forgotten(dataless)]
        if not len(dataless):
            return
        index.persist_forgotten(self.index_path, dataless)
        index.forget(dataless)
        self.label_rank(fold=True)  # the order without them
        self.counters["series_forgotten"] += len(dataless)
        log.info("forgot %d series without data left (%d remain)", len(dataless), index.live)

    def delete_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> int:
        """Delete the samples in [mint, maxt] of every series the matchers
        select, durably before this returns. A series with no sample outside
        the range is deleted whole: forgotten (index.py), so no read or
        label API finds it again and a label set written again is a new
        series; its samples still in the head or in segment files are left
        out of reads, of WAL replay and of compaction. Of any other series
        the range is recorded as a tombstone (tombstones.py): reads leave
        out its samples in the range, clamped to the series' time range,
        also ones written there later, until compaction has removed them from
        every file and the head holds none (_plan_purge). Returns how many series had samples deleted or were
        deleted whole."""
        self._check_open()
        if mint > maxt:  # an empty range, as Prometheus takes it
            return 0
        index = self.index
        ids = index.select(matchers)
        self._grow_ranges(len(index))
        smin, smax = self._smin[ids], self._smax[ids]
        whole = (smin >= mint) & (smax <= maxt)  # every sample (if any) in the range
        cut = ~whole & (smin <= maxt) & (smax >= mint)
        part, gone = ids[cut], ids[whole]
        if not len(part) and not len(gone):
            return 0
        if len(part):
            # Clamped to the series' data, as Prometheus clamps a block's:
            # samples written later past its newest are not hidden.
            lo, hi = np.maximum(smin[cut], mint), np.minimum(smax[cut], maxt)
            self.tombstones = self.tombstones.add(part, lo, hi)
            self.tombstones.save(self.path)
            self.counters["series_ranges_deleted"] += len(part)
        if len(gone):
            index.persist(self.index_path)  # their SERIES records precede the FORGOTTEN one
            index.persist_forgotten(self.index_path, gone)
            index.forget(gone)
            self.label_rank(fold=True)  # the order without them
            self.counters["series_deleted"] += len(gone)
        self._deletions += 1
        self._no_deleted.clear()  # compaction rewrites the files that hold them (_plan_purge)
        log.info("deleted %d series whole and [%d, %d] of %d (%d remain)", len(gone), mint, maxt, len(part),
                 index.live)
        return len(part) + len(gone)

    def _rebuild_ranges(self) -> None:
        """Recompute per-series [min, max] ts from what is left (after retention)."""
        self._smin = np.full(len(self._smin), INT64_MAX, np.int64)
        self._smax = np.full(len(self._smax), INT64_MIN, np.int64)
        for seg in self.segments:
            self._note_ranges(*seg.series_ranges())
        for head in self.heads():
            if head.num_samples:
                self._note_ranges(*head.series_time_ranges())

    def close(self) -> None:
        """fsync and close the WAL (the head is replayed on the next open)."""
        if not self._open:
            return
        if self._job is not None:
            self._job.abort()
            self._job = None
        self.wal.sync()
        self.wal.close()
        self._exemplar_log.sync()
        self._exemplar_log.close()
        self._open = False

    # --- stats ---------------------------------------------------------------------------

    def snapshot(self, dest: Path) -> None:
        """Make dest a shard directory holding what this shard's segments
        hold now: their files hard-linked (segments never change once
        published) and the series index copied (it is appended to), no WAL.
        The caller keeps seals and compaction steps from running meanwhile
        (Sealer.snapshot)."""
        self._check_open()
        segments = dest / self.segments_dir.name
        segments.mkdir(parents=True)
        for seg in self.segments:
            os.link(seg.path, segments / seg.path.name)
        self.tombstones.save(dest)
        if self.index_path.exists():
            copy = dest / self.index_path.name
            shutil.copyfile(self.index_path, copy)
            with open(copy, "rb+") as f:
                os.fsync(f.fileno())
        walmod.fsync_dir(segments)
        walmod.fsync_dir(dest)

    def stats(self) -> dict[str, Any]:
        """Counters and sizes, JSON-friendly, named by what they count."""
        seg_bytes = sum(s.size for s in self.segments)
        wal_bytes = self.wal.size_bytes() if self.wal.dir.exists() else 0
        idx_bytes = self.index_path.stat().st_size if self.index_path.exists() else 0
        seg_samples = sum(s.samples for s in self.segments)
        seg_chunks = sum(len(s.chunks) for s in self.segments)
        heads = self.heads()
        head_samples = sum(h.num_samples for h in heads)
        head_chunks = sum(h.num_chunks for h in heads)
        c = self.counters
        return {
            "series": self.index.live,
            "series_hash_collisions": self.index.hash_collisions,
            "samples": seg_samples + head_samples,
            "samples_appended": c["samples_appended"],
            "samples_out_of_order": c["samples_out_of_order"],
            "samples_rejected": {
                "older_than_ooo_window": c["samples_rejected_too_old"],
                "duplicate_timestamp_different_value": c["samples_rejected_conflict"],
            },
            "samples_duplicate": c["samples_duplicate"],
            "samples_conflict": c["samples_rejected_conflict"],
            "conflicts_by_producer": dict(self.conflicts_by_producer),
            "appends": c["appends"],
            "head_samples": head_samples,
            "head_ooo_samples": sum(h.ooo_samples for h in heads),
            "head_chunks": head_chunks,
            "chunks": seg_chunks + head_chunks,
            "segments": len(self.segments),
            "segment_samples": seg_samples,
            "segment_chunks": seg_chunks,
            "segments_corrupt": c["segments_corrupt"],
            "flushes": c["flushes"],
            "last_flush_seconds": round(self.last_flush_seconds, 6),
            "compactions": c["compactions"],
            "merges": c["merges"],
            "compaction_in_progress": self._job is not None,
            "compaction_samples_in": c["compaction_samples_in"],
            "compaction_samples_out": c["compaction_samples_out"],
            "retention_segments_deleted": c["retention_segments_deleted"],
            "retention_samples_deleted": c["retention_samples_deleted"],
            "series_forgotten": c["series_forgotten"],
            "series_deleted": c["series_deleted"],
            "series_ranges_deleted": c["series_ranges_deleted"],
            "tombstones": len(self.tombstones),
            "exemplars": len(self.exemplars),
            "purges": c["purges"],
            "segment_bytes": seg_bytes,
            "index_bytes": idx_bytes,
            "wal_bytes": wal_bytes,
            "wal_segments": len(self.wal.segment_numbers()),
            "wal_fsyncs": self.wal.fsyncs,
            "bytes_on_disk": seg_bytes + wal_bytes + idx_bytes,
            "bytes_per_sample_sealed": round(seg_bytes / seg_samples, 4) if seg_samples else None,
        }
