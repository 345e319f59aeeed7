"""A process that compiled its kernels at start execs itself to start from the cache;
a kernel compiled after the warm-up still links the warmed ones in.

Each case is a real child process with its own Numba cache directory (an
empty one is a fresh install), warming a one-line kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from athens.jit import REEXEC_ENV

KERNEL = """
import numba

@numba.njit(cache=True)
def twice(x):
    return 2 * x

@numba.njit  # not cached: compiled by every process, never a reason to exec
def thrice(x):
    return 3 * x

@numba.njit(cache=True)
def twice_plus_one(x):  # not warmed: compiled while serving, linking twice in
    return twice(x) + 1
"""

# Prints one JSON line per process image: the pid, whether it is the image
# after an exec, and what warm_up() compiled (where it returned).
PROGRAM = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from athens import jit
import kernel

def warm():
    kernel.twice(1)
    kernel.thrice(1)

print(json.dumps({"pid": os.getpid(), "again": os.environ.get(jit.REEXEC_ENV)}), flush=True)
jit.warm_up(warm)
print(json.dumps({"served": True, "twice": kernel.twice(21), "later": kernel.twice_plus_one(20)}), flush=True)
"""


def _run(tmp_path: Path, cache: Path, **env: str) -> list[dict]:
    (tmp_path / "kernel.py").write_text(KERNEL)
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    environ = {k: v for k, v in os.environ.items() if k != REEXEC_ENV}
    out = subprocess.run(
        [sys.executable, str(prog), str(tmp_path)],
        env={**environ, "NUMBA_CACHE_DIR": str(cache), **env},
        capture_output=True, text=True, timeout=120, check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_a_cold_cache_compiles_once_then_the_process_starts_again_from_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, second, served = _run(tmp_path, cache)
    assert first["again"] is None
    assert second == {"pid": first["pid"], "again": "1"}  # exec: the same process
    assert served == {"served": True, "twice": 42, "later": 41}
    # Warm now: no exec at all.
    only, served = _run(tmp_path, cache)
    assert only["again"] is None
    assert served == {"served": True, "twice": 42, "later": 41}


def test_a_cache_that_keeps_nothing_costs_a_compile_not_an_exec_loop(tmp_path: Path) -> None:
    # What the image after an exec sees when the cache did not keep the kernels.
    only, served = _run(tmp_path, tmp_path / "cache", **{REEXEC_ENV: "1"})
    assert only["again"] == "1"
    assert served == {"served": True, "twice": 42, "later": 41}
