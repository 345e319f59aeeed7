"""Seeded, reproducible node_exporter-like data for the benchmarks.

The data imitates what a Prometheus scraping a fleet of hosts would forward:
each host has two scrape targets, a node_exporter (`job="node"`, port 9100)
and an application (`job="api"`, port 8080). Every target has its own scrape
phase inside the 15 s interval, as Prometheus spreads targets by hash; half of
the targets (by default) are scraped exactly on schedule and the rest with
±5 ms jitter, the two cases a timestamp codec sees in practice (Prometheus
aligns timestamps only within a tolerance). Values cover the shapes that
matter to a float codec:

- counters with occasional resets (a target restart zeroes all its counters),
  integer ones (bytes, packets) and 0.01-quantised ones (CPU seconds, USER_HZ);
- gauges: constants, bounded random walks quantised to pages (memory bytes),
  iid noise at full precision (scrape durations), smoothed load averages,
  clocks (`node_time_seconds`);
- classic histograms (`_bucket` with `le`, `_sum`, `_count`), bucket counts
  cumulative in `le` and monotone in time.

The data ends at "now" (or `now_ms`), aligned to the interval per target. The
labels are built in plain Python once per series; all values and timestamps
are whole-array numpy code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

INTERVAL_MS = 15_000
JITTER_MS = 5

# A target restarts within the window with this probability; its counters
# (and histogram buckets) then start again from zero.
RESET_PROBABILITY = 0.1

# Series kinds, one per value model.
COUNTER = 0  # monotone, resets with its target
GAUGE_CONST = 1  # constant level
GAUGE_WALK = 2  # bounded random walk around a level
GAUGE_NOISE = 3  # iid noise around a level
GAUGE_SMOOTH = 4  # exponentially smoothed noise (load averages)
CLOCK = 5  # the scrape time in seconds
HIST_BUCKET = 6
HIST_SUM = 7
HIST_COUNT = 8

KIND_NAMES = {
    COUNTER: "counter",
    GAUGE_CONST: "gauge_const",
    GAUGE_WALK: "gauge_walk",
    GAUGE_NOISE: "gauge_noise",
    GAUGE_SMOOTH: "gauge_smooth",
    CLOCK: "clock",
    HIST_BUCKET: "hist_bucket",
    HIST_SUM: "hist_sum",
    HIST_COUNT: "hist_count",
}

# Upper bounds of the latency histogram buckets (client_golang's defaults).
HIST_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)


@dataclass(frozen=True, slots=True)
class Profile:
    """A benchmark size: how many series, how many samples each.

    `range_points` is about how many steps the range queries evaluate.
    """

    name: str
    n_series: int
    n_samples: int
    interval_ms: int = INTERVAL_MS
    range_points: int = 100

    @property
    def n_samples_total(self) -> int:
        return self.n_series * self.n_samples


PROFILES: dict[str, Profile] = {
    "small": Profile("small", 10_000, 240),
    "medium": Profile("medium", 100_000, 240),
    "long": Profile("long", 10_000, 2880),
    # One day at 1-minute steps: the PromQL engine's range-query benchmark.
    "day": Profile("day", 10_000, 5760, range_points=1440),
}


@dataclass(slots=True)
class Dataset:
    """Series labels plus value and timestamp arrays.

    `timestamps` is per scrape target (all series of a target share their
    scrape times, as in Prometheus); `target[i]` names the row of series i.
    """

    labels: list[tuple[tuple[str, str], ...]]  # sorted (name, value) pairs per series
    kinds: np.ndarray  # uint8 (n_series,)
    target: np.ndarray  # int64 (n_series,)
    timestamps: np.ndarray  # int64 (n_targets, n_samples), milliseconds
    values: np.ndarray  # float64 (n_series, n_samples)
    jittered: np.ndarray  # bool (n_targets,)
    seed: int
    interval_ms: int
    group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def n_series(self) -> int:
        return self.values.shape[0]

    @property
    def n_samples(self) -> int:
        return self.values.shape[1]

    @property
    def n_samples_total(self) -> int:
        return self.values.size

    @property
    def start_ms(self) -> int:
        return int(self.timestamps[:, 0].min())

    @property
    def end_ms(self) -> int:
        return int(self.timestamps[:, -1].max())

    def series_timestamps(self, i: int) -> np.ndarray:
        return self.timestamps[self.target[i]]

    def metric_names(self) -> set[str]:
        return {dict(ls)["__name__"] for ls in self.labels}


@dataclass(slots=True)
class _Specs:
    """Per-series parameters collected while laying out the hosts (cold path)."""

    labels: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    target: list[int] = field(default_factory=list)
    level: list[float] = field(default_factory=list)  # counter: rate per second
    scale: list[float] = field(default_factory=list)
    quantum: list[float] = field(default_factory=list)  # 0: full precision
    group: list[int] = field(default_factory=list)  # histogram group, -1 otherwise
    bucket: list[int] = field(default_factory=list)

    def add(
        self,
        name: str,
        base: dict[str, str],
        extra: dict[str, str],
        kind: int,
        target: int,
        level: float,
        scale: float = 0.0,
        quantum: float = 0.0,
        group: int = -1,
        bucket: int = -1,
    ) -> None:
        ls = dict(base)
        ls.update(extra)
        ls["__name__"] = name
        self.labels.append(tuple(sorted(ls.items())))
        self.kind.append(kind)
        self.target.append(target)
        self.level.append(level)
        self.scale.append(scale)
        self.quantum.append(quantum)
        self.group.append(group)
        self.bucket.append(bucket)


@dataclass(slots=True)
class _Groups:
    """Histogram groups: one per (target, handler)."""

    target: list[int] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)  # requests per second
    median: list[float] = field(default_factory=list)  # latency median, seconds
    sigma: list[float] = field(default_factory=list)  # log-normal shape


_MODES = ("idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice")
_MODE_SHARE = (0.0, 0.18, 0.06, 0.01, 0.002, 0.01, 0.003, 0.001)  # idle takes the rest
_NET_DEVICES = ("eth0", "eth1", "lo", "docker0")
_DISKS = ("sda", "sdb", "nvme0n1", "dm-0")
_FILESYSTEMS = (
    ("/dev/sda1", "ext4", "/"),
    ("/dev/sda2", "vfat", "/boot/efi"),
    ("/dev/sdb1", "xfs", "/var/lib/data"),
    ("tmpfs", "tmpfs", "/run"),
)
_COLLECTORS = ("cpu", "diskstats", "filesystem", "loadavg", "meminfo", "netdev", "stat", "time", "hwmon")
_HANDLERS = ("/api/v1/query", "/api/v1/query_range", "/api/v1/write", "/metrics")
_REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
_GIB = 1 << 30


def _node_target(s: _Specs, rng: np.random.Generator, host: int, target: int) -> None:
    """The series of one node_exporter target."""
    base = {
        "job": "node",
        "instance": f"host-{host:04d}:9100",
        "env": "prod" if host % 4 else "staging",
        "region": _REGIONS[host % len(_REGIONS)],
    }
    ncpu = int(rng.choice([2, 4, 8, 16]))
    busy = float(rng.uniform(0.2, 1.5))
    for cpu in range(ncpu):
        shares = np.array(_MODE_SHARE) * busy * rng.uniform(0.5, 1.5, len(_MODES))
        shares[0] = max(0.05, 1.0 - shares[1:].sum())
        for mode, share in zip(_MODES, shares):
            s.add("node_cpu_seconds_total", base, {"cpu": str(cpu), "mode": mode}, COUNTER, target, share, 0.3, 0.01)
    mem_total = float(rng.choice([8, 16, 32, 64])) * _GIB
    s.add("node_memory_MemTotal_bytes", base, {}, GAUGE_CONST, target, mem_total, quantum=1024)
    for name, frac in (("MemFree", 0.1), ("MemAvailable", 0.45), ("Buffers", 0.02), ("Cached", 0.3),
                       ("Active", 0.35), ("Inactive", 0.2), ("Dirty", 0.0005)):
        s.add(f"node_memory_{name}_bytes", base, {}, GAUGE_WALK, target, mem_total * frac,
              mem_total * frac * 0.01, 4096)
    s.add("node_memory_SwapTotal_bytes", base, {}, GAUGE_CONST, target, 2.0 * _GIB, quantum=1024)
    s.add("node_memory_SwapFree_bytes", base, {}, GAUGE_WALK, target, 1.9 * _GIB, 1e5, 4096)
    for name, tau in (("node_load1", 1.0), ("node_load5", 5.0), ("node_load15", 15.0)):
        s.add(name, base, {}, GAUGE_SMOOTH, target, ncpu * busy * 0.3, tau, 0.01)
    for dev in _NET_DEVICES[: int(rng.integers(2, len(_NET_DEVICES) + 1))]:
        bps = float(rng.lognormal(math.log(2e5), 1.5))
        for d in ("receive", "transmit"):
            f = 1.0 if d == "receive" else 0.6
            s.add(f"node_network_{d}_bytes_total", base, {"device": dev}, COUNTER, target, bps * f, 0.5, 1)
            s.add(f"node_network_{d}_packets_total", base, {"device": dev}, COUNTER, target, bps * f / 900, 0.5, 1)
            s.add(f"node_network_{d}_errs_total", base, {"device": dev}, COUNTER, target, 0.001, 1.0, 1)
            s.add(f"node_network_{d}_drop_total", base, {"device": dev}, COUNTER, target, 0.01, 1.0, 1)
        s.add("node_network_up", base, {"device": dev}, GAUGE_CONST, target, 1.0)
        s.add("node_network_mtu_bytes", base, {"device": dev}, GAUGE_CONST, target, 65536.0 if dev == "lo" else 1500.0)
    for disk in _DISKS[: int(rng.integers(1, len(_DISKS) + 1))]:
        iops = float(rng.lognormal(math.log(50), 1.0))
        ext = {"device": disk}
        s.add("node_disk_reads_completed_total", base, ext, COUNTER, target, iops, 0.6, 1)
        s.add("node_disk_writes_completed_total", base, ext, COUNTER, target, iops * 2, 0.6, 1)
        s.add("node_disk_read_bytes_total", base, ext, COUNTER, target, iops * 16384, 0.6, 512)
        s.add("node_disk_written_bytes_total", base, ext, COUNTER, target, iops * 8192, 0.6, 512)
        s.add("node_disk_io_time_seconds_total", base, ext, COUNTER, target, min(iops / 2000, 0.9), 0.5, 0.001)
    for dev, fstype, mount in _FILESYSTEMS[: int(rng.integers(2, len(_FILESYSTEMS) + 1))]:
        ext = {"device": dev, "fstype": fstype, "mountpoint": mount}
        size = float(rng.choice([1, 50, 200, 1000])) * _GIB
        s.add("node_filesystem_size_bytes", base, ext, GAUGE_CONST, target, size, quantum=4096)
        s.add("node_filesystem_avail_bytes", base, ext, GAUGE_WALK, target, size * 0.4, size * 1e-5, 4096)
        s.add("node_filesystem_free_bytes", base, ext, GAUGE_WALK, target, size * 0.45, size * 1e-5, 4096)
        s.add("node_filesystem_files", base, ext, GAUGE_CONST, target, size / 16384, quantum=1)
        s.add("node_filesystem_files_free", base, ext, GAUGE_WALK, target, size / 20000, 5.0, 1)
    s.add("node_context_switches_total", base, {}, COUNTER, target, ncpu * 2000.0, 0.3, 1)
    s.add("node_intr_total", base, {}, COUNTER, target, ncpu * 1500.0, 0.3, 1)
    s.add("node_forks_total", base, {}, COUNTER, target, 5.0, 0.8, 1)
    s.add("node_procs_running", base, {}, GAUGE_NOISE, target, 2.0, 0.8, 1)
    s.add("node_procs_blocked", base, {}, GAUGE_NOISE, target, 0.3, 1.5, 1)
    s.add("node_filefd_allocated", base, {}, GAUGE_WALK, target, 3000.0, 20.0, 1)
    s.add("node_entropy_available_bits", base, {}, GAUGE_NOISE, target, 3500.0, 0.05, 1)
    s.add("node_time_seconds", base, {}, CLOCK, target, 0.0)
    s.add("node_boot_time_seconds", base, {}, GAUGE_CONST, target, float(1.7e9 - rng.integers(0, 3e6)))
    for chip in range(ncpu // 4 + 1):
        s.add("node_hwmon_temp_celsius", base, {"chip": f"platform_coretemp_{chip}", "sensor": "temp1"},
              GAUGE_WALK, target, 45.0, 0.5, 0.125)
    for col in _COLLECTORS:
        s.add("node_scrape_collector_duration_seconds", base, {"collector": col}, GAUGE_NOISE, target,
              float(rng.uniform(1e-4, 5e-3)), 0.3)
        s.add("node_scrape_collector_success", base, {"collector": col}, GAUGE_CONST, target, 1.0)
    _scrape_meta(s, base, target, rng)


def _api_target(s: _Specs, g: _Groups, rng: np.random.Generator, host: int, target: int) -> None:
    """The series of one application target, with latency histograms."""
    base = {
        "job": "api",
        "instance": f"host-{host:04d}:8080",
        "env": "prod" if host % 4 else "staging",
        "region": _REGIONS[host % len(_REGIONS)],
    }
    for handler in _HANDLERS:
        gi = len(g.target)
        g.target.append(target)
        g.rps.append(float(rng.lognormal(math.log(5), 1.0)))
        g.median.append(float(rng.lognormal(math.log(0.03), 0.8)))
        g.sigma.append(float(rng.uniform(0.6, 1.4)))
        ext = {"handler": handler, "method": "GET" if handler != "/api/v1/write" else "POST", "code": "200"}
        for bi, le in enumerate(HIST_BOUNDS):
            le_s = "+Inf" if math.isinf(le) else f"{le:g}"
            s.add("http_request_duration_seconds_bucket", base, {**ext, "le": le_s}, HIST_BUCKET, target, 0.0,
                  group=gi, bucket=bi)
        s.add("http_request_duration_seconds_sum", base, ext, HIST_SUM, target, 0.0, group=gi)
        s.add("http_request_duration_seconds_count", base, ext, HIST_COUNT, target, 0.0, group=gi)
    s.add("http_requests_in_flight", base, {}, GAUGE_NOISE, target, 3.0, 0.7, 1)
    s.add("process_cpu_seconds_total", base, {}, COUNTER, target, float(rng.uniform(0.05, 0.8)), 0.3, 0.01)
    s.add("process_resident_memory_bytes", base, {}, GAUGE_WALK, target, float(rng.uniform(5e7, 2e9)), 2e6, 4096)
    s.add("process_open_fds", base, {}, GAUGE_WALK, target, 40.0, 1.0, 1)
    s.add("go_goroutines", base, {}, GAUGE_WALK, target, 120.0, 3.0, 1)
    for q in ("0", "0.25", "0.5", "0.75", "1"):
        s.add("go_gc_duration_seconds", base, {"quantile": q}, GAUGE_NOISE, target,
              2e-5 * (1 + 4 * float(q)), 0.4)
    _scrape_meta(s, base, target, rng)


def _scrape_meta(s: _Specs, base: dict[str, str], target: int, rng: np.random.Generator) -> None:
    s.add("up", base, {}, GAUGE_CONST, target, 1.0)
    s.add("scrape_duration_seconds", base, {}, GAUGE_NOISE, target, float(rng.uniform(0.005, 0.05)), 0.2)
    s.add("scrape_samples_scraped", base, {}, GAUGE_CONST, target, float(rng.integers(50, 900)))


def _layout(n_series: int, rng: np.random.Generator) -> tuple[_Specs, _Groups, int]:
    """Add hosts until there are at least n_series series (trimmed later)."""
    s, g = _Specs(), _Groups()
    host = 0
    n_targets = 0
    while len(s.kind) < n_series:
        _node_target(s, rng, host, n_targets)
        _api_target(s, g, rng, host, n_targets + 1)
        n_targets += 2
        host += 1
    return s, g, n_targets


def _timestamps(n_targets: int, n_samples: int, interval_ms: int, end_ms: int,
                jitter_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scrape times per target: a phase inside the interval, optional jitter.

    The newest scrape of every target is at or before end_ms."""
    phase = rng.integers(0, interval_ms, n_targets)
    jittered = rng.random(n_targets) < jitter_fraction
    steps = np.arange(-(n_samples - 1), 1, dtype=np.int64) * interval_ms
    ts = (end_ms - JITTER_MS - phase)[:, None] + steps[None, :]
    jitter = rng.integers(-JITTER_MS, JITTER_MS + 1, (n_targets, n_samples))
    ts += np.where(jittered[:, None], jitter, 0)
    return ts.astype(np.int64), jittered


