"""Numba kernels against short, plain-Python twins written from the
Prometheus formulas, on random series and windows."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from athens.query import functions as F

settings.register_profile("athens", max_examples=60, deadline=None)
settings.load_profile("athens")


# ----------------------------------------------------------- plain twins


def ref_rate(ts, vs, ws, we, counter, is_rate):  # type: ignore[no-untyped-def]
    if len(ts) < 2:
        return None
    result = vs[-1] - vs[0]
    if counter:
        for a, b in zip(vs, vs[1:]):
            if b < a:
                result += a
    to_start = (ts[0] - ws) / 1000
    to_end = (we - ts[-1]) / 1000
    sampled = (ts[-1] - ts[0]) / 1000
    avg = sampled / (len(ts) - 1)
    if to_start >= avg * 1.1:
        to_start = avg / 2
    if counter and result > 0 and vs[0] >= 0:
        to_start = min(to_start, sampled * (vs[0] / result))
    if to_end >= avg * 1.1:
        to_end = avg / 2
    factor = (sampled + to_start + to_end) / sampled
    if is_rate:
        factor /= (we - ws) / 1000
    return result * factor


def ref_over_time(op, ts, vs):  # type: ignore[no-untyped-def]
    if not vs:
        return None
    if op == F.OT_SUM:
        return math.fsum(vs)
    if op == F.OT_AVG:
        return math.fsum(vs) / len(vs)
    if op == F.OT_MIN:
        return min(vs)
    if op == F.OT_MAX:
        return max(vs)
    if op == F.OT_COUNT:
        return float(len(vs))
    if op == F.OT_LAST:
        return vs[-1]
    if op == F.OT_FIRST:
        return vs[0]
    if op == F.OT_STDVAR:
        return statistics.pvariance(vs)
    if op == F.OT_STDDEV:
        return statistics.pstdev(vs)
    if op == F.OT_CHANGES:
        return float(sum(1 for a, b in zip(vs, vs[1:]) if a != b))
    if op == F.OT_RESETS:
        return float(sum(1 for a, b in zip(vs, vs[1:]) if b < a))
    raise AssertionError(op)


def ref_quantile(q, vs):  # type: ignore[no-untyped-def]
    """Prometheus' quantile: NaNs sorted first; q outside [0, 1] is -Inf or +Inf."""
    if math.isnan(q):
        return math.nan
    if q < 0 or q > 1:
        return math.copysign(math.inf, q)
    y = [v for v in vs if math.isnan(v)] + sorted(v for v in vs if not math.isnan(v))
    rank = q * (len(y) - 1)
    lo = math.floor(rank)
    hi = min(len(y) - 1, lo + 1)
    w = rank - lo
    return y[lo] * (1 - w) + y[hi] * w


def ref_slope(ts, vs):  # type: ignore[no-untyped-def]
    x = [(t - ts[0]) / 1000 for t in ts]
    mx, my = sum(x) / len(x), sum(vs) / len(vs)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, vs))
    var = sum((a - mx) ** 2 for a in x)
    return cov / var


# ------------------------------------------------------------ strategies

series = st.lists(
    st.tuples(st.integers(1, 30_000), st.floats(-1e6, 1e6, allow_nan=False)),
    min_size=0,
    max_size=40,
)


def build(samples):  # type: ignore[no-untyped-def]
    ts = np.cumsum([d for d, _ in samples]).astype(np.int64)
    vs = np.array([v for _, v in samples], dtype=np.float64)
    return ts, vs


def windows(ts, rng_ms, steps):  # type: ignore[no-untyped-def]
    we = np.array(steps, np.int64)
    ws = we - rng_ms
    lo, hi = F.window_bounds(ts, np.array([0, len(ts)], np.int64), ws, we)
    return ws, we, lo, hi


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


step_list = st.lists(st.integers(0, 1_300_000), min_size=1, max_size=8)


