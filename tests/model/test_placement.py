"""Placement: who owns a series."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from athens.model.batch import WriteBatch
from athens.model.labels import Labels, canonical_encoding
from athens.model.placement import IDENTITY, WITHOUT_NAME, owners, placement_hash

NAMES = st.sampled_from(["__name__", "A", "Z_", "_a", "instance", "job", "le", "x"])
VALUES = st.text(max_size=6)


@given(st.dictionaries(NAMES, VALUES, max_size=6))
def test_placement_hash_is_the_hash_without_the_name(d: dict[str, str]) -> None:
    lb = Labels.from_dict(d)
    rest = [(n, v) for n, v in lb if n != "__name__"]
    want = int.from_bytes(hashlib.blake2b(canonical_encoding(rest), digest_size=8).digest(), "little")
    assert placement_hash(lb.canonical()) == want


def test_a_value_spelled_like_the_name_label_is_kept() -> None:
    a = Labels.from_dict({"__name__": "m", "k": "__name__"})
    b = Labels.from_dict({"__name__": "n", "k": "__name__"})
    c = Labels.from_dict({"k": "x"})
    assert placement_hash(a.canonical()) == placement_hash(b.canonical()) != placement_hash(c.canonical())


def test_owners_cover_all_workers_evenly() -> None:
    h = np.random.default_rng(1).integers(0, 2**63, 100_000, dtype=np.uint64) * np.uint64(2)
    for n in (1, 2, 3, 7):
        o = owners(h, n)
        assert o.min() == 0 and o.max() == n - 1
        assert np.bincount(o).min() > 0.9 * len(h) / n
    assert owners(np.array([2**64 - 1], np.uint64), 4)[0] == 3


def test_a_targets_metrics_share_a_worker_without_name_only() -> None:
    series = [Labels.from_dict({"__name__": f"m{k}", "instance": f"h{i}"}) for i in range(50) for k in range(4)]
    batch = WriteBatch.from_series([(lb, np.array([0]), np.array([1.0])) for lb in series])
    by_target = batch.owners(WITHOUT_NAME, 4).reshape(50, 4)
    assert (by_target == by_target[:, :1]).all()
    assert len(set(by_target[:, 0].tolist())) == 4
    by_series = batch.owners(IDENTITY, 4).reshape(50, 4)
    assert not (by_series == by_series[:, :1]).all()