def _quantise(v: np.ndarray, q: np.ndarray, floor: bool = False) -> np.ndarray:
    """Snap each row to its quantum; rows with quantum 0 keep full precision.

    Sub-unit quanta (0.01, 0.125, ...) divide whole ticks by 1/q, so 0.01
    steps give the nearest double of the decimal, as an exporter printing
    "12345.67" would, not an accumulated product."""
    q = q[:, None]
    safe = np.where(q > 0, q, 1.0)
    ticks = np.floor(v / safe) if floor else np.round(v / safe)
    inv = np.where(safe < 1.0, np.round(1.0 / safe), 1.0)
    snapped = np.where(safe < 1.0, ticks / inv, ticks * safe)
    return np.where(q > 0, snapped, v)


def _counters(level: np.ndarray, scale: np.ndarray, quantum: np.ndarray, reset_at: np.ndarray,
              n: int, dt_s: float, rng: np.random.Generator) -> np.ndarray:
    """Monotone counters with a restart (back to ~0) at reset_at per row."""
    m = len(level)
    mean = level * dt_s
    # Gamma-distributed increments: positive, mean `mean`, coefficient of variation `scale`.
    cv = np.maximum(scale, 1e-3)
    shape = 1.0 / cv**2
    inc = rng.gamma(shape[:, None], (mean / shape)[:, None], (m, n))
    start = mean * rng.uniform(100, 100_000, m)  # the counter has been running for a while
    cum = np.cumsum(inc, axis=1)
    cols = np.arange(n)[None, :]
    before = np.take_along_axis(cum, np.clip(reset_at - 1, 0, n - 1)[:, None], axis=1)
    # After the restart the counter holds only the increments since then.
    v = cum + np.where(cols < reset_at[:, None], start[:, None], -before)
    return np.maximum(_quantise(v, quantum, floor=True), 0.0)


