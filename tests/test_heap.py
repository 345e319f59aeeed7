"""athens.heap: what a settled process's garbage collector does."""

from __future__ import annotations

import gc

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
