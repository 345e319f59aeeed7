"""Self-monitoring: /metrics in the Prometheus text format, and self-scrape.

The router owns the HTTP-side counters and histograms; each worker's
counters come from its STATS answer (athens/shards/shard.py stats()), and
child restart counts from the supervisor's run/restarts.json. Everything is
gathered per scrape into one list of samples, which is both rendered as
text and, with --self-scrape-interval, written into Athens itself.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import athens
from athens.errors import AthensError
from athens.log import kv
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.query.functions import format_go_float
from athens.router.api import fmt_float
from athens.router.scatter import ShardPool

log = logging.getLogger("athens.router")

# Latency buckets in seconds: Prometheus' own http_request_duration_seconds
# buckets, which cover 0.1 s .. 2 min (the default query timeout).
LATENCY_BUCKETS = (0.1, 0.2, 0.4, 1.0, 3.0, 8.0, 20.0, 60.0, 120.0)
# Finer buckets for remote-write latency, which is dominated by the WAL fsync.
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class Histogram:
    """A cumulative-bucket histogram, one per label set."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, v: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        i = bisect.bisect_left(self.buckets, v)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += v
        self.n += 1


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its samples as (suffix, labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]]


class Metrics:
    """Counters owned by the router process."""

    def __init__(self) -> None:
        self.http_requests: dict[tuple[str, str], int] = {}
        self.http_latency: dict[str, Histogram] = {}
        self.query_latency: dict[str, Histogram] = {}
        self.write_latency = Histogram(WRITE_BUCKETS)
        self.write_requests: dict[str, int] = {}
        self.metadata_requests = 0
        self.self_scrapes: dict[str, int] = {"success": 0, "failure": 0}

    def observe_http(self, handler: str, code: int, seconds: float) -> None:
        key = (handler, str(code))
        self.http_requests[key] = self.http_requests.get(key, 0) + 1
        _latency(self.http_latency, handler).observe(seconds)
        if handler in ("/api/v1/query", "/api/v1/query_range", "/api/v1/read"):
            _latency(self.query_latency, handler).observe(seconds)
        if handler == "/api/v1/write":
            self.write_requests[str(code)] = self.write_requests.get(str(code), 0) + 1
            self.write_latency.observe(seconds)


def _latency(hists: dict[str, Histogram], handler: str) -> Histogram:
    """The handler's latency histogram, made on its first request (not a
    new one per request, as setdefault's argument would be)."""
    h = hists.get(handler)
    if h is None:
        h = hists[handler] = Histogram(LATENCY_BUCKETS)
    return h


def _hist_samples(hists: dict[str, Histogram], label: str) -> list[tuple[str, dict[str, str], float]]:
    out: list[tuple[str, dict[str, str], float]] = []
    for key, h in sorted(hists.items()):
        cum = 0
        for le, c in zip(h.buckets, h.counts or [0] * len(h.buckets)):
            cum += c
            out.append(("_bucket", {label: key, "le": _fmt_le(le)}, float(cum)))
        out.append(("_bucket", {label: key, "le": "+Inf"}, float(h.n)))
        out.append(("_sum", {label: key}, h.total))
        out.append(("_count", {label: key}, float(h.n)))
    return out


def _fmt_le(v: float) -> str:
    return fmt_float(v)


def _process(proc: psutil.Process) -> tuple[float, float, float] | None:
    try:
        with proc.oneshot():
            cpu = proc.cpu_times()
            return cpu.user + cpu.system, float(proc.memory_info().rss), proc.create_time()
    except psutil.Error:
        return None


