"""Validated, frozen configuration of one `athens serve`.

The supervisor parses flags once and hands each child process the same
settings on its command line (see ServeConfig.to_args), so every process
runs from one validated source.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

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


@dataclass(frozen=True, slots=True)
class ServeConfig:
    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    workers: int = 0  # 0: one per NUMA node
    wal_fsync: str = "always"
    log_format: str = "logfmt"
    log_level: str = "info"
    lookback_delta: str = "5m"
    query_timeout: str = "2m"
    query_max_samples: int = 50_000_000
    max_body_bytes: str = "32MiB"
    max_decompressed_bytes: str = "256MiB"
    head_flush_interval: str = "15m"

    def validate(self) -> None:
        listen_address(self.listen)
        if self.workers < 0:
            raise ConfigError("--workers must be >= 0")
        if self.wal_fsync not in ("always", "batch", "off"):
            raise ConfigError("--wal-fsync must be always, batch or off")
        if self.log_format not in ("logfmt", "json"):
            raise ConfigError("--log-format must be logfmt or json")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("--log-level must be debug, info, warning or error")
        for name in ("lookback_delta", "query_timeout", "head_flush_interval"):
            if duration_ms(getattr(self, name)) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        byte_size(self.max_body_bytes)
        byte_size(self.max_decompressed_bytes)
        if self.query_max_samples <= 0:
            raise ConfigError("--query-max-samples must be positive")

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
    p.add_argument("--wal-fsync", default=d.wal_fsync, choices=["always", "batch", "off"],
                   help="always: fsync the WAL before acknowledging a write (group-committed); "
                        "batch: write() before acknowledging, fsync every second; off: never fsync. "
                        "All three survive kill -9; only 'always' survives power loss (default always)")
    p.add_argument("--log-format", default=d.log_format, choices=["logfmt", "json"], help="log line format (default logfmt)")
    p.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"], help="(default info)")
    p.add_argument("--lookback-delta", default=d.lookback_delta, help="PromQL lookback delta (default 5m)")
    p.add_argument("--query-timeout", default=d.query_timeout, help="maximum query duration (default 2m)")
    p.add_argument("--query-max-samples", type=int, default=d.query_max_samples,
                   help="maximum samples one query may load (default 50000000)")
    p.add_argument("--max-body-bytes", default=d.max_body_bytes, help="cap on a remote-write body (default 32MiB)")
    p.add_argument("--max-decompressed-bytes", default=d.max_decompressed_bytes,
                   help="cap on a decompressed remote-write body (default 256MiB)")
    p.add_argument("--head-flush-interval", default=d.head_flush_interval,
                   help="seal the in-memory head into a segment file this often (default 15m)")


def config_from_args(ns: argparse.Namespace) -> ServeConfig:
    names = {f.name for f in fields(ServeConfig)}
    cfg = ServeConfig(**{k: v for k, v in vars(ns).items() if k in names})
    cfg.validate()
    return cfg
