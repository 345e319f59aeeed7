"""The supervisor athens.launch execs: its children, and what it imports."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from athens.supervisor import Child

# Counts the SIGTERMs it gets within half a second of the first, then exits 0.
_COUNTER = """
import signal, sys, time
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append(1))
while not got:
    time.sleep(0.01)
time.sleep(0.5)
open(sys.argv[1], "w").write(str(len(got)))
"""


def test_a_child_is_asked_to_stop_once(tmp_path: Path) -> None:
    # shutdown() terminates every worker, then stops each: a second SIGTERM
    # reaching a worker after its loop stopped handling signals killed it
    # while it exited (code -15 after a clean stop).
    out = tmp_path / "count"
    child = Child("counter", [sys.executable, "-c", _COUNTER, str(out)], None)
    child.start()
    time.sleep(0.3)  # its handler is installed
    child.terminate()
    time.sleep(0.1)
    child.stop(5)
    assert out.read_text() == "1"


def test_the_supervisor_imports_the_standard_library_only() -> None:
    # It lives as long as the node: psutil, OpenSSL (hashlib), numpy and the
    # kernel build stay in athens.launch, which the supervisor replaces.
    probe = "import sys; before = set(sys.modules); import athens.supervisor; print(*sorted(set(sys.modules) - before))"
    added = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    tops = {m.split(".")[0] for m in added}
    assert "athens.supervisor" in added
    assert tops - {"athens"} <= sys.stdlib_module_names, tops - sys.stdlib_module_names
    assert not tops & {"_hashlib", "_ssl", "hashlib", "argparse", "pathlib"}, tops
