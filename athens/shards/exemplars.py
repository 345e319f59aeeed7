"""A worker's exemplars: the newest `capacity` of them, kept as Prometheus'
circular exemplar storage keeps them, and logged so they survive a crash.

Rules (Prometheus' tsdb/exemplar.go): an exemplar whose label names and
values together pass MAX_LABEL_RUNES is refused; one equal to its series'
newest (labels, timestamp, value) is a duplicate and adds nothing (a
retried request); one not newer than its series' newest is out of order and
refused. Once `capacity` are held, each new one pushes out the oldest of
all series.

Durability: every batch that adds something is appended to the shard's
`exemplars` log (WAL record framing, docs/format/wal.md; one EXEMPLARS
record a batch: u32 n, then n int64 series ids, n int64 timestamps, n
float64 values, then n label sets as the WAL encodes labels) before the
worker answers, with the WAL's fsync policy (the append queue's group
commit logs the batches of a round, then fsyncs once), and replayed at
open (a torn tail is cut off). When the log holds more than twice the capacity, it is
rewritten with what is held (temporary file, fsync, rename).
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from athens.model.exemplars import MAX_LABEL_RUNES
from athens.model.labels import Labels
from athens.shards import wal as walmod

LOG_NAME = "exemplars"
REC_EXEMPLARS = 4
_U32 = struct.Struct("<I")
# Prometheus' default --storage.tsdb.max-exemplars (exemplar-storage on).
DEFAULT_CAPACITY = 100_000

Exemplar = tuple[Labels, int, float]  # labels, timestamp ms, value


@dataclass(slots=True)
class AddResult:
    """What add() did with a batch: counts per outcome."""

    stored: int = 0
    duplicate: int = 0
    out_of_order: int = 0
    labels_too_long: int = 0
    unknown_series: int = 0
    storage_off: int = 0  # capacity 0

    @property
    def written(self) -> int:
        """Exemplars now held as sent: stored, or already held (duplicates)."""
        return self.stored + self.duplicate

    def rejected(self) -> dict[str, int]:
        out = {"out_of_order": self.out_of_order, "labels_too_long": self.labels_too_long,
               "unknown_series": self.unknown_series, "storage_off": self.storage_off}
        return {k: v for k, v in out.items() if v}


@dataclass(slots=True)
class ExemplarStore:
    """Exemplars by series id, each series' oldest first, at most `capacity` in all."""

    capacity: int = DEFAULT_CAPACITY
    _series: dict[int, deque[Exemplar]] = field(default_factory=dict)
    _order: deque[int] = field(default_factory=deque)  # the series of every held exemplar, oldest first

    def __len__(self) -> int:
        return len(self._order)

    def add(
        self, ids: Iterable[int], labels: Iterable[Labels], ts: Iterable[int], values: Iterable[float]
    ) -> tuple[AddResult, list[int]]:
        """Add exemplars (id -1: series unknown here); returns the outcome
        and the positions of the ones stored."""
        res = AddResult()
        stored = []
        for i, (sid, lb, t, v) in enumerate(zip(ids, labels, ts, values)):
            if sid < 0:
                res.unknown_series += 1
                continue
            if sum(len(n) + len(x) for n, x in lb) > MAX_LABEL_RUNES:
                res.labels_too_long += 1
                continue
            held = self._series.get(sid)
            if held:
                newest = held[-1]
                if newest[0] == lb and newest[1] == t and newest[2] == v:
                    res.duplicate += 1
                    continue
                if t <= newest[1]:
                    res.out_of_order += 1
                    continue
            if self.capacity <= 0:
                res.storage_off += 1
                continue
            if len(self._order) >= self.capacity:
                gone = self._order.popleft()
                q = self._series[gone]
                q.popleft()
                if not q:
                    del self._series[gone]
            self._series.setdefault(sid, deque()).append((lb, t, v))
            self._order.append(sid)
            res.stored += 1
            stored.append(i)
        return res, stored

    def select(self, ids: Iterable[int], mint: int, maxt: int) -> list[tuple[int, list[Exemplar]]]:
        """(series id, its exemplars in [mint, maxt], oldest first) for the
        series of `ids` that have any."""
        out = []
        for sid in ids:
            held = self._series.get(sid)
            if held and held[0][1] <= maxt and held[-1][1] >= mint:
                got = [e for e in held if mint <= e[1] <= maxt]
                if got:
                    out.append((sid, got))
        return out

    def series_ids(self) -> np.ndarray:
        """The series holding exemplars, sorted."""
        return np.sort(np.fromiter(self._series, np.int64, len(self._series)))

    def held(self) -> tuple[list[int], list[Labels], list[int], list[float]]:
        """Every held exemplar in arrival order (ids, labels, ts, values)."""
        pos = {sid: 0 for sid in self._series}
        ids, labels, ts, values = [], [], [], []
        for sid in self._order:
            lb, t, v = self._series[sid][pos[sid]]
            pos[sid] += 1
            ids.append(sid)
            labels.append(lb)
            ts.append(t)
            values.append(v)
        return ids, labels, ts, values


