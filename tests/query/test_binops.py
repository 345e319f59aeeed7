"""Vector matching: the fast path for signatures unique on both sides
against the general matcher."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from athens.model.labels import Labels
from athens.query import ast
from athens.query.binops import _matched_pairs, _unique_pairs
from athens.query.engine import Engine, Evaluator
from athens.query.values import VectorValue

_sigs = st.lists(st.integers(0, 12).map(lambda i: (("instance", f"h{i}"),)), max_size=12)


def _vector(sigs: list) -> VectorValue:
    n = len(sigs)
    return VectorValue([Labels(s) for s in sigs], np.ones((n, 1)), np.ones((n, 1), bool), np.zeros(n, bool))


@given(_sigs, _sigs)
def test_unique_pairs_are_the_general_matchers_pairs(msig, osig):
    pairs = _unique_pairs(msig, osig)
    if len(set(msig)) < len(msig) or len(set(osig)) < len(osig):
        assert pairs is None  # duplicates: the general matcher decides (and raises)
        return
    assert pairs is not None
    pm, po = pairs
    ev = Evaluator(Engine(), "a / b", 0, 0, 0)
    want_m, want_o = _matched_pairs(
        ev, ast.Cardinality.ONE_TO_ONE, _vector(msig), _vector(osig), msig, osig, "right", False
    )
    assert pm.tolist() == want_m.tolist()
    assert po.tolist() == want_o.tolist()
