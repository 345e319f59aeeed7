"""PromQL functions: the numba kernels behind them, and their evaluation.

The first half holds the kernels. Each walks all series and all steps of
one evaluation in compiled code: the window of series s at step t is the
sample index range [lo[s, t], hi[s, t]) of the concatenated sample arrays
(see MatrixValue). Arithmetic follows Prometheus' float code (Kahan/Neumaier
sums, its regression and extrapolation formulas) so results agree to the
last bits the conformance tests look at; tests/query/test_functions.py holds
a plain-Python twin for each and checks they agree.

The second half evaluates Call nodes on whole-query values (eval_call).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from athens.errors import BadDataError, ExecutionError
from athens.kernels import kernel, read_only
from athens.model.labels import METRIC_NAME, Labels
from athens.model.matchers import Matcher, MatchOp
from athens.model.re2 import to_python
from athens.model.series import has_stale
from athens.query import ast
from athens.query.values import MatrixValue, ScalarValue, StringValue, VectorValue

if TYPE_CHECKING:
    from athens.query.engine import Evaluator

# Over-time operation codes for k_over_time.
OT_SUM, OT_AVG, OT_MIN, OT_MAX, OT_COUNT, OT_LAST, OT_FIRST = 0, 1, 2, 3, 4, 5, 6
OT_STDDEV, OT_STDVAR, OT_PRESENT, OT_CHANGES, OT_RESETS, OT_MAD = 7, 8, 9, 10, 11, 12
OT_TS_MIN, OT_TS_MAX, OT_TS_LAST, OT_TS_FIRST = 13, 14, 15, 16


@kernel(cache=True, nogil=True, error_model="numpy", inline="always")
def kahan_inc(inc: float, s: float, c: float) -> tuple[float, float]:
    t = s + inc
    if math.isinf(t):
        c = 0.0
    elif abs(s) >= abs(inc):
        c += (s - t) + inc
    else:
        c += (inc - t) + s
    return t, c


# A series with at least this many samples per step has its window bounds
# found by interpolation search instead of a walk over every sample: sparse
# steps over dense data (a week's dashboard over 15 s samples) skip most
# samples; with denser steps the walk touches little more than it needs.
SPARSE_STEP_SAMPLES = 8


@kernel(cache=True, nogil=True, error_model="numpy")
def window_bounds(
    ts: np.ndarray, offsets: np.ndarray, wstart: np.ndarray, wend: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """lo/hi [S, T]: samples with wstart[t] < ts <= wend[t] of each series."""
    n_series = offsets.shape[0] - 1
    n_steps = wstart.shape[0]
    lo = np.empty((n_series, n_steps), np.int64)
    hi = np.empty((n_series, n_steps), np.int64)
    monotonic = True
    for t in range(1, n_steps):
        if wstart[t] < wstart[t - 1] or wend[t] < wend[t - 1]:
            monotonic = False
            break
    for s in range(n_series):
        a, b = offsets[s], offsets[s + 1]
        if not monotonic:
            seg = ts[a:b]
            lo[s] = a + np.searchsorted(seg, wstart, side="right")
            hi[s] = a + np.searchsorted(seg, wend, side="right")
            continue
        if b - a >= SPARSE_STEP_SAMPLES * n_steps and ts[b - 1] > ts[a]:
            per_ms = (b - 1 - a) / (ts[b - 1] - ts[a])  # samples per millisecond
            for t in range(n_steps):
                lo[s, t] = _first_after(ts, a, b, wstart[t], per_ms)
                hi[s, t] = _first_after(ts, a, b, wend[t], per_ms)
            continue
        # Windows only move forward: one walk over the series' samples.
        i = a
        j = a
        for t in range(n_steps):
            ws = wstart[t]
            while i < b and ts[i] <= ws:
                i += 1
            if j < i:
                j = i
            we = wend[t]
            while j < b and ts[j] <= we:
                j += 1
            lo[s, t] = i
            hi[s, t] = j
    return lo, hi


@kernel(cache=True, nogil=True, error_model="numpy", inline="always")
def _first_after(ts: np.ndarray, a: int, b: int, x: int, per_ms: float) -> int:
    """The first i in [a, b) with ts[i] > x (b if none; ts[a:b] sorted):
    guessed from the series' mean sample rate, bracketed by galloping from
    the guess, then bisected, so irregular series stay O(log n)."""
    g = a
    if x > ts[a]:
        # In floats: far-off times (an @ modifier) must not overflow int64.
        ahead = (float(x) - float(ts[a])) * per_ms
        g = b if ahead >= b - a else a + int(ahead)
    if g < b and ts[g] <= x:  # the answer is after g
        left, step = g + 1, 1
        right = left
        while right < b and ts[right] <= x:
            left = right + 1
            right = left + step
            step *= 2
        right = min(right, b)
    else:  # at or before g
        right, step = g, 1
        left = right - 1
        while left >= a and ts[left] > x:
            right = left
            left = right - step
            step *= 2
        left = max(left + 1, a)
    while left < right:
        m = (left + right) >> 1
        if ts[m] <= x:
            left = m + 1
        else:
            right = m
    return left


@kernel(cache=True, nogil=True, error_model="numpy")
def k_select(
    ts: np.ndarray,
    vals: np.ndarray,
    stale: np.ndarray,
    offsets: np.ndarray,
    eff: np.ndarray,
    lookback: int,
    smoothed: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instant vector selector: per series and step, the latest sample in
    (eff - lookback, eff], unless it is a staleness marker.

    smoothed (Prometheus 3 extended selectors): interpolate linearly towards
    the next sample when it lies within the lookback delta after eff.
    Returns values, present and the timestamps of the samples used.
    """
    n_series = offsets.shape[0] - 1
    n_steps = eff.shape[0]
    values = np.zeros((n_series, n_steps))
    present = np.zeros((n_series, n_steps), np.bool_)
    sample_ts = np.zeros((n_series, n_steps), np.int64)
    for s in range(n_series):
        a, b = offsets[s], offsets[s + 1]
        if b == a:
            continue
        idx = a + np.searchsorted(ts[a:b], eff, side="right") - 1
        for t in range(n_steps):
            i = idx[t]
            if i < a:
                continue
            st = ts[i]
            sample_ts[s, t] = st
            v = vals[i]
            values[s, t] = v
            if st <= eff[t] - lookback or stale[i]:
                continue
            present[s, t] = True
            if smoothed and st < eff[t] and i + 1 < b:
                nt = ts[i + 1]
                if nt <= eff[t] + lookback and not stale[i + 1]:
                    values[s, t] = v + (vals[i + 1] - v) * ((eff[t] - st) / (nt - st))
    return values, present, sample_ts


