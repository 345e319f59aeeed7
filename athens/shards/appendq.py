"""The worker's append queue: bounded, group-committed.

Appends from every router connection are queued here; one committer task
takes everything queued, merges it into a single WriteBatch and calls
Shard.append once, so N concurrent appends cost one WAL write and (with
--wal-fsync=always) one fsync instead of N. While an append runs, frames
keep arriving in the socket buffers; the next round takes them all.

The queue is bounded in samples. An append that would pass the bound is
refused at once with `unavailable` (the router answers 503 + Retry-After)
rather than letting the worker's memory grow while it falls behind.

Verdicts. A group of one gets Shard.append's exact counts. A merged group
gets its accepted/duplicate counts split by request only in total: when
Shard.append refuses samples of a merged group (out of order, conflicting
duplicate), every request of the group is told the group's refusal counts,
because Shard.append does not say which input sample was refused. Refusals
are rare (a sender's bug or clock problem) and answered 400 either way; the
accepted samples are stored in both cases.

Exemplars (APPEND_EXEMPLARS) queue beside the samples and are committed
in the same rounds, after the round's samples: every batch of the round is
held and logged, then the exemplar log is fsynced once. A round of
exemplars alone starts at once (no linger: their request's samples waited
already). Their queue needs
no bound of its own: the router sends a request's exemplars only once its
samples were acknowledged, and waits for the answer.

Series cap (--max-series-per-shard): a request's samples of series that
would take the shard past the cap are dropped before the append and
reported as rejected with reason `series_limit`, counted exactly per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from athens.errors import OverloadedError
from athens.log import kv
from athens.model.batch import WriteBatch
from athens.shards.shard import Shard

log = logging.getLogger("athens.worker")

# A merged group stops growing at this many samples: large enough that the
# per-append fixed cost vanishes, small enough to bound the merged arrays.
MAX_GROUP_SAMPLES = 1 << 20
# With fsync on, a lone append waits this long for company before it is
# committed: when the router (not the disk) is the bottleneck, appends
# arrive one at a time and each would pay a whole fsync (about 0.6 ms of
# CPU per fsync on the bench machine, bench/ingest_cpu.py). Costs at most
# this much latency per write.
LINGER_S = 0.002
# busy(): ingest had a backlog this recently.
BUSY_S = 0.25


@dataclass(slots=True)
class _Job:
    batch: WriteBatch
    fut: asyncio.Future[dict[str, Any]]
    series_limited: int = 0
    # Told the shard's id of each series of `batch` once it is committed.
    learn: Callable[[np.ndarray], None] | None = None


@dataclass(slots=True)
class _ExemplarJob:
    args: tuple[Any, ...]  # Shard.append_exemplars' (series, series_idx, labels, ts, values, hashes)
    fut: asyncio.Future[dict[str, Any]]


def _fail(jobs: list[_Job] | list[_ExemplarJob], e: Exception, what: str) -> None:
    """Every job of a failed commit round hears the error (logged unless it is overload)."""
    if not isinstance(e, OverloadedError):
        log.warning(what, extra=kv(err=f"{type(e).__name__}: {e}"))
    for j in jobs:
        if not j.fut.done():
            j.fut.set_exception(e)


class AppendQueue:
    """Bounded queue + group-committing task in front of one Shard."""

    def __init__(
        self, shard: Shard, max_queued_samples: int, max_series: int = 0, linger_s: float | None = None,
        committed: Callable[[], None] | None = None,
    ) -> None:
        self.shard = shard
        # Called after each commit round: the worker starts a seal there as
        # soon as the head is due, not at its next once-a-second tick.
        self.committed = committed
        if linger_s is None:
            linger_s = LINGER_S if shard.config.wal_fsync == "always" else 0.0
        self.linger_s = linger_s
        self.max_queued_samples = max_queued_samples
        self.max_series = max_series
        self._q: deque[_Job] = deque()
        self._ex: deque[_ExemplarJob] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backlog_at = -BUSY_S
        self.counters = {
            "commits": 0,
            "appends_merged": 0,
            "appends_refused_overloaded": 0,
            "exemplar_commits": 0,
            "samples_rejected_series_limit": 0,
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def busy(self) -> bool:
        """Whether appends queued up behind a commit within the last BUSY_S
        seconds: ingest has more to do than it gets done, so queries on this
        worker are paced (evaluate.Offload). A trickle of writes, each
        committed before the next arrives, does not count."""
        return time.monotonic() - self._backlog_at < BUSY_S

    @property
    def queued_samples(self) -> int:
        return self._queued

    def submit(
        self, batch: WriteBatch, learn: Callable[[np.ndarray], None] | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Queue a batch; the future gets the IPC answer meta once it is in the WAL,
        and learn (if given) the shard's id of each of its series."""
        n = batch.num_samples
        if self._q and self._queued + n > self.max_queued_samples:
            self.counters["appends_refused_overloaded"] += 1
            raise OverloadedError(
                f"shard worker overloaded: {self._queued} samples queued (limit {self.max_queued_samples})"
            )
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._q.append(_Job(batch, fut, learn=learn))
        self._queued += n
        self._wake.set()
        return fut

    def submit_exemplars(self, *args: Any) -> asyncio.Future[dict[str, Any]]:
        """Queue Shard.append_exemplars(*args); the future gets the IPC
        answer meta (written, rejected) once they are logged."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._ex.append(_ExemplarJob(args, fut))
        self._wake.set()
        return fut

    async def drain(self) -> None:
        """Commit everything queued (shutdown)."""
        while self._q or self._ex:
            self._commit_round()
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Let every connection with a frame in its buffer queue it first.
            await asyncio.sleep(0)
            if self.linger_s and len(self._q) == 1:  # exemplars alone do not wait: their samples just did
                await asyncio.sleep(self.linger_s)
            while self._q or self._ex:
                self._commit_round()
                if self.committed is not None:
                    self.committed()
                await asyncio.sleep(0)
                if self._q:  # more samples arrived while that one was committed
                    self._backlog_at = time.monotonic()

    def _take_group(self) -> list[_Job]:
        group = [self._q.popleft()]
        n = group[0].batch.num_samples
        while self._q and n + self._q[0].batch.num_samples <= MAX_GROUP_SAMPLES:
            job = self._q.popleft()
            n += job.batch.num_samples
            group.append(job)
        self._queued -= n
        return group

    def _commit_round(self) -> None:
        if self._q:
            self._commit_samples()
        if self._ex:
            self._commit_exemplars()

    def _commit_samples(self) -> None:
        group = self._take_group()
        try:
            if self.max_series:
                self._apply_series_cap(group)
            merged = WriteBatch.concat([j.batch for j in group])
            res = self.shard.append(merged)
        except Exception as e:  # noqa: BLE001 - every waiter must hear back
            _fail(group, e, "append failed")
            return
        self.counters["commits"] += 1
        self.counters["appends_merged"] += len(group) - 1
        at = 0
        for j in group:  # WriteBatch.concat keeps the jobs' series in order
            n = len(j.batch.series)
            if j.learn is not None:
                j.learn(res.series_ids[at : at + n])
            at += n
        # Each request is answered from its own samples' verdicts: the router
        # turns refusals into a 400 and the written-samples header.
        parts = res.split([j.batch.num_samples for j in group]) if len(group) > 1 else [res]
        for j, part in zip(group, parts):
            m = part.to_meta()
            if len(group) > 1:
                m["group"] = len(group)
            if j.series_limited:
                m["rejected"]["series_limit"] = j.series_limited
            if not j.fut.done():
                j.fut.set_result(m)

    def _commit_exemplars(self) -> None:
        jobs = list(self._ex)
        self._ex.clear()
        try:
            results = [self.shard.append_exemplars(*j.args, sync=False) for j in jobs]
            self.shard.commit_exemplars()
        except Exception as e:  # noqa: BLE001 - every waiter must hear back
            _fail(jobs, e, "exemplar append failed")
            return
        self.counters["exemplar_commits"] += 1
        for j, res in zip(jobs, results):
            if not j.fut.done():
                j.fut.set_result({"written": res.written, "rejected": res.rejected()})

    def _apply_series_cap(self, group: list[_Job]) -> None:
        index = self.shard.index
        room = self.max_series - index.live
        total = sum(len(j.batch.series) for j in group)
        if total <= room:
            return  # even if every series were new it fits: no lookup needed
        admitted: set[tuple[tuple[str, str], ...]] = set()  # label sets' pairs
        for j in group:
            b = j.batch
            known = index.lookup(b.series, b.hashes) >= 0
            if known.all():
                continue
            keep = known.copy()
            for i in np.flatnonzero(~known).tolist():
                pairs = b.series[i].pairs
                if pairs in admitted:
                    keep[i] = True
                elif len(admitted) < room:
                    admitted.add(pairs)
                    keep[i] = True
            if not keep.all():
                before = b.num_samples
                j.batch = b.select_series(keep)
                j.learn = None  # its series are no longer those it was submitted with
                j.series_limited = before - j.batch.num_samples
                self.counters["samples_rejected_series_limit"] += j.series_limited
