"""How Athens' long-running processes use memory: Python's cyclic garbage
collector and glibc's allocator.

With the default thresholds (700, 10, 10) a query that builds a few thousand
label sets and series runs dozens of young collections while they are alive;
each promotes them, and every few queries a full collection walks everything
the process holds (modules, compiled kernels, the shard index): 63 ms a pass
in the router, ~8 ms of a 29 ms query on average. Almost all of our objects
die by reference counting, so young collections are made rare, and what a
process loaded at start is frozen out of collection altogether.

A query's arrays are large and short-lived (a shard read of 4 M samples is
two 32 MB columns). glibc serves such sizes with fresh mmap()ed pages and
gives freed memory at the top of its heap back to the kernel, so every query
paid for the kernel zeroing its pages and for the page faults: 12-15 ms of
system time in an 85 ms 12-hour aggregation over 1,460 series, and as much
again in user time (the columns written twice). Raising both thresholds
keeps freed memory in the heap for the next query; the process's peak is
unchanged, it just does not shrink between queries.

The opposite case, memory that stays allocated but whose contents are dead
(the head's rows after a seal), is handed back page by page: release_pages.

What a WAL replay, a seal or a compaction job frees is a third case:
blocks of temporaries freed amid the heap, below what was allocated
meanwhile, so the trim threshold (top of the heap only) never returns them,
and the next seal is seconds to minutes away. trim() after each (Shard.open,
finish_seal, finish_compaction) does: at 200,000 series a worker kept ~120
MiB of free heap after its seals (0.55 KiB a series), at 50,000 ~40 MiB, and
~41 MiB after its restart's replay; a trim takes 1.5-3.5 ms. A query's
freed memory is kept (above) unless one of those finishes in between, or
until queries stop: a process that has answered none for QUIET_TRIM_S
trims (QuietTrim), and again every QUIET_TRIM_S while none come (after
the `long` benchmark's query list a worker held 57 MiB of anonymous memory,
30 after a trim; under series churn with no queries at all the router's
heap grew to 171 MiB, 110 after a trim).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import math
import mmap
import os
import re
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where arrays are made: the supervisor imports this module too
    import numpy as np
    import numpy.typing as npt

# Net tracked allocations between young collections. A query's objects die
# by reference counting long before this many pile up.
YOUNG_THRESHOLD = 50_000

# Allocations up to this size come from the heap (reused), not fresh mmaps.
MMAP_THRESHOLD = 128 << 20
# Free memory at the top of the heap beyond this goes back to the kernel:
# enough for a slice's columns and temporaries (at 64 MiB a 12-hour
# aggregation faulted ~2,200 times an evaluation again); 256 MiB kept ~75
# MB more after ingest on `medium` than 32 MiB, 128 MiB no more than 256.
TRIM_THRESHOLD = 128 << 20

_MADV_DONTNEED = 4  # Linux
_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


# The files of a process's code: shared objects (libraries, extension
# modules, the ahead-of-time kernels) and the interpreter.
_CODE_FILE = re.compile(r"\.so(\.[0-9]+)*$")


def settle() -> None:
    """Call once a process holds what it will keep (imports, warmed kernels,
    an opened shard): collect once, freeze the survivors, raise the
    threshold, and release its code's pages (release_code)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)
    release_code()


def release_code() -> int:
    """Unmap the resident pages of this process's code (release_library for
    every shared object and the interpreter), for a process that has
    started. Returns the bytes released.

    Most of those pages ran only to start: imports, loading and warming the
    kernels, OpenSSL's initialisation (asyncio and aiohttp import ssl and
    hashlib; Athens serves no TLS), numpy's BLAS (no kernel does linear
    algebra). Serving maps back the pages it runs, from the page cache. With
    only OpenSSL and BLAS released, a router and a worker kept 19-20 MiB of
    code resident after `medium`'s ingest; with all of it, 12.7 and 13.4;
    after its query list 14.6 and 54.5 MiB of file pages instead of 20.4 and
    60.7, latencies within the noise (geometric mean of 34 requests 0.98,
    4 alternated rounds)."""
    interpreter = os.path.realpath(sys.executable)
    return _release_clean(_mappings(lambda path: _CODE_FILE.search(path) or path == interpreter))


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds and put all threads in its main
    arena (call first thing in a process: threads that already exist keep
    their arenas). False where the C library is not glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "gnu_get_libc_version"):  # glibc only
        return False
    mallopt = libc.mallopt
    # One arena: a thread's own arena lives in 64 MiB heaps that are unmapped
    # as soon as they are empty, and a query thread's columns are too large
    # for them anyway (fresh mmaps again). Threads allocate few large blocks;
    # the lock they share is not contended.
    return all(
        mallopt(opt, value)
        for opt, value in ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    )


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if hasattr(libc, "madvise"):
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def trim() -> bool:
    """Give the free pages of the heap back to the kernel wherever they lie
    (glibc's malloc_trim; the trim threshold only ever releases its top). For
    memory the process will not need again soon: what loading the kernels
    needed at start, a seal's or a compaction's temporaries. False where the
    C library is not glibc."""
    trim_ = getattr(_libc(), "malloc_trim", None)
    if trim_ is None:
        return False
    trim_(0)
    return True


