"""The remote-write 1.0 decoder against the protobuf package as the oracle."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import snappy
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.errors import BadDataError, TooLargeError
from athens.model.labels import Labels
from athens.wire.remote_write import decode_write_request, decompress

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
label_values = st.text(max_size=12)  # any UTF-8, empty included
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0], -0.0]
)
series_st = st.tuples(
    st.dictionaries(label_names, label_values, max_size=5),
    st.lists(st.tuples(st.integers(-(2**62), 2**62), floats), min_size=1, max_size=6),
)


def build(pb, series):
    req = pb.WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for n, v in sorted(labels.items()):
            lb = ts.labels.add()
            lb.name, lb.value = n, v
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, v
    return req.SerializeToString()


@settings(max_examples=150, deadline=None)
@given(st.lists(series_st, max_size=6))
def test_decoder_matches_protobuf(prompb, raw):
    series = [({"__name__": "m", **lbs}, smp) for lbs, smp in raw]
    dec = decode_write_request(build(prompb, series)).batch
    expect: dict[Labels, list[tuple[int, float]]] = {}
    for labels, samples in series:
        expect.setdefault(Labels(labels.items()), []).extend(samples)
    got: dict[Labels, list[tuple[int, float]]] = {}
    for i, t, v in zip(dec.series_idx.tolist(), dec.ts.tolist(), dec.values.tolist()):
        got.setdefault(dec.series[i], []).append((t, v))
    assert got.keys() == expect.keys()
    for lb, samples in expect.items():
        bits = [(t, struct.pack("<d", v)) for t, v in samples]
        assert [(t, struct.pack("<d", v)) for t, v in got[lb]] == bits
        assert dec.hashes[dec.series.index(lb)] == np.uint64(lb.identity_hash())


def test_stale_marker_bit_exact(prompb):
    stale = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
    body = build(prompb, [({"__name__": "up"}, [(1000, stale)])])
    dec = decode_write_request(body).batch
    assert dec.values.view(np.uint64)[0] == 0x7FF0000000000002


def test_missing_name_rejected(prompb):
    with pytest.raises(BadDataError, match="no __name__"):
        decode_write_request(build(prompb, [({"job": "x"}, [(1, 1.0)])]))


def test_unsorted_and_duplicate_labels_rejected(prompb):
    req = prompb.WriteRequest()
    ts = req.timeseries.add()
    for n, v in [("__name__", "m"), ("z", "1"), ("a", "2")]:
        lb = ts.labels.add()
        lb.name, lb.value = n, v
    ts.samples.add(timestamp=1, value=1.0)
    with pytest.raises(BadDataError, match="not sorted"):
        decode_write_request(req.SerializeToString())
    ts.labels[1].name = "a"
    ts.labels[2].name = "a"
    with pytest.raises(BadDataError, match="duplicate label name 'a'"):
        decode_write_request(req.SerializeToString())


def test_nan_timestamp_rejected():
    # A sample whose timestamp field carries a double (NaN) instead of a varint.
    sample = b"\x09" + struct.pack("<d", 1.0) + b"\x11" + struct.pack("<d", math.nan)
    label = b"\x0a\x08__name__\x12\x01m"
    ts = b"\x0a" + bytes([len(label)]) + label + b"\x12" + bytes([len(sample)]) + sample
    body = b"\x0a" + bytes([len(ts)]) + ts
    with pytest.raises(BadDataError, match="timestamp has wire type fixed64"):
        decode_write_request(body)


@pytest.mark.parametrize("cut", [1, 5, 10, 20])
def test_truncated_body_rejected(prompb, cut):
    body = build(prompb, [({"__name__": "m", "a": "b"}, [(1, 2.0), (2, 3.0)])])
    with pytest.raises(BadDataError):
        decode_write_request(body[:-cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_crashes(data):
    try:
        decode_write_request(data)
    except BadDataError:
        pass


def test_bad_snappy_and_size_cap():
    with pytest.raises(BadDataError, match="snappy"):
        decompress(b"\x20\xffgarbage", 1 << 20)
    with pytest.raises(TooLargeError):
        decompress(snappy.compress(b"x" * 5000), 1000)
    assert decompress(snappy.compress(b"hello"), 1000) == b"hello"
