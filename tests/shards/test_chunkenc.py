"""The chunk codec: bit-exact round trips, kernels == reference, pinned bytes."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athens.shards import chunkenc, chunkenc_ref
from athens.shards.chunkenc import (
    ChunkFormatError,
    chunk_encoding,
    chunk_num_samples,
    chunk_time_range,
    chunk_value_encoding,
    decode_chunk,
    decode_chunks,
    encode_chunk,
    encode_chunks,
)

STALE_BITS = 0x7FF0000000000002
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
T0 = 1_700_000_000_000


def bits_to_floats(bits: list[int]) -> np.ndarray:
    return np.array(bits, dtype=np.uint64).view(np.float64)


def assert_same_samples(ts, values, ts2, values2) -> None:
    np.testing.assert_array_equal(np.asarray(ts2), np.asarray(ts))
    assert np.asarray(values2).dtype == np.float64
    np.testing.assert_array_equal(
        np.asarray(values2).view(np.uint64), np.asarray(values, dtype=np.float64).view(np.uint64)
    )


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    chunkenc.warm_up()


# ------------------------------------------------------------------ strategies

special_bits = st.sampled_from(
    [
        STALE_BITS,
        0x7FF8000000000000,  # the NaN numpy produces
        0xFFF8000000000001,  # negative NaN with a payload
        0x7FF0000000000000,  # +Inf
        0xFFF0000000000000,  # -Inf
        0x8000000000000000,  # -0.0
        0x0000000000000000,
        0x0000000000000001,  # smallest subnormal
        0x000FFFFFFFFFFFFF,  # largest subnormal
        0x7FEFFFFFFFFFFFFF,  # largest finite
        0x43CFFFFFFFFFFFFF,  # 2**62 - 512: the largest decimal mantissa allowed
        0x43D0000000000000,  # 2**62: too large for the decimal layout
        0x3FB999999999999A,  # 0.1
    ]
)
float_as_bits = st.floats(allow_nan=False, allow_infinity=False, width=64).map(
    lambda v: int(np.array([v]).view(np.uint64)[0])
)
decimal_bits = st.builds(
    lambda m, k: int(np.array([m / 10.0**k]).view(np.uint64)[0]),
    st.integers(-(10**12), 10**12),
    st.integers(0, 4),
)
value_bits = st.one_of(st.integers(0, 2**64 - 1), special_bits, float_as_bits, decimal_bits)


@st.composite
def value_lists(draw, n: int) -> list[int]:
    """Value bit patterns in one of the shapes the encoder distinguishes."""
    shape = draw(st.sampled_from(["mixed", "counter", "decimal", "scaled", "constant"]))
    if shape == "mixed":
        return draw(st.lists(value_bits, min_size=n, max_size=n))
    if shape == "counter":
        start = draw(st.integers(-(2**50), 2**50))
        steps = draw(st.lists(st.integers(0, 2**20), min_size=n, max_size=n))
        vals = np.cumsum([start] + steps[1:]).astype(np.float64)
        return vals.view(np.uint64).tolist()
    if shape == "scaled":
        # Steps in multiples of a common g (pages, sectors, 0.125 degC), so the
        # value scale is tried; sometimes one step breaks the pattern.
        g = draw(st.sampled_from([2, 3, 125, 512, 4096, 2**40]))
        k = draw(st.integers(0, 3))
        m0 = draw(st.integers(-(2**40), 2**40))
        ys = draw(st.lists(st.integers(-(2**12), 2**12), min_size=n, max_size=n))
        ms = np.array([m0 + g * y for y in ys], dtype=np.float64)
        if n > 1 and draw(st.booleans()):
            ms[draw(st.integers(1, n - 1))] += 1
        return (ms / 10.0**k).view(np.uint64).tolist()
    if shape == "decimal":
        k = draw(st.integers(1, 6))
        ms = draw(st.lists(st.integers(-(10**9), 10**9), min_size=n, max_size=n))
        return (np.array(ms, dtype=np.float64) / 10.0**k).view(np.uint64).tolist()
    return [draw(value_bits)] * n


@st.composite
def timestamp_lists(draw) -> list[int]:
    """Strictly increasing int64 timestamps: full range, regular, jittered."""
    shape = draw(st.sampled_from(["anywhere", "regular", "jitter", "gaps"]))
    if shape == "anywhere":
        return sorted(draw(st.sets(st.integers(I64_MIN, I64_MAX), min_size=1, max_size=80)))
    n = draw(st.integers(1, 150))
    start = draw(st.integers(-(2**62), 2**62))
    step = draw(st.sampled_from([1, 1000, 15_000, 60_000]))
    ts = [start + i * step for i in range(n)]
    if shape == "jitter" and step >= 15_000:
        ts = [t + draw(st.integers(-5, 5)) for t in ts]
    if shape == "gaps":
        out, t = [], start
        for _ in range(n):
            out.append(t)
            t += draw(st.integers(1, 2**40))
        ts = out
    return ts


@st.composite
def chunks(draw) -> tuple[list[int], list[int]]:
    ts = draw(timestamp_lists())
    return ts, draw(value_lists(len(ts)))


# ------------------------------------------------------------------ properties


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks())
def test_kernel_bytes_equal_reference_and_round_trip(chunk) -> None:
    ts, vbits = chunk
    values = bits_to_floats(vbits)
    data = encode_chunk(np.array(ts, dtype=np.int64), values)
    assert data == chunkenc_ref.encode_chunk(ts, values.tolist())
    ts2, values2 = decode_chunk(data)
    assert_same_samples(ts, values, ts2, values2)
    assert chunkenc_ref.decode_chunk(data) == (ts, vbits)
    assert chunk_num_samples(data) == len(ts)
    assert chunk_time_range(data) == (ts[0], ts[-1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(chunks(), min_size=0, max_size=6))
def test_batch_equals_concatenated_single_chunks(chunk_list) -> None:
    ts = np.array([t for c in chunk_list for t in c[0]], dtype=np.int64)
    values = bits_to_floats([b for c in chunk_list for b in c[1]])
    starts = np.cumsum([0] + [len(c[0]) for c in chunk_list]).astype(np.int64)
    data, offsets = encode_chunks(ts, values, starts)
    singles = [encode_chunk(np.array(c[0], dtype=np.int64), bits_to_floats(c[1])) for c in chunk_list]
    assert data.dtype == np.uint8 and offsets.dtype == np.int64
    assert data.tobytes() == b"".join(singles)
    assert offsets.tolist() == np.cumsum([0] + [len(s) for s in singles]).tolist()
    ts2, values2, starts2 = decode_chunks(data, offsets)
    assert_same_samples(ts, values, ts2, values2)
    assert starts2.tolist() == starts.tolist()


@st.composite
def chunks_sharing_timestamps(draw) -> list[tuple[list[int], list[int]]]:
    """Chunks of several series, many of them on the same few timestamp lists
    (one scrape target's series), sometimes differing by one timestamp."""
    pool = draw(st.lists(timestamp_lists(), min_size=1, max_size=3))
    out = []
    for _ in range(draw(st.integers(0, 8))):
        ts = list(draw(st.sampled_from(pool)))
        if len(ts) > 1 and draw(st.integers(0, 4)) == 0:
            ts[-1] += 1 if ts[-1] < I64_MAX else 0  # a near miss: same count and first time
        out.append((ts, draw(value_lists(len(ts)))))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks_sharing_timestamps())
