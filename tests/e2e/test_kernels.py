"""Where the serving processes' compiled kernels come from: the supervisor's
ahead-of-time build (no Numba in the router and workers), or Numba's JIT."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

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
    a = athens_factory(extra=["--kernels", "jit"]).start()
    for p in a.children("_router") + a.children("_worker"):
        assert KERNELS_ENV not in p.environ() and _numba_loaded(p.pid)
    assert _one_plus_one(a.url) == "2"
