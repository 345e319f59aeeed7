"""The supervisor as systemd sees it, and the command line."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from e2e.harness import http

from athens.config import ServeConfig


def test_notify_ready_after_replay_and_stopping(athens_factory, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(300)  # a cold start compiles the kernels
    athens = athens_factory(env={"NOTIFY_SOCKET": str(sock_path)}).start(wait=False)
    try:
        msg = sock.recv(4096).decode()
        assert "READY=1" in msg
        # READY=1 is only sent once every worker replayed its WAL and answers.
        assert http("GET", athens.url + "/-/ready")[0] == 200
        assert http("GET", athens.url + "/-/healthy")[0] == 200
        # `athens serve` prepared the start and exec'd the supervisor: the
        # PID systemd watches is the same, and what it holds is small.
        sup = psutil.Process(athens.proc.pid)
        assert sup.cmdline()[1:3] == ["-S", "-c"] and "athens.supervisor" in sup.cmdline()[3]
        maps = Path(f"/proc/{sup.pid}/maps").read_text()
        assert not any(lib in maps for lib in ("libcrypto", "_psutil", "numpy")), maps
        # Ready, it gives back the pages of its code that ran to start it
        # (heap.release_code): 2.5 MiB of file pages stay, 6.6 without.
        deadline = time.monotonic() + 10
        while (file_kib := _status_kib(sup.pid, "RssFile")) >= 4096 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert file_kib < 4096
        athens.proc.send_signal(15)
        assert "STOPPING=1" in sock.recv(4096).decode()
        assert athens.proc.wait(60) == 0
    finally:
        sock.close()


def test_help_documents_every_flag():
    out = subprocess.run([sys.executable, "-m", "athens", "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for f in dataclasses.fields(ServeConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in out.stdout, f"{flag} is not in `athens serve --help`"


def test_bad_flags_exit_nonzero_with_message():
    for argv in (["--bogus"], ["--wal-fsync", "sometimes"], ["--listen", "nowhere"], ["--lookback-delta", "5 parsecs"]):
        out = subprocess.run([sys.executable, "-m", "athens", "serve", *argv], capture_output=True, text=True)
        assert out.returncode == 2, argv
        assert "error" in out.stderr, argv


def _status_kib(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