@given(series, st.integers(1_000, 600_000), step_list, st.booleans(), st.booleans())
def test_rate_kernel_matches_twin(samples, rng_ms, steps, counter, is_rate):  # type: ignore[no-untyped-def]
    ts, vs = build(samples)
    if counter:
        vs = np.abs(vs)
    ws, we, lo, hi = windows(ts, rng_ms, steps)
    out, ok = F.k_rate(ts, vs, lo, hi, ws, we, rng_ms / 1000, counter, is_rate)
    for t in range(len(steps)):
        a, b = lo[0, t], hi[0, t]
        want = ref_rate(list(ts[a:b]), list(vs[a:b]), ws[t], we[t], counter, is_rate)
        assert ok[0, t] == (want is not None)
        if want is not None:
            assert close(out[0, t], want)


@given(series, st.integers(1_000, 600_000), step_list, st.sampled_from(
    [F.OT_SUM, F.OT_AVG, F.OT_MIN, F.OT_MAX, F.OT_COUNT, F.OT_LAST, F.OT_FIRST,
     F.OT_STDDEV, F.OT_STDVAR, F.OT_CHANGES, F.OT_RESETS]))
def test_over_time_kernel_matches_twin(samples, rng_ms, steps, op):  # type: ignore[no-untyped-def]
    ts, vs = build(samples)
    ws, we, lo, hi = windows(ts, rng_ms, steps)
    out, ok = F.k_over_time(ts, vs, lo, hi, op)
    for t in range(len(steps)):
        a, b = lo[0, t], hi[0, t]
        want = ref_over_time(op, list(ts[a:b]), list(vs[a:b]))
        assert ok[0, t] == (want is not None)
        if want is not None:
            assert math.isclose(out[0, t], want, rel_tol=1e-7, abs_tol=1e-3)


@given(series, st.integers(1_000, 600_000), step_list, st.floats(0, 1))
def test_quantile_over_time_matches_twin(samples, rng_ms, steps, q):  # type: ignore[no-untyped-def]
    ts, vs = build(samples)
    ws, we, lo, hi = windows(ts, rng_ms, steps)
    out, ok = F.k_quantile_over_time(ts, vs, lo, hi, np.full(len(steps), q))
    for t in range(len(steps)):
        a, b = lo[0, t], hi[0, t]
        if b > a:
            assert close(out[0, t], ref_quantile(q, list(vs[a:b])))
        else:
            assert not ok[0, t]


@settings(max_examples=150)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3),
       st.one_of(st.sampled_from([10_000, 25_000, 40_000]), st.integers(1, 40_000)),
       st.one_of(st.just(1), st.integers(1, 12)),
       st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0, -0.5, 1.5, math.nan]))
def test_quantile_over_time_keeps_each_window_sorted_as_a_sort_would(seed, n_series, rng_ms, step_s, q):  # type: ignore[no-untyped-def]
    """Windows sliding step by step over several series (overlapping,
    disjoint, empty), with duplicates, infinities and NaNs: the same
    values, bit for bit (up to the sign of a zero), as sorting each window
    with its NaNs first (ref_quantile)."""
    rng = np.random.default_rng(seed)
    choices = np.array([0.0, -0.0, 1.0, 2.5, -3.0, 7.0, math.nan, math.inf, -math.inf])
    values = [rng.choice(choices, int(rng.integers(0, 120))) for _ in range(n_series)]
    ts = np.concatenate([np.arange(len(v), dtype=np.int64) * 1_000 for v in values])
    vs = np.concatenate(values)
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int64)
    n_steps = 130 // step_s
    we = np.arange(n_steps, dtype=np.int64) * step_s * 1_000
    lo, hi = F.window_bounds(ts, offsets, we - rng_ms, we)
    out, ok = F.k_quantile_over_time(ts, vs, lo, hi, np.full(n_steps, q))
    for s in range(n_series):
        for t in range(n_steps):
            a, b = lo[s, t], hi[s, t]
            assert ok[s, t] == (b > a)
            if b > a:
                np.testing.assert_array_equal(out[s, t], ref_quantile(q, vs[a:b].tolist()))