@kernel(cache=True, nogil=True, error_model="numpy")
def k_rate(
    ts: np.ndarray,
    vals: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    wstart: np.ndarray,
    wend: np.ndarray,
    range_s: float,
    is_counter: bool,
    is_rate: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """rate / increase / delta with Prometheus' extrapolation."""
    n_series, n_steps = lo.shape
    out = np.zeros((n_series, n_steps))
    ok = np.zeros((n_series, n_steps), np.bool_)
    for s in range(n_series):
        for t in range(n_steps):
            a, b = lo[s, t], hi[s, t]
            if b - a < 2:
                continue
            first_v, last_v = vals[a], vals[b - 1]
            first_t, last_t = ts[a], ts[b - 1]
            result = last_v - first_v
            if is_counter:
                prev = first_v
                for i in range(a + 1, b):
                    cur = vals[i]
                    if cur < prev:
                        result += prev
                    prev = cur
            dur_start = (first_t - wstart[t]) / 1000.0
            dur_end = (wend[t] - last_t) / 1000.0
            sampled = (last_t - first_t) / 1000.0
            avg_step = sampled / (b - a - 1)
            threshold = avg_step * 1.1
            interval = sampled
            if dur_start >= threshold:
                dur_start = avg_step / 2.0
            if is_counter and result > 0 and first_v >= 0:
                dur_zero = sampled * (first_v / result)
                if dur_zero < dur_start:
                    dur_start = dur_zero
            interval += dur_start
            if dur_end >= threshold:
                dur_end = avg_step / 2.0
            interval += dur_end
            factor = interval / sampled
            if is_rate:
                factor /= range_s
            out[s, t] = result * factor
            ok[s, t] = True
    return out, ok


@kernel(cache=True, nogil=True, error_model="numpy")
def k_instant_rate(
    ts: np.ndarray, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray, is_rate: bool
) -> tuple[np.ndarray, np.ndarray]:
    """irate / idelta from the last two samples of each window."""
    n_series, n_steps = lo.shape
    out = np.zeros((n_series, n_steps))
    ok = np.zeros((n_series, n_steps), np.bool_)
    for s in range(n_series):
        for t in range(n_steps):
            a, b = lo[s, t], hi[s, t]
            if b - a < 2:
                continue
            last, prev = vals[b - 1], vals[b - 2]
            if is_rate and last < prev:
                r = last
            else:
                r = last - prev
            dt = ts[b - 1] - ts[b - 2]
            if dt == 0:
                continue
            if is_rate:
                r /= dt / 1000.0
            out[s, t] = r
            ok[s, t] = True
    return out, ok


@kernel(cache=True, nogil=True, error_model="numpy")
def _median(x: np.ndarray) -> float:
    y = np.sort(x)
    n = y.shape[0]
    rank = 0.5 * (n - 1)
    lower = math.floor(rank)
    upper = min(n - 1, lower + 1)
    w = rank - lower
    return y[lower] * (1 - w) + y[upper] * w


@kernel(cache=True, nogil=True, error_model="numpy")
def k_over_time(
    ts: np.ndarray, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray, op: int
) -> tuple[np.ndarray, np.ndarray]:
    """The *_over_time family, changes and resets over each window."""
    n_series, n_steps = lo.shape
    out = np.zeros((n_series, n_steps))
    ok = np.zeros((n_series, n_steps), np.bool_)
    for s in range(n_series):
        for t in range(n_steps):
            a, b = lo[s, t], hi[s, t]
            n = b - a
            if n < 1:
                continue
            ok[s, t] = True
            if op == OT_SUM:
                acc, c = 0.0, 0.0
                for i in range(a, b):
                    acc, c = kahan_inc(vals[i], acc, c)
                out[s, t] = acc + c
            elif op == OT_AVG:
                acc, c = vals[a], 0.0
                mean, kc = 0.0, 0.0
                incremental = False
                count = 1.0
                for i in range(a + 1, b):
                    count += 1
                    f = vals[i]
                    if not incremental:
                        ns, nc = kahan_inc(f, acc, c)
                        if not math.isinf(ns):
                            acc, c = ns, nc
                            continue
                        incremental = True
                        mean = acc / (count - 1)
                        kc = c / (count - 1)
                    q = (count - 1) / count
                    mean, kc = kahan_inc(f / count, q * mean, q * kc)
                if incremental:
                    out[s, t] = mean + kc
                else:
                    out[s, t] = acc / count + c / count
            elif op == OT_MIN or op == OT_TS_MIN:
                m = vals[a]
                mt = ts[a]
                for i in range(a + 1, b):
                    if vals[i] < m or math.isnan(m):
                        m = vals[i]
                        mt = ts[i]
                out[s, t] = m if op == OT_MIN else mt / 1000.0
            elif op == OT_MAX or op == OT_TS_MAX:
                m = vals[a]
                mt = ts[a]
                for i in range(a + 1, b):
                    if vals[i] > m or math.isnan(m):
                        m = vals[i]
                        mt = ts[i]
                out[s, t] = m if op == OT_MAX else mt / 1000.0
            elif op == OT_COUNT:
                out[s, t] = n
            elif op == OT_LAST:
                out[s, t] = vals[b - 1]
            elif op == OT_FIRST:
                out[s, t] = vals[a]
            elif op == OT_TS_LAST:
                out[s, t] = ts[b - 1] / 1000.0
            elif op == OT_TS_FIRST:
                out[s, t] = ts[a] / 1000.0
            elif op == OT_STDDEV or op == OT_STDVAR:
                count = 0.0
                mean, cm, aux, ca = 0.0, 0.0, 0.0, 0.0
                for i in range(a, b):
                    count += 1
                    f = vals[i]
                    delta = f - (mean + cm)
                    mean, cm = kahan_inc(delta / count, mean, cm)
                    aux, ca = kahan_inc(delta * (f - (mean + cm)), aux, ca)
                var = (aux + ca) / count
                out[s, t] = math.sqrt(var) if op == OT_STDDEV else var
            elif op == OT_PRESENT:
                out[s, t] = 1.0
            elif op == OT_CHANGES:
                cnt = 0
                prev = vals[a]
                for i in range(a + 1, b):
                    cur = vals[i]
                    if cur != prev and not (math.isnan(cur) and math.isnan(prev)):
                        cnt += 1
                    prev = cur
                out[s, t] = cnt
            elif op == OT_RESETS:
                cnt = 0
                prev = vals[a]
                for i in range(a + 1, b):
                    cur = vals[i]
                    if cur < prev:
                        cnt += 1
                    prev = cur
                out[s, t] = cnt
            elif op == OT_MAD:
                w = vals[a:b]
                if np.isnan(w).any():
                    out[s, t] = np.nan
                else:
                    med = _median(w)
                    out[s, t] = _median(np.abs(w - med))
    return out, ok


@kernel(cache=True, nogil=True, error_model="numpy")
def k_quantile_over_time(
    ts: np.ndarray, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """quantile_over_time over each window. A series' window is kept
    sorted from one step to the next (its NaNs counted apart, as if sorted
    first): the samples leaving it are removed and those entering inserted.
    A window reached otherwise is sorted afresh if the next step slides
    from it, else only the two values the quantile reads are selected. A
    sort of every window (a fresh array each) took ~1.2 us a 40-sample
    window: 100 of the 128 ms of the `medium` profile's 858-series range
    query (30-second steps over 10-minute windows), and most of the `long`
    profile's (7-minute steps)."""
    n_series, n_steps = lo.shape
    out = np.zeros((n_series, n_steps))
    ok = np.zeros((n_series, n_steps), np.bool_)
    widest = 1
    for s in range(n_series):
        for t in range(n_steps):
            widest = max(widest, hi[s, t] - lo[s, t])
    win = np.empty(widest)  # the window's non-NaN values in win[:m]
    for s in range(n_series):
        cl = ch = m = nan = 0  # the window held: vals[cl:ch]
        ordered = False  # win[:m] sorted
        for t in range(n_steps):
            a, b = lo[s, t], hi[s, t]
            if b - a < 1:
                continue
            if ordered and _slides(cl, ch, a, b):
                for i in range(cl, a):
                    v = vals[i]
                    if math.isnan(v):
                        nan -= 1
                        continue
                    m -= 1
                    for j in range(np.searchsorted(win[: m + 1], v), m):
                        win[j] = win[j + 1]
                for i in range(ch, b):
                    v = vals[i]
                    if math.isnan(v):
                        nan += 1
                        continue
                    j = np.searchsorted(win[:m], v)
                    for k in range(m, j, -1):
                        win[k] = win[k - 1]
                    win[j] = v
                    m += 1
            else:
                m = nan = 0
                for i in range(a, b):
                    if math.isnan(vals[i]):
                        nan += 1
                    else:
                        win[m] = vals[i]
                        m += 1
                ordered = t + 1 < n_steps and _slides(a, b, lo[s, t + 1], hi[s, t + 1])
                if ordered:
                    win[:m].sort()
            cl, ch = a, b
            out[s, t] = _quantile_nan_first(q[t], win, m, nan, ordered)
            ok[s, t] = True
    return out, ok


@kernel(cache=True, inline="always")
def _slides(cl: int, ch: int, a: int, b: int) -> bool:
    """Whether window [a, b) is cheaper to reach from [cl, ch) by removing
    and inserting samples than by sorting it."""
    return cl <= a < ch <= b and 4 * ((a - cl) + (b - ch)) <= b - a


@kernel(cache=True, inline="always")
def _quantile_nan_first(q: float, win: np.ndarray, m: int, nan: int, ordered: bool) -> float:
    """Prometheus' quantile of `nan` NaNs (sorted first) followed by win[:m]
    sorted (already, or by selecting the two values read, which reorders
    win[:m])."""
    n = nan + m
    if math.isnan(q):
        return np.nan
    if q < 0:
        return -np.inf
    if q > 1:
        return np.inf
    rank = q * (n - 1)
    lower = max(0.0, math.floor(rank))
    upper = min(n - 1.0, lower + 1)
    w = rank - math.floor(rank)
    i, j = int(lower) - nan, int(upper) - nan
    if i < 0:
        return np.nan  # the lower value is a NaN
    if ordered:
        y_lo, y_hi = win[i], win[j]
    else:
        y_lo = _select(win, m, i)
        y_hi = y_lo if j == i else win[i + 1 : m].min()
    return y_lo * (1 - w) + y_hi * w


@kernel(cache=True, inline="always")
def _select(a: np.ndarray, m: int, k: int) -> float:
    """The k-th smallest of a[:m] (no NaNs), left at a[k] with none larger
    before it and none smaller after it (quickselect, three-way partitions:
    runs of equal values cost no more than distinct ones)."""
    lo, hi = 0, m - 1
    while lo < hi:
        x, y, z = a[lo], a[(lo + hi) >> 1], a[hi]
        pivot = max(min(x, y), min(max(x, y), z))  # median of three
        lt, i, gt = lo, lo, hi
        while i <= gt:
            v = a[i]
            if v < pivot:
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif v > pivot:
                a[i] = a[gt]
                a[gt] = v
                gt -= 1
            else:
                i += 1
        if k < lt:
            hi = lt - 1
        elif k > gt:
            lo = gt + 1
        else:
            break
    return a[k]


@kernel(cache=True, nogil=True, error_model="numpy")
def _regression(
    ts: np.ndarray, vals: np.ndarray, a: int, b: int, intercept_t: int
) -> tuple[float, float]:
    n = 0.0
    sx, cx, sy, cy, sxy, cxy, sx2, cx2 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    init_y = vals[a]
    const_y = True
    for i in range(a, b):
        f = vals[i]
        if const_y and i > a and f != init_y:
            const_y = False
        n += 1.0
        x = (ts[i] - intercept_t) / 1e3
        sx, cx = kahan_inc(x, sx, cx)
        sy, cy = kahan_inc(f, sy, cy)
        sxy, cxy = kahan_inc(x * f, sxy, cxy)
        sx2, cx2 = kahan_inc(x * x, sx2, cx2)
    if const_y:
        if math.isinf(init_y):
            return np.nan, np.nan
        return 0.0, init_y
    sx += cx
    sy += cy
    sxy += cxy
    sx2 += cx2
    cov = sxy - sx * sy / n
    var = sx2 - sx * sx / n
    slope = cov / var
    return slope, sy / n - slope * sx / n


@kernel(cache=True, nogil=True, error_model="numpy")
def k_deriv(
    ts: np.ndarray,
    vals: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    predict: bool,
    intercept_t: np.ndarray,
    duration: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """deriv (slope) or predict_linear (value `duration` s after intercept_t)."""
    n_series, n_steps = lo.shape
    out = np.zeros((n_series, n_steps))
    ok = np.zeros((n_series, n_steps), np.bool_)
    for s in range(n_series):
        for t in range(n_steps):
            a, b = lo[s, t], hi[s, t]
            if b - a < 2:
                continue
            if predict:
                slope, icpt = _regression(ts, vals, a, b, intercept_t[t])
                out[s, t] = slope * duration[t] + icpt
            else:
                slope, _ = _regression(ts, vals, a, b, ts[a])
                out[s, t] = slope
            ok[s, t] = True
    return out, ok


@kernel(cache=True, nogil=True, error_model="numpy")
def k_double_exp_smoothing(
    vals: np.ndarray, lo: np.ndarray, hi: np.ndarray, sf: np.ndarray, tf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n_series, n_steps = lo.shape
    out = np.zeros((n_series, n_steps))
    ok = np.zeros((n_series, n_steps), np.bool_)
    for s in range(n_series):
        for t in range(n_steps):
            a, b = lo[s, t], hi[s, t]
            if b - a < 2:
                continue
            s0 = 0.0
            s1 = vals[a]
            trend = vals[a + 1] - vals[a]
            for i in range(1, b - a):
                x = sf[t] * vals[a + i]
                if i > 1:
                    trend = tf[t] * (s1 - s0) + (1 - tf[t]) * trend
                y = (1 - sf[t]) * (s1 + trend)
                s0, s1 = s1, x + y
            out[s, t] = s1
            ok[s, t] = True
    return out, ok


# Functions over Prometheus 3 extended range selectors (k_extended).
EX_INCREASE, EX_DELTA, EX_CHANGES, EX_RESETS = 0, 1, 2, 3


@kernel(cache=True, nogil=True, error_model="numpy", inline="always")
def _interp(t0: int, v0: float, t1: int, v1: float, t: int, counter: bool) -> float:
    """Value at t on the line between two samples; across a counter reset
    the counter is taken to restart from zero right after t0."""
    if counter and v1 < v0:
        v0 = 0.0
    return v0 + (v1 - v0) * ((t - t0) / (t1 - t0))


@kernel(cache=True, nogil=True, error_model="numpy")
def k_extended(
    ts: np.ndarray,
    vals: np.ndarray,
    offsets: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    wstart: np.ndarray,
    wend: np.ndarray,
    lookback: int,
    smoothed: bool,
    func: int,
    counter: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """increase/delta/changes/resets over `anchored` or `smoothed` windows.

    anchored: the window's samples, preceded by the last sample at or
    before the window start (within the lookback delta); no extrapolation.
    smoothed: the window is cut at both ends by linear interpolation with
    the neighbouring samples (within the lookback delta on either side).
    """
    n_series, n_steps = lo.shape
    out = np.zeros((n_series, n_steps))
    ok = np.zeros((n_series, n_steps), np.bool_)
    pts = np.empty(ts.shape[0] + 2)
    for s in range(n_series):
        first_i, end_i = offsets[s], offsets[s + 1]
        for t in range(n_steps):
            a, b = lo[s, t], hi[s, t]
            ws, we = wstart[t], wend[t]
            has_before = a > first_i and ts[a - 1] > ws - lookback
            n = 0
            if not smoothed:
                if b - a < 1:
                    continue
                if has_before:
                    pts[n] = vals[a - 1]
                    n += 1
                for i in range(a, b):
                    pts[n] = vals[i]
                    n += 1
            else:
                has_after = b < end_i and ts[b] <= we + lookback
                if b - a < 1 and not (has_before and has_after):
                    continue
                # Left edge.
                if has_before:
                    nxt = a if a < end_i else a - 1
                    pts[n] = _interp(ts[a - 1], vals[a - 1], ts[nxt], vals[nxt], ws, counter)
                else:
                    pts[n] = vals[a]
                n += 1
                for i in range(a, b):
                    pts[n] = vals[i]
                    n += 1
                # Right edge.
                if has_after and (b > a or has_before):
                    pts[n] = _interp(ts[b - 1], vals[b - 1], ts[b], vals[b], we, counter)
                else:
                    pts[n] = vals[b - 1]
                n += 1
            if func == EX_CHANGES or func == EX_RESETS:
                cnt = 0
                for i in range(1, n):
                    cur, prev = pts[i], pts[i - 1]
                    if func == EX_CHANGES:
                        if cur != prev and not (math.isnan(cur) and math.isnan(prev)):
                            cnt += 1
                    elif cur < prev:
                        cnt += 1
                out[s, t] = cnt
            else:
                r = pts[n - 1] - pts[0]
                if func == EX_INCREASE:
                    for i in range(1, n):
                        if pts[i] < pts[i - 1]:
                            r += pts[i - 1]
                out[s, t] = r
            ok[s, t] = True
    return out, ok


# Aggregation operation codes for k_group_agg.
AG_SUM, AG_AVG, AG_MIN, AG_MAX, AG_COUNT, AG_GROUP, AG_STDDEV, AG_STDVAR = range(8)


@kernel(cache=True, nogil=True, error_model="numpy")
def k_group_agg(
    values: np.ndarray, present: np.ndarray, gid: np.ndarray, n_groups: int, op: int
) -> tuple[np.ndarray, np.ndarray]:
    """sum/avg/min/max/count/group/stddev/stdvar of series grouped by gid."""
    n_series, n_steps = values.shape
    out = np.zeros((n_groups, n_steps))
    comp = np.zeros((n_groups, n_steps))
    cnt = np.zeros((n_groups, n_steps))
    # The running mean only for the ops that keep one: three arrays of the
    # output's size a sum, count, min or max does not allocate (the router's
    # merge of `medium`'s `mean_latency_on` calls this four times over
    # 1,700 groups x 100 steps).
    moments = n_groups if op == AG_AVG or op == AG_STDDEV or op == AG_STDVAR else 0
    mean = np.zeros((moments, n_steps))
    cmean = np.zeros((moments, n_steps))
    incr = np.zeros((n_groups if op == AG_AVG else 0, n_steps), np.bool_)
    for s in range(n_series):
        g = gid[s]
        for t in range(n_steps):
            if not present[s, t]:
                continue
            f = values[s, t]
            cnt[g, t] += 1
            n = cnt[g, t]
            if op == AG_SUM:
                out[g, t], comp[g, t] = kahan_inc(f, out[g, t], comp[g, t])
            elif op == AG_AVG:
                if n == 1:
                    out[g, t] = f
                    comp[g, t] = 0.0
                    continue
                if not incr[g, t]:
                    ns, nc = kahan_inc(f, out[g, t], comp[g, t])
                    if not math.isinf(ns):
                        out[g, t], comp[g, t] = ns, nc
                        continue
                    incr[g, t] = True
                    mean[g, t] = out[g, t] / (n - 1)
                    cmean[g, t] = comp[g, t] / (n - 1)
                q = (n - 1) / n
                mean[g, t], cmean[g, t] = kahan_inc(
                    f / n, q * mean[g, t], q * cmean[g, t]
                )
            elif op == AG_MIN:
                if n == 1 or f < out[g, t] or math.isnan(out[g, t]):
                    out[g, t] = f
            elif op == AG_MAX:
                if n == 1 or f > out[g, t] or math.isnan(out[g, t]):
                    out[g, t] = f
            elif op == AG_STDDEV or op == AG_STDVAR:
                # Welford from zero, so a lone NaN or Inf gives NaN as in
                # Prometheus 3 (2.x gave 0 for a lone Inf).
                delta = f - (mean[g, t] + cmean[g, t])
                mean[g, t], cmean[g, t] = kahan_inc(delta / n, mean[g, t], cmean[g, t])
                out[g, t], comp[g, t] = kahan_inc(
                    delta * (f - (mean[g, t] + cmean[g, t])), out[g, t], comp[g, t]
                )
    res = np.zeros((n_groups, n_steps))
    for g in range(n_groups):
        for t in range(n_steps):
            n = cnt[g, t]
            if n == 0:
                continue
            if op == AG_SUM:
                res[g, t] = out[g, t] + comp[g, t]
            elif op == AG_AVG:
                if incr[g, t]:
                    res[g, t] = mean[g, t] + cmean[g, t]
                else:
                    res[g, t] = out[g, t] / n + comp[g, t] / n
            elif op == AG_MIN or op == AG_MAX:
                res[g, t] = out[g, t]
            elif op == AG_COUNT:
                res[g, t] = n
            elif op == AG_GROUP:
                res[g, t] = 1.0
            elif op == AG_STDDEV:
                res[g, t] = math.sqrt((out[g, t] + comp[g, t]) / n)
            else:
                res[g, t] = (out[g, t] + comp[g, t]) / n
    return res, cnt > 0


@kernel(cache=True, nogil=True, error_model="numpy")
def k_group_partial(
    values: np.ndarray, present: np.ndarray, gid: np.ndarray, n_groups: int, kind: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A shard's mergeable sums per group (athens/query/planner.py).

    (sum, Kahan compensation, count, mean, M2): kind 0/1 fill the Kahan sum
    and count (mean and M2 have no rows); kind 2 fills count, mean and the
    sum of squared deviations with the same compensated Welford updates
    k_group_agg uses.
    """
    n_series, n_steps = values.shape
    out = np.zeros((n_groups, n_steps))
    comp = np.zeros((n_groups, n_steps))
    cnt = np.zeros((n_groups, n_steps))
    # Only the moments need the running mean: two arrays of the output's
    # size a shard's sum or avg partial does not allocate (`medium`'s
    # `mean_latency_on`: 1,700 groups x 100 steps, 2.7 MB).
    mean = np.zeros((n_groups if kind == 2 else 0, n_steps))
    cmean = np.zeros((n_groups if kind == 2 else 0, n_steps))
    for s in range(n_series):
        g = gid[s]
        for t in range(n_steps):
            if not present[s, t]:
                continue
            f = values[s, t]
            cnt[g, t] += 1
            if kind == 2:
                n = cnt[g, t]
                delta = f - (mean[g, t] + cmean[g, t])
                mean[g, t], cmean[g, t] = kahan_inc(delta / n, mean[g, t], cmean[g, t])
                out[g, t], comp[g, t] = kahan_inc(
                    delta * (f - (mean[g, t] + cmean[g, t])), out[g, t], comp[g, t]
                )
            else:
                out[g, t], comp[g, t] = kahan_inc(f, out[g, t], comp[g, t])
    if kind == 2:
        return out * 0.0, comp * 0.0, cnt, mean + cmean, out + comp
    return out, comp, cnt, mean, mean


@kernel(cache=True, nogil=True, error_model="numpy")
def k_combine_moments(
    counts: np.ndarray, means: np.ndarray, m2s: np.ndarray, gid: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, mean, M2) per group and step from rows of partial moments
    (k_group_partial's kind 2): Chan et al.'s pairwise combination, each
    group's rows taken in row order."""
    n_rows, n_steps = counts.shape
    n = np.zeros((n_groups, n_steps))
    mean = np.zeros((n_groups, n_steps))
    m2 = np.zeros((n_groups, n_steps))
    for r in range(n_rows):
        g = gid[r]
        for t in range(n_steps):
            nb = counts[r, t]
            na = n[g, t]
            tot = na + nb
            n[g, t] = tot
            if nb > 0:
                if na > 0:
                    delta = means[r, t] - mean[g, t]
                    mean[g, t] = mean[g, t] + delta * (nb / tot)
                    m2[g, t] = m2[g, t] + m2s[r, t] + delta * delta * (na * nb / tot)
                else:
                    mean[g, t] = means[r, t]
                    m2[g, t] = m2s[r, t]
    return n, mean, m2


@kernel(cache=True, nogil=True, error_model="numpy", inline="always")
def _heap_less(vals: np.ndarray, a: int, b: int, bottom: bool) -> bool:
    """Prometheus' vectorByValueHeap / vectorByReverseValueHeap Less."""
    va, vb = vals[a], vals[b]
    if math.isnan(va):
        return True
    return va > vb if bottom else va < vb


@kernel(cache=True, nogil=True, error_model="numpy")
def _heap_down(heap: np.ndarray, base: int, i0: int, n: int, vals: np.ndarray, bottom: bool) -> bool:
    i = i0
    while True:
        j1 = 2 * i + 1
        if j1 >= n:
            break
        j = j1
        j2 = j1 + 1
        if j2 < n and _heap_less(vals, heap[base + j2], heap[base + j1], bottom):
            j = j2
        if not _heap_less(vals, heap[base + j], heap[base + i], bottom):
            break
        heap[base + i], heap[base + j] = heap[base + j], heap[base + i]
        i = j
    return i > i0


@kernel(cache=True, nogil=True, error_model="numpy")
def _heap_up(heap: np.ndarray, base: int, j: int, vals: np.ndarray, bottom: bool) -> None:
    while j > 0:
        i = (j - 1) // 2
        if not _heap_less(vals, heap[base + j], heap[base + i], bottom):
            break
        heap[base + i], heap[base + j] = heap[base + j], heap[base + i]
        j = i


@kernel(cache=True, nogil=True, error_model="numpy")
def k_topk_heap(
    values: np.ndarray,
    present: np.ndarray,
    gid: np.ndarray,
    n_groups: int,
    k: np.ndarray,
    cap: np.ndarray,
    bottom: bool,
) -> np.ndarray:
    """topk / bottomk selection exactly as Prometheus makes it, ties included.

    Series are offered in input order to one bounded heap per group (Go's
    container/heap algorithm, with Prometheus' Less and replacement rule),
    so equal values resolve to the same series Prometheus keeps. cap[g] is
    the heap capacity of group g (at least min(k, group size)).
    """
    n_series, n_steps = values.shape
    base = np.zeros(n_groups + 1, np.int64)
    for g in range(n_groups):
        base[g + 1] = base[g] + cap[g]
    heap = np.empty(base[n_groups], np.int64)
    size = np.zeros(n_groups, np.int64)
    keep = np.zeros((n_series, n_steps), np.bool_)
    col = np.empty(n_series)
    for t in range(n_steps):
        kt = k[t]
        if kt < 1:
            continue
        size[:] = 0
        for s in range(n_series):
            col[s] = values[s, t]
        for s in range(n_series):
            if not present[s, t]:
                continue
            g = gid[s]
            b = base[g]
            n = size[g]
            if n < kt:
                heap[b + n] = s
                size[g] = n + 1
                _heap_up(heap, b, n, col, bottom)
                continue
            top = col[heap[b]]
            f = col[s]
            better = (f < top) if bottom else (top < f)
            if better or (math.isnan(top) and not math.isnan(f)):
                heap[b] = s
                if kt > 1:
                    if not _heap_down(heap, b, 0, n, col, bottom):
                        _heap_up(heap, b, 0, col, bottom)
        for g in range(n_groups):
            for i in range(size[g]):
                keep[heap[base[g] + i], t] = True
    return keep


@kernel(cache=True, nogil=True, error_model="numpy")
def k_group_quantile(
    values: np.ndarray, present: np.ndarray, gid: np.ndarray, n_groups: int, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n_series, n_steps = values.shape
    order = np.argsort(gid, kind="mergesort")
    starts = np.searchsorted(gid[order], np.arange(n_groups + 1))
    res = np.zeros((n_groups, n_steps))
    ok = np.zeros((n_groups, n_steps), np.bool_)
    buf = np.empty(n_series)  # a group's non-NaN values at a step
    for g in range(n_groups):
        rows = order[starts[g] : starts[g + 1]]
        for t in range(n_steps):
            m = nan = 0
            for r in rows:
                if present[r, t]:
                    v = values[r, t]
                    if math.isnan(v):
                        nan += 1
                    else:
                        buf[m] = v
                        m += 1
            if m + nan == 0:
                continue
            res[g, t] = _quantile_nan_first(q[t], buf, m, nan, False)
            ok[g, t] = True
    return res, ok


@kernel(cache=True, nogil=True, error_model="numpy")
def _almost_equal(a: float, b: float, eps: float) -> bool:
    min_normal = 2.2250738585072014e-308
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < min_normal:
        return diff < eps * min_normal
    return diff / min(abs_sum, 1.7976931348623157e308) < eps


@kernel(cache=True, nogil=True)
def _gather_buckets(
    les: np.ndarray, counts: np.ndarray, present: np.ndarray, t: int, ub: np.ndarray, cn: np.ndarray
) -> int:
    """The buckets present at step t into ub/cn (equal bounds summed); their number."""
    k = 0
    for i in range(les.shape[0]):
        if not present[i, t]:
            continue
        if k > 0 and ub[k - 1] == les[i]:
            cn[k - 1] += counts[i, t]
            continue
        ub[k] = les[i]
        cn[k] = counts[i, t]
        k += 1
    return k


@kernel(cache=True, nogil=True, error_model="numpy")
def k_bucket_quantile(
    les: np.ndarray, counts: np.ndarray, present: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """histogram_quantile over classic buckets of one group, at every step.

    les must be sorted ascending; counts/present are [B, T]. Returns the
    quantile, whether there is a result, and whether monotonicity had to be
    forced (Prometheus reports that as an info annotation).
    """
    n_b, n_steps = counts.shape
    out = np.zeros(n_steps)
    ok = np.zeros(n_steps, np.bool_)
    forced = np.zeros(n_steps, np.bool_)
    ub = np.empty(n_b)
    cn = np.empty(n_b)
    for t in range(n_steps):
        k = _gather_buckets(les, counts, present, t, ub, cn)
        if k == 0:
            continue
        ok[t] = True
        qq = q[t]
        if math.isnan(qq):
            out[t] = np.nan
            continue
        if qq < 0:
            out[t] = -np.inf
            continue
        if qq > 1:
            out[t] = np.inf
            continue
        if not (math.isinf(ub[k - 1]) and ub[k - 1] > 0):
            out[t] = np.nan
            continue
        prev = cn[0]
        for i in range(1, k):
            cur = cn[i]
            if cur == prev:
                continue
            if _almost_equal(prev, cur, 1e-12):
                cn[i] = prev
                continue
            if cur < prev:
                cn[i] = prev
                forced[t] = True
                continue
            prev = cur
        if k < 2:
            out[t] = np.nan
            continue
        total = cn[k - 1]
        if total == 0 or math.isnan(total):
            out[t] = np.nan
            continue
        rank = qq * total
        b = k - 1
        for i in range(k - 1):
            if cn[i] >= rank:
                b = i
                break
        if b == k - 1:
            out[t] = ub[k - 2]
            continue
        if b == 0 and ub[0] <= 0:
            out[t] = ub[0]
            continue
        start = 0.0
        end = ub[b]
        count = cn[b]
        if b > 0:
            start = ub[b - 1]
            count -= cn[b - 1]
            rank -= cn[b - 1]
        out[t] = start + (end - start) * (rank / count)
    return out, ok, forced


@kernel(cache=True, nogil=True, error_model="numpy", inline="always")
def _frac_interp(rank: float, count: float, lb: float, hb: float, v: float) -> float:
    """Cumulative count at v inside bucket (lb, hb]; in a bucket of infinite
    width the observations sit at its infinite end (no interpolation)."""
    if math.isinf(lb):
        return count
    if math.isinf(hb):
        return rank
    return rank + (count - rank) * (v - lb) / (hb - lb)


@kernel(cache=True, nogil=True, error_model="numpy")
def k_bucket_fraction(
    les: np.ndarray, counts: np.ndarray, present: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """histogram_fraction over classic buckets of one group, at every step."""
    n_b, n_steps = counts.shape
    out = np.zeros(n_steps)
    ok = np.zeros(n_steps, np.bool_)
    ub = np.empty(n_b)
    cn = np.empty(n_b)
    for t in range(n_steps):
        k = _gather_buckets(les, counts, present, t, ub, cn)
        if k == 0:
            continue
        ok[t] = True
        lo_v, up_v = lower[t], upper[t]
        if not (math.isinf(ub[k - 1]) and ub[k - 1] > 0):
            out[t] = np.nan
            continue
        total = cn[k - 1]
        if total == 0 or math.isnan(lo_v) or math.isnan(up_v):
            out[t] = np.nan
            continue
        if lo_v >= up_v:
            out[t] = 0.0
            continue
        rank = 0.0
        lower_rank, upper_rank = 0.0, 0.0
        lower_set, upper_set = False, False
        for i in range(k):
            if i > 0:
                lb = ub[i - 1]
            elif ub[0] > 0:
                lb = 0.0
            else:
                lb = -np.inf
            hb = ub[i]
            if not lower_set and lb >= lo_v:
                lower_rank = rank
                lower_set = True
            if not upper_set and lb >= up_v:
                upper_rank = rank
                upper_set = True
            if lower_set and upper_set:
                break
            if not lower_set and lb < lo_v and hb > lo_v:
                lower_rank = _frac_interp(rank, cn[i], lb, hb, lo_v)
                lower_set = True
            if not upper_set and lb < up_v and hb > up_v:
                upper_rank = _frac_interp(rank, cn[i], lb, hb, up_v)
                upper_set = True
            if lower_set and upper_set:
                break
            rank = cn[i]
        if not lower_set or lower_rank > total:
            lower_rank = total
        if not upper_set or upper_rank > total:
            upper_rank = total
        out[t] = (upper_rank - lower_rank) / total
    return out, ok


def warm_up() -> None:
    """Compile (or load from cache) every kernel on tiny inputs.

    The per-series kernels twice, as Numba compiles a variant per array
    mutability: the router evaluates a shard's answer in place when it is
    the only one, and its columns are then read-only arrays over the frame's
    bytes. (Unwarmed, the first single-series query loaded that variant
    from the cache: ~10 MiB of the router's memory, and LLVM's code that
    jit.warm_up had unmapped paged in again.)"""
    ws = np.array([-1, 500], np.int64)
    we = np.array([2000, 2500], np.int64)
    offsets = np.array([0, 3], np.int64)
    q = np.array([0.5, 0.5])
    ts_w = np.array([0, 1000, 2000], np.int64)
    vals_w = np.array([1.0, 2.0, 3.0])
    for ts, vals in ((ts_w, vals_w), (_read_only(ts_w), _read_only(vals_w))):
        lo, hi = window_bounds(ts, offsets, ws, we)
        has_stale(vals.view(np.uint64))
        k_select(ts, vals, np.zeros(3, np.bool_), offsets, we, 1000, True)
        k_rate(ts, vals, lo, hi, ws, we, 1.0, True, True)
        k_instant_rate(ts, vals, lo, hi, True)
        for op in range(OT_TS_FIRST + 1):
            k_over_time(ts, vals, lo, hi, op)
        k_quantile_over_time(ts, vals, lo, hi, q)
        k_deriv(ts, vals, lo, hi, True, we, q)
        k_double_exp_smoothing(vals, lo, hi, q, q)
        for sm in (False, True):
            k_extended(ts, vals, offsets, lo, hi, ws, we, 1000, sm, EX_INCREASE, True)
    window_bounds(np.arange(0, 100_000, 1000), np.array([0, 100]), ws, we)  # interpolated
    v2 = np.ones((2, 2))
    p2 = np.ones((2, 2), np.bool_)
    gid = np.array([0, 0], np.int64)
    for op in range(AG_STDVAR + 1):
        k_group_agg(v2, p2, gid, 1, op)
    k_group_quantile(v2, p2, gid, 1, q)
    for kind in range(3):
        k_group_partial(v2, p2, gid, 1, kind)
    k_combine_moments(v2, v2, v2, gid, 1)
    for bottom in (False, True):
        k_topk_heap(v2, p2, gid, 1, np.array([1, 2], np.int64), np.array([2], np.int64), bottom)
    k_bucket_quantile(np.array([1.0, np.inf]), v2, p2, q)
    k_bucket_fraction(np.array([1.0, np.inf]), v2, p2, q, q)
    k_pow_whole(_read_only(np.array([3.0, 0.5])), _read_only(np.array([2.0, -3.0])))
    for go_trig in (_go_trig(TRIG_SIN), _go_trig(TRIG_COS), _go_trig(TRIG_TAN)):
        go_trig(np.array([1.0, 1e10]))  # both reductions


def _read_only(a: np.ndarray) -> np.ndarray:
    """A copy of `a` over immutable bytes, as a frame's columns are."""
    return np.frombuffer(a.tobytes(), a.dtype)


# ---------------------------------------------------------------------------
# Function calls: evaluation of PromQL functions on whole-query values.
# ---------------------------------------------------------------------------



def unwrap_parens(node: ast.Expr) -> ast.Expr:
    while isinstance(node, ast.ParenExpr):
        node = node.expr
    return node


def is_valid_label_name(name: str) -> bool:
    """Prometheus 3 accepts any non-empty, valid UTF-8 label name."""
    if not name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    # The parser turns invalid UTF-8 bytes in string literals into U+FFFD.
    return "\ufffd" not in name


def go_quote(s: str) -> str:
    """Go's %q for the strings that reach error messages."""
    return json.dumps(s, ensure_ascii=False)


def format_go_float(v: float, fmt: str = "f") -> str:
    """strconv.FormatFloat(v, 'f' or 'g', -1, 64): shortest round-trip text.
    'g' (also fmt's %g and %v) takes the exponent form below 1e-4 and from
    1e6 on: 1e-05, 123456, 1.234567e+06."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    r = repr(float(v))
    if fmt == "g" and v != 0:
        sign, digits, exp = Decimal(r).normalize().as_tuple()
        assert isinstance(exp, int)
        x = len(digits) + exp - 1  # the decimal exponent
        if x < -4 or x >= 6:
            ds = "".join(map(str, digits))
            mantissa = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
            return f"{'-' if sign else ''}{mantissa}e{'+' if x >= 0 else '-'}{abs(x):02d}"
    if "e" in r or "E" in r:
        return _strip(format(Decimal(r), "f"))
    return _strip(r)


def _strip(s: str) -> str:
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


_NAME_KEEPING = frozenset(
    [
        "last_over_time",
        "first_over_time",
        "sort",
        "sort_desc",
        "sort_by_label",
        "sort_by_label_desc",
        "label_replace",
        "label_join",
    ]
)

_OVER_TIME = {
    "sum_over_time": OT_SUM,
    "avg_over_time": OT_AVG,
    "min_over_time": OT_MIN,
    "max_over_time": OT_MAX,
    "count_over_time": OT_COUNT,
    "last_over_time": OT_LAST,
    "first_over_time": OT_FIRST,
    "stddev_over_time": OT_STDDEV,
    "stdvar_over_time": OT_STDVAR,
    "present_over_time": OT_PRESENT,
    "changes": OT_CHANGES,
    "resets": OT_RESETS,
    "mad_over_time": OT_MAD,
    "ts_of_min_over_time": OT_TS_MIN,
    "ts_of_max_over_time": OT_TS_MAX,
    "ts_of_last_over_time": OT_TS_LAST,
    "ts_of_first_over_time": OT_TS_FIRST,
}


def _degrees(v: np.ndarray) -> np.ndarray:
    """Go's `v * 180 / math.Pi`: two roundings, as Prometheus has them
    (np.degrees multiplies by 180/pi rounded once: a quarter of all values
    then differ in the last bit, which `% 2` of a large angle shows)."""
    return v * 180.0 / np.pi


def _radians(v: np.ndarray) -> np.ndarray:
    """Go's `v * math.Pi / 180` (see _degrees)."""
    return v * np.pi / 180.0


# 1/ln(2) and 1/ln(10) rounded once, as Go's constant arithmetic gives them
# (1 / math.log(10) is a bit below).
_INV_LN2 = 1.4426950408889634
_INV_LN10 = 0.4342944819032518
# Go's Log (FreeBSD's e_log.c): ln(2) in two parts and the polynomial.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_L1, _L2, _L3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
_L4, _L5 = 2.222219843214978396e-01, 1.818357216161805012e-01
_L6, _L7 = 1.531383769920937332e-01, 1.479819860511658591e-01
_HALF_SQRT2 = 7.07106781186547524401e-01


def _go_log(v: np.ndarray) -> np.ndarray:
    """Go's math.Log as Prometheus on amd64 runs it (log_amd64.s: its
    operations in their order): glibc's log, which np.log is, differs from
    it in the last bit for 1-2% of values. Subnormals are reduced as the
    pure-Go Log does (the assembly reads their exponent as -1022 and
    answers about -709 for all of them)."""
    x = np.asarray(v, np.float64)
    f1, ki = np.frexp(x)
    low = f1 <= _HALF_SQRT2  # the assembly's compare (pure Go: <)
    k = ki - low.astype(np.float64)
    f = f1 * (1.0 + low) - 1.0
    s = f / (2.0 + f)
    s2 = s * s
    s4 = s2 * s2
    t1 = s2 * (((_L7 * s4 + _L5) * s4 + _L3) * s4 + _L1)
    t2 = s4 * ((_L6 * s4 + _L4) * s4 + _L2)
    hfsq = 0.5 * f * f
    out = k * _LN2_HI - ((hfsq - (s * (hfsq + (t1 + t2)) + k * _LN2_LO)) - f)
    out[x == 0] = -np.inf
    out[np.signbit(x) & (x != 0)] = np.nan  # negative, -Inf, a NaN with the sign bit
    big = ~np.signbit(x) & ~np.isfinite(x)
    out[big] = x[big]  # +Inf, NaN
    return out


def _log2(v: np.ndarray) -> np.ndarray:
    """Go's Log2, `Log(frac) * (1/Ln2) + exp`, exact at powers of two."""
    frac, exp = np.frexp(v)
    return np.where(frac == 0.5, exp - 1.0, _go_log(frac) * _INV_LN2 + exp)


def _log10(v: np.ndarray) -> np.ndarray:
    """Go's Log10, `Log(x) * (1/Ln10)`: np.log10 differs from it in the
    last bit for most values."""
    return _go_log(v) * _INV_LN10


def go_pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x ** y as Go's math.Pow computes it: its special cases in its order,
    and an integer exponent by its repeated squaring. np.power alone takes
    sqrt for an exponent of 0.5 broadcast from one value (`x ^ 0.5`): -Inf
    gives NaN there (Go: +Inf) and -0 gives -0 (Go: +0); Go's `1 / Sqrt(x)`
    for -0.5 rounds twice; and its `(1/3) ^ 2` is a bit below x * x. Other
    fractional exponents are np.power's, which may differ from Go's (its
    own Exp and Log) in the last bit. The exponent's kinds are told apart
    on its own array (one row where it is a scalar) before it is broadcast."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    whole = (np.trunc(y) == y) & (np.abs(y) < 2.0**63)
    half = np.abs(y) == 0.5
    xb, yb = np.broadcast_arrays(x, y)
    if whole.all():  # `x ^ 2`: one pass of the kernel
        out = k_pow_whole(read_only(xb.ravel()), read_only(yb.ravel())).reshape(xb.shape)
    elif half.all():  # `x ^ 0.5`
        root = np.sqrt(xb)
        out = root if (y > 0).all() else np.where(yb > 0, root, 1.0 / root)
    else:
        out = np.power(xb, yb)
        if whole.any():
            w = np.broadcast_to(whole, xb.shape)
            out[w] = k_pow_whole(read_only(xb[w]), read_only(yb[w]))
        if half.any():
            h = np.broadcast_to(half, xb.shape)
            root = np.sqrt(xb[h])
            out[h] = np.where(yb[h] > 0, root, 1.0 / root)
    special = (x == 0) | ~np.isfinite(x)
    if not np.isfinite(y).all():
        special = special | ~np.isfinite(y)
    if special.any():
        sp = np.broadcast_to(special, xb.shape)
        out[sp] = _pow_special(xb[sp], yb[sp])
    return out


def _pow_special(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Go's Pow where one of its special cases applies (1-D arrays), the
    first that matches deciding, in its order."""
    out = np.empty_like(x)
    left = np.ones(len(x), bool)  # not yet decided

    def case(mask: np.ndarray, value: np.ndarray | float) -> None:
        m = left & mask
        out[m] = value[m] if isinstance(value, np.ndarray) else value
        left[m] = False

    odd = (np.abs(y) < 2.0**53) & (np.fmod(y, 2.0) != 0) & (np.trunc(y) == y)  # Go's isOddInt
    case((y == 0) | (x == 1), 1.0)
    case(y == 1, x)
    case(np.isnan(x) | np.isnan(y), np.nan)
    neg = np.signbit(x) & odd
    case((x == 0) & (y < 0), np.where(neg, -np.inf, np.inf))
    case((x == 0) & (y > 0), np.where(neg, x, 0.0))
    case(np.isinf(y) & (x == -1), 1.0)
    case(np.isinf(y), np.where((np.abs(x) < 1) == (y > 0), 0.0, np.inf))
    # Pow(-Inf, y) = Pow(-0, -y): an odd integer keeps the sign.
    case((x == -np.inf) & (y > 0), np.where(odd, -np.inf, np.inf))
    case((x == -np.inf) & (y < 0), np.where(odd, -0.0, 0.0))
    case((x == np.inf) & (y > 0), np.inf)
    case((x == np.inf) & (y < 0), 0.0)
    case(y == 0.5, np.sqrt(x))
    case(y == -0.5, 1.0 / np.sqrt(x))
    return out


@kernel(cache=True, nogil=True, error_model="numpy")
def k_pow_whole(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Go's x ** y for whole y (|y| < 2^63), line by line (for a finite,
    non-zero x; the others are go_pow's special cases): x's
    fraction and exponent (Frexp) squared and multiplied in by the bits of
    |y|, the result put together by one Ldexp; an exponent past 2^12 stops
    the loop (the result over- or underflows)."""
    out = np.empty(len(x))
    for j in range(len(x)):
        x1, xe = math.frexp(x[j])
        a1 = 1.0
        ae = 0
        i = np.int64(abs(y[j]))
        while i != 0:
            if xe < -4096 or xe > 4096:
                ae += xe
                break
            if i & 1 == 1:
                a1 *= x1
                ae += xe
            x1 *= x1
            xe <<= 1
            if x1 < 0.5:
                x1 += x1
                xe -= 1
            i >>= 1
        if y[j] < 0:
            a1 = 1.0 / a1
            ae = -ae
        out[j] = math.ldexp(a1, max(min(ae, 1 << 30), -(1 << 30)))
    return out


# Go's Sin, Cos and Tan (Cephes): pi/4 in three parts for the reduction
# of arguments below 2^29, the polynomials, and for larger ones the binary
# digits of 4/pi (Payne-Hanek), mPi4[i] the i-th 64 bits after the point
# (mPi4[0] = 1, the integer part), computed here from Machin's formula.
_PI4A, _PI4B, _PI4C = 7.85398125648498535156e-1, 3.77489470793079817668e-8, 2.69515142907905952645e-15
_SIN = np.array([1.58962301576546568060e-10, -2.50507477628578072866e-8, 2.75573136213857245213e-6,
                 -1.98412698295895385996e-4, 8.33333333332211858878e-3, -1.66666666666666307295e-1])
_COS = np.array([-1.13585365213876817300e-11, 2.08757008419747316778e-9, -2.75573141792967388112e-7,
                 2.48015872888517045348e-5, -1.38888888888730564116e-3, 4.16666666666665929218e-2])
_TAN_P = np.array([-1.30936939181383777646e4, 1.15351664838587416140e6, -1.79565251976484877988e7])
_TAN_Q = np.array([1.0, 1.36812963470692954678e4, -1.32089234440210967447e6, 2.50083801823357915839e7,
                   -5.38695755929454629881e7])
TRIG_SIN, TRIG_COS, TRIG_TAN = 0, 1, 2


def _four_over_pi_bits(digits: int = 20) -> int:
    """4/pi * 2^(64 * (digits - 1)), truncated: its integer part and then
    digits - 1 base-2^64 digits after the point."""
    bits = 64 * digits + 64  # guard digits
    one = 1 << bits

    def atan_inv(k: int) -> int:  # atan(1/k) * 2^bits
        total, term, i, k2 = 0, one // k, 1, k * k
        while term:
            total += term // i if i % 4 == 1 else -(term // i)
            term //= k2
            i += 2
        return total

    pi = 16 * atan_inv(5) - 4 * atan_inv(239)
    return (4 << (bits + 64 * (digits - 1))) // pi


_Q_4_PI = _four_over_pi_bits()
_M_PI4 = np.array([(_Q_4_PI >> (64 * (19 - i))) & (2**64 - 1) for i in range(20)], np.uint64)
# Go's constants 4/Pi and Pi/4, each rounded once from the exact value (4 / np.pi rounds twice).
_FOUR_OVER_PI = float(Fraction(_Q_4_PI, 1 << (64 * 19)))
_PI4 = math.pi / 4


def _go_trig(kind: int) -> Callable[[np.ndarray], np.ndarray]:
    """sin, cos or tan as Go computes them (k_go_trig): numpy's differ from
    them in the last bit now and then, which a modulo of the result shows."""

    def go(v: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(v, np.float64)
        return k_go_trig(read_only(x.ravel()), kind, _SIN, _COS, _TAN_P, _TAN_Q, _M_PI4).reshape(x.shape)

    return go


@kernel(cache=True, nogil=True)
def _mul64(a, b):  # pragma: no cover - jitted
    """Go's bits.Mul64: the 128-bit product of two uint64 as (hi, lo)."""
    m32 = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    a0, a1 = a & m32, a >> s32
    b0, b1 = b & m32, b >> s32
    w0 = a0 * b0
    t = a1 * b0 + (w0 >> s32)
    w1 = a0 * b1 + (t & m32)
    return a1 * b1 + (t >> s32) + (w1 >> s32), a * b


@kernel(cache=True, nogil=True, error_model="numpy")
def k_go_trig(x, kind, sin_c, cos_c, tan_p, tan_q, m_pi4):  # pragma: no cover - jitted
    """Go's math.Sin (kind 0), Cos (1) or Tan (2) of every x, line by line:
    the octant j and the remainder z of |x| / (pi/4), by Cody and Waite's
    three-part pi/4 below 2^29 and by Payne and Hanek's multiplication with
    the bits of 4/pi above (trigReduce), then Cephes' polynomials."""
    out = np.empty(len(x))
    one, three, s52, mask11 = np.uint64(1), np.uint64(3), np.uint64(52), np.uint64(0x7FF)
    for i in range(len(x)):
        v = x[i]
        if np.isnan(v) or np.isinf(v):
            out[i] = np.nan
            continue
        if v == 0 and kind != TRIG_COS:
            out[i] = v  # sin and tan keep the sign of a zero
            continue
        sign = v < 0 and kind != TRIG_COS
        a = abs(v)
        if a >= 536870912.0:  # 1 << 29: Payne-Hanek (trigReduce)
            bits = np.float64(a).view(np.uint64)
            exp = np.int64((bits >> s52) & mask11) - 1023 - 52
            ix = (bits & ((one << s52) - one)) | (one << s52)
            digit, shift = (exp + 61) // 64, np.uint64((exp + 61) % 64)
            back = np.uint64(64) - shift
            z0 = (m_pi4[digit] << shift) | (m_pi4[digit + 1] >> back if shift else np.uint64(0))
            z1 = (m_pi4[digit + 1] << shift) | (m_pi4[digit + 2] >> back if shift else np.uint64(0))
            z2 = (m_pi4[digit + 2] << shift) | (m_pi4[digit + 3] >> back if shift else np.uint64(0))
            z2hi, _ = _mul64(z2, ix)
            z1hi, z1lo = _mul64(z1, ix)
            z0lo = z0 * ix
            lo = z1lo + z2hi
            hi = z0lo + z1hi + (one if lo < z1lo else np.uint64(0))
            j = hi >> np.uint64(61)
            hi = (hi << three) | (lo >> np.uint64(61))
            lz = 0
            while lz < 64 and (hi >> np.uint64(63 - lz)) & one == 0:
                lz += 1
            e = np.uint64(1023 - (lz + 1))
            sh = np.uint64(lz + 1)
            hi = (hi << sh) | (lo >> (np.uint64(64) - sh))
            hi = (hi >> np.uint64(64 - 52)) | (e << s52)
            z = np.uint64(hi).view(np.float64)
            if j & one:
                j = (j + one) & np.uint64(7)
                z -= 1.0
            z *= _PI4
        else:
            j = np.uint64(a * _FOUR_OVER_PI)
            y = np.float64(j)
            if j & one:
                j += one
                y += 1.0
            if kind != TRIG_TAN:
                j &= np.uint64(7)
            z = ((a - y * _PI4A) - y * _PI4B) - y * _PI4C
        zz = z * z
        if kind == TRIG_TAN:
            if zz > 1e-14:
                r = z + z * (zz * ((tan_p[0] * zz + tan_p[1]) * zz + tan_p[2])
                             / ((((zz + tan_q[1]) * zz + tan_q[2]) * zz + tan_q[3]) * zz + tan_q[4]))
            else:
                r = z
            if j & np.uint64(2):
                r = -1.0 / r
        else:
            if j > three:
                j -= np.uint64(4)
                sign = not sign
            if kind == TRIG_COS and j > one:
                sign = not sign
            polynomial_sin = (j == one or j == np.uint64(2)) == (kind == TRIG_COS)
            if polynomial_sin:
                r = z + z * zz * ((((((sin_c[0] * zz) + sin_c[1]) * zz + sin_c[2]) * zz + sin_c[3]) * zz
                                   + sin_c[4]) * zz + sin_c[5])
            else:
                r = 1.0 - 0.5 * zz + zz * zz * ((((((cos_c[0] * zz) + cos_c[1]) * zz + cos_c[2]) * zz
                                                 + cos_c[3]) * zz + cos_c[4]) * zz + cos_c[5])
        out[i] = -r if sign else r
    return out


# Go's Atan (Cephes' atan.c): the rational function on [0, 0.66] and the
# two reductions into it; Asin and Acos go through it.
_ATAN_P = (-8.750608600031904122785e-01, -1.615753718733365076637e+01, -7.500855792314704667340e+01,
           -1.228866684490136173410e+02, -6.485021904942025371773e+01)
_ATAN_Q = (2.485846490142306297962e+01, 1.650270098316988542046e+02, 4.328810604912902668951e+02,
           4.853903996359136964868e+02, 1.945506571482613964425e+02)
_MOREBITS = 6.123233995736765886130e-17  # pi/2 = _PI2 + _MOREBITS
_TAN3PIO8 = 2.41421356237309504880
_PI2 = math.pi / 2


def _go_satan(x: np.ndarray) -> np.ndarray:
    """Go's satan: atan of x >= 0, in the operations' order."""
    big = x > _TAN3PIO8
    mid = ~big & ~(x <= 0.66)  # NaN here too, as in Go
    with np.errstate(all="ignore"):
        a = np.where(big, 1 / x, np.where(mid, (x - 1) / (x + 1), x))
        p, q = _ATAN_P, _ATAN_Q
        z = a * a
        z = z * ((((p[0] * z + p[1]) * z + p[2]) * z + p[3]) * z + p[4]) / (
            ((((z + q[0]) * z + q[1]) * z + q[2]) * z + q[3]) * z + q[4])
        z = a * z + a
        return np.where(big, (_PI2 - z) + _MOREBITS, np.where(mid, (_PI4 + z) + 0.5 * _MOREBITS, z))


def _go_atan(v: np.ndarray) -> np.ndarray:
    """Go's Atan (np.arctan differs from it in the last bit now and then)."""
    x = np.asarray(v, np.float64)
    return np.where(x == 0, x, np.where(x > 0, _go_satan(x), -_go_satan(-x)))


def _go_asin(v: np.ndarray) -> np.ndarray:
    """Go's Asin: satan of x / sqrt(1 - x*x), or pi/2 less that of its
    reciprocal above 0.7; NaN outside [-1, 1]."""
    x = np.asarray(v, np.float64)
    a = np.abs(x)
    with np.errstate(all="ignore"):
        temp = np.sqrt(1 - a * a)
        out = np.where(a > 0.7, _PI2 - _go_satan(temp / a), _go_satan(a / temp))
    out = np.where(a > 1, np.nan, np.where(x < 0, -out, out))
    return np.where(x == 0, x, out)


def _go_acos(v: np.ndarray) -> np.ndarray:
    """Go's Acos, pi/2 - Asin(x)."""
    return _PI2 - _go_asin(v)


def _sign(v: np.ndarray) -> np.ndarray:
    """-1 or 1, and a zero or NaN as it is: Prometheus' sgn keeps -0 (np.sign
    makes it 0)."""
    return np.where(v == 0, v, np.sign(v))


_MATH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "ln": _go_log,
    "log2": _log2,
    "log10": _log10,
    "sgn": _sign,
    "sin": _go_trig(TRIG_SIN),
    "cos": _go_trig(TRIG_COS),
    "tan": _go_trig(TRIG_TAN),
    "asin": _go_asin,
    "acos": _go_acos,
    "atan": _go_atan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
    "deg": _degrees,
    "rad": _radians,
}

# Functions reading only float histograms: float series give no output.
_HISTOGRAM_ONLY = frozenset(
    [
        "histogram_count",
        "histogram_sum",
        "histogram_avg",
        "histogram_stddev",
        "histogram_stdvar",
    ]
)

_SMOOTHED_OK = ("delta", "increase", "rate")
_ANCHORED_OK = ("changes", "delta", "increase", "rate", "resets")


def _vec(labels: list[Labels], values: np.ndarray, present: np.ndarray, drop: bool | np.ndarray) -> VectorValue:
    d = np.full(len(labels), drop, bool) if isinstance(drop, bool) else drop
    return VectorValue(labels, values, present, d)


def eval_call(ev: Evaluator, node: ast.Call, ts: np.ndarray):  # type: ignore[no-untyped-def]
    name = node.func
    args = node.args
    n_t = len(ts)
    if name in _MATH:
        v = ev.eval_vector(args[0], ts)
        with np.errstate(all="ignore"):
            out = _MATH[name](v.values)
        return _vec(v.labels, out, v.present, True)
    if name in _OVER_TIME or name in ("rate", "increase", "delta", "irate", "idelta", "deriv", "predict_linear", "quantile_over_time", "double_exponential_smoothing", "holt_winters"):
        return _range_function(ev, node, ts)
    if name in _HISTOGRAM_ONLY:
        ev.eval_vector(args[0], ts)
        return VectorValue.empty(n_t)
    if name == "histogram_fraction":
        return _histogram_fraction(ev, node, ts)
    if name == "time":
        return ScalarValue(ts / 1000.0)
    if name == "pi":
        return ScalarValue(np.full(n_t, math.pi))
    if name == "vector":
        s = ev.eval_scalar(args[0], ts)
        return _vec([Labels()], s[None, :].copy(), np.ones((1, n_t), bool), False)
    if name == "scalar":
        v = ev.eval_vector(args[0], ts)
        cnt = v.present.sum(axis=0)
        if len(v.labels):
            first = np.argmax(v.present, axis=0)
            val = v.values[first, np.arange(n_t)]
        else:
            val = np.zeros(n_t)
        return ScalarValue(np.where(cnt == 1, val, np.nan))
    if name == "timestamp":
        arg = unwrap_parens(args[0])
        if isinstance(arg, ast.VectorSelector):
            v, sts = ev.eval_vector_selector(arg, ts)
            return _vec(v.labels, sts / 1000.0, v.present, True)
        v = ev.eval_vector(arg, ts)
        return _vec(v.labels, np.broadcast_to(ts / 1000.0, v.values.shape).copy(), v.present, True)
    if name in ("clamp", "clamp_min", "clamp_max"):
        v = ev.eval_vector(args[0], ts)
        a = ev.eval_scalar(args[1], ts)[None, :]
        present = v.present
        with np.errstate(all="ignore"):
            if name == "clamp":
                b = ev.eval_scalar(args[2], ts)[None, :]
                out = np.maximum(a, np.minimum(b, v.values))
                present = present & ~(b < a)
            elif name == "clamp_min":
                out = np.maximum(a, v.values)
            else:
                out = np.minimum(a, v.values)
        return _vec(v.labels, out, present, True).compact()
    if name == "round":
        v = ev.eval_vector(args[0], ts)
        to = ev.eval_scalar(args[1], ts)[None, :] if len(args) > 1 else np.ones((1, n_t))
        with np.errstate(all="ignore"):
            inv = 1.0 / to
            out = np.floor(v.values * inv + 0.5) / inv
        return _vec(v.labels, out, v.present, True)
    if name in _DATE_FUNCS:
        if args:
            v = ev.eval_vector(args[0], ts)
        else:
            v = _vec([Labels()], (ts / 1000.0)[None, :], np.ones((1, n_t), bool), False)
        out, ok = _date_func(name, v.values)
        return _vec(v.labels, out, v.present & ok, True)
    if name.startswith("sort") and ev.step != 0:
        ev.warn("sort is ineffective for range queries since results are always ordered by labels", node)
    if name in ("sort", "sort_desc"):
        v = ev.eval_vector(args[0], ts)
        if n_t != 1 or not len(v.labels):
            return v
        col = v.values[:, 0]
        nan = np.isnan(col)
        key = -col if name == "sort_desc" else col
        # NaN sorts to the bottom either way, as in Prometheus.
        order = np.lexsort((key, nan))
        return v.take(order)
    if name in ("sort_by_label", "sort_by_label_desc"):
        v = ev.eval_vector(args[0], ts)
        names = [_string_arg(ev, a, ts) for a in args[1:]]
        keyf = lambda i: ([_natural_key(v.labels[i].get(n)) for n in names], v.labels[i].pairs)  # noqa: E731
        order = sorted(range(len(v.labels)), key=keyf, reverse=name.endswith("_desc"))
        return v.take(order)
    if name == "label_replace":
        return _label_replace(ev, node, ts)
    if name == "label_join":
        return _label_join(ev, node, ts)
    if name == "absent":
        v = ev.eval_vector(args[0], ts)
        ok = ~v.present.any(axis=0)
        return _vec([_absent_labels(args[0])], ok[None, :].astype(np.float64), ok[None, :], False)
    if name == "absent_over_time":
        m = ev.eval_matrix(args[0], ts)
        have = (m.hi > m.lo).any(axis=0) if len(m.labels) else np.zeros(n_t, bool)
        ok = ~have
        return _vec([_absent_labels(args[0])], ok[None, :].astype(np.float64), ok[None, :], False)
    if name in ("histogram_quantile", "histogram_quantiles"):
        return _histogram_quantile(ev, node, ts)
    if name == "info":
        return _info(ev, node, ts)
    if name in ("start", "end"):
        t = ev.start if name == "start" else ev.end
        return ScalarValue(np.full(n_t, t / 1000.0))
    if name in ("step", "range", "min_of", "max_of"):
        return ScalarValue(np.full(n_t, ev._duration_seconds(node)))
    raise BadDataError(f"unknown function with name {go_quote(name)}")


def _string_arg(ev: Evaluator, node: ast.Expr, ts: np.ndarray) -> str:
    v = ev.eval(node, ts)
    if not isinstance(v, StringValue):
        raise BadDataError("expected string argument")
    return v.value


def _natural_key(s: str) -> list[tuple[int, int | str]]:
    parts = re.findall(r"\d+|\D+", s)
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]


def _absent_labels(arg: ast.Expr) -> Labels:
    arg = unwrap_parens(arg)
    if isinstance(arg, ast.MatrixSelector):
        arg = arg.vector
    if not isinstance(arg, ast.VectorSelector):
        return Labels()
    # In the matchers' order, as Prometheus builds them: an equality sets
    # its label the first time, any later matcher of the name removes it
    # (`x{job="a",job="b"}` has no job), one before it does not
    # (`x{env=~"p.*",env="prod"}` has env="prod").
    out: dict[str, str] = {}
    has: set[str] = set()
    for m in arg.matchers:
        if m.name == METRIC_NAME:
            continue
        if m.op is MatchOp.EQ and m.name not in has:
            has.add(m.name)
            if m.value:  # an empty value is no label
                out[m.name] = m.value
                continue
        out.pop(m.name, None)
    return Labels(out.items())


_DATE_FUNCS = frozenset(
    ["day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year"]
)


def _date_func(name: str, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(v) & (np.abs(v) < 2**62 / 1e3)
    secs = np.trunc(np.where(ok, v, 0)).astype(np.int64)
    dt = secs.astype("datetime64[s]")
    day = dt.astype("datetime64[D]")
    month = dt.astype("datetime64[M]")
    year = dt.astype("datetime64[Y]")
    if name == "year":
        out = year.astype(np.int64) + 1970
    elif name == "month":
        out = month.astype(np.int64) % 12 + 1
    elif name == "day_of_month":
        out = (day - month.astype("datetime64[D]")).astype(np.int64) + 1
    elif name == "day_of_year":
        out = (day - year.astype("datetime64[D]")).astype(np.int64) + 1
    elif name == "day_of_week":
        out = (day.astype(np.int64) + 4) % 7
    elif name == "days_in_month":
        out = ((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(np.int64)
    elif name == "hour":
        out = (secs % 86400) // 3600
    else:
        out = (secs % 3600) // 60
    return out.astype(np.float64), ok


def _range_function(ev: Evaluator, node: ast.Call, ts: np.ndarray) -> VectorValue:
    name = node.func
    args = node.args
    mi = 1 if name == "quantile_over_time" else 0
    marg = args[mi]
    inner = unwrap_parens(marg)
    if isinstance(inner, ast.MatrixSelector) and inner.vector.modifier:
        mod = inner.vector.modifier
        allowed = _SMOOTHED_OK if mod == "smoothed" else _ANCHORED_OK
        if name not in allowed:
            raise ExecutionError(
                f"{mod} modifier can only be used with: {', '.join(allowed)} - not with {name}"
            )
    m = ev.eval_matrix(marg, ts)
    drop = name not in _NAME_KEEPING
    if isinstance(inner, ast.MatrixSelector) and inner.vector.modifier:
        out, ok = _extended(ev, m, name, inner.vector.modifier)
        if name in ("rate", "increase"):
            _counter_info(ev, m, ok, inner)
    elif name in _OVER_TIME:
        out, ok = k_over_time(m.ts, m.vals, m.lo, m.hi, _OVER_TIME[name])
    elif name in ("rate", "increase", "delta"):
        out, ok = k_rate(
            m.ts, m.vals, m.lo, m.hi, m.wstart, m.wend, m.range_ms / 1000.0,
            name != "delta", name == "rate",
        )
        if name != "delta" and isinstance(inner, ast.MatrixSelector):
            _counter_info(ev, m, ok, inner)
    elif name in ("irate", "idelta"):
        out, ok = k_instant_rate(m.ts, m.vals, m.lo, m.hi, name == "irate")
    elif name == "deriv":
        z = np.zeros(len(ts))
        out, ok = k_deriv(m.ts, m.vals, m.lo, m.hi, False, ts.astype(np.int64), z)
    elif name == "predict_linear":
        dur = ev.eval_scalar(args[1], ts).astype(np.float64)
        out, ok = k_deriv(m.ts, m.vals, m.lo, m.hi, True, ts.astype(np.int64), dur)
    elif name == "quantile_over_time":
        q = ev.eval_scalar(args[0], ts).astype(np.float64)
        out, ok = k_quantile_over_time(m.ts, m.vals, m.lo, m.hi, q)
        bad = q[(q < 0) | (q > 1)]
        if len(bad) and ok.any():
            ev.warn(f"quantile value should be between 0 and 1, got {format_go_float(bad[0], 'g')}", args[0])
    else:  # double_exponential_smoothing / holt_winters
        sf = ev.eval_scalar(args[1], ts).astype(np.float64)
        tf = ev.eval_scalar(args[2], ts).astype(np.float64)
        if ((sf <= 0) | (sf >= 1)).any():
            raise ExecutionError(
                f"invalid smoothing factor. Expected: 0 < sf < 1, got: {sf[(sf <= 0) | (sf >= 1)][0]:f}"
            )
        if ((tf <= 0) | (tf >= 1)).any():
            raise ExecutionError(
                f"invalid trend factor. Expected: 0 < tf < 1, got: {tf[(tf <= 0) | (tf >= 1)][0]:f}"
            )
        out, ok = k_double_exp_smoothing(m.vals, m.lo, m.hi, sf, tf)
    res = _vec(m.labels, out, ok, m.drop_name | drop).compact()
    if m.drop_name.all() or not m.drop_name.any():
        # A matrix's series are distinct by (labels, name-drop flag); with one
        # flag for all, the labels alone are distinct, and OR-ing the same
        # flag into each cannot make two equal: nothing to merge.
        return res
    return ev.finish_vector(res)


def _counter_info(ev: Evaluator, m: MatrixValue, ok: np.ndarray, sel: ast.MatrixSelector) -> None:
    rows = np.flatnonzero(ok.any(axis=1)).tolist()
    fixed = [x.value for x in sel.vector.matchers if x.name == METRIC_NAME and x.op is MatchOp.EQ]
    if fixed:  # every series has that name
        names = dict.fromkeys(fixed[:1] if rows else [])
    else:
        labels = m.labels
        names = dict.fromkeys([labels[r].name for r in rows])
    for metric in names:
        if metric and not metric.endswith(("_total", "_sum", "_count", "_bucket")):
            ev.info(
                f'metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "{metric}"',
                sel,
            )


def _extended(
    ev: Evaluator, m: MatrixValue, name: str, mod: str
) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus 3 `anchored` / `smoothed` range selectors (no extrapolation)."""
    func = {"rate": EX_INCREASE, "increase": EX_INCREASE, "delta": EX_DELTA,
            "changes": EX_CHANGES, "resets": EX_RESETS}[name]
    out, ok = k_extended(
        m.ts, m.vals, m.offsets, m.lo, m.hi, m.wstart, m.wend, ev.lookback,
        mod == "smoothed", func, name in ("rate", "increase"),
    )
    if name == "rate":
        out = out / (m.range_ms / 1000.0)
    return out, ok


def _label_replace(ev: Evaluator, node: ast.Call, ts: np.ndarray) -> VectorValue:
    args = node.args
    v = ev.eval_vector(args[0], ts)
    dst = _string_arg(ev, args[1], ts)
    repl = _string_arg(ev, args[2], ts)
    src = _string_arg(ev, args[3], ts)
    regex = _string_arg(ev, args[4], ts)
    try:
        rx = re.compile(f"(?s:{to_python(regex)})")
    except re.error as e:
        raise BadDataError(f"invalid regular expression in label_replace(): {regex}") from e
    if not is_valid_label_name(dst):
        raise BadDataError(f"invalid destination label name in label_replace(): {dst}")
    labels = []
    drop = v.drop_name.copy()
    for i, lb in enumerate(v.labels):
        mt = rx.fullmatch(lb.get(src))
        if mt is None:
            labels.append(lb)
            continue
        val = _expand(repl, mt)
        labels.append(lb.with_label(dst, val))
        if dst == METRIC_NAME:
            drop[i] = False
    out = VectorValue(labels, v.values, v.present, drop)
    return ev.finish_vector(out)


def _expand(template: str, mt: re.Match[str]) -> str:
    """Go's Regexp.Expand: $1, ${1}, $name, ${name}, $$."""
    out = []
    i = 0
    n = len(template)
    while i < n:
        c = template[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            j = template.find("}", i + 2)
            name = template[i + 2 : j] if j > 0 else ""
            if j < 0 or not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                out.append(c)
                i += 1
                continue
            i = j + 1
        else:
            mm = re.match(r"[A-Za-z0-9_]+", template[i + 1 :])
            if not mm:
                out.append(c)
                i += 1
                continue
            name = mm.group(0)
            i += 1 + len(name)
        out.append(_group(mt, name))
    return "".join(out)


def _group(mt: re.Match[str], name: str) -> str:
    try:
        g = mt.group(int(name)) if name.isdigit() else mt.group(name)
    except IndexError:
        return ""
    return g or ""


def _label_join(ev: Evaluator, node: ast.Call, ts: np.ndarray) -> VectorValue:
    args = node.args
    v = ev.eval_vector(args[0], ts)
    dst = _string_arg(ev, args[1], ts)
    sep = _string_arg(ev, args[2], ts)
    srcs = [_string_arg(ev, a, ts) for a in args[3:]]
    if not is_valid_label_name(dst):
        raise BadDataError(f"invalid destination label name in label_join(): {dst}")
    labels = []
    drop = v.drop_name.copy()
    for i, lb in enumerate(v.labels):
        val = sep.join(lb.get(s) for s in srcs)
        labels.append(lb.with_label(dst, val))
        if dst == METRIC_NAME:
            drop[i] = False
    return ev.finish_vector(VectorValue(labels, v.values, v.present, drop))


def _parse_le(s: str) -> float | None:
    t = s.strip()
    try:
        if t.lower() in ("+inf", "inf"):
            return math.inf
        if t.lower() == "-inf":
            return -math.inf
        return float(t)
    except ValueError:
        try:
            return float.fromhex(t)
        except ValueError:
            return None


def _classic_groups(
    ev: Evaluator, v: VectorValue, arg: ast.Expr
) -> dict[Labels, list[tuple[float, int]]]:
    """Bucket series grouped by their labels without `le` (name kept: it is
    removed later, and foo_bucket and bar_bucket must not mix)."""
    groups: dict[Labels, list[tuple[float, int]]] = {}
    for i, lb in enumerate(v.labels):
        if not v.present[i].any():
            continue
        le = _parse_le(lb.get("le")) if lb.has("le") else None
        if le is None:
            ev.warn(
                f'bucket label "le" is missing or has a malformed value of "{lb.get("le")}" '
                f'for metric name "{lb.name}"',
                arg,
            )
            continue
        groups.setdefault(lb.without(("le",)), []).append((le, i))
    for members in groups.values():
        members.sort(key=lambda x: x[0])
    return groups


def _quantile_label(q: float) -> str:
    if math.isfinite(q) and q == int(q):
        return f"{q:.1f}"
    return format_go_float(q)


def _histogram_quantile(ev: Evaluator, node: ast.Call, ts: np.ndarray) -> VectorValue:
    """histogram_quantile(q, v) and histogram_quantiles(v, label, q...)."""
    n_t = len(ts)
    if node.func == "histogram_quantile":
        qs = [(None, ev.eval_scalar(node.args[0], ts).astype(np.float64), node.args[0])]
        varg = node.args[1]
        qlabel = ""
    else:
        varg = node.args[0]
        qlabel = _string_arg(ev, node.args[1], ts)
        qs = []
        for a in node.args[2:]:
            q = ev.eval_scalar(a, ts).astype(np.float64)
            qs.append((_quantile_label(float(q[0])), q, a))
    v = ev.eval_vector(varg, ts)
    for _, q, qnode in qs:
        bad = q[(q < 0) | (q > 1) | np.isnan(q)]
        if len(bad):
            ev.warn(f"quantile value should be between 0 and 1, got {format_go_float(bad[0], 'g')}", qnode)
    groups = _classic_groups(ev, v, varg)
    labels, outs, oks = [], [], []
    for glb, members in groups.items():
        les = np.array([m[0] for m in members])
        rows = [m[1] for m in members]
        for qname, q, _ in qs:
            out, ok, forced = k_bucket_quantile(les, v.values[rows], v.present[rows], q)
            if forced.any():
                ev.info(
                    "input to histogram_quantile needed to be fixed for monotonicity (see "
                    "https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) "
                    f'for metric name "{glb.name}"',
                    varg,
                )
            labels.append(glb if qname is None else glb.with_label(qlabel, qname))
            outs.append(out)
            oks.append(ok)
    if not labels:
        return VectorValue.empty(n_t)
    res = _vec(labels, np.array(outs), np.array(oks), True)
    return ev.finish_vector(res.compact())


def _histogram_fraction(ev: Evaluator, node: ast.Call, ts: np.ndarray) -> VectorValue:
    lower = ev.eval_scalar(node.args[0], ts).astype(np.float64)
    upper = ev.eval_scalar(node.args[1], ts).astype(np.float64)
    v = ev.eval_vector(node.args[2], ts)
    groups = _classic_groups(ev, v, node.args[2])
    labels, outs, oks = [], [], []
    for glb, members in groups.items():
        les = np.array([m[0] for m in members])
        rows = [m[1] for m in members]
        out, ok = k_bucket_fraction(les, v.values[rows], v.present[rows], lower, upper)
        labels.append(glb)
        outs.append(out)
        oks.append(ok)
    if not labels:
        return VectorValue.empty(len(ts))
    res = _vec(labels, np.array(outs), np.array(oks), True)
    return ev.finish_vector(res.compact())


# Labels that tie a series to its info series (Prometheus' target_info model).
_IDENTIFYING = ("instance", "job")


def _info_matchers(node: ast.Call) -> tuple[list, list]:
    """(name matchers, data-label matchers) of info()'s optional selector."""
    names, data = [], []
    if len(node.args) > 1:
        sel = node.args[1]
        assert isinstance(sel, ast.VectorSelector)
        for m in sel.matchers:
            (names if m.name == METRIC_NAME else data).append(m)
    if not names:
        names = [Matcher(MatchOp.EQ, METRIC_NAME, "target_info")]
    elif not any(m.op in (MatchOp.EQ, MatchOp.RE) for m in names):
        # Only negative name matchers: still only info metrics qualify.
        names.append(Matcher(MatchOp.RE, METRIC_NAME, ".+_info"))
    return names, data


def info_selector(ev: Evaluator, node: ast.Call) -> ast.VectorSelector:
    """The selector of the info series an info() call reads."""
    vs = ev.info_selectors.get(id(node))
    if vs is None:
        names, data = _info_matchers(node)
        vs = ast.VectorSelector(None, names + data)
        ev.info_selectors[id(node)] = vs
    return vs


def info_reference_times(ev: Evaluator, node: ast.Expr, ts: np.ndarray) -> np.ndarray:
    """When info series are looked up: the time the base expression's data
    is read at, following its @ and offset modifiers (and those of
    subqueries) down the first vector argument."""
    while True:
        if isinstance(node, ast.VectorSelector):
            return ev.effective_times(ts, node.at, node.offset)
        if isinstance(node, ast.MatrixSelector):
            node = node.vector
        elif isinstance(node, ast.SubqueryExpr):
            ts = ev.effective_times(ts, node.at, node.offset)
            node = node.expr
        elif isinstance(node, (ast.ParenExpr, ast.UnaryExpr)):
            node = node.expr
        elif isinstance(node, ast.AggregateExpr):
            node = node.expr
        elif isinstance(node, ast.BinaryExpr):
            node = node.lhs
        elif isinstance(node, ast.Call):
            args = [a for a in node.args if a.type in (ast.ValueType.VECTOR, ast.ValueType.MATRIX)]
            if not args:
                return ts
            node = args[0]
        else:
            return ts


def _info(ev: Evaluator, node: ast.Call, ts: np.ndarray) -> VectorValue:
    """info(v, {selector}): add the data labels of matching info series."""
    base = ev.eval_vector(node.args[0], ts)
    names, data = _info_matchers(node)
    ref = info_reference_times(ev, node.args[0], ts)
    info, info_ts = ev.eval_vector_selector(info_selector(ev, node), ref)
    data_names = {m.name for m in data}
    keep_unmatched = all(m.matches_empty() for m in data)
    by_key: dict[tuple[str, ...], list[int]] = {}
    for i, lb in enumerate(info.labels):
        by_key.setdefault(tuple(lb.get(n) for n in _IDENTIFYING), []).append(i)
    n_t = len(ts)
    labels: list[Labels] = []
    rows_v, rows_p, rows_d = [], [], []

    def emit(lb: Labels, src: int, present: np.ndarray) -> None:
        if present.any():
            labels.append(lb)
            rows_v.append(base.values[src])
            rows_p.append(present)
            rows_d.append(base.drop_name[src])

    for s, lb in enumerate(base.labels):
        if all(m.matches(lb.name) for m in names):
            # Info series themselves pass through unchanged.
            emit(lb, s, base.present[s])
            continue
        cands = by_key.get(tuple(lb.get(n) for n in _IDENTIFYING), [])
        # Per info metric name, the candidate with the latest sample wins.
        by_name: dict[str, list[int]] = {}
        for c in cands:
            by_name.setdefault(info.labels[c].name, []).append(c)
        chosen = np.full((len(by_name), n_t), -1, np.int64)
        for g, members in enumerate(by_name.values()):
            cp = info.present[members]
            cts = np.where(cp, info_ts[members], np.iinfo(np.int64).min)
            best = np.asarray(members)[np.argmax(cts, axis=0)]
            chosen[g] = np.where(cp.any(axis=0), best, -1)
        present = base.present[s]
        if len(by_name):
            combos, inv = np.unique(chosen, axis=1, return_inverse=True)
            inv = inv.ravel()
        else:
            combos, inv = np.full((0, 1), -1, np.int64), np.zeros(n_t, np.int64)
        for k in range(combos.shape[1]):
            picked = [int(c) for c in combos[:, k] if c >= 0]
            mask = present & (inv == k)
            if not picked:
                if keep_unmatched:
                    emit(lb, s, mask)
                continue
            extra: dict[str, str] = {}
            for c in picked:
                for n, v in info.labels[c]:
                    if n == METRIC_NAME or n in _IDENTIFYING or lb.has(n):
                        continue
                    if data_names and n not in data_names:
                        continue
                    if extra.get(n, v) != v:
                        raise ExecutionError(
                            f"conflicting label: {n} has values {extra[n]!r} and {v!r} in info series"
                        )
                    extra[n] = v
            emit(Labels(list(lb.pairs) + list(extra.items())), s, mask)
    if not labels:
        return VectorValue.empty(n_t)
    out = VectorValue(labels, np.array(rows_v), np.array(rows_p), np.array(rows_d, bool))
    return ev.finish_vector(out)
