"""The compiled remote write 2.0 path (a 2.0 Request rewritten as 1.0 and
decoded by the 1.0 path) against the plain-Python reference decoder."""

from __future__ import annotations

import numpy as np
import pytest
import snappy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athens.errors import BadDataError, TooLargeError
from athens.model.placement import WITHOUT_NAME
from athens.wire.compiled import CompiledDecoder
from athens.wire.remote_write_v2 import decode_request_v2
from athens.wire.scan_v2 import OUT_PER_BYTE

from wire.test_compiled import broken, floats, label_names, label_values, samples_st

# type, help, unit of a series' metadata (None: no metadata field).
metadata_st = st.none() | st.tuples(st.integers(0, 9), st.sampled_from(["", "h", "help é"]),
                                    st.sampled_from(["", "bytes"]))
exemplars_st = st.lists(st.tuples(st.dictionaries(label_names, label_values, max_size=3),
                                  st.integers(-(2**63), 2**63 - 1), floats), max_size=3)
series_st = st.tuples(
    st.dictionaries(label_names, label_values, max_size=4),
    st.sampled_from(["m", "n"]),
    samples_st,
    exemplars_st,
    metadata_st,
    st.integers(0, 2),  # histograms
    st.booleans(),  # labels_refs as single varints rather than packed
)


def build(pb, series, duplicate_symbols: bool = False) -> bytes:  # type: ignore[no-untyped-def]
    """A 2.0 Request of these series (the protobuf package's encoding)."""
    req = pb.Request()
    table: list[str] = [""]
    index: dict[str, int] = {"": 0}

    def ref(s: str) -> int:
        if s not in index or (duplicate_symbols and len(table) % 3 == 0):
            index[s] = len(table)
            table.append(s)
        return index[s]

    for labels, name, samples, exemplars, metadata, histograms, _single in series:
        ts = req.timeseries.add()
        for n, v in sorted({**labels, "__name__": name}.items()):
            ts.labels_refs.extend([ref(n), ref(v)])
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, v
        for ex_labels, t, v in exemplars:
            e = ts.exemplars.add()
            for n, x in ex_labels.items():
                e.labels_refs.extend([ref(n), ref(x)])
            e.timestamp, e.value = t, v
        if metadata is not None:
            mtype, help_, unit = metadata
            ts.metadata.type = mtype
            ts.metadata.help_ref = ref(help_)
            ts.metadata.unit_ref = ref(unit)
        for _ in range(histograms):
            h = ts.histograms.add()
            h.count_int, h.timestamp = 3, 1
        ts.created_timestamp = 1000
    req.symbols.extend(table)
    data = req.SerializeToString()
    if any(single for *_, single in series):
        data = _unpack_refs(pb, data, [single for *_, single in series])
    return data


def _unpack_refs(pb, data: bytes, which: list[bool]) -> bytes:  # type: ignore[no-untyped-def]
    """The same Request with the labels_refs of the series `which` marks
    as one varint field per reference (legal protobuf, which senders may use)."""
    req = pb.Request.FromString(data)
    out = b"".join(_field(4, s.encode()) for s in req.symbols)
    for ts, single in zip(req.timeseries, which):
        refs = list(ts.labels_refs)
        ts.ClearField("labels_refs")
        head = b"".join(b"\x08" + _varint(r) for r in refs) if single else (
            _field(1, b"".join(_varint(r) for r in refs)) if refs else b"")
        out += _field(5, head + ts.SerializeToString())
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def outcome(decode, data: bytes):  # type: ignore[no-untyped-def]
    try:
        d = decode(data)
    except BadDataError:
        return "error", None
    b, ex = d.batch, d.exemplars
    return "ok", (
        list(b.series), b.hashes.tolist(), b.owners(WITHOUT_NAME, 7).tolist(), b.series_idx.tolist(),
        b.ts.tolist(), b.values.view(np.uint64).tolist(), d.histograms,
        (ex.series, ex.series_idx.tolist(), ex.labels, ex.ts.tolist(), ex.values.view(np.uint64).tolist(),
         ex.identity_hashes().tolist(), ex.owners(WITHOUT_NAME, 7).tolist()),
        d.metadata,
    )


DECODER = CompiledDecoder(1 << 26)


def assert_same(data: bytes, decoder: CompiledDecoder = DECODER) -> str:
    want = outcome(decode_request_v2, data)
    assert outcome(lambda d: decoder.decode_v2_body(snappy.compress(d)), data) == want
    return want[0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(series_st, max_size=6), st.booleans())
