"""bench.differential: answers compared as the tool compares them, differences sorted into kinds."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from bench import differential


def _vector(*points: tuple[dict[str, str], str]) -> dict:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [1.7, v]} for m, v in points]}}


def _error(msg: str) -> dict:
    return {"status": "error", "errorType": "execution", "error": msg}


def test_difference_within_1e9_and_order_free() -> None:
    a = _vector(({"a": "1"}, "1.0000000001"), ({"a": "2"}, "NaN"))
    b = _vector(({"a": "2"}, "NaN"), ({"a": "1"}, "1"))
    assert differential.difference("x", a, b) is None
    assert differential.difference("x", _vector(({"a": "1"}, "1.1"), ({"a": "2"}, "NaN")), b) == (
        "(('a', '1'),) at 1.7: 1.1 against 1")
    # topk/bottomk at the top: each step's values, not which of equal series
    assert differential.difference("topk(1, x)", _vector(({"a": "1"}, "5")), _vector(({"a": "2"}, "5"))) is None
    # errors: without the match group they name, or the parameter they came in
    assert differential.difference(
        "x", _error('invalid parameter "query": found duplicate series for the match group {a="1"}'),
        _error('found duplicate series for the match group {a="2"}'),
    ) is None


@pytest.mark.parametrize(("query", "why", "athens", "prometheus", "kind"), [
    ("topk(2, x)", "values per step differ", _vector(), _vector(), "ties in topk/bottomk"),
    ("rate({__name__=~'a|b'}[1m])", "", _vector(), _error("vector cannot contain metrics with the same labelset"),
     "delayed name removal"),
    ("changes((a or b)[1m:45s])", "", _error("vector cannot contain metrics with the same labelset"), _vector(),
     "delayed name removal"),
    ("(x) > on(a) (y)", "", _error("multiple matches for labels: many-to-one matching must be explicit "
                                   "(group_left/group_right)"), _vector(), "many-to-one checked before filtering"),
    ("(x) + on(a) (y)", "", _error("multiple matches for labels: many-to-one matching must be explicit "
                                   "(group_left/group_right)"), _vector(), None),
    ("stddev(x)", "() at 1.7: NaN against 0", _vector(), _vector(), "stddev/stdvar of NaN or Inf"),
    ("sinh(x)", "() at 1.7: 6.7e307 against +Inf", _vector(), _vector(), "Go's exp overflowing early"),
    ("sinh(x)", "() at 1.7: -6.7e307 against -Inf", _vector(), _vector(), "Go's exp overflowing early"),
    ("(y) - on(a) ((x) != (z))", "", _error("multiple matches for labels: many-to-one matching must be explicit "
                                            "(group_left/group_right)"), _error("found duplicate series"),
     "many-to-one checked before filtering"),
    ("deriv(x[1m])", "() at 1.7: +Inf against NaN", _vector(), _vector(), "compensated sums over an infinity"),
    ("stddev(timestamp(x))", "() at 1.7: 7.1383021 against 7.1383022", _vector(), _vector(),
     "stddev/stdvar of ill-conditioned values"),
    ("stddev(x)", "() at 1.7: 7.1 against 7.2", _vector(), _vector(), None),
    ("(stdvar(exp(x))) <= bool pi()", "() at 1.7: 0 against 1", _vector(), _vector(),
     "stddev/stdvar of NaN or Inf"),
    ("(stdvar(x)) <= bool pi()", "() at 1.7: 0 against 1", _vector(), _vector(), None),
    ("(x) > (stddev without () (gauge_inf))", "series only in the second", _vector(), _vector(),
     "stddev/stdvar of NaN or Inf"),
    ("cos(exp(x))", "() at 1.7: 0.97 against -0.98", _vector(), _vector(), "Go's exp or pow a bit apart, amplified"),
    ("cos((x) ^ (y))", "() at 1.7: 0.93 against 0.92", _vector(), _vector(), "Go's exp or pow a bit apart, amplified"),
    ("floor(avg(x))", "() at 1.7: 17 against 16", _vector(), _vector(), "sum's or avg's rounding, amplified"),
    ('count_values("v", floor(sum(x)))', "timestamps of (('v', '255'),): 1 against 2", _vector(), _vector(),
     "sum's or avg's rounding, amplified"),
    ("max(predict_linear(gauge_inf[10m], 60))", "() at 1.7: 51.59 against 50.86", _vector(), _vector(),
     "compensated sums over an infinity"),
    ("max(predict_linear(temp[10m], 60))", "() at 1.7: 51.59 against 50.86", _vector(), _vector(), None),
    ("floor(x)", "() at 1.7: 17 against 16", _vector(), _vector(), None),
    # Athens computes sin/cos/tan as Go does (functions.k_go_trig): no kind.
    ("(time() + time()) % (cos(x))", "() at 1.7: 0.5112710816 against 0.5112706568", _vector(), _vector(), None),
    ("timestamp(x offset 1m @ end())", "series only in the first", _vector(), _vector(),
     "timestamp() of a selector with both offset and @"),
    ("timestamp(x @ end())", "series only in the first", _vector(), _vector(), None),
    ("deriv((exp(x))[2m:45s])", "() at 1.7: 0 against -0.126", _vector(), _vector(),
     "deriv of a constant series (3.x: 0)"),
    ("deriv(x[2m])", "() at 1.7: 0.5 against -0.126", _vector(), _vector(), None),
    ("sum(x)", "() at 1.7: NaN against 0", _vector(), _vector(), None),
])
def test_expected_kinds(query: str, why: str, athens: dict, prometheus: dict, kind: str | None) -> None:
    """As seen with Athens' --query-delayed-name-removal on; off, that kind is not expected."""
    assert differential.expected_kind(query, why, athens, prometheus, delayed_names=True) == kind
    eager = differential.expected_kind(query, why, athens, prometheus)
    assert eager == (None if kind == "delayed name removal" else kind)


