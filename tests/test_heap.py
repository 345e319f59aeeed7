"""athens.heap: what a settled process's garbage collector does."""

from __future__ import annotations

import gc
import resource
from concurrent.futures import ThreadPoolExecutor

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



def test_freed_query_sized_arrays_are_reused_without_page_faults() -> None:
    if not heap.keep_freed_memory():
        pytest.skip("not glibc")

    def read() -> None:  # a shard read's columns: 36 MB each, above glibc's own limit
        ts = np.ones(4_500_000, np.int64)
        values = np.ones(4_500_000, np.float64)
        del ts, values

    read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with ThreadPoolExecutor(1) as pool:  # query threads share the main arena
        for _ in range(3):
            read()
            pool.submit(read).result()
    # Fresh mmapped pages fault ~1,200 times a read here (~17,000 without
    # transparent huge pages); untuned glibc does that every time.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 300
