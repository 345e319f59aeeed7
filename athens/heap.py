"""How Athens' long-running processes use Python's cyclic garbage collector.

With the default thresholds (700, 10, 10) a query that builds a few thousand
label sets and series runs dozens of young collections while they are alive;
each promotes them, and every few queries a full collection walks everything
the process holds (modules, compiled kernels, the shard index): 63 ms a pass
in the router, ~8 ms of a 29 ms query on average. Almost all of our objects
die by reference counting, so young collections are made rare, and what a
process loaded at start is frozen out of collection altogether.
"""

from __future__ import annotations

import gc

# Net tracked allocations between young collections. A query's objects die
# by reference counting long before this many pile up.
YOUNG_THRESHOLD = 50_000


def settle() -> None:
    """Call once a process holds what it will keep (imports, warmed kernels,
    an opened shard): collect once, freeze the survivors, raise the threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)
