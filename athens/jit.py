"""Compiling the Numba kernels when a long-running process starts (in JIT
mode: a process given no ahead-of-time build, athens/kernels.py).

Every process warms its kernels before it serves (a cold compile is tens of
seconds no request should wait for). With Numba's on-disk cache warm that
only loads object code; cold (first start, a new release, a new CPU) it runs
LLVM, whose heap the process then keeps: a worker measured 392 MiB RSS after
a cold start against 190 MiB from a warm cache, the router 409 against 192,
for as long as the process lives. So a process that had to compile replaces
its own image (exec) once the compiled kernels are in the cache: the new
image loads them and starts as small as any later restart would.

A serving process also sheds what only loading the kernels needed: SciPy's
BLAS/LAPACK bindings, which Numba's CPU target imports when SciPy is
installed; the parsed LLVM IR of every kernel loaded from the cache; LLVM's
own code, resident once its static initialisers and the loading ran. A
worker starts at 100 MiB RSS (75 anonymous) instead of 196 (98), the router
at 107 instead of 198 (SciPy 1.17 installed, Numba 0.68, llvmlite 0.50).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections.abc import Callable

import llvmlite.binding as llvm
from llvmlite.utils import get_library_name
from numba.core import event
from numba.core.registry import CPUDispatcher

from athens import heap
from athens.log import kv

log = logging.getLogger("athens.jit")

# Set in the environment of the image a process execs into, so a cache that
# does not keep what was compiled (read-only, full disk) costs one extra
# compile at start, never an exec loop.
REEXEC_ENV = "ATHENS_JIT_REEXEC"

# Numba's CPU target imports these when it starts, if SciPy is installed, for
# np.dot and np.linalg inside kernels. No Athens kernel uses either, and the
# import pulls in ~230 modules of SciPy and NumPy: 17 MiB RSS and 0.1 s a
# process (SciPy 1.17). Unimportable, they leave Numba without BLAS, which
# it supports (a kernel using np.dot would then fail to compile: the
# warm-up would tell at start).
UNUSED_MODULES = ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack")


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
    not carried into serving. Then shed what only loading needed: the
    kernels' parsed IR (_LinkingIR), the heap it freed, LLVM's code."""
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)
    t0 = time.monotonic()
    compiled = compiled_into_cache(warm)
    if compiled:
        seconds = round(time.monotonic() - t0, 1)
        if not os.environ.get(REEXEC_ENV):
            log.info(
                "kernels compiled (cold Numba cache); starting again from the cache",
                extra=kv(compiled=compiled, seconds=seconds),
            )
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.execve(sys.executable, sys.orig_argv, {**os.environ, REEXEC_ENV: "1"})
        log.warning(
            "kernels compiled again after a restart from Numba's cache: the cache does not keep "
            "them (is its directory writable? NUMBA_CACHE_DIR)",
            extra=kv(compiled=compiled, seconds=seconds),
        )
    _LinkingIR.release()
    heap.trim()
    # LLVM's code (~70 MiB of the library resident after loading the
    # kernels, half of it touched by its static initialisers alone) runs
    # again only if a kernel is compiled later.
    heap.release_library(get_library_name())


class _LinkingIR(event.Listener):
    """The LLVM IR of the kernels a process loaded, kept as bitcode.

    For every kernel it loads from its cache Numba also parses the kernel's
    IR and keeps it, only to link it into a later compile of a kernel that
    calls it. After warm_up a serving process compiles nothing, and that IR
    is ~0.3 MiB a kernel in LLVM's heap (12.7 MiB of a worker's 43 kernels);
    its bitcode is ~40 KiB. So the parsed modules are dropped, and parsed
    again from the bitcode should a compile start after all (a kernel called
    with types the warm-up did not use).
    """

    def __init__(self, bitcode: list[tuple[object, bytes]]) -> None:
        self.bitcode = bitcode

    @classmethod
    def release(cls) -> None:
        bitcode = []
        dispatchers = [o for o in gc.get_objects() if isinstance(o, CPUDispatcher)]  # ~30 ms, once
        for d in dispatchers:
            for cres in d.overloads.values():
                lib = cres.library
                module = getattr(lib, "_shared_module", None)
                if module is not None:
                    bitcode.append((lib, module.as_bitcode()))
                    lib._shared_module = None
        if bitcode:
            event.register("numba:compile", cls(bitcode))

    def on_start(self, ev: event.Event) -> None:
        if not self.bitcode:
            return
        for lib, data in self.bitcode:
            if lib._shared_module is None:
                lib._shared_module = llvm.parse_bitcode(data)
        self.bitcode = []
        log.warning(
            "a kernel is compiled after the warm-up",
            extra=kv(kernel=getattr(ev.data["dispatcher"].py_func, "__qualname__", "?")),
        )

    def on_end(self, ev: event.Event) -> None:
        pass
