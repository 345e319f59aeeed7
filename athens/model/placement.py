"""Which worker owns a series.

Worker i of N owns the i-th of N equal ranges of a 64-bit placement hash
(its high bits), so routing is a pure function of the label set.

Two placements exist, fixed per data directory (athens.json, written by
athens.launch):

- WITHOUT_NAME (new data directories): the hash of the label set without
  `__name__`. A target's series that differ only in their metric name live on
  one worker, so a binary operator between two vectors matched on all other
  labels (`a - b`, `a / ignoring() b`, `a and b`) is evaluated by each worker
  on its own series, and the aggregations over it are pre-aggregated there
  (athens/query/planner.py). The cost: series whose only label is the metric
  name all land on one worker.
- IDENTITY (data directories of version 1): the series' identity hash, the
  hash of the full label set.

The identity hash still names a series everywhere else (the workers' index,
merging replicas' answers); placement only picks the owner.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from athens.model.labels import METRIC_NAME

if TYPE_CHECKING:
    import numpy as np

WITHOUT_NAME = "without-name"
IDENTITY = "identity"
PLACEMENTS = (WITHOUT_NAME, IDENTITY)

_SEP = b"\xff"
_NAME = METRIC_NAME.encode()


def owners(hashes: np.ndarray, n: int) -> np.ndarray:
    """Worker index owning each placement hash: ((h >> 32) * n) >> 32."""
    import numpy as np  # noqa: PLC0415 - athens.launch reads PLACEMENTS without numpy

    return ((hashes >> np.uint64(32)) * np.uint64(n) >> np.uint64(32)).astype(np.int64)


def placement_hash(canon: bytes) -> int:
    """WITHOUT_NAME's hash of a canonical label encoding (`name 0xff value
    0xff ...`, athens.model.labels.canonical_encoding): 64-bit BLAKE2b of the
    encoding with the `__name__` pair left out. 0xff never occurs inside a
    UTF-8 name or value, so splitting on it finds the pairs."""
    if canon.startswith(_NAME + _SEP) or (_SEP + _NAME + _SEP) in canon:
        fields = canon.split(_SEP)
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == _NAME:
                del fields[i : i + 2]
                break
        canon = _SEP.join(fields)
    return int.from_bytes(hashlib.blake2b(canon, digest_size=8).digest(), "little")