def test_compiled_v2_equals_reference(prompb_v2, series, duplicate_symbols):
    assert assert_same(build(prompb_v2, series, duplicate_symbols)) == "ok"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(series_st, min_size=1, max_size=3), st.data())
def test_broken_v2_bodies_agree_and_never_crash(prompb_v2, series, data):
    assert_same(broken(build(prompb_v2, series), data))


SYMBOLS = b"\x22\x00\x22\x08__name__\x22\x01m"  # "", "__name__", "m"
SAMPLE = b"\x12\x02\x10\x05"  # timestamp 5


def _series(payload: bytes) -> bytes:
    return _field(5, payload)


@pytest.mark.parametrize(
    "data",
    [
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE),  # packed refs
        SYMBOLS + _series(b"\x08\x01\x08\x02" + SAMPLE),  # one varint per ref
        SYMBOLS + _series(b"\x08\x01" + SAMPLE + b"\x08\x02"),  # refs on both sides of a sample
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE) * 2,  # the series twice
        SYMBOLS + _series(b"\x0a\x01\x01" + SAMPLE),  # odd refs
        SYMBOLS + _series(b"\x0a\x02\x01\x03" + SAMPLE),  # a ref past the table
        SYMBOLS + _series(b"\x08\x01\x08\x82\x80\x80\x80\x80\x80\x80\x80\x80\x02" + SAMPLE),  # 2 + 2^64
        SYMBOLS + _series(b"\x0d\x00\x00\x00\x00" + SAMPLE),  # labels_refs as fixed32
        SYMBOLS + _series(b"\x0a\x02\x01\x02\x10\x01"),  # sample as a varint
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x1a\x00\x1a\x00"),  # two empty histograms
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x19" + b"\x00" * 8),  # a fixed64 histogram
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x22\x01\x08"),  # truncated exemplar
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x22\x03\x0a\x01\x01"),  # odd exemplar refs
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x22\x02\x10\x01"),  # exemplar value as varint
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x2a\x02\x08\x01"),  # metadata: counter
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x2a\x02\x18\x09"),  # help ref past the table
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x2a\x02\x18\x02\x2a\x02\x08\x02"),  # 2nd replaces
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x2a\x02\x09\x01"),  # metadata type as fixed64
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x28\x01"),  # metadata as a varint
        SYMBOLS + _series(b"\x0a\x02\x01\x02" + SAMPLE + b"\x31" + b"\x00" * 8),  # created_timestamp fixed64
        SYMBOLS + b"\x22\x02\xc3\x28" + _series(b"\x0a\x02\x01\x02" + SAMPLE),  # an unused symbol, bad UTF-8
        SYMBOLS + b"\x20\x01" + _series(b"\x0a\x02\x01\x02" + SAMPLE),  # a symbol as a varint
        SYMBOLS + b"\x28\x01",  # a series as a varint
        _series(b"\x0a\x02\x01\x02" + SAMPLE) + SYMBOLS,  # symbols after the series
        SYMBOLS + _series(SAMPLE),  # no labels
        b"",
    ],
)
def test_v2_vectors(data):
    assert_same(data)


def test_same_series_again_are_cache_hits(prompb_v2):
    dec = CompiledDecoder(1 << 26)
    data = build(prompb_v2, [({"a": "1"}, "m", [(1, 1.0)], [], None, 0, False)] * 3)
    assert_same(data, dec)
    hits = dec.cache.hits
    assert_same(data, dec)
    assert dec.cache.hits == hits + 3


def test_labels_written_out_past_the_decompressed_cap_are_413(prompb_v2):
    # Every label of every series names one long symbol: the 2.0 body is
    # small, its 1.0 form is not.
    long = "v" * 1000
    data = build(prompb_v2, [({"a": long, "b": long}, "m", [(i, 1.0)], [], None, 0, False) for i in range(100)])
    assert len(data) < 8000
    with pytest.raises(TooLargeError):
        CompiledDecoder(100_000).decode_v2_body(snappy.compress(data))
    assert CompiledDecoder(300_000).decode_v2_body(snappy.compress(data)).batch.num_samples == 100


def test_labels_longer_than_the_first_guess(prompb_v2):
    # One symbol named by many series: the 1.0 body is far larger than OUT_PER_BYTE times the 2.0 one.
    long = "v" * 400
    data = build(prompb_v2, [({"a": long, "b": long, "c": long}, "m", [(i, 1.0)], [], None, 0, False)
                             for i in range(50)])
    assert 3 * 400 * 50 > OUT_PER_BYTE * len(data)
    assert assert_same(data) == "ok"
