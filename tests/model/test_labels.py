"""Canonical label encodings: what the router forwards instead of Labels;
dropping labels."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from athens.model.labels import CanonicalLabels, LabelInterner, Labels, canonical_blocks, projections

label_sets = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda s: "\udcff" not in s),
    st.text(max_size=6),
    max_size=5,
).map(Labels.from_dict)


@given(label_sets)
def test_canonical_round_trip_and_identity(lb: Labels) -> None:
    block = lb.canonical()
    assert Labels.from_canonical(block) == lb
    digest = hashlib.blake2b(block, digest_size=8).digest()
    assert int.from_bytes(digest, "little") == lb.identity_hash()


@given(st.lists(label_sets, min_size=2, max_size=4), st.sampled_from([1, 3, 1 << 20]))
def test_decoding_with_an_interner_shares_strings_and_pairs(sets: list[Labels], room: int) -> None:
    interner = LabelInterner(max_entries=room)  # a small one starts afresh often
    got = [Labels.from_canonical(lb.canonical(), interner) for lb in sets + sets]
    assert got == sets + sets
    if room > 100:
        for a, b in zip(got[: len(sets)], got[len(sets) :]):
            assert all(pa is pb and pa[0] is pb[0] and pa[1] is pb[1] for pa, pb in zip(a.pairs, b.pairs))


@given(st.lists(label_sets, max_size=4))
def test_canonical_labels_read_as_labels(sets: list[Labels]) -> None:
    lazy = CanonicalLabels.of([lb.canonical() for lb in sets])
    assert len(lazy) == len(sets) and list(lazy) == sets and lazy[1:] == sets[1:]
    picks = list(range(len(sets)))[::-1]
    assert canonical_blocks(lazy, picks) == canonical_blocks(sets, picks) == [sets[p].canonical() for p in picks]


@pytest.mark.parametrize("block", [b"a\xffb", b"a\xff", b"a\xffb\xffc\xff", b"\xc3\xff1\xff"])
def test_from_canonical_refuses_other_bytes(block: bytes) -> None:
    with pytest.raises(ValueError):
        Labels.from_canonical(block)


# Names around the name labels' place in the order: uppercase and "_x" sort
# before "__name__", "__other__" between "__name__" and "__type__".
_names = st.sampled_from(["A", "Z", "_x", "__name__", "__other__", "__type__", "__unit__", "a", "job", "le", "zz"])


@given(st.dictionaries(_names, st.text(max_size=3), max_size=8).map(Labels.from_dict),
       st.sets(_names, max_size=4), st.booleans())
def test_without_drops_exactly_the_named_labels(lb: Labels, names: set[str], frozen: bool) -> None:
    got = lb.without(frozenset(names) if frozen else sorted(names))
    assert got.pairs == tuple(p for p in lb.pairs if p[0] not in names)


@pytest.mark.parametrize("n", [0, 1, 16, 17, 40])
def test_flat_interleaves_names_and_values_at_any_size(n):
    lb = Labels((f"n{i:02d}", f"v{i}") for i in range(n))
    assert lb.flat() == tuple(x for pair in lb.pairs for x in pair)
    assert Labels.from_sorted(tuple(zip(lb.flat()[::2], lb.flat()[1::2]))) == lb


_NAMES = st.sampled_from(["__name__", "a", "b", "instance", "job", "le", "z"])


@given(
    st.lists(st.dictionaries(_NAMES, st.sampled_from(["", "x", "y"]), max_size=7), max_size=6),
    st.frozensets(_NAMES, max_size=4),
    st.booleans(),
)
def test_projections_keep_or_drop_the_named_pairs(sets, names, keep) -> None:  # type: ignore[no-untyped-def]
    labels = [Labels.from_dict(d) for d in sets]
    want = [tuple(p for p in lb.pairs if (p[0] in names) == keep) for lb in labels]
    assert projections(labels, names, keep) == want