def test_series_merged_across_a_subquerys_steps_are_expected() -> None:
    """2.42 fails where a negation makes two series of a subquery equal even
    at different steps; 3.x merges them (operators.test). Outside a
    subquery the same answers could be a duplicate at one step: a bug."""
    same = _error("vector cannot contain metrics with the same labelset")
    assert differential.expected_kind("min_over_time((-(a or b))[2m:45s])", "", _vector(), same) == (
        "series merged across steps (3.x)")
    assert differential.expected_kind("-(a or b)", "", _vector(), same) is None
    # Merged, the series then fail a later many-to-many match in Athens (and 3.x).
    later = _error("found duplicate series for the match group {} on the right hand-side of the operation")
    assert differential.expected_kind("(count_over_time((a or b)[1m:])) + on() (c)", "", later, same) == (
        "series merged across steps (3.x)")
    assert differential.expected_kind("count_over_time((a or b)[1m:])", "", same, same) is None


def test_count_values_labels_of_values_within_rounding_are_expected() -> None:
    a = _vector(({"v": "10112280320975556"}, "1"), ({"v": "3"}, "2"))
    p = _vector(({"v": "10112280320975552"}, "1"), ({"v": "3"}, "2"))
    why = differential.difference("count_values(...)", a, p)
    assert differential.expected_kind("count_values(...)", why, a, p) == "count_values labels of values within 1e-9"
    p2 = _vector(({"v": "10112280320975552"}, "1"), ({"v": "3"}, "5"))  # a count differs: not rounding
    assert differential.expected_kind("count_values(...)", why, a, p2) is None


def test_expressions_are_reproducible_and_valid() -> None:
    from athens.query.parser import parse

    a, b = differential.Expressions(7), differential.Expressions(7)
    queries = [a.query() for _ in range(200)]
    assert queries == [b.query() for _ in range(200)]
    for q in queries:
        parse(q)  # every generated expression is PromQL


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_random_queries_answer_as_prometheus(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A guard for PromQL fidelity: 500 random expressions whose answers
    agree with Prometheus' (or differ in a kind expected_kind knows). The
    data ends on a whole hour, so subquery steps meet it as in every run."""
    end = (int(time.time()) // 3600 - 1) * 3600
    rc = differential.main(["--queries", "500", "--seed", "20261206", "--athens-workers", "1", "--end", str(end),
                            "--logs", str(tmp_path)])
    out = capsys.readouterr().out.strip()
    assert out.splitlines()[-1].startswith("1000 requests (500 expressions, seed 20261206, 1 workers, "
                                           "delayed name removal off): same ")
    assert rc == 0, out