def test_shared_timestamps_equal_reference_and_round_trip(chunk_list) -> None:
    ts = np.array([t for c in chunk_list for t in c[0]], dtype=np.int64)
    values = bits_to_floats([b for c in chunk_list for b in c[1]])
    starts = np.cumsum([0] + [len(c[0]) for c in chunk_list]).astype(np.int64)
    ts_ref = chunkenc.shared_timestamps(ts, starts)
    # The first earlier chunk with the very same timestamps, else -1.
    expected = [next((j for j in range(i) if chunk_list[j][0] == c[0]), -1) for i, c in enumerate(chunk_list)]
    assert ts_ref.tolist() == expected
    data, offsets = encode_chunks(ts, values, starts, ts_ref)
    singles = [
        chunkenc_ref.encode_chunk(c[0], bits_to_floats(c[1]).tolist(), external_ts=r >= 0)
        for c, r in zip(chunk_list, expected)
    ]
    assert data.tobytes() == b"".join(singles)
    ts2, values2, starts2 = decode_chunks(data, offsets, ts_ref, data, offsets)
    assert_same_samples(ts, values, ts2, values2)
    assert starts2.tolist() == starts.tolist()
    for (cts, cbits), r, one in zip(chunk_list, expected, singles):
        assert chunkenc_ref.decode_chunk(one, cts if r >= 0 else None) == (cts, cbits)
        assert chunk_time_range(one) == (cts[0], cts[-1])
    # Placed anywhere (here: reversed, with gaps), each chunk holds what it
    # holds in the concatenated decode, shared timestamps included.
    if chunk_list:
        lengths = chunkenc.chunk_lengths(data, offsets)
        dest = (np.cumsum(lengths[::-1]) - lengths[::-1])[::-1] + np.arange(len(lengths))[::-1]
        out_t = np.full(int(lengths.sum()) + len(lengths), -1, np.int64)
        out_v = np.zeros(len(out_t))
        stale = chunkenc.decode_chunks_into(data, offsets, lengths, dest, out_t, out_v, ts_ref, data, offsets)
        assert stale == int(np.count_nonzero(np.asarray(values).view(np.uint64) == STALE_BITS))
        for c, (d, n) in enumerate(zip(dest.tolist(), lengths.tolist())):
            assert_same_samples(ts[starts[c] : starts[c + 1]], values[starts[c] : starts[c + 1]],
                                out_t[d : d + n], out_v[d : d + n])
        with pytest.raises(ChunkFormatError, match="outside the outputs"):
            chunkenc.decode_chunks_into(data, offsets, lengths, dest + 1, out_t[:-1], out_v[:-1], ts_ref, data, offsets)
        # Every other chunk, newest first, read where it lies (positions).
        pos = np.arange(len(lengths))[::-2].copy()
        sub_t = np.full(int(lengths[pos].sum()), -1, np.int64)
        sub_v = np.zeros(len(sub_t))
        sub_dest = np.cumsum(lengths[pos]) - lengths[pos]
        chunkenc.decode_chunks_into(data, offsets, lengths[pos], sub_dest, sub_t, sub_v, ts_ref, data, offsets, pos)
        for c, d in zip(pos.tolist(), sub_dest.tolist()):
            assert_same_samples(ts[starts[c] : starts[c + 1]], values[starts[c] : starts[c + 1]],
                                sub_t[d : d + lengths[c]], sub_v[d : d + lengths[c]])
        with pytest.raises(ChunkFormatError, match="position outside the block"):
            chunkenc.decode_chunks_into(data, offsets, lengths[:1], dest[:1], out_t, out_v, ts_ref, data, offsets,
                                        np.array([len(lengths)]))
    if any(r >= 0 for r in expected):
        with pytest.raises(ChunkFormatError, match="stored outside the chunk"):
            decode_chunks(data, offsets)