def encode_record(ids: list[int], labels: list[Labels], ts: list[int], values: list[float]) -> bytes:
    n = len(ids)
    parts = [_U32.pack(n), np.asarray(ids, "<i8").tobytes(), np.asarray(ts, "<i8").tobytes(),
             np.asarray(values, "<f8").tobytes()]
    parts.extend(walmod.encode_labels(lb) for lb in labels)
    return walmod.frame(REC_EXEMPLARS, b"".join(parts))


def decode_record(payload: bytes | memoryview) -> tuple[list[int], list[Labels], list[int], list[float]]:
    (n,) = _U32.unpack_from(payload, 0)
    ids = np.frombuffer(payload, "<i8", n, 4).tolist()
    ts = np.frombuffer(payload, "<i8", n, 4 + 8 * n).tolist()
    values = np.frombuffer(payload, "<f8", n, 4 + 16 * n).tolist()
    pos = 4 + 24 * n
    labels = []
    for _ in range(n):
        lb, pos = walmod.decode_labels(payload, pos)
        labels.append(lb)
    return ids, labels, ts, values


class ExemplarLog:
    """The store's append-only log in the shard directory."""

    def __init__(self, shard_dir: Path, fsync: str) -> None:
        self.path = shard_dir / LOG_NAME
        self.fsync = fsync
        self.records = 0  # exemplars in the file
        self._fd: int | None = None
        self._dirty = False  # written since the last fsync

    def replay(self, store: ExemplarStore) -> int:
        """Load the log into store; cut a torn tail. Returns exemplars replayed."""
        self.path.with_name(LOG_NAME + ".tmp").unlink(missing_ok=True)
        if not self.path.exists():
            return 0
        body = self.path.read_bytes()
        good = 0
        for off, _rtype, payload in walmod.scan_records(body, (REC_EXEMPLARS,)):
            store.add(*decode_record(payload))
            self.records += _U32.unpack_from(payload, 0)[0]
            good = off + walmod.HEADER_SIZE + len(payload)
        if good < len(body):
            os.truncate(self.path, good)
        return self.records

    def append(self, store: ExemplarStore, ids: list[int], labels: list[Labels], ts: list[int],
               values: list[float], sync: bool = True) -> None:
        """Log a batch the store took (before the worker answers); with
        sync False the caller calls commit() before answering."""
        if self.records > 2 * max(store.capacity, 1):
            self._rewrite(store)  # holds this batch already
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        walmod._write_all(self._fd, encode_record(ids, labels, ts, values))
        self._dirty = True
        self.records += len(ids)
        if sync:
            self.commit()

    def commit(self) -> None:
        """What the fsync policy asks before an answer: fsync in mode "always"."""
        if self.fsync == "always":
            self.sync()

    def _rewrite(self, store: ExemplarStore) -> None:
        held = store.held()
        tmp = self.path.with_name(LOG_NAME + ".tmp")
        with open(tmp, "wb") as f:
            f.write(encode_record(*held))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        walmod.fsync_dir(self.path.parent)
        self.close()
        self.records = len(held[0])

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._dirty = False
