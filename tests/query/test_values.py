"""Delayed name removal: the fast paths against Labels.without."""

from hypothesis import example, given
from hypothesis import strategies as st

from athens.model.labels import Labels
from athens.query.values import NAME_LABELS, _without_names

_names = st.sampled_from(["__name__", "__type__", "__unit__", "__a", "__z", "A", "Z", "_x", "a", "job", "zz"])
_label_sets = st.dictionaries(_names, st.sampled_from(["v", "w"]), max_size=6).map(lambda d: Labels(d.items()))


@given(_label_sets)
@example(Labels([("__unit__", "s"), ("a", "v")]))
@example(Labels([("__name__", "x"), ("__unit__", "s")]))
def test_without_names_is_without_the_name_labels(lb):
    assert _without_names(lb) == lb.without(NAME_LABELS)
