"""Comparing parsed trees in tests."""

from __future__ import annotations

import dataclasses
import enum
import math

from athens.model.matchers import Matcher


def shape(x: object) -> object:
    """A comparable view of a tree: no positions, matchers as a sorted set, NaN-safe."""
    if isinstance(x, Matcher):
        return ("M",) + x.to_tuple()
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, float):
        return "NaN" if math.isnan(x) else x
    if isinstance(x, list):
        items = [shape(i) for i in x]
        return sorted(items) if x and isinstance(x[0], Matcher) else items
    if dataclasses.is_dataclass(x):
        return (type(x).__name__,) + tuple(
            (f.name, shape(getattr(x, f.name))) for f in dataclasses.fields(x) if f.name != "pos"
        )
    return x
