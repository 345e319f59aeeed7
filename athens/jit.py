"""Compiling the Numba kernels when a long-running process starts.

Every process warms its kernels before it serves (a cold compile is tens of
seconds no request should wait for). With Numba's on-disk cache warm that
only loads object code; cold (first start, a new release, a new CPU) it runs
LLVM, whose heap the process then keeps: a worker measured 392 MiB RSS after
a cold start against 190 MiB from a warm cache, the router 409 against 192,
for as long as the process lives. So a process that had to compile replaces
its own image (exec) once the compiled kernels are in the cache: the new
image loads them and starts as small as any later restart would.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from numba.core import event

from athens.log import kv

log = logging.getLogger("athens.jit")

# Set in the environment of the image a process execs into, so a cache that
# does not keep what was compiled (read-only, full disk) costs one extra
# compile at start, never an exec loop.
REEXEC_ENV = "ATHENS_JIT_REEXEC"


def compiled_into_cache(warm: Callable[[], None]) -> int:
    """Run `warm`; returns how many cached kernels (cache=True) it compiled.

    Loading from the cache is not a compile: Numba triggers its
    "numba:compile" event only when it compiles. Numba's own helpers that a
    kernel's compile pulls in (uncached, embedded in the kernel) fire it too
    and are not counted.
    """
    with event.install_recorder("numba:compile") as rec:
        warm()
    return sum(e.is_start and e.data["dispatcher"].stats.cache_path is not None for _, e in rec.buffer)


def warm_up(warm: Callable[[], None]) -> None:
    """Run `warm` (load or compile this process's kernels); if that compiled
    kernels into the cache, exec this process again from its command line
    (same pid, CPU affinity and environment) so the compiler's memory is
    not carried into serving."""
    t0 = time.monotonic()
    compiled = compiled_into_cache(warm)
    if not compiled:
        return
    seconds = round(time.monotonic() - t0, 1)
    if os.environ.get(REEXEC_ENV):
        log.warning(
            "kernels compiled again after a restart from Numba's cache: the cache does not keep "
            "them (is its directory writable? NUMBA_CACHE_DIR)",
            extra=kv(compiled=compiled, seconds=seconds),
        )
        return
    log.info(
        "kernels compiled (cold Numba cache); starting again from the cache",
        extra=kv(compiled=compiled, seconds=seconds),
    )
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, sys.orig_argv, {**os.environ, REEXEC_ENV: "1"})
