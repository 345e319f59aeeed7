"""Retention: delete whole segment files that are too old or over the size budget.

Files, never samples: a segment is deleted when its newest sample is older
than "now" minus `retention_ms` (so after compaction into weekly files, data
may outlive the retention by up to a week, like Prometheus' block-granular
retention), and, with a size budget, the oldest files go first until
segments + WAL + index fit. Deleting a file is atomic, so retention needs no
crash protocol.

"Now" is the newest sample the shard holds, so a backfill of old data is not
deleted the moment it is sealed (Prometheus measures from its head the same
way), but never later than the wall clock: one acknowledged sample from the
future (a sender whose clock runs a year ahead) would otherwise move "now"
with it and delete every file within the retention period of the real time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from athens.shards.segment import SegmentInfo

DAY_MS = 24 * 3600 * 1000
DEFAULT_RETENTION_MS = 90 * DAY_MS


@dataclass(frozen=True, slots=True)
class Deletion:
    seq: int
    reason: str  # "time" or "size"
    samples: int
    size: int


def plan_retention(
    infos: Sequence[SegmentInfo],
    newest_ts: int,
    retention_ms: int,
    retention_bytes: int,
    other_bytes: int,
    now_ms: int | None = None,
) -> list[Deletion]:
    """Segments to delete, oldest first.

    The time limit is measured from min(newest_ts, now_ms) (now_ms: the wall
    clock in ms; None measures from newest_ts alone). retention_ms <= 0
    disables the time limit, retention_bytes <= 0 the size limit;
    other_bytes (WAL + index) counts against the size budget but is never
    deleted here.
    """
    out: list[Deletion] = []
    left = sorted(infos, key=lambda i: (i.maxt, i.seq))
    if retention_ms > 0:
        ref = int(newest_ts) if now_ms is None else min(int(newest_ts), int(now_ms))
        cutoff = ref - retention_ms  # Python ints: no int64 wrap-around
        keep = []
        for i in left:
            if i.maxt < cutoff:
                out.append(Deletion(i.seq, "time", i.samples, i.size))
            else:
                keep.append(i)
        left = keep
    if retention_bytes > 0:
        total = other_bytes + sum(i.size for i in left)
        for i in left:
            if total <= retention_bytes:
                break
            out.append(Deletion(i.seq, "size", i.samples, i.size))
            total -= i.size
    return out
