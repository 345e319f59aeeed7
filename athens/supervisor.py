"""The supervisor: topology discovery, spawning, pinning, restarting, stopping.

`athens serve` runs this in the foreground. It starts one shard worker per
CPU set (pinned with psutil cpu_affinity) and one router, restarts any child
that dies (with exponential backoff), tells systemd when the node is ready,
and on SIGTERM/SIGINT stops the router first, then lets the workers flush.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from athens import aot, systemd
from athens.config import ConfigError, ServeConfig
from athens.log import kv
from athens.model.placement import IDENTITY, WITHOUT_NAME

log = logging.getLogger("athens.supervisor")

NODE_ROOT = Path("/sys/devices/system/node")
META_FILE = "athens.json"
META_VERSION = 2  # 2: with "placement"

RESTART_BACKOFF_MIN_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
# A child that stayed up this long is considered healthy again: its next
# crash restarts it after the minimum backoff.
STABLE_AFTER_S = 60.0
ROUTER_STOP_TIMEOUT_S = 15.0
WORKER_STOP_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.1
# Child restart counts, read by the router's /metrics (athens/router/metrics.py).
RESTARTS_FILE = "restarts.json"


def parse_cpulist(text: str) -> list[int]:
    """Kernel cpulist format: "0-3,8,10-11"."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


@dataclass(frozen=True, slots=True)
class Topology:
    """NUMA node id -> the CPUs of that node this process may use."""

    nodes: dict[int, list[int]]


