"""The systems under test, and running each as a child process.

Every system is started on a free loopback port with a fresh temporary data
directory, and always stopped and waited for: `Server` is a context manager
whose exit sends SIGTERM, waits, then SIGKILLs whatever is left of the whole
process tree. Children also get PR_SET_PDEATHSIG, so even a SIGKILLed driver
leaves no server behind.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import psutil

_REPO = Path(__file__).resolve().parents[1]
INSTALL_HINT = "apt-get update && apt-get install -y prometheus victoria-metrics"
READY_TIMEOUT_S = 120.0  # Athens compiles its Numba kernels on a cold cache
STOP_TIMEOUT_S = 30.0


class BenchError(Exception):
    """The benchmark cannot go on (missing binary, server did not start, ...)."""


class ServerStartError(BenchError):
    """A server exited or never became ready."""


def free_port() -> int:
    """A currently free loopback TCP port (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dir_bytes(path: Path) -> int:
    """Bytes of all regular files under path (apparent size, hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except FileNotFoundError:
                continue  # removed while we walked (compaction)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_size
    return total


def _http(method: str, url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_ok(conn: http.client.HTTPConnection, path: str) -> None:
    """GET path on a kept-alive connection, body read; anything but 200 is an error
    (a timing loop must not time error answers)."""
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path}: HTTP {resp.status}")


def _set_pdeathsig() -> None:
    """In the child: die with SIGTERM when the driver dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass(frozen=True, slots=True)
class System:
    """How to start, probe and measure one system."""

    name: str
    label: str
    ready_path: str = "/-/ready"  # answers 200 once the system accepts traffic
    stores: bool = True  # takes remote writes (bench.floor's baselines do not)

    def missing(self) -> str | None:
        """Why this system cannot run here, or None."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def command(self, port: int, data_dir: Path, work_dir: Path) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Extra environment for the server process."""
        return {}

    def disk_bytes(self, base_url: str, data_dir: Path) -> int:
        """On-disk size of everything ingested, after whatever flush the system offers."""
        return dir_bytes(data_dir)


def _importing_from(checkout: Path) -> dict[str, str]:
    """The environment for a Python server importing first from checkout."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(checkout) + (os.pathsep + path if path else "")}


def _binary_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    text = (out.stdout + out.stderr).strip().splitlines()
    if text:
        return text[0].strip()
    # victoria-metrics 1.79 from Debian prints nothing for -version.
    try:
        pkg = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}", Path(argv[0]).name],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return pkg.stdout.strip() or "unknown"


@dataclass(frozen=True, slots=True)
class Prometheus(System):
    name: str = "prometheus"
    label: str = "Prometheus"

    def missing(self) -> str | None:
        if shutil.which("prometheus") is None:
            return f"`prometheus` is not on PATH; install it with: {INSTALL_HINT}"
        return None

    def version(self) -> str:
        return _binary_version(["prometheus", "--version"])

    def command(self, port: int, data_dir: Path, work_dir: Path) -> list[str]:
        cfg = work_dir / "prometheus.yml"
        cfg.write_text("global: {}\nscrape_configs: []\n")
        return [
            "prometheus",
            f"--config.file={cfg}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
            "--web.enable-admin-api",
            "--log.level=warn",
        ]

    def disk_bytes(self, base_url: str, data_dir: Path) -> int:
        """Size of a snapshot that includes the head: the live dir is mostly WAL."""
        import json

        status, body = _http("POST", base_url + "/api/v1/admin/tsdb/snapshot?skip_head=false", timeout=300)
        if status != 200:
            raise BenchError(f"prometheus snapshot failed: {status} {body[:200]!r}")
        name = json.loads(body)["data"]["name"]
        return dir_bytes(data_dir / "snapshots" / name)


@dataclass(frozen=True, slots=True)
class VictoriaMetrics(System):
    name: str = "victoriametrics"
    label: str = "VictoriaMetrics"

    def missing(self) -> str | None:
        if shutil.which("victoria-metrics") is None:
            return f"`victoria-metrics` is not on PATH; install it with: {INSTALL_HINT}"
        return None

    def version(self) -> str:
        return _binary_version(["victoria-metrics", "-version"])

    def command(self, port: int, data_dir: Path, work_dir: Path) -> list[str]:
        return [
            "victoria-metrics",
            f"-storageDataPath={data_dir}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-search.latencyOffset=1s",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]

    ready_path: str = "/health"

    def disk_bytes(self, base_url: str, data_dir: Path) -> int:
        """Flush, wait until every row is in a part on disk, force a merge of
        those parts, and measure once that has settled.

        Settled: every row added is in a part on disk (vm_rows of the small
        and big parts equals vm_rows_added_to_storage_total: right after
        force_flush rows can still be in memory, and a merge forced then
        leaves them out), no merge running, and the same directory size in
        two polls a second apart."""
        _http("GET", base_url + "/internal/force_flush", timeout=300)
        self._settle(base_url, data_dir)
        _http("GET", base_url + "/internal/force_merge", timeout=300)
        return self._settle(base_url, data_dir)

    def _settle(self, base_url: str, data_dir: Path) -> int:
        deadline = time.monotonic() + 300
        last = -1
        while time.monotonic() < deadline:
            time.sleep(1.0)
            status, body = _http("GET", base_url + "/metrics")
            if status != 200:
                continue
            m = _vm_metrics(body.decode(errors="replace"))
            busy = m.get("vm_active_force_merges", 0) + m.get("vm_pending_rows{type=\"storage\"}", 0) + sum(
                v for k, v in m.items() if k.startswith("vm_active_merges"))
            on_disk = m.get("vm_rows{type=\"storage/small\"}", 0) + m.get("vm_rows{type=\"storage/big\"}", 0)
            size = dir_bytes(data_dir)
            if busy == 0 and on_disk == m.get("vm_rows_added_to_storage_total", -1) and size == last:
                return size
            last = size
        raise BenchError("victoriametrics did not settle within 300 s")


def _vm_metrics(text: str) -> dict[str, float]:
    out = {}
    for ln in text.splitlines():
        if ln and not ln.startswith("#"):
            name, _, value = ln.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Athens(System):
    name: str = "athens"
    label: str = "Athens"
    workers: int = 2
    extra_args: tuple[str, ...] = ()
    checkout: Path = _REPO  # whose athens package runs (bench.ab compares two)

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "athens"]

    def env(self) -> dict[str, str]:
        """Run the athens package of the checkout, whatever the working directory."""
        return _importing_from(self.checkout)

    def missing(self) -> str | None:
        try:
            out = subprocess.run(self._argv() + ["serve", "--help"], capture_output=True, text=True,
                                 timeout=60, cwd=self.checkout)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"`python -m athens serve --help` failed: {e}"
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            return f"`python -m athens serve` is not available yet ({last})"
        return None

    def version(self) -> str:
        try:
            import athens

            return f"athens {getattr(athens, '__version__', '?')}"
        except ImportError:
            return "athens ?"

    def command(self, port: int, data_dir: Path, work_dir: Path) -> list[str]:
        return self._argv() + ["serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
                               "--workers", str(self.workers), *self.extra_args]

    def disk_bytes(self, base_url: str, data_dir: Path) -> int:
        """Seal the heads into segment files (which truncates the WAL), then the whole dir."""
        status, body = _http("POST", base_url + "/internal/force_flush", timeout=300)
        if status != 200:
            raise BenchError(f"athens force_flush failed: {status} {body[:200]!r}")
        return dir_bytes(data_dir)


@dataclass(frozen=True, slots=True)
class Baseline(System):
    """bench.baseline_server: no storage, a constant answer to every GET."""

    name: str = "asyncio"
    label: str = "asyncio"
    stores: bool = False

    def missing(self) -> str | None:
        return None

    def version(self) -> str:
        import aiohttp
        import uvloop

        return f"{self.name} (aiohttp {aiohttp.__version__}, uvloop {uvloop.__version__})"

    def command(self, port: int, data_dir: Path, work_dir: Path) -> list[str]:
        return [sys.executable, "-m", "bench.baseline_server", self.name, str(port)]

    def env(self) -> dict[str, str]:
        return _importing_from(_REPO)


def baselines() -> dict[str, System]:
    """bench.floor's reference servers (they store nothing)."""
    return {name: Baseline(name=name, label=name) for name in ("aiohttp", "asyncio")}


def all_systems(athens_workers: int = 2, athens_args: tuple[str, ...] = ()) -> dict[str, System]:
    return {
        "athens": Athens(workers=athens_workers, extra_args=athens_args),
        "prometheus": Prometheus(),
        "victoriametrics": VictoriaMetrics(),
    }


def tree(proc: psutil.Process) -> list[psutil.Process]:
    """The process and all its descendants still alive."""
    try:
        return [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def athens_role(cmdline: list[str]) -> str | None:
    """An Athens process by what it does (supervisor, router, worker-N), or
    None for any other command line."""
    if any("athens.supervisor" in arg for arg in cmdline[1:4]):  # -m athens.supervisor, or -S -c "..."
        return "supervisor"
    if "_router" in cmdline:
        return "router"
    if "_worker" in cmdline:
        i = cmdline.index("--index") if "--index" in cmdline else -1
        return f"worker-{cmdline[i + 1]}" if 0 <= i < len(cmdline) - 1 else "worker"
    return None


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """User+system CPU of the whole tree, including children it already reaped."""
    total = 0.0
    for i, p in enumerate(tree(proc)):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
        if i == 0:
            total += t.children_user + t.children_system
    return total


def tree_rss(proc: psutil.Process) -> int:
    """Summed RSS of the tree (pages shared between processes count once per process)."""
    return tree_rss_anon(proc)[0]


def tree_rss_anon(proc: psutil.Process) -> tuple[int, int]:
    """Summed RSS of the tree, and the anonymous part of it: RSS less the
    pages mapped from files and shared memory (statm's `shared`; all of RSS
    where psutil does not report it). File-backed pages are the page
    cache's (libraries, a segment file Athens maps to read it); what a
    system reads with pread() instead does not show in its RSS at all."""
    rss = anon = 0
    for p in tree(proc):
        try:
            m = p.memory_info()
        except psutil.NoSuchProcess:
            continue
        rss += m.rss
        anon += m.rss - getattr(m, "shared", 0)
    return rss, anon


def tree_pss(proc: psutil.Process) -> int:
    """Summed PSS of the tree: each shared page split between the processes
    mapping it, so pages Athens' processes share (Python, numpy, Numba's
    LLVM) count once in all. Reads smaps_rollup: slower than tree_rss."""
    total = 0
    for p in tree(proc):
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class Sampler:
    """Calls sample() on a thread every interval_s, from entering the
    context until leaving it, and once more then."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class MemorySampler(Sampler):
    """Samples a process tree's summed RSS, anonymous RSS and PSS; keeps the
    peaks, RSS's overall and per phase (mark(): where in the run the peak is)."""

    def __init__(self, proc: psutil.Process, interval_s: float = 0.2, phase: str = "ingest") -> None:
        super().__init__(interval_s)
        self.proc = proc
        self.peak_pss = 0
        self.peak_anon = 0
        self.phase = phase
        self.peak_rss_by_phase: dict[str, int] = {}

    @property
    def peak_rss(self) -> int:
        return max(self.peak_rss_by_phase.values(), default=0)

    def mark(self, phase: str) -> None:
        """Samples from now on belong to `phase`."""
        self.phase = phase

    def sample(self) -> None:
        by_phase = self.peak_rss_by_phase
        rss, anon = tree_rss_anon(self.proc)
        by_phase[self.phase] = max(by_phase.get(self.phase, 0), rss)
        self.peak_anon = max(self.peak_anon, anon)
        self.peak_pss = max(self.peak_pss, tree_pss(self.proc))


class Server:
    """A running system: fresh data dir (or the given one, kept), free port,
    log file; stopped on exit."""

    def __init__(self, system: System, log_dir: Path, keep_data: bool = False,
                 data_dir: Path | None = None) -> None:
        self.system = system
        self.log_dir = log_dir
        self.keep_data = keep_data
        self.given_data_dir = data_dir
        self.port = 0
        self.work_dir: Path | None = None
        self.data_dir: Path | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self.proc: psutil.Process | None = None
        self.log_path = log_dir / f"{system.name}.log"
        self.startup_s = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"athens-bench-{self.system.name}-"))
        self.data_dir = self.given_data_dir or self.work_dir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.port = free_port()
        argv = self.system.command(self.port, self.data_dir, self.work_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        t0 = time.monotonic()
        try:
            self.popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.work_dir, start_new_session=True, preexec_fn=_set_pdeathsig,
                env={**os.environ, **self.system.env()},
            )
        finally:
            log.close()
        self.proc = psutil.Process(self.popen.pid)
        self._wait_ready(t0)

    def _wait_ready(self, t0: float) -> None:
        url = self.base_url + self.system.ready_path
        while time.monotonic() - t0 < READY_TIMEOUT_S:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise ServerStartError(f"{self.system.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            try:
                status, _ = _http("GET", url, timeout=2)
                if status == 200:
                    self.startup_s = time.monotonic() - t0
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ServerStartError(f"{self.system.name} not ready after {READY_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL every process of the tree still alive."""
        if self.popen is not None and self.proc is not None:
            procs = tree(self.proc)
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
            for p in procs:
                try:
                    if p.is_running():
                        p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait(timeout=10)
            self.popen = None
        if self.work_dir is not None and not self.keep_data:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None