def test_shared_timestamps_must_match() -> None:
    ts = np.array([0, 15_000, 30_000, 0, 15_000, 30_000, 0, 15_000, 30_001], dtype=np.int64)
    values = np.arange(9, dtype=np.float64)
    starts = np.array([0, 3, 6, 9], dtype=np.int64)
    ts_ref = chunkenc.shared_timestamps(ts, starts)
    assert ts_ref.tolist() == [-1, 0, -1]
    for bad in ([-1, 0, 0], [-1, 1, -1], [0, -1, -1], [-1, 0]):
        with pytest.raises(ValueError, match="ts_ref"):
            encode_chunks(ts, values, starts, np.array(bad))
    data, offsets = encode_chunks(ts, values, starts, ts_ref)
    # Chunk 1 pointed at chunk 2 (other timestamps), at itself (no timestamps
    # of its own) and chunk 0 given shared ones while it has its own.
    for refs in ([-1, 2, -1], [-1, 1, -1], [0, 0, -1]):
        with pytest.raises(ChunkFormatError, match="shared timestamps do not match|stored outside"):
            decode_chunks(data, offsets, np.array(refs), data, offsets)


def test_largest_chunk_round_trips() -> None:
    rng = np.random.default_rng(7)
    ts = np.cumsum(rng.integers(1, 2**40, chunkenc.MAX_SAMPLES)).astype(np.int64)
    values = rng.integers(0, 2**64, chunkenc.MAX_SAMPLES, dtype=np.uint64).view(np.float64)
    ts2, values2 = decode_chunk(encode_chunk(ts, values))
    assert_same_samples(ts, values, ts2, values2)


