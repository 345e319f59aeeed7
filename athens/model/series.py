"""Series data as it crosses the storage/query seam."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from athens.model.labels import Labels

# Prometheus' staleness marker: a NaN with this exact bit pattern. It must be
# stored and returned bit-exactly; arithmetic NaNs are different values.
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]


def is_stale(values: np.ndarray) -> np.ndarray:
    """Element-wise: is this float64 the staleness marker?"""
    return values.view(np.uint64) == np.uint64(STALE_NAN_BITS)


@dataclass(frozen=True, slots=True)
class Series:
    """One series' raw samples in a time range, sorted by timestamp.

    ts: int64 milliseconds since the epoch; values: float64, stale markers kept.
    """

    labels: Labels
    ts: np.ndarray
    values: np.ndarray
