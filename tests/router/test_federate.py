"""/federate's rendering: newest samples, families, Go's number forms."""

from __future__ import annotations

import numpy as np
import pytest

from athens.model.labels import Labels
from athens.model.series import STALE_NAN, SeriesSet
from athens.router.federate import newest_samples, render
from athens.router.metrics import format_value


def test_newest_samples_leave_out_empty_and_stale_series() -> None:
    labels = [Labels([("__name__", n)]) for n in ("a", "b", "c", "d")]
    ts = np.array([1, 2, 3, 4, 5], np.int64)
    values = np.array([1.0, 2.0, 3.0, STALE_NAN, 5.0])
    # a: 1, 2; b: none; c: 3 then a staleness marker; d: 5
    rows, got_ts, got_v = newest_samples(SeriesSet(labels, ts, values, np.array([0, 2, 2, 4, 5], np.int64)))
    assert [lb.get("__name__") for lb in rows] == ["a", "d"]
    assert got_ts.tolist() == [2, 5] and got_v.tolist() == [2.0, 5.0]


def test_render_families_by_name_nameless_left_out() -> None:
    rows = [Labels([("__name__", "b"), ("job", "x")]), Labels([("job", "nameless")]),
            Labels([("__name__", "a"), ("instance", "i"), ("z", "")]), Labels([("__name__", "b"), ("job", "y")])]
    text = render(rows, np.array([10, 20, 30, 40], np.int64), np.array([1.0, 2.0, 0.5, 4.0])).decode()
    assert text == (
        '# TYPE a untyped\na{instance="i"} 0.5 30\n'
        '# TYPE b untyped\nb{job="x",instance=""} 1 10\nb{job="y",instance=""} 4 40\n'
    )


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1"), (0.0, "0"), (-0.0, "0"), (-1.0, "-1"), (123456.5, "123456.5"), (100000.0, "100000"),
    (1234567.0, "1.234567e+06"), (1e6, "1e+06"), (0.0001, "0.0001"), (1e-05, "1e-05"), (-2.5e-7, "-2.5e-07"),
    (1712345678.901, "1.712345678901e+09"), (3e21, "3e+21"), (1e300, "1e+300"), (5e-324, "5e-324"),
    (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (float("nan"), "NaN"),
])
def test_format_value_is_gos_shortest_g(value: float, text: str) -> None:
    assert format_value(value) == text