def test_extreme_timestamps_wrap_correctly() -> None:
    ts = np.array([I64_MIN, I64_MIN + 1, -1, 0, I64_MAX - 1, I64_MAX], dtype=np.int64)
    values = np.arange(6, dtype=np.float64)
    data = encode_chunk(ts, values)
    assert_same_samples(ts, values, *decode_chunk(data))
    assert chunk_time_range(data) == (I64_MIN, I64_MAX)


# ------------------------------------------------------------------ encoding choice and size


def test_integer_counters_use_decimal_and_minus_zero_forces_xor() -> None:
    ts = np.arange(120, dtype=np.int64) * 15_000
    counter = np.cumsum(np.arange(120) % 7).astype(np.float64)
    assert chunk_value_encoding(encode_chunk(ts, counter)) == "decimal"
    with_minus_zero = counter.copy()
    with_minus_zero[5] = -0.0
    data = encode_chunk(ts, with_minus_zero)
    assert chunk_value_encoding(data) == "xor"
    assert_same_samples(ts, with_minus_zero, *decode_chunk(data))
    stale = counter.copy()
    stale[-1] = bits_to_floats([STALE_BITS])[0]
    assert chunk_value_encoding(encode_chunk(ts, stale)) == "xor"


@pytest.mark.parametrize(
    "values, layout",
    [
        ([2.0**62 - 512, 1.0, -(2.0**62 - 512)], "decimal"),  # largest mantissas allowed
        ([2.0**62, 1.0, 2.0], "xor"),  # 2**62 is past the limit
        ([2.0**62 - 512, 0.5], "xor"),  # 0.5 needs k=1, which pushes the big one past it
        ([0.1, 0.2, 0.30000000000000004], "xor"),  # 0.1 + 0.2 has no short decimal
        ([5e-324, 1.0], "xor"),  # subnormal
    ],
)
def test_decimal_layout_limits(values, layout) -> None:
    ts = np.arange(len(values), dtype=np.int64)
    data = encode_chunk(ts, np.array(values))
    assert chunk_value_encoding(data) == layout
    assert_same_samples(ts, values, *decode_chunk(data))
    assert data == chunkenc_ref.encode_chunk(ts.tolist(), values)


def test_two_decimal_gauges_use_decimal_scale_two() -> None:
    rng = np.random.default_rng(1)
    ts = np.arange(120, dtype=np.int64) * 15_000 + T0
    values = np.round(rng.random(120), 2)
    data = encode_chunk(ts, values)
    assert chunk_value_encoding(data) == "decimal"
    # Scale byte after: 12 fixed bytes, span and timestamp base (3-byte varints), 2 widths.
    assert data[12 + 3 + 3 + 2] == 2
    assert_same_samples(ts, values, *decode_chunk(data))


def test_regular_timestamps_cost_no_bits_per_sample() -> None:
    ts = np.arange(120, dtype=np.int64) * 15_000 + T0
    values = np.full(120, 42.0)
    # Header only: every residual is zero bits wide, for both streams.
    assert len(encode_chunk(ts, values)) <= 30


def test_jittered_timestamps_cost_about_four_bits_per_sample() -> None:
    # ±5 ms around a 15 s grid: the linear order leaves residuals in [-10, 10],
    # plain Gorilla buckets would spend 9 bits (Prometheus' 16) on each.
    rng = np.random.default_rng(3)
    ts = np.arange(120, dtype=np.int64) * 15_000 + T0 + rng.integers(-5, 6, 120)
    data = encode_chunk(ts, np.full(120, 42.0))
    assert chunk_encoding(data)[1] == "linear"
    constant_ts = encode_chunk(np.arange(120, dtype=np.int64) * 15_000 + T0, np.full(120, 42.0))
    assert (len(data) - len(constant_ts)) * 8 <= 119 * 4 + 16