async def collect(
    metrics: Metrics, pool: ShardPool, run_dir: Path, ingest: Any = None, engine: Any = None
) -> list[Family]:
    """Every family of /metrics, from the router, the workers and the supervisor.

    `ingest` is the router's write path (athens/router/ingest.py), `engine`
    its PromQL engine; their counters are exported when present.
    """
    fams: list[Family] = [
        Family("athens_build_info", "gauge", "Athens version.",
               [("", {"version": athens.__version__}, 1.0)]),
    ]
    if ingest is not None:
        fams.append(Family("athens_ingest_requests_total", "counter",
                           "Remote-write requests by outcome (ok, rejected, bad_request, too_large, "
                           "throttled, unavailable, ...).",
                           [("", {"outcome": k}, float(n)) for k, n in sorted(ingest.requests.items())]))
        fams.append(Family("athens_ingest_samples_total", "counter",
                           "Remote-write samples by fate (written, rejected_<reason>, ...).",
                           [("", {"fate": k}, float(n)) for k, n in sorted(ingest.samples.items())]))
        fams.append(Family("athens_ingest_inflight_bytes", "gauge",
                           "Bytes of remote-write requests being decoded or appended.",
                           [("", {}, float(getattr(ingest, "inflight_bytes", 0)))]))
        cache = getattr(getattr(ingest, "decoder", None), "cache", None)
        if cache is not None:
            fams.append(Family("athens_ingest_series_cache_refs", "gauge",
                               "Label sets the router's series cache holds (athens/wire/cache.py).",
                               [("", {}, float(len(cache)))]))
            fams.append(Family("athens_ingest_series_cache_lookups_total", "counter",
                               "Series looked up in the router's series cache, by result.",
                               [("", {"result": "hit"}, float(cache.hits)),
                                ("", {"result": "miss"}, float(cache.misses))]))
            fams.append(Family("athens_ingest_series_cache_resets_total", "counter",
                               "Times the series cache started afresh: full, or most of its refs "
                               "no longer sent (churn).",
                               [("", {"reason": "full"}, float(cache.resets - cache.churn_resets)),
                                ("", {"reason": "churn"}, float(cache.churn_resets))]))
    reqs = [("", {"handler": h, "code": c}, float(n)) for (h, c), n in sorted(metrics.http_requests.items())]
    fams.append(Family("athens_http_requests_total", "counter", "HTTP requests by handler and status code.", reqs))
    fams.append(Family("athens_http_request_duration_seconds", "histogram",
                       "HTTP request latency by handler.", _hist_samples(metrics.http_latency, "handler")))
    fams.append(Family("athens_query_duration_seconds", "histogram",
                       "Latency of PromQL and remote-read requests, including fetch from workers.",
                       _hist_samples(metrics.query_latency, "handler")))
    if engine is not None:
        fams.append(Family("athens_query_pushdown_checks_failed_total", "counter",
                           "Queries whose on()/ignoring() operators were pushed down to the workers, "
                           "found to have a match group on two workers, and evaluated again in the router.",
                           [("", {}, float(engine.checks.failed))]))
    fams.append(Family("athens_remote_write_requests_total", "counter",
                       "Remote-write requests by status code (400: malformed or rejected samples, "
                       "413: too large, 503: a worker is unavailable).",
                       [("", {"code": c}, float(n)) for c, n in sorted(metrics.write_requests.items())]))
    fams.append(Family("athens_remote_write_duration_seconds", "histogram",
                       "Remote-write latency until every owning worker has the samples in its WAL.",
                       _hist_samples({"write": metrics.write_latency}, "handler")))
    fams.append(Family("athens_self_scrapes_total", "counter", "Self-scrapes by outcome.",
                       [("", {"result": r}, float(n)) for r, n in sorted(metrics.self_scrapes.items())]))

    procs: list[tuple[str, psutil.Process]] = [("router", psutil.Process())]
    answers = await asyncio.gather(*(_worker_stats(c) for c in pool.clients))
    stats: list[dict[str, Any]] = []
    up = []
    for i, got in enumerate(answers):
        up.append(0.0 if got is None else 1.0)
        if got is None:
            continue
        st, pid = got
        stats.append({**st, "_worker": i})
        try:
            procs.append((f"worker-{i}", psutil.Process(pid)))
        except psutil.Error:
            pass
    fams.append(Family("athens_worker_up", "gauge", "1 if the worker answered this scrape.",
                       [("", {"worker": str(i)}, v) for i, v in enumerate(up)]))
    fams.extend(_worker_families(stats))

    restarts = _read_restarts(run_dir)
    fams.append(Family("athens_child_restarts_total", "counter",
                       "Restarts of supervised processes after they exited.",
                       [("", {"child": c}, float(n)) for c, n in sorted(restarts.items())]))
    cpu, rss, start = [], [], []
    for name, proc in procs:
        got = _process(proc)
        if got is not None:
            cpu.append(("", {"process": name}, got[0]))
            rss.append(("", {"process": name}, got[1]))
            start.append(("", {"process": name}, got[2]))
    fams.append(Family("athens_process_cpu_seconds_total", "counter", "User and system CPU time.", cpu))
    fams.append(Family("athens_process_resident_memory_bytes", "gauge", "Resident memory.", rss))
    fams.append(Family("athens_process_start_time_seconds", "gauge", "Start time since the epoch.", start))
    return fams


# How long /metrics waits for a worker: a restarting worker is reported
# down (athens_worker_up 0) rather than stalling the scrape.
WORKER_TIMEOUT_S = 1.0


async def _worker_stats(client: Any) -> tuple[dict[str, Any], int] | None:
    """One worker's STATS and pid, or None if it does not answer."""
    from athens.shards.ipc import Frame, Op  # noqa: PLC0415

    try:
        ping = await client.request(lambda rid: Frame(Op.PING, rid, {}), timeout=WORKER_TIMEOUT_S)
        st = await client.request(lambda rid: Frame(Op.STATS, rid, {}), timeout=WORKER_TIMEOUT_S)
    except AthensError as e:
        log.warning("metrics: worker not reachable", extra=kv(worker=client.index, err=str(e)))
        return None
    return st.meta["stats"], int(ping.meta["pid"])