@given(series, st.integers(1_000, 600_000), step_list)
def test_deriv_matches_least_squares(samples, rng_ms, steps):  # type: ignore[no-untyped-def]
    ts, vs = build(samples)
    vs = np.round(vs)  # keep the twin's naive sums exact enough
    ws, we, lo, hi = windows(ts, rng_ms, steps)
    out, ok = F.k_deriv(ts, vs, lo, hi, False, we, np.zeros(len(steps)))
    for t in range(len(steps)):
        a, b = lo[0, t], hi[0, t]
        if b - a >= 2:
            want = 0.0 if len(set(vs[a:b])) == 1 else ref_slope(list(ts[a:b]), list(vs[a:b]))
            assert math.isclose(out[0, t], want, rel_tol=1e-6, abs_tol=1e-6)


def test_irate_uses_last_two_samples_and_counter_reset() -> None:
    ts = np.array([0, 10_000, 20_000], np.int64)
    vs = np.array([5.0, 10.0, 2.0])
    ws, we, lo, hi = windows(ts, 60_000, [20_000])
    out, ok = F.k_instant_rate(ts, vs, lo, hi, True)
    assert ok[0, 0] and out[0, 0] == 0.2  # reset: 2 / 10s
    out, _ = F.k_instant_rate(ts, vs, lo, hi, False)
    assert out[0, 0] == -8.0


def test_bucket_quantile_interpolates_and_fixes_monotonicity() -> None:
    les = np.array([0.1, 0.5, 1.0, np.inf])
    counts = np.array([[10.0], [20.0], [15.0], [40.0]])  # 15 < 20: not monotonic
    present = np.ones_like(counts, bool)
    out, ok, forced = F.k_bucket_quantile(les, counts, present, np.array([0.5]))
    # rank 20 falls at the top of the (0.1, 0.5] bucket once forced to 20.
    assert ok[0] and forced[0]
    assert math.isclose(out[0], 0.5)
    out, _, _ = F.k_bucket_quantile(les, counts, present, np.array([0.99]))
    assert out[0] == 1.0  # in the +Inf bucket: the highest finite bound


def test_group_agg_sum_is_compensated() -> None:
    vals = np.array([[1e100], [1.0], [-1e100]])
    present = np.ones_like(vals, bool)
    out, ok = F.k_group_agg(vals, present, np.zeros(3, np.int64), 1, F.AG_SUM)
    assert out[0, 0] == 1.0


def test_deg_and_rad_round_as_go_does() -> None:
    # Go's `v * 180 / math.Pi` rounds twice; numpy's degrees multiplies by
    # 180/pi once, and about a quarter of all values come out a bit apart.
    v = np.random.default_rng(7).normal(size=2000) * 1e3
    assert (np.degrees(v) != v * 180.0 / np.pi).any()  # the case is there
    assert F._MATH["deg"](v).tolist() == [x * 180 / math.pi for x in v.tolist()]
    assert F._MATH["rad"](v).tolist() == [x * math.pi / 180 for x in v.tolist()]


def go_log(x: float) -> float:
    """Go's math.Log for a positive finite x, line by line (log_amd64.s:
    f1 <= Sqrt2/2 where log.go has <)."""
    f1, ki = math.frexp(x)
    if f1 <= math.sqrt(2) / 2:
        f1 *= 2
        ki -= 1
    f, k = f1 - 1, float(ki)
    s = f / (2 + f)
    s2 = s * s
    s4 = s2 * s2
    t1 = s2 * (6.666666666666735130e-01 + s4 * (2.857142874366239149e-01 + s4 * (
        1.818357216161805012e-01 + s4 * 1.479819860511658591e-01)))
    t2 = s4 * (3.999999999940941908e-01 + s4 * (2.222219843214978396e-01 + s4 * 1.531383769920937332e-01))
    hfsq = 0.5 * f * f
    return k * 6.93147180369123816490e-01 - ((hfsq - (s * (hfsq + (t1 + t2)) + k * 1.90821492927058770002e-10)) - f)