# Seconds without a query after which a process gives its free heap back
# (QuietTrim): dashboards that refresh more often keep their queries'
# arrays, as the thresholds above intend.
QUIET_TRIM_S = 60.0
# Seconds without a write after which a process that took writes since its
# last trim gives its free heap back once (QuietTrim): the holes a burst of
# writes leaves amid the heap (queued batches, their sorting and WAL
# buffers) are not reused by a query's large arrays. After `medium`'s
# ingest a worker held 22 MiB of them and its router 10, which the queries
# that followed added to (bench.compare measures there). A sender that
# writes every few seconds never pauses this long.
INGEST_QUIET_TRIM_S = 5.0


class QuietTrim:
    """trim() once no query has run for quiet_s, and every quiet_s after
    that while none runs (appends do not hold it off); and once when
    appends pause for ingest_quiet_s. The owner calls query() for each
    query, appended() for each write, and tick() now and then."""

    def __init__(
        self, quiet_s: float = QUIET_TRIM_S, ingest_quiet_s: float = INGEST_QUIET_TRIM_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quiet_s = quiet_s
        self.ingest_quiet_s = ingest_quiet_s
        self._clock = clock
        self._last = clock()  # the last query or trim
        self._appended: float | None = None  # the last write not followed by a trim

    def query(self) -> None:
        self._last = self._clock()

    def appended(self) -> None:
        self._appended = self._clock()

    def tick(self) -> bool:
        """Trim if it is time; whether it was for the quiet spell of
        queries (the owner gives back what else it holds for queries then)."""
        now = self._clock()
        queries_quiet = now - self._last >= self.quiet_s
        writes_paused = self._appended is not None and now - self._appended >= self.ingest_quiet_s
        if queries_quiet or writes_paused:
            self._appended = None
            trim()
        if queries_quiet:
            self._last = now
        return queries_quiet


def release_library(filename: str) -> int:
    """Unmap this process's resident pages of a shared library whose code
    it will not run again (MADV_DONTNEED on the library's read-only
    mappings that hold no private copies, i.e. clean pages of the file; a
    page touched again is mapped back from the page cache by a minor fault).
    Other processes mapping the file keep theirs. Returns the bytes
    released (0 where /proc or madvise are not available)."""
    return _release_clean(_mappings_of(filename))


def _release_clean(mappings: list[tuple[int, int, str, dict[str, int]]]) -> int:
    """release_library's work, for the mappings given."""
    libc = _libc() if sys.platform == "linux" else None
    madvise = getattr(libc, "madvise", None)
    if madvise is None:
        return 0
    released = 0
    for start, end, perms, stats in mappings:
        if "w" not in perms and stats.get("Anonymous", 1) == 0 and stats.get("Rss", 0) > 0:
            if madvise(start, end - start, _MADV_DONTNEED) == 0:
                released += stats["Rss"] * 1024
    return released


def _mappings_of(filename: str) -> list[tuple[int, int, str, dict[str, int]]]:
    """(start, end, permissions, smaps fields in kB) of this process's
    mappings of a file whose name ends with `filename`."""
    return _mappings(lambda path: path.endswith(filename))


def _mappings(match: Callable[[str], object]) -> list[tuple[int, int, str, dict[str, int]]]:
    """_mappings_of for every file whose path `match`es, in one read of smaps."""
    found: list[tuple[int, int, str, dict[str, int]]] = []
    stats: dict[str, int] | None = None
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head, _, rest = line.partition(" ")
                if head.endswith(":"):  # a field of the current mapping
                    if stats is not None and head in ("Rss:", "Anonymous:"):
                        stats[head[:-1]] = int(rest.split()[0])
                    continue
                parts = line.split()
                stats = None
                if len(parts) >= 6 and match(parts[5]):
                    a, b = parts[0].split("-")
                    stats = {}
                    found.append((int(a, 16), int(b, 16), parts[1], stats))
    except OSError:
        return []
    return found


def mapped_empty(shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """An array on a private anonymous mapping of its own: its pages read as
    zeros (as fresh anonymous pages do), are committed when first written
    and go back to the kernel as soon as the array is freed. For large
    arrays that grow by copying (the head's rows, the router's series
    cache): from the heap, every outgrown copy stays resident as a hole
    below its top (glibc trims only the top) - at 50,000 series a worker's
    rows left ~120 MB of such holes behind their doublings."""
    import numpy as np  # noqa: PLC0415 - see the imports

    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes == 0:
        return np.empty(shape, dt)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE), dt).reshape(shape)


def release_pages(arr: np.ndarray) -> int:
    """Give the whole pages of a C-contiguous array back to the kernel
    (madvise MADV_DONTNEED): they read as zeros afterwards and use no memory
    until written again. For arrays whose contents are no longer needed but
    which stay allocated (the head's rows after a seal). Returns the bytes
    released (0 where madvise is not available)."""
    libc = _libc() if sys.platform == "linux" else None  # elsewhere DONTNEED may keep the data
    madvise = getattr(libc, "madvise", None)
    if madvise is None or not arr.flags.c_contiguous:
        return 0
    page = mmap.PAGESIZE
    addr = arr.ctypes.data
    start = -(-addr // page) * page
    end = (addr + arr.nbytes) // page * page
    if end <= start:
        return 0
    if madvise(start, end - start, _MADV_DONTNEED) != 0:
        return 0
    return end - start
