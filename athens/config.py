"""Validated, frozen configuration of one `athens serve`.

The supervisor parses flags once and hands each child process the same
settings on its command line (see ServeConfig.to_args), so every process
runs from one validated source.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from athens.model.placement import PLACEMENTS
from athens.model.re2 import to_python

DEFAULT_LISTEN = "127.0.0.1:9201"
DEFAULT_DATA_DIR = "athens-data"


class ConfigError(ValueError):
    """A flag value that cannot be used; printed with the flag's name."""



def duration_ms(text: str) -> int:
    """Prometheus duration ("90s", "1h30m", "2m") or plain seconds, in ms."""
    from athens.query.parser import parse_duration  # noqa: PLC0415

    try:
        return round(float(text) * 1000)
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except Exception:
        raise ConfigError(f"invalid duration {text!r}") from None


def byte_size(text: str) -> int:
    """Sizes like 64MiB, 1GB, 512KiB, or plain bytes."""
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
             "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "b": 1}
    t = text.strip().lower()
    for suffix, mult in units.items():
        if t.endswith(suffix):
            num = t[: -len(suffix)]
            break
    else:
        num, mult = t, 1
    try:
        value = float(num)
    except ValueError:
        raise ConfigError(f"invalid size {text!r}") from None
    if value < 0:
        raise ConfigError(f"invalid size {text!r}")
    return int(value * mult)


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"invalid listen address {text!r}, want HOST:PORT")
    return (host or "127.0.0.1").strip("[]"), int(port)


def cors_origin(text: str) -> re.Pattern[str]:
    """--cors-origin compiled: RE2 syntax, matched against the whole Origin."""
    try:
        return re.compile(f"(?s:{to_python(text)})")
    except re.error as e:  # RE2Error too: Go's message
        raise ConfigError(f"invalid --cors-origin {text!r}: {e}") from None