def _walk(level: np.ndarray, scale: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    steps = rng.normal(0.0, 1.0, (len(level), n)) * scale[:, None]
    v = level[:, None] + np.cumsum(steps, axis=1)
    return np.clip(v, 0.0, 2.0 * np.maximum(level, 1.0)[:, None])


def _noise(level: np.ndarray, scale: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    v = level[:, None] * (1.0 + scale[:, None] * rng.normal(0.0, 1.0, (len(level), n)))
    return np.maximum(v, 0.0)


def _smooth(level: np.ndarray, tau_min: np.ndarray, n: int, dt_s: float, rng: np.random.Generator) -> np.ndarray:
    """Load-average-like series: exponentially smoothed non-negative noise.

    The recursion runs over time steps, each step vectorised over all rows."""
    alpha = 1.0 - np.exp(-dt_s / (tau_min * 60.0))
    x = level[:, None] * rng.gamma(2.0, 0.5, (len(level), n))
    out = np.empty_like(x)
    acc = level.copy()
    for j in range(n):
        acc = acc + alpha * (x[:, j] - acc)
        out[:, j] = acc
    return out


def _lognormal_cdf(x: np.ndarray, median: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        z = (np.log(x) - np.log(median)) / (sigma * math.sqrt(2.0))
    erf = np.frompyfunc(math.erf, 1, 1)
    return (0.5 * (1.0 + erf(z).astype(np.float64)))


def _histograms(g: _Groups, reset_at_target: np.ndarray, n: int, dt_s: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative bucket counts (groups, buckets, n), sums and counts (groups, n)."""
    ng = len(g.target)
    bounds = np.array(HIST_BOUNDS)
    median = np.array(g.median)
    sigma = np.array(g.sigma)
    cdf = _lognormal_cdf(bounds[None, :], median[:, None], sigma[:, None])
    cdf[:, -1] = 1.0
    p = np.diff(np.concatenate([np.zeros((ng, 1)), cdf], axis=1), axis=1)
    p = np.clip(p, 0.0, None)
    p /= p.sum(axis=1, keepdims=True)
    reqs = rng.poisson(np.array(g.rps)[:, None] * dt_s, (ng, n))
    per_bucket = rng.multinomial(reqs, p[:, None, :])  # (ng, n, nb)
    # Observed latency sum per step: requests times a noisy mean latency.
    mean_lat = median * np.exp(sigma**2 / 2)
    lat_sum = reqs * mean_lat[:, None] * rng.lognormal(0.0, 0.1, (ng, n))
    reset_at = reset_at_target[np.array(g.target, dtype=np.int64)] if ng else np.zeros(0, np.int64)
    cols = np.arange(n)[None, :]
    start = np.round(rng.uniform(100, 10_000, ng))  # scrapes since the process started

    def run(inc: np.ndarray, init: np.ndarray) -> np.ndarray:
        cum = np.cumsum(inc, axis=-1)
        ra = reset_at.reshape((-1,) + (1,) * (inc.ndim - 1))
        idx = np.broadcast_to(np.clip(ra - 1, 0, n - 1), inc.shape[:-1] + (1,))
        before = np.take_along_axis(cum, idx, axis=-1)
        return np.where(cols.reshape((1,) * (inc.ndim - 1) + (n,)) < ra, cum + init, cum - before)

    cum_buckets = np.cumsum(per_bucket, axis=2).transpose(0, 2, 1).astype(np.float64)  # (ng, nb, n)
    buckets = run(cum_buckets, cum_buckets[:, :, :1] * start[:, None, None])
    counts = buckets[:, -1, :]
    sums = run(lat_sum, lat_sum[:, :1] * start[:, None])
    return buckets, sums, counts


def generate(n_series: int, n_samples: int, *, seed: int = 42, interval_ms: int = INTERVAL_MS,
             now_ms: int | None = None, jitter_fraction: float = 0.5) -> Dataset:
    """Build a dataset of exactly n_series series of n_samples samples ending at now_ms.

    The same (n_series, n_samples, seed, now_ms) always gives the same data."""
    if n_series <= 0 or n_samples <= 0:
        raise ValueError("n_series and n_samples must be positive")
    rng = np.random.default_rng(seed)
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    specs, groups, n_targets = _layout(n_series, rng)
    dt_s = interval_ms / 1000.0
    ts, jittered = _timestamps(n_targets, n_samples, interval_ms, now_ms, jitter_fraction, rng)

    kind = np.array(specs.kind, dtype=np.uint8)
    target = np.array(specs.target, dtype=np.int64)
    level = np.array(specs.level)
    scale = np.array(specs.scale)
    quantum = np.array(specs.quantum)
    grp = np.array(specs.group, dtype=np.int64)
    bucket = np.array(specs.bucket, dtype=np.int64)

    # A restarting target restarts at one scrape somewhere after the first.
    restarts = rng.random(n_targets) < RESET_PROBABILITY
    reset_at_target = np.where(restarts, rng.integers(1, max(n_samples, 2), n_targets), n_samples)
    if n_samples == 1:
        reset_at_target[:] = 1

    values = np.empty((len(kind), n_samples), dtype=np.float64)
    sel = kind == COUNTER
    values[sel] = _counters(level[sel], scale[sel], quantum[sel], reset_at_target[target[sel]], n_samples, dt_s, rng)
    sel = kind == GAUGE_CONST
    values[sel] = _quantise(np.repeat(level[sel][:, None], n_samples, axis=1), quantum[sel])
    sel = kind == GAUGE_WALK
    values[sel] = _quantise(_walk(level[sel], scale[sel], n_samples, rng), quantum[sel])
    sel = kind == GAUGE_NOISE
    values[sel] = _quantise(_noise(level[sel], scale[sel], n_samples, rng), quantum[sel])
    sel = kind == GAUGE_SMOOTH
    values[sel] = _quantise(_smooth(level[sel], scale[sel], n_samples, dt_s, rng), quantum[sel])
    sel = kind == CLOCK
    values[sel] = ts[target[sel]] / 1000.0
    if len(groups.target):
        buckets, sums, counts = _histograms(groups, reset_at_target, n_samples, dt_s, rng)
        sel = kind == HIST_BUCKET
        values[sel] = buckets[grp[sel], bucket[sel]]
        sel = kind == HIST_SUM
        values[sel] = sums[grp[sel]]
        sel = kind == HIST_COUNT
        values[sel] = counts[grp[sel]]

    # Trim to exactly n_series; drop targets no series uses any more.
    labels = specs.labels[:n_series]
    kind, target, values, grp = kind[:n_series], target[:n_series], values[:n_series], grp[:n_series]
    used = np.unique(target)
    remap = np.full(n_targets, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return Dataset(
        labels=labels,
        kinds=kind,
        target=remap[target],
        timestamps=np.ascontiguousarray(ts[used]),
        values=np.ascontiguousarray(values),
        jittered=jittered[used],
        seed=seed,
        interval_ms=interval_ms,
        group=grp,
    )


def generate_profile(profile: Profile, *, seed: int = 42, now_ms: int | None = None,
                     jitter_fraction: float = 0.5) -> Dataset:
    return generate(profile.n_series, profile.n_samples, seed=seed, interval_ms=profile.interval_ms,
                    now_ms=now_ms, jitter_fraction=jitter_fraction)