# Worker stats key -> (metric, type, help). Counters end in _total.
_WORKER_GAUGES = {
    "series": ("athens_shard_series", "gauge", "Series known to the worker (head and segments)."),
    "series_forgotten": ("athens_series_forgotten_total", "counter",
                         "Series dropped from the worker's index once retention left them without data."),
    "series_deleted": ("athens_series_deleted_total", "counter",
                       "Series deleted through /api/v1/admin/tsdb/delete_series."),
    "series_ranges_deleted": ("athens_series_ranges_deleted_total", "counter",
                              "Series with a time range deleted through /api/v1/admin/tsdb/delete_series."),
    "exemplars": ("athens_exemplars", "gauge", "Exemplars held for /api/v1/query_exemplars."),
    "tombstones": ("athens_tombstones", "gauge",
                   "Deleted time ranges of series whose samples may still be on disk or in the head."),
    "purges": ("athens_purges_total", "counter",
               "Segment files rewritten without the chunks of deleted series or samples in deleted ranges."),
    "head_samples": ("athens_head_samples", "gauge", "Samples in the in-memory head."),
    "head_chunks": ("athens_head_chunks", "gauge", "Chunks in the in-memory head."),
    "segments": ("athens_segments", "gauge", "Sealed segment files."),
    "segment_bytes": ("athens_segment_bytes", "gauge", "Bytes in sealed segment files."),
    "wal_bytes": ("athens_wal_bytes", "gauge", "Bytes in the write-ahead log."),
    "index_bytes": ("athens_index_bytes", "gauge", "Bytes in the series index file."),
    "samples_appended": ("athens_samples_appended_total", "counter", "Samples accepted into the WAL."),
    "samples_duplicate": ("athens_samples_duplicate_total", "counter",
                          "Samples identical to a stored one, dropped silently."),
    "appends": ("athens_appends_total", "counter", "Append requests served."),
    "wal_fsyncs": ("athens_wal_fsyncs_total", "counter", "fsync calls on the WAL."),
    "flushes": ("athens_head_flushes_total", "counter", "Head flushes into segment files."),
    "segments_corrupt": ("athens_segments_corrupt_total", "counter", "Segment files set aside as corrupt."),
    "compactions": ("athens_compactions_total", "counter", "Compaction jobs finished."),
    "merges": ("athens_segment_merges_total", "counter",
               "Merges of segment files whose time is still open (the seals of the current day)."),
    "compaction_in_progress": ("athens_compaction_in_progress", "gauge",
                               "1 while a compaction job is under way on the worker."),
    "compaction_samples_in": ("athens_compaction_samples_total", "counter", "Samples read by compaction jobs."),
}


def _worker_families(stats: list[dict[str, Any]]) -> list[Family]:
    """Families from the workers' STATS answers (each tagged with "_worker": index)."""
    out = []
    for key, (name, kind, help_) in _WORKER_GAUGES.items():
        samples = [("", {"worker": str(s["_worker"])}, float(s[key])) for s in stats if key in s]
        out.append(Family(name, kind, help_, samples))
    rejected = [
        ("", {"worker": str(s["_worker"]), "reason": reason}, float(n))
        for s in stats
        for reason, n in sorted(s.get("samples_rejected", {}).items())
    ]
    out.append(Family("athens_samples_rejected_total", "counter", "Samples refused, by reason.", rejected))
    return out


def _read_restarts(run_dir: Path) -> dict[str, int]:
    try:
        data = json.loads((run_dir / "restarts.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


# --- text exposition -------------------------------------------------------------


def escape_label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(v: float) -> str:
    """A sample value as Prometheus' exposition writes it: Go's
    strconv.FormatFloat(v, 'g', -1, 64), but 0 for -0."""
    return "0" if v == 0 else format_go_float(v, "g")


def render_text(fams: Iterable[Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines = []
    for f in fams:
        lines.append(f"# HELP {f.name} {f.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        lines.append(f"# TYPE {f.name} {f.kind}")
        for suffix, labels, v in f.samples:
            lb = ",".join(f'{k}="{escape_label_value(val)}"' for k, val in labels.items())
            lines.append(f"{f.name}{suffix}{{{lb}}} {format_value(v)}" if lb else f"{f.name}{suffix} {format_value(v)}")
    return "\n".join(lines) + "\n"


def to_batch(fams: Iterable[Family], t_ms: int, target: dict[str, str]) -> WriteBatch:
    """The samples of one self-scrape, with the target's job/instance labels and `up`."""
    items: dict[Labels, float] = {}
    for f in fams:
        for suffix, labels, v in f.samples:
            items[Labels({**labels, **target, "__name__": f.name + suffix}.items())] = v
    items[Labels({**target, "__name__": "up"}.items())] = 1.0
    return WriteBatch.from_series(
        [(lb, np.array([t_ms], np.int64), np.array([v], np.float64)) for lb, v in items.items()]
    )


async def self_scrape_loop(metrics: Metrics, pool: ShardPool, run_dir: Path, interval_s: float,
                           instance: str, ingest: Any = None, engine: Any = None) -> None:
    """Write /metrics into Athens every interval (--self-scrape-interval)."""
    target = {"job": "athens", "instance": instance}
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        next_at += interval_s
        try:
            fams = await collect(metrics, pool, run_dir, ingest, engine)
            await pool.append(to_batch(fams, int(time.time() * 1000), target))
            metrics.self_scrapes["success"] += 1
        except AthensError as e:
            metrics.self_scrapes["failure"] += 1
            log.warning("self-scrape failed", extra=kv(err=str(e), pid=os.getpid()))
        await asyncio.sleep(max(0.0, next_at - loop.time()))
