"""athens.heap: the garbage collector of a settled process, glibc heap tuning, released pages."""

from __future__ import annotations

import gc
import subprocess
import sys

import numpy as np
import pytest

from athens import heap


def test_settle_freezes_what_is_loaded_and_makes_young_collections_rare() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, before[1], before[2])
        # Cycles made after settling are still collected.
        a: list[object] = []
        a.append(a)
        del a
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)



_READS = """
import resource, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from athens import heap

if not heap.keep_freed_memory():
    sys.exit(3)

def read():  # a shard read's columns: 36 MB each, above glibc's own limit
    ts = np.ones(4_500_000, np.int64)
    values = np.ones(4_500_000, np.float64)
    del ts, values

read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with ThreadPoolExecutor(1) as pool:  # query threads share the main arena
    for _ in range(3):
        read()
        pool.submit(read).result()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_freed_query_sized_arrays_are_reused_without_page_faults() -> None:
    # A fresh process: what a worker does right at its start (threads that
    # existed before keep their own arenas).
    out = subprocess.run([sys.executable, "-c", _READS], capture_output=True, text=True, timeout=120)
    if out.returncode == 3:
        pytest.skip("not glibc")
    assert out.returncode == 0, out.stderr
    # Fresh mmapped pages fault ~1,200 times a read here (~17,000 without
    # transparent huge pages); untuned glibc does that every time.
    assert int(out.stdout) < 300


@pytest.mark.skipif(sys.platform != "linux", reason="MADV_DONTNEED semantics are Linux's")
def test_released_pages_read_as_zeros_and_leave_the_resident_set() -> None:
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    arr = np.ones((64 << 20) // 8, np.int64)
    before = proc.memory_info().rss
    released = heap.release_pages(arr)
    assert released >= arr.nbytes - 2 * 4096
    assert before - proc.memory_info().rss > 48 << 20
    assert not arr[1000:-1000].any()  # whole pages inside: zeros now
    arr[:] = 7  # and usable again
    assert int(arr.sum()) == 7 * len(arr)


_GROWTH = """
import sys
import numpy as np
import psutil
from athens import heap
heap.keep_freed_memory()
make = heap.mapped_empty if sys.argv[1] == "mapped" else np.empty
rows = make((1024, 120), np.int64)
rows[:] = 1
while len(rows) < 64 * 1024:  # the head's growth: copy into twice the rows, drop the old
    grown = make((2 * len(rows), 120), np.int64)
    grown[: len(rows)] = rows
    grown[len(rows):] = 1
    rows = grown
