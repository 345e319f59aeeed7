"""Remote write 2.0 decoding against the protobuf package, and content negotiation."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.errors import BadDataError
from athens.model.labels import Labels
from athens.wire.remote_write_v2 import UnsupportedMediaTypeError, decode_request_v2, negotiate

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,6}", fullmatch=True)
floats = st.floats(allow_nan=True, allow_infinity=True)
series_st = st.tuples(
    st.dictionaries(label_names, st.text(max_size=6), max_size=4),
    st.lists(st.tuples(st.integers(-(2**62), 2**62), floats), max_size=8),
)


class Symbols:
    def __init__(self) -> None:
        self.table = [""]
        self.index = {"": 0}

    def ref(self, s: str) -> int:
        if s not in self.index:
            self.index[s] = len(self.table)
            self.table.append(s)
        return self.index[s]


def build_v2(pb, series, metadata=None, histograms=0, exemplars=0):  # type: ignore[no-untyped-def]
    req = pb.Request()
    sym = Symbols()
    for i, (labels, samples) in enumerate(series):
        ts = req.timeseries.add()
        for n, v in sorted({"__name__": "m", **labels}.items()):
            ts.labels_refs.extend([sym.ref(n), sym.ref(v)])
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, v
        if metadata and i == 0:
            mtype, help_, unit = metadata
            ts.metadata.type = mtype
            ts.metadata.help_ref = sym.ref(help_)
            ts.metadata.unit_ref = sym.ref(unit)
        for _ in range(histograms if i == 0 else 0):
            h = ts.histograms.add()
            h.count_int, h.timestamp = 3, 1
        for k in range(exemplars if i == 0 else 0):
            e = ts.exemplars.add()
            e.labels_refs.extend([sym.ref("trace_id"), sym.ref(f"t{k}")])
            e.value, e.timestamp = k + 0.5, 1000 + k
        ts.created_timestamp = 1000
    req.symbols.extend(sym.table)
    return req.SerializeToString()


@settings(max_examples=100, deadline=None)
@given(st.lists(series_st, max_size=5))
def test_v2_decoder_matches_protobuf(prompb_v2, raw):
    dec = decode_request_v2(build_v2(prompb_v2, raw)).batch
    expect: dict[Labels, list[tuple[int, bytes]]] = {}
    for labels, samples in raw:
        lb = Labels({"__name__": "m", **labels}.items())
        if samples:
            expect.setdefault(lb, []).extend((t, struct.pack("<d", v)) for t, v in samples)
    got: dict[Labels, list[tuple[int, bytes]]] = {}
    for i, t, v in zip(dec.series_idx.tolist(), dec.ts.tolist(), dec.values.tolist()):
        got.setdefault(dec.series[i], []).append((t, struct.pack("<d", v)))
    assert got == expect
    assert dec.hashes.tolist() == [lb.identity_hash() for lb in dec.series]


def test_v2_counts_and_metadata(prompb_v2):
    data = build_v2(prompb_v2, [({"a": "1"}, [(1, 1.0), (2, 2.0)])], metadata=(2, "a gauge", "bytes"),
                    histograms=2, exemplars=3)
    d = decode_request_v2(data)
    assert d.batch.num_samples == 2
    ex = d.exemplars
    assert d.histograms == 2
    assert (ex.series, ex.series_idx.tolist()) == ([Labels([("__name__", "m"), ("a", "1")])], [0, 0, 0])
    assert ex.labels == [Labels([("trace_id", f"t{k}")]) for k in range(3)]
    assert (ex.ts.tolist(), ex.values.tolist()) == ([1000, 1001, 1002], [0.5, 1.5, 2.5])
    assert [(m.metric, m.type, m.help, m.unit) for m in d.metadata] == [("m", "gauge", "a gauge", "bytes")]


@pytest.mark.parametrize(
    "mutate",
    ["unsorted", "odd_refs", "bad_ref"],
)
def test_v2_invalid_requests(prompb_v2, mutate):
    req = prompb_v2.Request()
    req.symbols.extend(["", "__name__", "m", "a", "1"])
    ts = req.timeseries.add()
    if mutate == "unsorted":
        ts.labels_refs.extend([3, 4, 1, 2])
    elif mutate == "odd_refs":
        ts.labels_refs.extend([1, 2, 3])
    else:
        ts.labels_refs.extend([1, 2, 3, 99])
    ts.samples.add().timestamp = 1
    with pytest.raises(BadDataError):
        decode_request_v2(req.SerializeToString())


@pytest.mark.parametrize(
    "ctype,enc,want",
    [
        (None, None, 1),
        ("application/x-protobuf", "snappy", 1),
        ("application/x-protobuf;proto=prometheus.WriteRequest", "snappy", 1),
        ("application/x-protobuf;proto=io.prometheus.write.v2.Request", "snappy", 2),
        ("application/x-protobuf; proto=io.prometheus.write.v2.Request", "SNAPPY", 2),
        ("application/x-protobuf;proto=io.prometheus.write.v3.Request", "snappy", 415),
        ("application/json", "snappy", 415),
        ("application/octet-stream", "snappy", 1),
        ("application/x-protobuf", "gzip", 415),
    ],
)
def test_negotiation(ctype, enc, want):
    if want == 415:
        with pytest.raises(UnsupportedMediaTypeError):
            negotiate(ctype, enc)
    else:
        assert negotiate(ctype, enc) == want


def test_packed_and_unpacked_refs_agree():
    # labels_refs = [1, 2] packed (field 1, LEN) and unpacked (two varint fields 1)
    sym = b"\x22\x00\x22\x08__name__\x22\x01m"
    smp = b"\x12\x02\x10\x05"
    packed = b"\x2a" + bytes([4 + len(smp)]) + b"\x0a\x02\x01\x02" + smp
    unpacked = b"\x2a" + bytes([4 + len(smp)]) + b"\x08\x01\x08\x02" + smp
    a = decode_request_v2(sym + packed).batch
    b = decode_request_v2(sym + unpacked).batch
    assert a.series == b.series == [Labels.from_dict({"__name__": "m"})]
    assert a.ts.tolist() == b.ts.tolist() == [5]
    assert np.array_equal(a.hashes, b.hashes)
