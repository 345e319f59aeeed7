"""The supervisor: starts the router and one shard worker per CPU set,
pins the workers, restarts any child that dies (with exponential backoff),
tells systemd when the node is ready, and on SIGTERM/SIGINT stops the router
first, then lets the workers flush.

`athens serve` plans the children (athens.launch) and execs this module
under `python -S` (athens.launch.supervisor_argv). It runs for as long as
the node does and does nothing heavy, so it imports the standard library
only (and Athens' logging, sd_notify and heap, which use nothing else),
without the site module: ~13 MiB RSS instead of 24 (docs/benchmarks.md);
once the node is ready it releases the pages of its code that ran to start
(heap.release_code): 7.4 + 2.5 MiB anonymous + file-backed then, instead
of 6.9 + 6.6 without (ctypes, which it needs for that, costs the 0.5).
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from athens import heap, systemd
from athens import log as athens_log
from athens.log import kv

log = logging.getLogger("athens.supervisor")

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
# What stops the node; athens.launch blocks them across its exec of this module.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with(supervisor: int) -> None:
    """In a child, between fork and exec: SIGTERM when the supervisor dies,
    even by SIGKILL, so no router or worker serves on without it (and keeps
    the data directory's lock, athens.launch.lock_data_dir). Linux only."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the prctl
        os._exit(1)


class Child:
    """One supervised process and its restart state."""

    def __init__(
        self, name: str, argv: list[str], cpus: list[int] | None, env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cpus = cpus
        self.pass_fds = pass_fds
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.backoff = RESTART_BACKOFF_MIN_S
        self.restart_at: float | None = None
        self.restarts = 0
        self.terminated = False

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, env=self.env, pass_fds=self.pass_fds, preexec_fn=functools.partial(_stop_with, os.getpid())
        )
        self.terminated = False
        self.started_at = time.monotonic()
        self.restart_at = None
        if self.cpus:
            try:
                os.sched_setaffinity(self.proc.pid, self.cpus)
            except OSError as e:
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
    """Runs a plan written by athens.launch.plan_children."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.run_dir = os.path.join(plan["data_dir"], "run")
        host, port = plan["ready"]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.ready_address = (host, port)
        self.stopping = False

        lock = (plan["lock_fd"],) if "lock_fd" in plan else ()

        def child(c: dict[str, Any]) -> Child:
            return Child(c["name"], c["argv"], c["cpus"], {**os.environ, **c["env"]}, lock)

        self.workers = [child(c) for c in plan["workers"]]
        self.router = child(plan["router"])

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _router_ready(self) -> bool:
        """GET /-/ready answered 200. A plain socket: urllib and http.client
        import ssl (~4 MiB with OpenSSL)."""
        try:
            with socket.create_connection(self.ready_address, timeout=1) as s:
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
        path = os.path.join(self.run_dir, RESTARTS_FILE)
        with open(path + ".tmp", "w") as f:
            f.write(json.dumps(counts) + "\n")
        os.replace(path + ".tmp", path)
        self._published = counts

    def run(self) -> int:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        # athens.launch blocked them across the exec; one sent meanwhile is
        # delivered now, before any child starts. Children must not inherit the mask.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if self.stopping:
            return self.shutdown()
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
                    host, port = self.ready_address
                    log.info("ready", extra=kv(url=f"http://{host}:{port}/-/ready"))
                    heap.release_code()  # what ran to start the node
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


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        plan = json.load(f)
    athens_log.setup(plan["log_format"], plan["log_level"], "supervisor")
    return Supervisor(plan).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