# In the data directory: the worker count and placement it was made for (launch.check_data_dir).
META_FILE = "athens.json"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    workers: int = 0  # 0: one per NUMA node
    # athens.model.placement; "auto": the data directory's (new ones: without-name).
    placement: str = "auto"
    wal_fsync: str = "always"
    log_format: str = "logfmt"
    log_level: str = "info"
    # How the processes get their compiled kernels (athens/aot.py, athens/kernels.py).
    kernels: str = "ahead-of-time"
    lookback_delta: str = "5m"
    query_timeout: str = "2m"
    query_max_samples: int = 50_000_000
    # Query limits (athens/query/planner.py, docs in README): bytes one query
    # may hold, queries evaluated at once, aggregation pushdown to shards.
    query_max_bytes: str = "0"
    query_max_concurrency: int = 20
    query_pushdown: str = "on"
    # Prometheus 3's promql-delayed-name-removal (athens/query/engine.py);
    # off by default, as in Prometheus 3.
    query_delayed_name_removal: str = "off"
    query_cpu_share: float = 0.2
    query_threads: int = 0  # per worker; 0: the CPUs it is pinned to
    max_body_bytes: str = "32MiB"
    max_decompressed_bytes: str = "256MiB"
    head_flush_interval: str = "15m"
    head_max_samples: int = 4_000_000
    # Storage engine (athens/shards): retention and the out-of-order window.
    retention: str = "90d"
    retention_size: str = "0"
    ooo_window: str = "10m"
    compaction_compression: str = "none"
    seal_merge_fanin: int = 4
    # Ingest (docs/ingest.md): back-pressure and series bounds.
    max_series_per_shard: int = 0
    max_exemplars: int = 100_000
    worker_max_queued_samples: int = 4_000_000
    ingest_max_inflight_bytes: str = "512MiB"
    ingest_series_cache: int = 4_000_000
    ingest_series_cache_idle: str = "10m"
    # HTTP API (athens/router): self-monitoring and metadata endpoint bounds.
    self_scrape_interval: str = "0"
    api_max_series: int = 1_000_000
    api_max_range: str = "0"
    admin_api: str = "off"
    cors_origin: str = ".*"

    def validate(self) -> None:
        listen_address(self.listen)
        cors_origin(self.cors_origin)
        if self.workers < 0:
            raise ConfigError("--workers must be >= 0")
        if self.placement not in ("auto", *PLACEMENTS):
            raise ConfigError(f"--placement must be auto, {' or '.join(PLACEMENTS)}")
        if self.wal_fsync not in ("always", "batch", "off"):
            raise ConfigError("--wal-fsync must be always, batch or off")
        if self.log_format not in ("logfmt", "json"):
            raise ConfigError("--log-format must be logfmt or json")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("--log-level must be debug, info, warning or error")
        for name in ("lookback_delta", "query_timeout", "head_flush_interval"):
            if duration_ms(getattr(self, name)) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.head_max_samples <= 0:
            raise ConfigError("--head-max-samples must be positive")
        byte_size(self.max_body_bytes)
        byte_size(self.max_decompressed_bytes)
        if self.query_max_samples <= 0:
            raise ConfigError("--query-max-samples must be positive")
        byte_size(self.query_max_bytes)
        if self.query_max_concurrency < 0:
            raise ConfigError("--query-max-concurrency must not be negative")
        if self.kernels not in ("ahead-of-time", "jit"):
            raise ConfigError("--kernels must be ahead-of-time or jit")
        if self.admin_api not in ("on", "off"):
            raise ConfigError("--admin-api must be on or off")
        if self.query_pushdown not in ("on", "off"):
            raise ConfigError("--query-pushdown must be on or off")
        if self.query_delayed_name_removal not in ("on", "off"):
            raise ConfigError("--query-delayed-name-removal must be on or off")
        if not 0 < self.query_cpu_share <= 1:
            raise ConfigError("--query-cpu-share must be in (0, 1]")
        if self.query_threads < 0:
            raise ConfigError("--query-threads must not be negative")
        if self.max_series_per_shard < 0 or self.max_exemplars < 0:
            raise ConfigError("--max-series-per-shard and --max-exemplars must not be negative")
        if self.worker_max_queued_samples <= 0 or self.ingest_series_cache <= 0:
            raise ConfigError("--worker-max-queued-samples and --ingest-series-cache must be positive")
        if duration_ms(self.ingest_series_cache_idle) <= 0:
            raise ConfigError("--ingest-series-cache-idle must be positive")
        byte_size(self.ingest_max_inflight_bytes)
        byte_size(self.retention_size)
        if self.compaction_compression not in ("none", "zstd"):
            raise ConfigError("--compaction-compression must be none or zstd")
        if self.seal_merge_fanin < 0 or self.seal_merge_fanin == 1:
            raise ConfigError("--seal-merge-fanin must be 0 (off) or at least 2")
        for name in ("retention", "ooo_window"):
            if duration_ms(getattr(self, name)) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
        for name in ("self_scrape_interval", "api_max_range"):
            if duration_ms(getattr(self, name)) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
        if self.api_max_series < 0:
            raise ConfigError("--api-max-series must not be negative")

    @property
    def host_port(self) -> tuple[str, int]:
        return listen_address(self.listen)

    def socket_path(self, worker: int) -> Path:
        return self.data_dir / "run" / f"worker-{worker}.sock"

    def shard_dir(self, worker: int) -> Path:
        return self.data_dir / f"shard-{worker}"

    def to_args(self) -> list[str]:
        """Flags reproducing this config for a child process."""
        out: list[str] = []
        for f in fields(self):
            out += [f"--{f.name.replace('_', '-')}", str(getattr(self, f.name))]
        return out


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    d = ServeConfig()
    p.add_argument("--listen", default=d.listen, help=f"HTTP listen address HOST:PORT (default {d.listen})")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("ATHENS_DATA_DIR", d.data_dir)),
                   help="directory for WAL, segments and index (default ./athens-data, or $ATHENS_DATA_DIR)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="shard worker processes; 0 = one per NUMA node (default 0). Fixed per data directory")
    p.add_argument("--placement", default=d.placement, choices=["auto", *PLACEMENTS],
                   help="how series spread over the workers: without-name hashes a series' labels but "
                        "its metric name, so a target's series share a worker and binary operators "
                        "between them run on the workers; identity hashes all labels. auto: the data "
                        "directory's, without-name for a new one. Fixed per data directory (default auto)")
    p.add_argument("--wal-fsync", default=d.wal_fsync, choices=["always", "batch", "off"],
                   help="always: fsync the WAL before acknowledging a write (group-committed); "
                        "batch: write() before acknowledging, fsync every second; off: never fsync. "
                        "All three survive kill -9; only 'always' survives power loss (default always)")
    p.add_argument("--kernels", default=d.kernels, choices=["ahead-of-time", "jit"],
                   help="ahead-of-time: build the compiled kernels once per release and machine "
                        "(a C compiler and Python's headers needed; without them as jit) and load "
                        "that build in every process, ~50 MiB less each; jit: every process "
                        "loads them from Numba's cache (default ahead-of-time)")
    p.add_argument("--log-format", default=d.log_format, choices=["logfmt", "json"], help="log line format (default logfmt)")
    p.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"], help="(default info)")
    p.add_argument("--lookback-delta", default=d.lookback_delta, help="PromQL lookback delta (default 5m)")
    p.add_argument("--query-timeout", default=d.query_timeout, help="maximum query duration (default 2m)")
    p.add_argument("--query-max-samples", type=int, default=d.query_max_samples,
                   help="maximum samples one query may load (default 50000000)")
    p.add_argument("--query-max-bytes", default=d.query_max_bytes,
                   help="bytes of series data and intermediate results one query may hold, e.g. 2GiB; "
                        "a query exceeding it fails with 422, others are unaffected; 0 = no bound (default 0)")
    p.add_argument("--query-max-concurrency", type=int, default=d.query_max_concurrency,
                   help="queries evaluated at once; more wait in a queue (their wait counts against "
                        "--query-timeout); 0 = no bound (default 20)")
    p.add_argument("--query-pushdown", default=d.query_pushdown, choices=["on", "off"],
                   help="let shard workers pre-aggregate sum/count/avg/min/max/topk/... of their own "
                        "series, so only aggregated series reach the router (default on)")
    p.add_argument("--query-delayed-name-removal", default=d.query_delayed_name_removal, choices=["on", "off"],
                   help="remove the metric name that functions and arithmetic drop at the end of the "
                        "expression, as Prometheus 3 with --enable-feature=promql-delayed-name-removal "
                        "(on), or where it is dropped, as Prometheus 3 by default and 2.x (off) (default off)")
    p.add_argument("--query-cpu-share", type=float, default=d.query_cpu_share,
                   help="while remote writes queue up on the shard workers, the share of one CPU "
                        "their query work may take together (split evenly between them); the rest is "
                        "left to ingest. 1 = no pacing (default 0.2)")
    p.add_argument("--query-threads", type=int, default=d.query_threads,
                   help="threads of each shard worker evaluating pushed-down queries, a slice of "
                        "series each; 0 = as many as CPUs the worker is pinned to (default 0)")
    p.add_argument("--max-body-bytes", default=d.max_body_bytes, help="cap on a remote-write body (default 32MiB)")
    p.add_argument("--max-decompressed-bytes", default=d.max_decompressed_bytes,
                   help="cap on a decompressed remote-write body (default 256MiB)")
    p.add_argument("--head-flush-interval", default=d.head_flush_interval,
                   help="seal the in-memory head into a segment file this often (default 15m)")
    p.add_argument("--head-max-samples", type=int, default=d.head_max_samples,
                   help="seal a worker's head sooner once it holds this many samples (12 bytes each "
                        "in memory); a seal cuts every series' chunk, at about this / series samples "
                        "(default 4000000)")
    p.add_argument("--retention", default=d.retention,
                   help="delete segment files whose data is older than the newest sample (or the current "
                        "time, if earlier) minus this; "
                        "0 = keep forever (default 90d)")
    p.add_argument("--retention-size", default=d.retention_size,
                   help="per shard worker: delete the oldest segment files while the shard's files "
                        "exceed this, e.g. 100GiB; 0 = no limit (default 0)")
    p.add_argument("--compaction-compression", default=d.compaction_compression, choices=["none", "zstd"],
                   help="zstd: compacted segment files in zstd blocks, 3-5%% smaller and their reads "
                        "10-25%% slower (default none)")
    p.add_argument("--seal-merge-fanin", type=int, default=d.seal_merge_fanin,
                   help="merge the segment files of the current day (until its compaction) this many "
                        "at a time, each series' chunks side by side (re-encoded where seals left them short); "
                        "0 = off (default 4)")
    p.add_argument("--ooo-window", default=d.ooo_window,
                   help="accept samples up to this much older than their series' newest sample "
                        "(out of order); older ones are refused with 400; 0 = in order only (default 10m)")
    add_api_flags(p)
    add_ingest_flags(p)


