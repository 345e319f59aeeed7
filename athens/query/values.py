"""Values the evaluator passes between nodes, and the result it hands out.

Every intermediate value covers all evaluation steps at once: a range query
with T steps evaluates each node exactly once, as arrays of shape [S, T]
(S series) or [T]. An instant query is the case T = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from athens.errors import ExecutionError
from athens.model.labels import METRIC_NAME, Labels
from athens.model.series import StoredLabels


@dataclass(slots=True)
class ScalarValue:
    """A scalar at every step: values float64[T]."""

    values: np.ndarray


@dataclass(slots=True)
class StringValue:
    value: str


@dataclass(slots=True)
class VectorValue:
    """An instant vector at every step.

    labels:    one label set per series (S)
    values:    float64[S, T]
    present:   bool[S, T], whether the series has a sample at that step
    drop_name: bool[S], `__name__` is to be removed at the end of evaluation
               (Prometheus 3 delayed name removal: label functions can still
               read the name, and set it again to keep it)
    """

    labels: list[Labels]
    values: np.ndarray
    present: np.ndarray
    drop_name: np.ndarray

    @classmethod
    def empty(cls, t: int) -> VectorValue:
        return cls([], np.zeros((0, t)), np.zeros((0, t), bool), np.zeros(0, bool))

    @property
    def num_steps(self) -> int:
        return int(self.values.shape[1])

    def take(self, rows: np.ndarray | list[int]) -> VectorValue:
        rows = np.asarray(rows, dtype=np.int64)
        labels = self.labels
        return VectorValue(
            labels.take(rows) if isinstance(labels, StoredLabels) else [labels[i] for i in rows],
            self.values[rows],
            self.present[rows],
            self.drop_name[rows],
        )

    def compact(self) -> VectorValue:
        """Drop series that have no sample at any step."""
        keep = np.flatnonzero(self.present.any(axis=1))
        if len(keep) == len(self.labels):
            return self
        return self.take(keep)


@dataclass(slots=True)
class MatrixValue:
    """A range vector at every step, as the argument of a range function.

    The samples of all series are concatenated (ts/vals, series s owning
    [offsets[s], offsets[s+1])); the window of series s at step t is the
    index range [lo[s, t], hi[s, t]) into them, the samples with
    wstart[t] < ts <= wend[t].
    """

    labels: list[Labels]
    drop_name: np.ndarray
    ts: np.ndarray
    vals: np.ndarray
    offsets: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    wstart: np.ndarray
    wend: np.ndarray
    range_ms: int

    def series_points(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[s]), int(self.offsets[s + 1])
        return self.ts[a:b], self.vals[a:b]


@dataclass(slots=True)
class QueryResult:
    """What Engine.instant / Engine.range return.

    result_type "vector": value is a list of (Labels, t_ms, v)
    "matrix": list of (Labels, ts int64 ndarray, values float64 ndarray),
    sorted by labels; "scalar": (t_ms, v); "string": (t_ms, s).
    """

    result_type: str
    value: Any
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


# Prometheus 3 type-and-unit labels go together with the metric name.
NAME_LABELS = frozenset((METRIC_NAME, "__type__", "__unit__"))


_LAST_NAME_LABEL = max(NAME_LABELS)


def _without_names(lb: Labels) -> Labels:
    """lb.without(NAME_LABELS), the common cases without a pass over every
    pair: pairs are sorted by name, so a set whose first name sorts after
    every name label has none, and one that starts with `__name__` followed
    by such a name has only that one."""
    p = lb.pairs
    if not p or p[0][0] > _LAST_NAME_LABEL:
        return lb
    if p[0][0] == METRIC_NAME and (len(p) == 1 or p[1][0] > _LAST_NAME_LABEL):
        return Labels.from_sorted(p[1:])
    return lb.without(NAME_LABELS)


def drop_names(vec: VectorValue) -> VectorValue:
    """The names marked for removal removed (series that become equal stay apart)."""
    if not vec.drop_name.any():
        return vec
    labels = [_without_names(lb) if d else lb for lb, d in zip(vec.labels, vec.drop_name.tolist())]
    return VectorValue(labels, vec.values, vec.present, np.zeros(len(labels), bool))


def check_dropped_names(vec: VectorValue) -> None:
    """Prometheus' duplicate check where names are dropped (delayed removal
    off), for a consumer that never reads them, so the label sets stay as
    they are: series of one metric, the usual argument of an aggregation,
    cost a numpy pass over their name codes (a shard's stored series) or a
    look at each one's first label, instead of a new label set each."""
    drop = vec.drop_name
    if not drop.any():
        return
    if drop.all() and _same_names(vec.labels):
        return  # the same names removed from every series: none merge
    merge_duplicate_labels(drop_names(vec))


def _name_part(lb: Labels) -> tuple[tuple[str, str], ...]:
    """lb's name labels (the common case, the name alone, as _without_names)."""
    p = lb.pairs
    if p and p[0][0] == METRIC_NAME and (len(p) == 1 or p[1][0] > _LAST_NAME_LABEL):
        return p[:1]
    return tuple(x for x in p if x[0] in NAME_LABELS)


def _same_names(labels: list[Labels]) -> bool:
    """Whether every label set has the same name labels."""
    if isinstance(labels, StoredLabels):
        return labels.same_values(NAME_LABELS)
    first = _name_part(labels[0])
    return all(_name_part(lb) == first for lb in labels)


def remove_dropped_names(vec: VectorValue) -> VectorValue:
    """The names marked for removal removed, merging series that become equal."""
    if not vec.drop_name.any():
        return vec
    return merge_duplicate_labels(drop_names(vec))


class StepError(ExecutionError):
    """An error that first occurs at step `step` of the evaluation:
    Prometheus evaluates a range query step by step, so of the errors an
    expression has, the one at the earliest step is the one it reports."""

    def __init__(self, step: int, message: str) -> None:
        super().__init__(message)
        self.step = step


def merge_duplicate_labels(vec: VectorValue) -> VectorValue:
    """Merge series with identical label sets (and name-drop flag) into one.

    In a range query two different inputs can map to one output series at
    different steps (label_replace, or name removal); that is one series in
    the result. Two of them at the same step is Prometheus' duplicate error.
    """
    # Keyed by the pairs themselves: hashed and compared in C. Duplicates
    # are rare; one set tells whether there are any.
    keys = list(zip(map(Labels.sort_key, vec.labels), vec.drop_name.tolist()))
    if len(set(keys)) == len(keys):
        return vec
    index: dict[tuple[tuple[tuple[str, str], ...], bool], int] = {}
    groups: list[list[int]] = []
    for i, key in enumerate(keys):
        g = index.get(key)
        if g is None:
            index[key] = len(groups)
            groups.append([i])
        else:
            groups[g].append(i)
    t = vec.num_steps
    first = t  # the first step with two series of one label set
    values = np.zeros((len(groups), t))
    present = np.zeros((len(groups), t), bool)
    for g, rows in enumerate(groups):
        if len(rows) == 1:
            values[g] = vec.values[rows[0]]
            present[g] = vec.present[rows[0]]
            continue
        p = vec.present[rows]
        both = np.flatnonzero(p.sum(axis=0) > 1)
        if len(both):
            first = min(first, int(both[0]))
        present[g] = p.any(axis=0)
        src = np.argmax(p, axis=0)
        values[g] = vec.values[np.asarray(rows)[src], np.arange(t)]
    if first < t:
        raise StepError(first, "vector cannot contain metrics with the same labelset")
    labels = [vec.labels[rows[0]] for rows in groups]
    drop = np.array([vec.drop_name[rows[0]] for rows in groups], bool)
    return VectorValue(labels, values, present, drop)
