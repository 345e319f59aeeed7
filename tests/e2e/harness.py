"""Real processes on loopback: `athens serve`, Prometheus, and an HTTP client.

Every loop here is bounded in time; every process started is stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import snappy

START_TIMEOUT_S = 300.0  # a cold start compiles the kernels (and builds them ahead of time)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(pred, timeout: float, what: str, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


LATE_COMPILE = "a kernel is compiled for argument types its build does not have"


class Athens:
    """`athens serve` as a child of the test, on a free port."""

    def __init__(self, data_dir: Path, workers: int = 2, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-athens-{self.port}.log"
        self.argv = [sys.executable, "-m", "athens", "serve", "--listen", f"127.0.0.1:{self.port}",
                     "--data-dir", str(data_dir), "--workers", str(workers), *(extra or [])]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Athens:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env=self.env)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def ready(self) -> bool:
        try:
            return http("GET", self.url + "/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        def check() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"athens exited with {self.proc.returncode}:\n{self.log()}")
            return self.ready()

        wait_until(check, timeout, "athens to become ready")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-6000:]
        except OSError:
            return ""

    def children(self, kind: str) -> list[psutil.Process]:
        """Live child processes whose command line contains `kind` (_worker, _router)."""
        assert self.proc is not None
        out = []
        for c in psutil.Process(self.proc.pid).children():
            try:
                if kind in c.cmdline():
                    out.append(c)
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_all()
        code = self.proc.returncode
        self.proc = None
        # A kernel its build had no variant for was compiled while serving:
        # the warm-ups miss an argument type the serving code passes it.
        late = [line for line in self.log_path.read_text().splitlines() if LATE_COMPILE in line]
        assert not late, "\n".join(late)
        return code

    def kill_all(self) -> None:
        """SIGKILL the supervisor and every child: a crash of the whole node."""
        if self.proc is None:
            return
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        self.proc.wait()

    # --- protocol helpers ---------------------------------------------------

    def remote_write(self, pb_request: Any) -> tuple[int, bytes]:
        body = snappy.compress(pb_request.SerializeToString())
        return self.post_raw(body)

    def post_raw(self, body: bytes) -> tuple[int, bytes]:
        return http("POST", self.url + "/api/v1/write", body, {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        })

    def api(self, path: str, params: dict[str, str], method: str = "GET") -> tuple[int, dict[str, Any]]:
        data = urllib.parse.urlencode(params)
        if method == "GET":
            status, body = http("GET", f"{self.url}{path}?{data}")
        else:
            status, body = http("POST", self.url + path, data.encode(),
                                {"Content-Type": "application/x-www-form-urlencoded"})
        return status, json.loads(body)


def make_write(pb: Any, series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> Any:
    """A prometheus.WriteRequest from (labels, [(ts_ms, value)]) pairs."""
    req = pb.WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for n, v in sorted(labels.items()):
            ts.labels.add(name=n, value=v)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    return req


# Prometheus scraping itself every second and remote-writing to {url}.
SELF_SCRAPE_CONFIG = """
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['$SELF']
remote_write:
  - url: {url}/api/v1/write
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 100ms
      max_backoff: 1s
"""


class Prometheus:
    """Debian's prometheus on a free port, optionally remote-writing somewhere."""

    def __init__(self, data_dir: Path, config: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        cfg = data_dir / "prometheus.yml"
        cfg.write_text(config.replace("$SELF", f"127.0.0.1:{self.port}"))
        self.log_path = data_dir / "prometheus.log"
        self.argv = ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={data_dir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log)
        log.close()
        wait_until(lambda: _ok(self.url + "/-/ready"), 60, "prometheus to become ready")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


WRITE_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                 "X-Prometheus-Remote-Write-Version": "0.1.0"}


@contextlib.contextmanager
def beside_prometheus(tmp: Path, body: bytes, athens_extra: Sequence[str] = (),
                      prom_flags: Sequence[str] = ()) -> Iterator[tuple[Athens, Prometheus]]:
    """A two-worker Athens and a receive-only Prometheus, each sent the same
    remote-write 1.0 body (snappy): the setup of the tests that compare
    the two systems' answers on the same data."""
    athens = Athens(tmp / "athens", workers=2, extra=list(athens_extra)).start()
    prom = None
    try:
        prom = Prometheus(tmp / "prometheus", "global: {}\nscrape_configs: []\n")
        prom.argv.extend(prom_flags)
        prom.start()
        assert http("POST", prom.url + "/api/v1/write", body, WRITE_HEADERS)[0] == 204
        assert athens.post_raw(body)[0] == 204
        yield athens, prom
    finally:
        if prom is not None:
            prom.stop()
        athens.stop()


def _ok(url: str) -> bool:
    try:
        return http("GET", url, timeout=2)[0] == 200
    except OSError:
        return False