def test_ln_log2_and_log10_are_gos() -> None:
    rng = np.random.default_rng(7)
    v = np.concatenate([np.abs(rng.normal(size=2000)) * 1e3, rng.lognormal(0, 30, 2000), [5e-324, 1e-310]])
    assert (np.log(v) != [go_log(x) for x in v.tolist()]).any()  # glibc's log is not Go's
    assert F._MATH["ln"](v).tolist() == [go_log(x) for x in v.tolist()]
    inv_ln10 = float(1 / Decimal(10).ln())  # Go's exact constant arithmetic
    inv_ln2 = float(1 / Decimal(2).ln())
    assert F._MATH["log10"](v).tolist() == [go_log(x) * inv_ln10 for x in v.tolist()]
    want = [math.frexp(x) for x in v.tolist()]
    assert F._MATH["log2"](v).tolist() == [e - 1.0 if f == 0.5 else go_log(f) * inv_ln2 + e for f, e in want]
    special = np.array([0.0, -1.0, np.inf, np.nan, 8.0, 0.125])
    with np.errstate(all="ignore"):
        assert F._MATH["log2"](special).tolist()[4:] == [3.0, -3.0]
        for name in ("ln", "log2", "log10"):
            out = F._MATH[name](special)
            assert out[0] == -np.inf and np.isnan(out[1]) and out[2] == np.inf and np.isnan(out[3])


def test_sgn_keeps_zeros_and_nan() -> None:
    out = F._MATH["sgn"](np.array([-0.0, 0.0, np.nan, -3.0, 2.0, -np.inf]))
    assert out[2] != out[2] and out[[3, 4, 5]].tolist() == [-1.0, 1.0, -1.0]
    assert out[0] == 0 and np.signbit(out[0]) and not np.signbit(out[1])


def test_four_over_pi_digits_and_go_trig_special_cases() -> None:
    digits = F._M_PI4
    assert digits[:2].tolist() == [1, 0x45F306DC9C882A53]  # 4/pi = 1.45f306dc9c882a53f84e... (hex)
    assert digits[0] + digits[1] / 2.0**64 == 4 / math.pi
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan])
    sin, cos, tan = (F._MATH[f](special) for f in ("sin", "cos", "tan"))
    for out in (sin, tan):  # keep the zero's sign, NaN for the rest
        assert out[:2].tolist() == [0.0, -0.0] and np.signbit(out[1]) and np.isnan(out[2:]).all()
    assert cos[:2].tolist() == [1.0, 1.0] and np.isnan(cos[2:]).all()
    atan = F._MATH["atan"](special)
    assert atan[:4].tolist() == [0.0, -0.0, math.pi / 2, -math.pi / 2] and np.signbit(atan[1]) and np.isnan(atan[4])
    edges = np.array([0.0, -0.0, 1.0, -1.0, 1.5, -np.inf, np.nan])
    asin, acos = F._MATH["asin"](edges), F._MATH["acos"](edges)
    assert asin[:4].tolist() == [0.0, -0.0, math.pi / 2, -math.pi / 2] and np.signbit(asin[1])
    assert acos[:4].tolist() == [math.pi / 2, math.pi / 2, 0.0, math.pi] and np.isnan(asin[4:]).all()


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-1e15, max_value=1e15))
@example(6504.0)  # acos(tanh(6.504)) = 0.0029949: the two differ by 4.3e-15
def test_go_trig_is_within_an_ulp_or_two_of_numpy(v: float) -> None:
    """Both reductions of sin/cos/tan (below and above 2^29) land on the
    same angle as numpy's, and atan/asin/acos on the same values, to the
    last bits (tests/query/test_vs_prometheus.py holds them to Prometheus'
    own last bit). Near ±1 asin and acos magnify their argument's last bit
    (1/sqrt(1-x^2)): there the two may differ by a few 1e-15 absolute."""
    x = np.array([v, v * 1e-3, v + 2.0**30, math.tanh(v * 1e-3)])
    for f, ref in (("sin", np.sin), ("cos", np.cos), ("tan", np.tan), ("atan", np.arctan), ("asin", np.arcsin),
                   ("acos", np.arccos)):
        got = F._MATH[f](x)
        with np.errstate(invalid="ignore"):  # asin/acos out of [-1, 1]: NaN both
            want = ref(x)
        atol = 1e-14 if f in ("asin", "acos") else 1e-15
        assert np.allclose(got, want, rtol=1e-12, atol=atol, equal_nan=True) or f == "tan" and np.allclose(
            1 / got, 1 / want, rtol=1e-12, atol=1e-15), (f, x, got, want)