@given(st.integers(0, 2**32 - 1), st.sampled_from(["xor", "decimal"]))
def test_jitter_with_outliers_round_trips_in_two_tiers(seed, layout) -> None:
    """Scrape times a few ms off a 15 s grid, one in twenty 30-60 ms off (at
    fixed places: randomly placed clusters of them can make deltas the
    cheaper order): linear timestamps in two tiers (the decoder's own loop
    for them)."""
    rng = np.random.default_rng(seed)
    jitter = rng.integers(-5, 6, 120)
    jitter[7::20] = rng.choice([-1, 1], 6) * rng.integers(30, 61, 6)
    ts = np.arange(120, dtype=np.int64) * 15_000 + T0 + jitter
    values = rng.random(120) if layout == "xor" else rng.integers(0, 10**6, 120) / 100
    data = encode_chunk(ts, values)
    assert chunk_encoding(data)[:2] == (layout, "linear")
    got_ts, got_values = decode_chunk(data)
    assert_same_samples(ts, values, got_ts, got_values)


@st.composite
def two_tier_counters(draw) -> list[float]:
    """Integer values whose steps make two-tier value streams: most steps of
    at most w bits, a quarter of exactly W bits (W up to 58: both sides of
    the bit buffer's limit, 54), a few escaped (wider than W), in any order,
    so that refills, escapes and the end of the chunk meet at every
    alignment."""
    n = draw(st.integers(2, 200))
    w = draw(st.integers(0, 10))
    wide = draw(st.integers(w + 1, 58))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    m, out = 0, [0]
    for kind in rng.choice(3, n - 1, p=[0.7, 0.25, 0.05]):
        bits = (w, wide, int(rng.integers(wide + 1, 62)))[kind]
        step = int(rng.integers(0, 2**bits)) if bits else 0
        if kind and bits:
            step |= 1 << (bits - 1)  # exactly `bits` long
        if abs(m + step) >= 2**61 or (abs(m - step) < 2**61 and rng.random() < 0.5):
            step = -step
        m += step
        out.append(m)
    return np.array(out, dtype=np.float64).tolist()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_tier_counters())
def test_two_tier_value_streams_decode_as_the_reference(values) -> None:
    """The decoder reads two-tier streams through a bit buffer (chunkenc.
    _next_two_tier), the reference one residual at a time from the bytes."""
    ts = np.arange(len(values), dtype=np.int64) * 15_000 + T0
    data = encode_chunk(ts, np.array(values))
    got_ts, got_values = decode_chunk(data)
    assert_same_samples(ts, values, got_ts, got_values)
    assert chunkenc_ref.decode_chunk(data) == (ts.tolist(), np.array(values).view(np.uint64).tolist())


def test_an_escaped_step_decodes_wherever_it_falls_in_the_bit_buffer() -> None:
    """Steps of 0-1 (tier 1), 4 (tier 2: need 6 bits) and one escaped 2**40
    at each position: an escape's 6-bit length field can begin with as few
    bits buffered as a tier-2 residual needs, and is read from the bytes."""
    ts = np.arange(120, dtype=np.int64) * 15_000 + T0
    for p in range(1, 120):
        steps = np.arange(120) % 2
        steps[10::15] = 4
        steps[p] = 2**40
        values = np.cumsum(steps).astype(np.float64)
        data = encode_chunk(ts, values)
        assert chunk_encoding(data) == ("decimal", "delta", "delta")
        got_ts, got_values = decode_chunk(data)
        assert_same_samples(ts, values, got_ts, got_values)


def test_missed_scrape_costs_a_bit_per_sample_not_a_wider_tier() -> None:
    regular = np.arange(120, dtype=np.int64) * 15_000 + T0
    ts = regular.copy()
    ts[60:] += 15_000  # one scrape missing
    data = encode_chunk(ts, np.full(120, 1.0))
    assert chunk_encoding(data)[1] == "delta"
    # Tiers of 0 and 15 bits: '0' for each regular delta, '10' + 15 bits once.
    assert (len(data) - len(encode_chunk(regular, np.full(120, 1.0)))) * 8 <= 118 + 17 + 8
    assert_same_samples(ts, np.full(120, 1.0), *decode_chunk(data))


# ------------------------------------------------------------------ golden bytes (docs/format/chunk.md)

JUMPY_TS = [T0 + 15_000 * i for i in range(24)]
for _i, _dv in [(3, 200), (7, -150), (11, 90), (15, -220), (19, 170)]:
    JUMPY_TS[_i] += _dv
for _i in range(20, 24):
    JUMPY_TS[_i] += 2**40
