"""Where the serving processes' compiled kernels come from: the supervisor's
ahead-of-time build (no Numba in the router and workers), or Numba's JIT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from athens import aot
from athens.aot import KERNELS_ENV
from e2e.harness import http

CAN_BUILD = bool(shutil.which("cc")) and Path(sysconfig.get_paths()["include"], "Python.h").exists()


def _numba_loaded(pid: int) -> bool:
    return "libllvmlite" in Path(f"/proc/{pid}/maps").read_text()


def _one_plus_one(url: str) -> str:
    status, body = http("GET", url + "/api/v1/query?query=1%2B1")
    assert status == 200
    return json.loads(body)["data"]["result"][1]


@pytest.mark.skipif(not CAN_BUILD, reason="no C compiler or Python headers: the kernels run JIT")
def test_router_and_workers_run_the_ahead_of_time_build(athens_factory) -> None:
    a = athens_factory().start()
    procs = a.children("_router") + a.children("_worker")
    assert len(procs) == 3
    for p in procs:
        assert KERNELS_ENV in p.environ() and not _numba_loaded(p.pid)
    assert _one_plus_one(a.url) == "2"


def test_jit_kernels_on_request(athens_factory) -> None:
    # A build named in the supervisor's own environment is not handed on.
    a = athens_factory(extra=["--kernels", "jit"], env={KERNELS_ENV: "/nonexistent"}).start()
    for p in a.children("_router") + a.children("_worker"):
        assert KERNELS_ENV not in p.environ() and _numba_loaded(p.pid)
    assert _one_plus_one(a.url) == "2"


CODEC = """
import json, sys
import numpy as np
from athens import kernels
from athens.shards import chunkenc

assert kernels.AHEAD_OF_TIME and "numba" not in sys.modules
ts = np.array([0, 1000, 2000, 3500], np.int64)
vals = np.array([1.0, 2.0, 2.5, 7.25])
starts = np.array([0, 4], np.int64)

def encode(t):  # the codec's kernel itself: built for writeable timestamps only
    out = np.empty(chunkenc._max_encoded_len(4, 1), np.uint8)
    offsets = np.empty(2, np.int64)
    end = chunkenc._encode_many(t, vals.view(np.uint64), vals, starts, out, offsets, chunkenc._NO_REFS)
    return out[:end].tobytes()

built = encode(ts)
assert "numba" not in sys.modules
fallback = encode(np.frombuffer(ts.tobytes(), np.int64))  # read-only: compiled now, intrinsics and all
print(json.dumps({"numba": "numba" in sys.modules, "same": built == fallback}))
"""

SAMPLES = """
import json, sys
import numpy as np
from athens import kernels
from athens.wire import remote_read

assert kernels.AHEAD_OF_TIME and "numba" not in sys.modules
ts = np.array([0, 1000, 2000, 3500], np.int64)
vals = np.array([1.0, 2.0, 2.5, 7.25])
out = np.empty(22 * 4, np.uint8)
# int32 timestamps: compiled now, with the kernel of its module it calls
n = remote_read.k_samples(ts.astype(np.int32), vals.view(np.uint64), out)
print(json.dumps({"numba": "numba" in sys.modules, "same": out[:n].tobytes() == remote_read.samples_reference(ts, vals)}))
"""


@pytest.mark.skipif(not CAN_BUILD, reason="no C compiler or Python headers: the kernels run JIT")
@pytest.mark.parametrize("role, program", [("worker", CODEC), ("router", SAMPLES)])
def test_a_call_the_build_has_no_variant_for_is_compiled_with_numba(role: str, program: str) -> None:
    built = aot.ensure()
    assert built is not None
    env = {**os.environ, KERNELS_ENV: str(aot.role_dir(built, role))}
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {"numba": True, "same": True}
    assert "a kernel is compiled for argument types its build does not have" in out.stderr


UNPICKLES = """
import json, pickle
import numpy as np

calls = 0
loads = pickle.loads

def counting(data, *args, **kwargs):  # stands for pickle.loads: counts the compiled code's unpickles
    global calls
    calls += 1
    return loads(data, *args, **kwargs)

pickle.loads = counting
from athens import kernels
from athens.shards import chunkenc

assert kernels.AHEAD_OF_TIME
ts = np.array([0, 1000, 2000, 3500], np.int64)
starts = np.array([0, 2, 4], np.int64)

def call():  # a kernel returning arrays, boxed with the build's pickled constants
    return chunkenc._find_shared(ts, starts)

call()
first = calls
for _ in range(20):
    call()
print(json.dumps({"restored": pickle.loads is counting, "first": first, "more": calls - first}))
"""


@pytest.mark.skipif(not CAN_BUILD, reason="no C compiler or Python headers: the kernels run JIT")
def test_the_build_unpickles_its_constants_once() -> None:
    built = aot.ensure()
    assert built is not None
    env = {**os.environ, KERNELS_ENV: str(aot.role_dir(built, "worker"))}
    out = subprocess.run([sys.executable, "-c", UNPICKLES], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["restored"] and got["first"] > 0
    assert got["more"] == 0  # each call unpickled them again before (numba.pycc's helper)