def test_format_go_float() -> None:
    assert F.format_go_float(1.0) == "1"
    assert F.format_go_float(0.25) == "0.25"
    assert F.format_go_float(1e21) == "1000000000000000000000"
    assert F.format_go_float(float("inf")) == "+Inf"
    assert F.format_go_float(float("nan")) == "NaN"
    assert F.format_go_float(1e-7, "g") == "1e-07"
    # 'g', as %g and %v: the exponent form below 1e-4 and from 1e6 on.
    assert [F.format_go_float(v, "g") for v in (1e-4, 1e-5, 123456.0, 1e6, 1234567.0, 1e20, -0.0, 1.1)] == [
        "0.0001", "1e-05", "123456", "1e+06", "1.234567e+06", "1e+20", "-0", "1.1"]


def ref_extended(ts, vs, ws, we, lookback, smoothed, func, counter):  # type: ignore[no-untyped-def]
    """anchored / smoothed windows, written plainly from their definition."""
    inside = [(t, v) for t, v in zip(ts, vs) if ws < t <= we]
    before = [(t, v) for t, v in zip(ts, vs) if ws - lookback < t <= ws]
    after = [(t, v) for t, v in zip(ts, vs) if we < t <= we + lookback]

    def interp(p0, p1, at):  # type: ignore[no-untyped-def]
        (t0, v0), (t1, v1) = p0, p1
        if counter and v1 < v0:
            v0 = 0.0
        return v0 + (v1 - v0) * (at - t0) / (t1 - t0)

    if not smoothed:
        if not inside:
            return None
        pts = ([before[-1][1]] if before else []) + [v for _, v in inside]
    else:
        if not inside and not (before and after):
            return None
        seq = ([before[-1]] if before else []) + inside + ([after[0]] if after else [])
        left = interp(before[-1], seq[1], ws) if before else inside[0][1]
        last_le = inside[-1] if inside else before[-1]
        right = interp(last_le, after[0], we) if after else last_le[1]
        pts = [left] + [v for _, v in inside] + [right]
    pairs = list(zip(pts, pts[1:]))
    if func == F.EX_CHANGES:
        return float(sum(1 for a, b in pairs if a != b))
    if func == F.EX_RESETS:
        return float(sum(1 for a, b in pairs if b < a))
    r = pts[-1] - pts[0]
    if func == F.EX_INCREASE:
        r += sum(a for a, b in pairs if b < a)
    return r


@given(series, st.integers(1_000, 600_000), step_list, st.booleans(),
       st.sampled_from([F.EX_INCREASE, F.EX_DELTA, F.EX_CHANGES, F.EX_RESETS]))
def test_extended_kernel_matches_twin(samples, rng_ms, steps, smoothed, func):  # type: ignore[no-untyped-def]
    ts, vs = build(samples)
    ws, we, lo, hi = windows(ts, rng_ms, steps)
    counter = func == F.EX_INCREASE
    offsets = np.array([0, len(ts)], np.int64)
    out, ok = F.k_extended(ts, vs, offsets, lo, hi, ws, we, 300_000, smoothed, func, counter)
    for t in range(len(steps)):
        want = ref_extended(list(ts), list(vs), ws[t], we[t], 300_000, smoothed, func, counter)
        assert ok[0, t] == (want is not None)
        if want is not None:
            assert math.isclose(out[0, t], want, rel_tol=1e-9, abs_tol=1e-6)


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(-1e6, 1e6), st.booleans()), max_size=30),
       st.sampled_from([F.AG_SUM, F.AG_AVG, F.AG_MIN, F.AG_MAX, F.AG_COUNT, F.AG_STDDEV]))