def add_ingest_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the write path (docs/ingest.md)."""
    d = ServeConfig()
    p.add_argument("--max-series-per-shard", type=int, default=d.max_series_per_shard,
                   help="active series cap per shard worker; samples of further new series are "
                        "refused (400, reason series_limit); 0 = no cap (default 0)")
    p.add_argument("--max-exemplars", type=int, default=d.max_exemplars,
                   help="exemplars held for /api/v1/query_exemplars, the newest of all series, split "
                        "evenly between the workers (Prometheus' --storage.tsdb.max-exemplars); 0 stores "
                        "none (default 100000)")
    p.add_argument("--worker-max-queued-samples", type=int, default=d.worker_max_queued_samples,
                   help="samples a worker queues for its WAL before refusing appends with 503 "
                        "(default 4000000)")
    p.add_argument("--ingest-max-inflight-bytes", default=d.ingest_max_inflight_bytes,
                   help="router high-water mark: decompressed bytes of writes in progress past which "
                        "new writes get 429 + Retry-After (default 512MiB)")
    p.add_argument("--ingest-series-cache", type=int, default=d.ingest_series_cache,
                   help="label sets the router's series cache holds before it starts over "
                        "(default 4000000)")
    p.add_argument("--ingest-series-cache-idle", default=d.ingest_series_cache_idle,
                   help="the series cache also starts over when most of its label sets were not "
                        "written for this long (series churn; default 10m)")


def add_api_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the HTTP API beyond PromQL (see athens/router/app.py)."""
    d = ServeConfig()
    p.add_argument("--self-scrape-interval", default=d.self_scrape_interval,
                   help="store Athens' own /metrics into itself this often, e.g. 15s; 0 = off (default 0)")
    p.add_argument("--api-max-series", type=int, default=d.api_max_series,
                   help="most series /api/v1/series returns, and most label names or values the label "
                        "endpoints return, before answering 422; 0 = no limit (default 1000000)")
    p.add_argument("--api-max-range", default=d.api_max_range,
                   help="longest start..end range of /api/v1/series and the label endpoints; a request "
                        "without start is clamped to it, a longer explicit range is refused; 0 = no bound "
                        "(default 0)")
    p.add_argument("--cors-origin", default=d.cors_origin,
                   help="regular expression (RE2, fully anchored) of the Origin headers whose browser pages "
                        "may read the HTTP API, as Prometheus' --web.cors.origin; '.*' allows any "
                        "(default '.*')")
    p.add_argument("--admin-api", default=d.admin_api, choices=["on", "off"],
                   help="serve /api/v1/admin/tsdb/snapshot, delete_series and clean_tombstones, as Prometheus' "
                        "--web.enable-admin-api; off, they answer \"admin APIs disabled\" as Prometheus "
                        "does (default off)")


def config_from_args(ns: argparse.Namespace) -> ServeConfig:
    names = {f.name for f in fields(ServeConfig)}
    cfg = ServeConfig(**{k: v for k, v in vars(ns).items() if k in names})
    cfg.validate()
    return cfg
