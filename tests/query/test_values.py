"""Name removal: the fast paths against the plain ones."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from athens.errors import ExecutionError
from athens.model.labels import Labels
from athens.model.series import StoredLabels
from athens.query.values import (
    NAME_LABELS,
    VectorValue,
    _name_part,
    _without_names,
    check_dropped_names,
    remove_dropped_names,
)
from athens.shards.index import SeriesIndex

_names = st.sampled_from(["__name__", "__type__", "__unit__", "__a", "__z", "A", "Z", "_x", "a", "job", "zz"])
_label_sets = st.dictionaries(_names, st.sampled_from(["v", "w"]), max_size=6).map(lambda d: Labels(d.items()))


@given(_label_sets)
@example(Labels([("__unit__", "s"), ("a", "v")]))
@example(Labels([("__name__", "x"), ("__unit__", "s")]))
def test_without_names_is_without_the_name_labels(lb):
    assert _without_names(lb) == lb.without(NAME_LABELS)


_stored_sets = st.lists(
    st.dictionaries(st.sampled_from(["__name__", "__type__", "a", "b"]), st.sampled_from(["v", "w"]), max_size=4),
    min_size=1, max_size=8, unique_by=lambda d: tuple(sorted(d.items())),
)


@given(_stored_sets, st.data())
@example([{"__name__": "v", "a": "v"}, {"__name__": "w", "a": "v"}], None)
@example([{"__name__": "v", "__type__": "v"}, {"__name__": "v", "__type__": "w"}], None)
def test_checking_dropped_names_in_place_fails_where_removing_them_does(sets, data):  # type: ignore[no-untyped-def]
    """check_dropped_names' shortcut (series of one metric: nothing to remove
    that could merge two), over stored series and a plain list, misses no
    duplicate that removing the names finds."""
    index = SeriesIndex()
    labels = [Labels(d.items()) for d in sets]
    ids = np.array([index.add(lb, i) for i, lb in enumerate(labels)], np.int64)
    n = len(labels)
    if data is None:
        drop, present = np.ones(n, bool), np.ones((n, 1), bool)
    else:
        drop = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
        present = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)[:, None]
    plain = VectorValue(labels, np.zeros((n, 1)), present, drop)
    stored = VectorValue(StoredLabels(labels, ids, index), plain.values, present, drop)
    try:
        remove_dropped_names(plain)
        merges = False
    except ExecutionError:
        merges = True
    for vec in (stored, plain):
        if merges:
            with pytest.raises(ExecutionError, match="same labelset"):
                check_dropped_names(vec)
        else:
            check_dropped_names(vec)


@given(_label_sets)
def test_name_part_is_the_name_labels(lb):
    assert _name_part(lb) == tuple(p for p in lb.pairs if p[0] in NAME_LABELS)