JITTER_MS = [2, 3, -5, 3, 0, 0, 1, -2, 5, -5, -2, -1, 1, -1, -4, -5]
JITTER_MS += [-5, -5, -4, 5, -3, 2, 3, -3, -2, -1, -3, 5, -4, 4, 3, 4]

# (timestamps, values, chunk bytes, (value layout, timestamp order, value order)).
GOLDEN = [
    # one sample, value 1.5 stored as decimal m=15, k=1
    ([1000], [1.5], "020b0100e803000000000000000000ff011e0000ff", ("decimal", "delta", "delta")),
    # regular 15 s counter: no timestamp bits, value deltas in one 4-bit tier
    (
        [T0 + 15_000 * i for i in range(6)],
        [0.0, 3.0, 7.0, 7.0, 12.0, 20.0],
        "020b06000068e5cf8b010000f8c904b0ea0100ff00000804ff012708",
        ("decimal", "delta", "delta"),
    ),
    # ±5 ms jitter, two-decimal values: mantissas step in multiples of g = 25
    (
        [T0, T0 + 15_003, T0 + 29_998, T0 + 45_001],
        [0.25, 0.5, 1.75, 1.5],
        "022304000068e5cf8b010000c9df02b6ea0100040232190a03ff7a1700",
        ("decimal", "delta", "level"),
    ),
    # ±5 ms jitter over 32 samples: linear timestamps in 4 bits each
    (
        [T0 + 15_000 * i + d for i, d in enumerate(JITTER_MS)],
        [7.0] * 32,
        "020f20000268e5cf8b010000eab01cb0ea010504ff000e0000ff782842c117405077573c8613305c8a0a",
        ("decimal", "linear", "delta"),
    ),
    # a page-sized memory gauge: steps are multiples of g = 4096
    (
        [T0 + 15_000 * i for i in range(6)],
        [4096.0 * p for p in (1000, 1003, 998, 1001, 1001, 1010)],
        "022b06000068e5cf8b010000f8c904b0ea0100ff008080f40380200604fff0500c",
        ("decimal", "delta", "delta"),
    ),
    # a noisy gauge: level order
    (
        [T0 + 15_000 * i for i in range(8)],
        [0.52, 0.41, 0.58, 0.40, 0.57, 0.43, 0.59, 0.42],
        "020308000068e5cf8b010000a8b406b0ea0100ff026811030696a7711028",
        ("decimal", "delta", "level"),
    ),
    # timestamps in two tiers (0 and 9 bits) plus one escaped 2**40 jump
    (
        JUMPY_TS,
        [float(i % 3) for i in range(24)],
        "020318000068e5cf8b010000a88795808020b0ea01000900000202ff04b9c7b4329644ab59743bdc447594d5ffffff1f188661188621",
        ("decimal", "delta", "level"),
    ),
    # quadratic timestamps (delta-of-delta); values 3*i*i scaled by g = 3 (delta)
    (
        [T0 + i * i * 1000 for i in range(8)],
        [float(i * i * 3) for i in range(8)],
        "022d08000068e5cf8b010000e8fe02b06d0c0e0000030e04ff7dbb401fe8037da00ff481fede002103",
        ("decimal", "delta-of-delta", "delta"),
    ),
    # staleness marker, +Inf, -0.0 and pi: Gorilla XOR; negative start time
    (
        [-5, 0, 1000, 2**40],
        [bits_to_floats([STALE_BITS])[0], float("inf"), -0.0, 3.14159],
        "02020400fbffffffffffffff858080808020d00f000b020000000000f07f15df2818fcffffffff0b000000182cff3ff06f861bf0f92109c0",
        ("xor", "delta", ""),
    ),
]


@pytest.mark.parametrize("ts, values, hex_bytes, encoding", GOLDEN)
def test_golden_bytes(ts, values, hex_bytes, encoding) -> None:
    values = np.array(values, dtype=np.float64)
    expected = bytes.fromhex(hex_bytes)
    assert encode_chunk(np.array(ts, dtype=np.int64), values) == expected
    assert chunkenc_ref.encode_chunk(ts, values.tolist()) == expected
    assert_same_samples(ts, values, *decode_chunk(expected))
    assert chunk_encoding(expected) == encoding


