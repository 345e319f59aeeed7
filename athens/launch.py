"""What `athens serve` does before it becomes the supervisor.

Reading the topology, checking the data directory and building the kernels
need psutil, hashlib (OpenSSL), argparse and the build machinery: ~9 MiB
that the supervisor, which then only waits on its children for as long as
the node runs, would keep. So this module plans the children, writes the
plan to the data directory and execs athens.supervisor, which imports the
standard library and nothing else; the process (and its PID, which systemd
watches) stays the same.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from athens import aot, systemd
from athens.config import META_FILE, ConfigError, ServeConfig
from athens.log import kv
from athens.model.placement import IDENTITY, WITHOUT_NAME
from athens.supervisor import STOP_SIGNALS

log = logging.getLogger("athens.supervisor")

NODE_ROOT = Path("/sys/devices/system/node")
META_VERSION = 2  # 2: with "placement"
PLAN_FILE = "supervisor.json"  # in the data directory's run/
LOCK_FILE = "lock"  # in run/: held by the supervisor and every child (lock_data_dir)
# How long a new node waits for the processes of one that was killed to exit.
LOCK_WAIT_S = 60.0


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


def lock_data_dir(run_dir: Path, wait_s: float = LOCK_WAIT_S) -> int:
    """Take the data directory for this node: an exclusive lock on run/lock
    whose descriptor the supervisor and every child inherit, so it is held
    until the last of them exits. Without it a node started while another
    ran on the directory (or while the children of a supervisor killed by
    SIGKILL still did) opened every shard twice: two sets of workers
    appending under the same series ids, acknowledged samples lost, indexes
    that no longer opened. A node whose supervisor is alive is refused at
    once; the children of a dead one get SIGTERM from the kernel, and are
    waited for up to wait_s. Returns the inheritable descriptor."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            if _alive(holder) or time.monotonic() >= deadline:
                os.close(fd)
                raise ConfigError(
                    f"data directory {run_dir.parent} is in use by another athens (pid {holder or '?'})"
                ) from None
            if not waiting:
                log.warning("data directory in use; waiting for its processes to exit",
                            extra=kv(pid=holder, wait_s=wait_s))
                waiting = True
            time.sleep(0.2)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # the supervisor's pid: launch execs it
    os.set_inheritable(fd, True)
    return fd


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def children_env() -> dict[str, str]:
    """The children's environment: one PYTHONHASHSEED for all of them, drawn
    at random per start, so a str hashes alike in router and workers (the
    shards report match groups as hashes, athens.query.planner) and is
    still unpredictable to whoever writes label values. A kernel build named
    in our own environment is not handed on: each start names its own."""
    env = {k: v for k, v in os.environ.items() if k != aot.KERNELS_ENV}
    if not env.get("PYTHONHASHSEED", "").isdigit():
        env["PYTHONHASHSEED"] = str(secrets.randbelow(2**32 - 1) + 1)
    return env


def plan_children(cfg: ServeConfig, cpu_sets: list[list[int]], built: Path | None) -> dict[str, object]:
    """What athens.supervisor runs: each child's command line, CPU set and
    the environment it adds to the supervisor's."""
    exe = [sys.executable, "-m", "athens"]
    child_args = cfg.to_args()

    def role_env(role: str) -> dict[str, str]:
        return {aot.KERNELS_ENV: str(aot.role_dir(built, role))} if built is not None else {}

    host, port = cfg.host_port
    return {
        "data_dir": str(cfg.data_dir),
        "ready": [host, port],
        "log_format": cfg.log_format,
        "log_level": cfg.log_level,
        "workers": [
            {"name": f"worker-{i}", "argv": exe + ["_worker", "--index", str(i)] + child_args,
             "cpus": cpu_sets[i], "env": role_env("worker")}
            for i in range(cfg.workers)
        ],
        "router": {"name": "router", "argv": exe + ["_router"] + child_args, "cpus": None,
                   "env": role_env("router")},
    }


def launch(cfg: ServeConfig) -> int:
    """Prepare, then exec the supervisor (returns only when asked to stop
    while building the kernels)."""
    topo = discover_topology()
    cfg = check_data_dir(replace(cfg, workers=resolve_worker_count(cfg, topo)))
    cpu_sets = plan_cpu_sets(topo, cfg.workers)
    run_dir = cfg.data_dir / "run"
    run_dir.mkdir(exist_ok=True)
    lock_fd = lock_data_dir(run_dir)
    stopping: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    log.info("starting", extra=kv(workers=cfg.workers, cpu_sets=cpu_sets, data_dir=str(cfg.data_dir),
                                  listen=cfg.listen))
    built = aot.ensure() if cfg.kernels == "ahead-of-time" else None
    # From here a stop request waits, pending, for the supervisor's handlers:
    # the signal mask survives exec.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if stopping:  # asked to stop while building: start nothing
        systemd.notify("STOPPING=1")
        log.info("stopped before starting")
        return 0
    plan = run_dir / PLAN_FILE
    tmp = plan.with_suffix(".tmp")
    tmp.write_text(json.dumps({**plan_children(cfg, cpu_sets, built), "lock_fd": lock_fd}, indent=1) + "\n")
    tmp.replace(plan)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, supervisor_argv(plan), children_env())


def supervisor_argv(plan: Path) -> list[str]:
    """The supervisor's command line: Python without the site module (-S),
    so none of the environment's .pth files and site customisation run in
    a process that needs the standard library only (4-5 MiB of its ~15 on
    this machine); athens is found on the folder that holds the package,
    searched after the standard library."""
    root = str(Path(__file__).resolve().parent.parent)
    boot = ("import sys; sys.path.append(sys.argv[2]); from athens.supervisor import main; "
            "sys.exit(main(sys.argv[1:2]))")
    return [sys.executable, "-S", "-c", boot, str(plan), root]
