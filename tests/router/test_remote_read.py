"""Remote read wire format: Prometheus XOR chunks, sample messages, CRC-32C, request decoding."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.errors import BadDataError
from athens.model.labels import Labels
from athens.model.matchers import MatchOp
from athens.model.series import Series
from athens.wire import remote_read as rr
from e2e.readpb import compile_read_proto, crc32c, decode_xor_chunk, read_frames


@pytest.fixture(scope="module")
def readpb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return compile_read_proto(tmp_path_factory.mktemp("readpb"))


def test_xor_chunk_golden_bytes() -> None:
    """Pinned by hand: count, zigzag varint t0, raw 1.0, uvarint delta, then the bit stream."""
    ts = np.array([1000, 2000, 3000, 5000])
    vals = np.array([1.0, 1.0, 2.0, -0.5])
    assert rr.xor_chunk(ts, vals).hex() == "0004d00f3ff0000000000000e8073097ffe0fa3017ffc0"


series_st = st.integers(0, 200).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 10**7), min_size=n, max_size=n, unique=True),
        st.integers(-(10**13), 10**13),
        st.lists(st.one_of(st.floats(allow_nan=False), st.just(1.0), st.integers(-50, 50).map(float)),
                 min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(series_st)
def test_xor_kernel_matches_reference_and_decodes(data: tuple[list[int], int, list[float]]) -> None:
    offsets, base, values = data
    ts = np.sort(np.array(offsets, np.int64)) * np.int64(997) + np.int64(base)
    vals = np.array(values, np.float64)
    got = rr.xor_chunk(ts, vals)
    assert got == rr.xor_chunk_reference(ts, vals)
    decoded = decode_xor_chunk(got)
    assert [t for t, _ in decoded] == ts.tolist()
    assert [struct.pack("<d", v) for _, v in decoded] == [struct.pack("<d", v) for v in vals.tolist()]


def test_xor_chunk_keeps_nan_bits() -> None:
    stale = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
    ts = np.array([0, 15_000, 30_000], np.int64)
    vals = np.array([1.0, stale, 2.0])
    _, v = decode_xor_chunk(rr.xor_chunk(ts, vals))[1]
    assert struct.unpack("<Q", struct.pack("<d", v))[0] == 0x7FF0000000000002


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**62), 2**62), st.floats()), max_size=50))
def test_samples_kernel_matches_reference(pairs: list[tuple[int, float]]) -> None:
    ts = np.array([t for t, _ in pairs], np.int64)
    vals = np.array([v for _, v in pairs], np.float64)
    assert rr._samples_bytes(ts, vals) == rr.samples_reference(ts, vals)


def test_crc32c_check_value() -> None:
    assert rr.crc32c(b"123456789") == 0xE3069283 == crc32c(b"123456789")


def test_decode_read_request(readpb: Any) -> None:
    req = readpb.ReadRequest()
    q = req.queries.add(start_timestamp_ms=-5, end_timestamp_ms=10**12)
    q.matchers.add(type=readpb.LabelMatcher.EQ, name="__name__", value="up")
    q.matchers.add(type=readpb.LabelMatcher.NRE, name="job", value="a|b")
    q.hints.step_ms = 1000
    req.accepted_response_types.extend([1, 0])
    got = rr.decode_read_request(req.SerializeToString())
    (gq,) = got.queries
    assert (gq.start_ms, gq.end_ms) == (-5, 10**12)
    assert [(m.op, m.name, m.value) for m in gq.matchers] == [
        (MatchOp.EQ, "__name__", "up"), (MatchOp.NRE, "job", "a|b")]
    assert got.accepted_response_types == [1, 0]


def test_bad_read_requests_are_bad_data(readpb: Any) -> None:
    with pytest.raises(BadDataError):
        rr.decode_read_request(b"\x0a\xff\xff\xff\x0f")
    req = readpb.ReadRequest()
    req.queries.add().matchers.add(type=readpb.LabelMatcher.RE, name="a", value="(")
    with pytest.raises(BadDataError):
        rr.decode_read_request(req.SerializeToString())


def _series(n: int, i: int = 0) -> Series:
    ts = np.arange(n, dtype=np.int64) * 15_000 + 1_700_000_000_000
    return Series(Labels([("__name__", "m"), ("i", str(i))]), ts, np.sin(np.arange(n) + i))


def test_read_response_parses_with_protoc(readpb: Any) -> None:
    results = [[_series(5), _series(3, 1)], []]
    resp = readpb.ReadResponse.FromString(rr.encode_read_response(results))
    assert len(resp.results) == 2 and len(resp.results[1].timeseries) == 0
    ts0 = resp.results[0].timeseries[1]
    assert [(lb.name, lb.value) for lb in ts0.labels] == [("__name__", "m"), ("i", "1")]
    assert [s.timestamp for s in ts0.samples] == _series(3, 1).ts.tolist()
    assert [s.value for s in ts0.samples] == _series(3, 1).values.tolist()


def test_stream_cuts_chunks_at_120_and_frames_near_limit(readpb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rr, "FRAME_BYTES", 2000)
    series = [_series(250, i) for i in range(6)]
    frames = list(rr.stream_chunked(series, 3))
    msgs = read_frames(b"".join(frames))
    assert len(msgs) > 1
    seen = {}
    for m in msgs:
        cr = readpb.ChunkedReadResponse.FromString(m)
        assert cr.query_index == 3
        for cs in cr.chunked_series:
            assert [len(decode_xor_chunk(c.data)) for c in cs.chunks] == [120, 120, 10]
            seen[cs.labels[1].value] = [s for c in cs.chunks for s in decode_xor_chunk(c.data)]
    assert sorted(seen) == [str(i) for i in range(6)]
    assert [t for t, _ in seen["2"]] == series[2].ts.tolist()