def test_golden_header_fields() -> None:
    data = bytes.fromhex(GOLDEN[1][2])
    assert data[0] == chunkenc.FORMAT_VERSION == 2
    assert data[1] == chunkenc.ENC_DECIMAL | 1 << chunkenc.TS_ORDER_SHIFT | 1 << chunkenc.VALUE_ORDER_SHIFT
    assert int.from_bytes(data[2:4], "little") == 6
    assert int.from_bytes(data[4:12], "little", signed=True) == T0
    assert data[12:15] == bytes([0xF8, 0xC9, 0x04])  # span 75000 as a uvarint
    assert chunk_time_range(data) == (T0, T0 + 75_000)


# Version 1 bytes of two GOLDEN chunks (before the value scale existed): still read.
VERSION_1 = [
    (GOLDEN[2][0], GOLDEN[2][1], "010b04000068e5cf8b010000c9df02b6ea01000402323200087a426e0c"),
    (GOLDEN[7][0], GOLDEN[7][1], "011508000068e5cf8b010000e8fe02b06d0c0e00002a04067dbb401fe8037da00ff4817e23c618630c"),
]


@pytest.mark.parametrize("ts, values, hex_bytes", VERSION_1)
def test_version_1_chunks_still_decode(ts, values, hex_bytes) -> None:
    data = bytes.fromhex(hex_bytes)
    assert_same_samples(ts, np.array(values, dtype=np.float64), *decode_chunk(data))
    ref_ts, ref_bits = chunkenc_ref.decode_chunk(data)
    assert ref_ts == list(ts) and ref_bits == np.array(values, dtype=np.float64).view(np.uint64).tolist()
    with pytest.raises(ChunkFormatError, match="encoding byte"):
        decode_chunk(data[:1] + bytes([data[1] | chunkenc.ENC_VALUE_SCALE]) + data[2:])


# ------------------------------------------------------------------ corruption and bad input


def sample_chunk() -> bytes:
    ts = np.arange(50, dtype=np.int64) * 15_000 + T0
    return encode_chunk(ts, np.linspace(0.1, 7.3, 50))


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda b: b[:5], "truncated header"),
        (lambda b: b[:-1], "past the end"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b"\x03" + b[1:], "unsupported format version"),
        (lambda b: b"\x00" + b[1:], "unsupported format version"),
        (lambda b: b[:1] + bytes([b[1] | 0x40]) + b[2:], "invalid encoding byte"),
        (lambda b: b[:1] + bytes([b[1] | chunkenc.ENC_VALUE_SCALE]) + b[2:], "invalid encoding byte"),
        (lambda b: b[:2] + b"\x00\x00" + b[4:], "zero sample count"),
        (lambda b: b[:12] + bytes([b[12] ^ 1]) + b[13:], "time span"),
    ],
)
def test_corrupt_chunks_raise(mutate, reason) -> None:
    with pytest.raises(ChunkFormatError, match=reason):
        decode_chunk(mutate(sample_chunk()))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_byte_flips_never_crash(data) -> None:
    buf = bytearray(sample_chunk())
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        ts, values = decode_chunk(bytes(buf))
    except ChunkFormatError:
        return
    assert len(ts) == len(values) == chunk_num_samples(bytes(buf))


def test_xor_chunk_with_a_value_order_is_invalid() -> None:
    data = sample_chunk()
    assert chunk_value_encoding(data) == "xor"
    with pytest.raises(ChunkFormatError, match="invalid encoding byte"):
        decode_chunk(data[:1] + bytes([data[1] | 1 << chunkenc.VALUE_ORDER_SHIFT]) + data[2:])


@pytest.mark.parametrize("g", [0, 1])
def test_value_scale_below_two_is_invalid(g) -> None:
    page = bytes.fromhex(GOLDEN[4][2])  # scaled by 4096: k=0, m0, then g's uvarint
    assert chunk_encoding(page)[0] == "decimal" and page[1] & chunkenc.ENC_VALUE_SCALE
    # 12 fixed bytes, span 75000 and B = 15000 (3-byte varints each), w1 = 0, w2 = single: then k = 0
    k_at = 12 + 3 + 3 + 2
    assert page[k_at - 2 : k_at + 1] == bytes([0x00, 0xFF, 0x00])
    g_at = k_at + 1 + len(chunkenc_ref.uvarint(chunkenc_ref.zigzag(4096 * 1000)))
    assert page[g_at : g_at + 2] == chunkenc_ref.uvarint(4096)
    with pytest.raises(ChunkFormatError, match="invalid value scale"):
        decode_chunk(page[:g_at] + bytes([g, 0x80]) + page[g_at + 2 :])