print(psutil.Process().memory_info().rss - rows.nbytes)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc heap behaviour")
def test_mapped_arrays_outgrown_by_copying_leave_no_resident_holes() -> None:
    pytest.importorskip("psutil")

    def rss_beside_rows(kind: str) -> int:
        out = subprocess.run([sys.executable, "-c", _GROWTH, kind], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    # 60 MiB of rows; from the heap, the outgrown copies (~60 MiB more) stay resident.
    assert rss_beside_rows("heap") - rss_beside_rows("mapped") > 40 << 20


def test_mapped_arrays_are_ordinary_writable_arrays() -> None:
    a = heap.mapped_empty((3, 5), np.float64)
    assert a.shape == (3, 5) and a.dtype == np.float64 and a.flags.writeable and a.flags.c_contiguous
    a[:] = 2.5
    assert float(a.sum()) == 37.5
    assert heap.mapped_empty((0, 120), np.int64).shape == (0, 120)


_LIBRARY = """
import llvmlite.binding as llvm
from llvmlite.utils import get_library_name
from athens import heap

def resident():  # KiB of the library: (clean read-only pages, private copies)
    maps = heap._mappings_of(get_library_name())
    clean = sum(s["Rss"] for _, _, perms, s in maps if "w" not in perms and s["Anonymous"] == 0)
    return clean, sum(s["Anonymous"] for _, _, _, s in maps)

clean_before, private_before = resident()
released = heap.release_library(get_library_name())
clean_after, private_after = resident()
llvm.initialize_native_target()  # the library's code runs again: mapped back in
module = llvm.parse_assembly("define i64 @f(i64 %x) { ret i64 %x }")
module.verify()
print(clean_before >> 10, released >> 20, clean_after, private_after == private_before, module.get_function("f").name)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/smaps and MADV_DONTNEED semantics are Linux's")
def test_a_released_library_leaves_the_resident_set_and_still_runs() -> None:
    out = subprocess.run([sys.executable, "-c", _LIBRARY], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    clean_before_mib, released_mib, clean_after_kib, private_kept, name = out.stdout.split()
    assert int(clean_before_mib) >= 10  # LLVM's static initialisers alone touch ~35 MiB of it
    assert released_mib == clean_before_mib
    assert clean_after_kib == "0"
    assert private_kept == "True"  # its relocated and written pages are left alone
    assert name == "f"


_SETTLE = """
import hashlib, os, ssl, sys
import numpy as np
from athens import heap

interpreter = os.path.realpath(sys.executable)

def code_kib():  # resident clean pages of the files of this process's code
    maps = heap._mappings(lambda p: heap._CODE_FILE.search(p) or p == interpreter)
    return sum(s["Rss"] for _, _, perms, s in maps if "w" not in perms and s["Anonymous"] == 0), len(maps)

before, n = code_kib()
heap.settle()
after, _ = code_kib()
# Its code still runs (its pages come back from the page cache).
ok = hashlib.sha256(b"athens").hexdigest()[:8] == "be217770" and float(np.ones(3) @ np.ones(3)) == 3.0
print(n, before, after, ok, ssl.OPENSSL_VERSION.split()[0])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/smaps and MADV_DONTNEED semantics are Linux's")
def test_a_settled_process_keeps_only_the_code_it_runs_resident() -> None:
    out = subprocess.run([sys.executable, "-c", _SETTLE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n, before_kib, after_kib, ok, openssl = out.stdout.split()
    # The interpreter, numpy and OpenSSL: imports alone touch MiBs of them.
    assert int(n) >= 10 and int(before_kib) >= 8 * 1024
    assert int(after_kib) < int(before_kib) // 3
    assert ok == "True" and openssl == "OpenSSL"


def test_quiet_trim_waits_for_a_quiet_spell_and_repeats_while_it_lasts(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[float] = []
    now = [0.0]
    monkeypatch.setattr(heap, "trim", lambda: trims.append(now[0]) or True)
    quiet = heap.QuietTrim(60.0, clock=lambda: now[0])
    for t in (10.0, 50.0):  # queries keep the freed memory for the next ones
        now[0] = t
        quiet.query()
        assert not quiet.tick()
    now[0] = 109.0
    assert not quiet.tick()
    now[0] = 110.0
    assert quiet.tick() and not quiet.tick()  # once, not at every tick
    now[0] = 170.0
    assert quiet.tick()  # still quiet: again a period later
    now[0] = 200.0
    quiet.query()
    now[0] = 259.0
    assert not quiet.tick()
    assert trims == [110.0, 170.0]


def test_quiet_trim_trims_once_when_writes_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[float] = []
    now = [0.0]
    monkeypatch.setattr(heap, "trim", lambda: trims.append(now[0]) or True)
    quiet = heap.QuietTrim(60.0, 5.0, clock=lambda: now[0])
    for t in (1.0, 3.0, 7.0):  # writes a few seconds apart: no trim
        now[0] = t
        quiet.appended()
        assert not quiet.tick()
    now[0] = 11.9
    assert not quiet.tick() and trims == []
    now[0] = 12.0  # 5 s after the last write: the burst's free heap goes back, once
    assert not quiet.tick()  # not the query spell: segments stay mapped
    now[0] = 20.0
    quiet.tick()
    assert trims == [12.0]
    now[0] = 30.0
    quiet.query()
    quiet.appended()
    now[0] = 35.0
    quiet.tick()
    assert trims == [12.0, 35.0]