def discover_topology(node_root: Path = NODE_ROOT) -> Topology:
    allowed = set(psutil.Process().cpu_affinity() or range(psutil.cpu_count() or 1))
    nodes: dict[int, list[int]] = {}
    for d in sorted(node_root.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        try:
            cpus = [c for c in parse_cpulist((d / "cpulist").read_text()) if c in allowed]
        except OSError:
            continue
        if cpus:
            nodes[int(d.name[4:])] = cpus
    if not nodes:  # no NUMA information (containers, non-Linux): one node
        nodes = {0: sorted(allowed)}
    return Topology(nodes)


def plan_cpu_sets(topo: Topology, workers: int) -> list[list[int]]:
    """CPU set per worker: workers spread round-robin over NUMA nodes, each
    node's CPUs split into contiguous runs among its workers (shared when a
    node has more workers than CPUs)."""
    node_ids = sorted(topo.nodes)
    per_node: dict[int, list[int]] = {n: [] for n in node_ids}
    for w in range(workers):
        per_node[node_ids[w % len(node_ids)]].append(w)
    plan: list[list[int]] = [[] for _ in range(workers)]
    for node, ws in per_node.items():
        cpus = topo.nodes[node]
        for j, w in enumerate(ws):
            if len(ws) <= len(cpus):
                lo = j * len(cpus) // len(ws)
                hi = (j + 1) * len(cpus) // len(ws)
                plan[w] = cpus[lo:hi]
            else:
                plan[w] = [cpus[j % len(cpus)]]
    return plan


def resolve_worker_count(cfg: ServeConfig, topo: Topology | None = None) -> int:
    return cfg.workers or len((topo or discover_topology()).nodes)


def check_data_dir(cfg: ServeConfig) -> ServeConfig:
    """Create the data directory, or check it was made for this worker count
    and placement; returns cfg with the directory's placement.

    Series are routed by hash range over the worker count, so a data directory
    cannot silently change either. Directories of META_VERSION 1 predate
    placements and place by identity.
    """
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    meta_path = cfg.data_dir / META_FILE
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("workers") != cfg.workers:
            raise ConfigError(
                f"data directory {cfg.data_dir} was created with --workers={meta.get('workers')}; "
                f"started with --workers={cfg.workers}. Resharding is not supported yet"
            )
        placement = meta.get("placement", IDENTITY)
        if cfg.placement not in ("auto", placement):
            raise ConfigError(
                f"data directory {cfg.data_dir} places series by {placement}; started with "
                f"--placement={cfg.placement}. Re-placing series is not supported yet"
            )
        return replace(cfg, placement=placement)
    placement = WITHOUT_NAME if cfg.placement == "auto" else cfg.placement
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": META_VERSION, "workers": cfg.workers, "placement": placement}) + "\n")
    tmp.replace(meta_path)
    return replace(cfg, placement=placement)


def children_env() -> dict[str, str]:
    """The children's environment: one PYTHONHASHSEED for all of them, drawn
    at random per start, so a str hashes alike in router and workers (the
    shards report match groups as hashes, athens.query.planner) and is
    still unpredictable to whoever writes label values."""
    env = dict(os.environ)
    if not env.get("PYTHONHASHSEED", "").isdigit():
        env["PYTHONHASHSEED"] = str(secrets.randbelow(2**32 - 1) + 1)
    return env


class Child:
    """One supervised process and its restart state."""

    def __init__(
        self, name: str, argv: list[str], cpus: list[int] | None, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.backoff = RESTART_BACKOFF_MIN_S
        self.restart_at: float | None = None
        self.restarts = 0
        self.terminated = False

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        self.terminated = False
        self.started_at = time.monotonic()
        self.restart_at = None
        if self.cpus:
            try:
                psutil.Process(self.proc.pid).cpu_affinity(self.cpus)
            except (psutil.Error, OSError) as e:
                log.warning("cannot pin child", extra=kv(child=self.name, err=str(e)))
        log.info("child started", extra=kv(child=self.name, pid=self.proc.pid, cpus=self.cpus))

    def check(self, now: float) -> None:
        """Notice an exit and schedule or perform the restart."""
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            uptime = now - self.started_at
            if uptime >= STABLE_AFTER_S:
                self.backoff = RESTART_BACKOFF_MIN_S
            log.error(
                "child exited; restarting",
                extra=kv(child=self.name, code=code, uptime_s=round(uptime, 1), backoff_s=self.backoff),
            )
            self.proc = None
            self.restart_at = now + self.backoff
            self.backoff = min(self.backoff * 2, RESTART_BACKOFF_MAX_S)
        if self.proc is None and self.restart_at is not None and now >= self.restart_at:
            self.restarts += 1
            self.start()

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM), once: a second SIGTERM that
        arrives after its loop has stopped handling signals kills it while
        it exits (code -15 after a clean stop)."""
        if self.proc is not None and self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout: float) -> None:
        self.terminate()
        proc, self.proc = self.proc, None
        self.restart_at = None
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("child did not stop in time; killing", extra=kv(child=self.name))
            proc.kill()
            proc.wait()
        log.info("child stopped", extra=kv(child=self.name, code=proc.returncode))


class Supervisor:
    def __init__(self, cfg: ServeConfig) -> None:
        topo = discover_topology()
        self.cfg = check_data_dir(replace(cfg, workers=resolve_worker_count(cfg, topo)))
        self.cpu_sets = plan_cpu_sets(topo, self.cfg.workers)
        self.stopping = False
        child_args = self.cfg.to_args()
        exe = [sys.executable, "-m", "athens"]
        self.env = children_env()  # each child's own copy is made in run(), with its build
        self.workers = [
            Child(f"worker-{i}", exe + ["_worker", "--index", str(i)] + child_args, self.cpu_sets[i])
            for i in range(self.cfg.workers)
        ]
        self.router = Child("router", exe + ["_router"] + child_args, None)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _ready_address(self) -> tuple[str, int]:
        host, port = self.cfg.host_port
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return host, port

    def ready_url(self) -> str:
        host, port = self._ready_address()
        return f"http://{host}:{port}/-/ready"

    def _router_ready(self) -> bool:
        """GET /-/ready answered 200. A plain socket: urllib and http.client
        import ssl (with asyncio, ~10 of the supervisor's 28 MiB RSS)."""
        try:
            with socket.create_connection(self._ready_address(), timeout=1) as s:
                s.sendall(b"GET /-/ready HTTP/1.0\r\nHost: athens\r\n\r\n")
                status = s.recv(64).split(b"\r\n", 1)[0].split()
        except OSError:
            return False
        return len(status) >= 2 and status[1] == b"200"

    def _publish_restarts(self) -> None:
        """Write restart counts to run/restarts.json for the router's /metrics."""
        counts = {c.name: c.restarts for c in (*self.workers, self.router)}
        if counts == getattr(self, "_published", None):
            return
        path = self.cfg.data_dir / "run" / RESTARTS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(counts) + "\n")
        tmp.replace(path)
        self._published = counts

    def run(self) -> int:
        (self.cfg.data_dir / "run").mkdir(exist_ok=True)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info(
            "starting",
            extra=kv(workers=self.cfg.workers, cpu_sets=self.cpu_sets, data_dir=str(self.cfg.data_dir),
                     listen=self.cfg.listen),
        )
        built = aot.ensure() if self.cfg.kernels == "ahead-of-time" else None
        if self.stopping:  # asked to stop while building: start nothing
            return self.shutdown()
        for role, children in (("worker", self.workers), ("router", [self.router])):
            env = {k: v for k, v in self.env.items() if k != aot.KERNELS_ENV}  # this start's build or none
            if built is not None:
                env[aot.KERNELS_ENV] = str(aot.role_dir(built, role))
            for c in children:
                c.env = env
        for w in self.workers:
            w.start()
        self.router.start()
        ready = False
        watchdog = systemd.watchdog_interval()
        last_ping = 0.0
        next_ready_check = 0.0
        while not self.stopping:
            now = time.monotonic()
            for c in (*self.workers, self.router):
                c.check(now)
            self._publish_restarts()
            if not ready and now >= next_ready_check:
                next_ready_check = now + 0.2
                if self._router_ready():
                    ready = True
                    systemd.notify("READY=1\nSTATUS=serving")
                    log.info("ready", extra=kv(url=self.ready_url()))
            if watchdog and now - last_ping >= watchdog:
                systemd.notify("WATCHDOG=1")
                last_ping = now
            time.sleep(POLL_INTERVAL_S)
        return self.shutdown()

    def shutdown(self) -> int:
        systemd.notify("STOPPING=1")
        log.info("stopping: router first, then workers")
        self.router.stop(ROUTER_STOP_TIMEOUT_S)
        for w in self.workers:
            w.terminate()  # all at once: they flush in parallel
        for w in self.workers:
            w.stop(WORKER_STOP_TIMEOUT_S)
        log.info("stopped")
        return 0