def test_decoders_accept_any_buffer_type() -> None:
    data = sample_chunk()
    expected = decode_chunk(data)
    padded = np.frombuffer(b"\x00" + data, dtype=np.uint8)[1:]  # unaligned view
    strided = np.repeat(np.frombuffer(data, dtype=np.uint8), 2)[::2]  # non-contiguous
    for buf in (bytearray(data), memoryview(data), np.frombuffer(data, dtype=np.uint8), padded, strided):
        assert_same_samples(*expected, *decode_chunk(buf))
        assert chunk_num_samples(buf) == 50
    ts, values, starts = decode_chunks(strided, np.array([0, len(data)]))
    assert_same_samples(*expected, ts, values)


def test_warm_up_compiles_every_kernel_the_api_uses() -> None:
    dispatchers = [
        f for f in vars(chunkenc).values() if isinstance(f, numba.core.registry.CPUDispatcher)
    ]
    before = {f: len(f.signatures) for f in dispatchers}
    rng = np.random.default_rng(11)
    ts = np.cumsum(rng.integers(1, 100, 300)).astype(np.int64)
    for values in (rng.random(300), np.round(rng.random(300), 1)):
        data, offsets = encode_chunks(ts, values, np.array([0, 100, 300]))
        encode_chunk(ts[::2], values[::2])  # strided inputs are copied, not compiled for
        for buf in (data, data.tobytes(), bytearray(data.tobytes()), memoryview(data.tobytes())):
            decode_chunks(np.frombuffer(buf, dtype=np.uint8), offsets.astype(np.int32))
            decode_chunk(np.frombuffer(buf, dtype=np.uint8)[offsets[1] :])
            chunk_time_range(buf)
        twice = np.concatenate((ts, ts))
        starts = np.array([0, 300, 600])
        ts_ref = chunkenc.shared_timestamps(twice, starts)
        sdata, soffsets = encode_chunks(twice, np.concatenate((values, values)), starts, ts_ref)
        kinds = (sdata, np.frombuffer(sdata.tobytes(), dtype=np.uint8))
        for sbuf in kinds:  # shared timestamps, any mix of writeable and read-only buffers
            for ts_buf in kinds:
                decode_chunks(sbuf, soffsets, ts_ref, ts_buf, soffsets)
    assert {f: len(f.signatures) for f in dispatchers} == before


def test_batch_decode_names_the_corrupt_chunk() -> None:
    ts = np.arange(20, dtype=np.int64)
    data, offsets = encode_chunks(ts, ts.astype(np.float64), np.array([0, 10, 20]))
    data = data.copy()
    data[offsets[1]] = 0x30  # version 48
    with pytest.raises(ChunkFormatError, match="chunk 1"):
        decode_chunks(data, offsets)


@pytest.mark.parametrize(
    "ts, values",
    [
        ([], []),
        ([1, 1], [0.0, 0.0]),
        ([2, 1], [0.0, 0.0]),
        ([1, 2], [0.0]),
    ],
)
def test_bad_input_is_rejected(ts, values) -> None:
    with pytest.raises(ValueError):
        encode_chunk(np.array(ts, dtype=np.int64), np.array(values, dtype=np.float64))


def test_batch_rejects_bad_boundaries_but_allows_time_to_restart_per_chunk() -> None:
    ts = np.array([5, 6, 1, 2], dtype=np.int64)
    values = np.zeros(4)
    data, offsets = encode_chunks(ts, values, np.array([0, 2, 4]))
    assert decode_chunks(data, offsets)[0].tolist() == [5, 6, 1, 2]
    with pytest.raises(ValueError):
        encode_chunks(ts, values, np.array([0, 4]))
    with pytest.raises(ValueError):
        encode_chunks(ts, values, np.array([0, 2, 2, 4]))
    with pytest.raises(ValueError):
        encode_chunk(np.zeros(chunkenc.MAX_SAMPLES + 1, dtype=np.int64), np.zeros(chunkenc.MAX_SAMPLES + 1))