def test_group_agg_matches_twin(cells, op):  # type: ignore[no-untyped-def]
    gid = np.array([g for g, _, _ in cells], np.int64)
    vals = np.array([[v] for _, v, _ in cells]).reshape(len(cells), 1)
    present = np.array([[p] for _, _, p in cells], bool).reshape(len(cells), 1)
    out, ok = F.k_group_agg(vals, present, gid, 4, op)
    for g in range(4):
        xs = [v for gg, v, p in cells if gg == g and p]
        assert ok[g, 0] == bool(xs)
        if not xs:
            continue
        want = {
            F.AG_SUM: math.fsum(xs),
            F.AG_AVG: math.fsum(xs) / len(xs),
            F.AG_MIN: min(xs),
            F.AG_MAX: max(xs),
            F.AG_COUNT: float(len(xs)),
            F.AG_STDDEV: statistics.pstdev(xs),
        }[op]
        assert math.isclose(out[g, 0], want, rel_tol=1e-7, abs_tol=1e-3)


def test_xxh64_known_vectors() -> None:
    from athens.query.aggregations import xxh64

    assert xxh64(b"") == 0xEF46DB3751D8E999
    assert xxh64(b"abc") == 0x44BC2CF5AD770999
    assert xxh64(b"Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1


def test_topk_heap_breaks_ties_like_prometheus() -> None:
    # Worked through Go's container/heap by hand (and observed on a real
    # Prometheus): with this input order bottomk(2) keeps rows 1 and 4, not
    # the first 25 seen.
    vals = np.array([[25.0], [25.0], [27.0], [26.0], [24.0], [26.0]])
    present = np.ones_like(vals, bool)
    gid = np.zeros(6, np.int64)
    keep = F.k_topk_heap(vals, present, gid, 1, np.array([2], np.int64), np.array([2], np.int64), True)
    assert np.flatnonzero(keep[:, 0]).tolist() == [1, 4]
    keep = F.k_topk_heap(vals, present, gid, 1, np.array([2], np.int64), np.array([2], np.int64), False)
    assert np.flatnonzero(keep[:, 0]).tolist() == [2, 3]  # 27 and the first 26


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 400), st.integers(1, 100_000), st.booleans()),
             min_size=1, max_size=4),
    st.booleans(), st.data(),
)
def test_window_bounds_equal_a_binary_search(specs, in_order, data) -> None:
    """Walked (dense steps) or interpolated (many samples per step, regular
    or irregular gaps) or bisected (windows not in order), window ends on
    samples, between them or far off: the bounds are the searchsorted ones."""
    series = [
        np.cumsum(np.full(n, gap) if regular else np.random.default_rng(seed).integers(1, gap + 1, n))
        .astype(np.int64)
        for seed, n, gap, regular in specs
    ]
    ts = np.concatenate(series)
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in series]))).astype(np.int64)
    times = st.integers(-50_000, 50_000_000) | st.sampled_from([-(2**63) + 400_000, 2**63 - 1])  # far off
    if len(ts):
        times = times | st.sampled_from(ts.tolist())
    ends = data.draw(st.lists(times, min_size=1, max_size=12))
    we = np.array(sorted(ends) if in_order else ends, np.int64)
    length = data.draw(st.integers(0, 400_000) | (times.map(abs) if len(ts) else st.just(0)))
    # In Python ints, clamped: int64 arithmetic would wrap a far-off end
    # minus a far-off length into a window that starts after it ends.
    ws = np.array([max(e - length, -(2**63)) for e in we.tolist()], np.int64)
    lo, hi = F.window_bounds(ts, offsets, ws, we)
    for i, s in enumerate(series):
        assert lo[i].tolist() == (offsets[i] + np.searchsorted(s, ws, "right")).tolist()
        assert hi[i].tolist() == (offsets[i] + np.searchsorted(s, we, "right")).tolist()

