"""The compiled decoder answers exactly what the reference decoder answers.

Random WriteRequests come from the protobuf package (tests/proto/remote.proto);
broken ones from truncating, flipping and splicing valid bodies. For every
body either both decoders raise a 400-class error, or both return the same
series, identity hashes, sample order, timestamps and value bits. One
decoder instance is reused across examples so its series cache is exercised
the way a router uses it.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import snappy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athens.errors import BadDataError, TooLargeError
from athens.model.labels import Labels
from athens.model.placement import WITHOUT_NAME
from athens.wire.cache import SeriesCache
from athens.wire.compiled import CompiledDecoder
from athens.wire.remote_write import SnappyError, decode_write_request

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,6}", fullmatch=True)
# Long values too: Label messages of 128 bytes and more take the scanner's general path.
label_values = (
    st.sampled_from(["", "a", "x", "é", "日本", "v\u00ff"]) | st.text(max_size=8) | st.text(min_size=110, max_size=140)
)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [STALE, -0.0, float("inf"), float("-inf"), float("nan")]
)
samples_st = st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), floats), max_size=40)
# (labels, timestamp, value) of a series' exemplars: mostly none, as senders send them.
exemplars_st = st.lists(st.tuples(st.dictionaries(label_names, label_values, max_size=2),
                                  st.integers(-(2**63), 2**63 - 1), floats), max_size=3) | st.just([])
series_st = st.tuples(st.dictionaries(label_names, label_values, max_size=4), samples_st, exemplars_st)

DECODER = CompiledDecoder(1 << 26)


def build(pb, series, name: str | None = "m") -> bytes:
    req = pb.WriteRequest()
    for labels, samples, *exemplars in series:
        ts = req.timeseries.add()
        items = dict(labels)
        if name is not None:
            items["__name__"] = name
        for n, v in sorted(items.items()):
            lb = ts.labels.add()
            lb.name, lb.value = n, v
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, v
        for ex_labels, t, v in exemplars[0] if exemplars else []:
            e = ts.exemplars.add()
            for n, x in ex_labels.items():
                lb = e.labels.add()
                lb.name, lb.value = n, x
            e.timestamp, e.value = t, v
    return req.SerializeToString()


def outcome(decode, data: bytes):  # type: ignore[no-untyped-def]
    """('error', None) or ('ok', canonical result) for one decoder."""
    try:
        d = decode(data)
    except BadDataError:
        return "error", None
    b = d.batch
    return "ok", (
        list(b.series),
        b.hashes.tolist(),
        b.series_idx.tolist(),
        b.ts.tolist(),
        b.values.view(np.uint64).tolist(),
        d.histograms,
        _exemplars(d.exemplars),
        d.metadata,
    )


def _exemplars(ex):  # type: ignore[no-untyped-def]
    # The series' hashes (taken from the compiled decoder's cache) and the
    # owners their placement hashes give must be what their labels give.
    return (ex.series, ex.series_idx.tolist(), ex.labels, ex.ts.tolist(), ex.values.view(np.uint64).tolist(),
            ex.identity_hashes().tolist(), ex.owners(WITHOUT_NAME, 7).tolist())


def compiled(data: bytes):  # type: ignore[no-untyped-def]
    buf = np.frombuffer(data, np.uint8)
    return DECODER.decode(buf, len(data))


def assert_same(data: bytes) -> str:
    want = outcome(decode_write_request, data)
    got = outcome(compiled, data)
    assert got == want
    fresh = CompiledDecoder(1 << 26)
    assert outcome(lambda d: fresh.decode(np.frombuffer(d, np.uint8), len(d)), data) == want
    return want[0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(series_st, max_size=6))
def test_compiled_equals_reference(prompb, series):
    assert assert_same(build(prompb, series)) == "ok"


@settings(max_examples=60, deadline=None)
@given(st.lists(series_st, min_size=1, max_size=4), st.integers(0, 3))
def test_same_series_again_hits_the_cache(prompb, series, repeat):
    data = build(prompb, series)
    for _ in range(repeat + 1):
        assert assert_same(data) == "ok"


@pytest.mark.parametrize(
    "pairs",
    [
        [("b", "1"), ("a", "2"), ("__name__", "m")],  # unsorted
        [("__name__", "m"), ("a", "1"), ("a", "2")],  # duplicate
        [("a", "1")],  # no __name__
        [("__name__", ""), ("a", "1")],  # empty __name__
        [("", "x"), ("__name__", "m")],  # empty name
    ],
)
def test_label_rules_reject_whole_request(prompb, pairs):
    req = prompb.WriteRequest()
    good = req.timeseries.add()
    lb = good.labels.add()
    lb.name, lb.value = "__name__", "ok"
    good.samples.add().timestamp = 1
    bad = req.timeseries.add()
    for n, v in pairs:
        lb = bad.labels.add()
        lb.name, lb.value = n, v
    bad.samples.add().timestamp = 1
    data = req.SerializeToString()
    assert assert_same(data) == "error"
    with pytest.raises(BadDataError):
        compiled(data)  # again, now that the good series is cached


def test_invalid_utf8_label_value_is_400(prompb):
    data = build(prompb, [({"a": "XY"}, [(1, 1.0)])]).replace(b"XY", b"\xff\xfe")
    assert assert_same(data) == "error"


def test_invalid_utf8_name_of_empty_valued_label_is_rejected(prompb):
    # The empty-valued label is dropped from the series, but the request still
    # carries a name that is not UTF-8: 400, as the reference decoder says
    # (hypothesis found the compiled decoder accepting it).
    data = build(prompb, [({"a0": ""}, [(1, 1.0)]), ({"b": "x"}, [])]).replace(b"a0", b"a\x80")
    assert assert_same(data) == "error"
    data = build(prompb, [({"b": "x"}, [(1, 1.0)]), ({"a0": ""}, [])]).replace(b"a0", b"a\xed\xa0\x80")
    assert assert_same(data) == "error"


def test_interleaved_labels_and_samples(prompb):
    # Label fields after a sample: legal protobuf, not cacheable by raw block.
    lab = lambda n, v: b"\x0a" + bytes([len(n) + len(v) + 4]) + b"\x0a" + bytes([len(n)]) + n + b"\x12" + bytes([len(v)]) + v  # noqa: E731
    smp = b"\x12\x0b\x09" + struct.pack("<d", 2.5) + b"\x10\x07"
    ts = lab(b"__name__", b"m") + smp + lab(b"job", b"j")
    data = b"\x0a" + bytes([len(ts)]) + ts
    for _ in range(2):
        assert assert_same(data) == "ok"
    got = compiled(data).batch
    assert list(got.series) == [Labels.from_dict({"__name__": "m", "job": "j"})]
    assert got.ts.tolist() == [7]


def test_sample_fields_in_any_shape(prompb):
    # The scanner's fast path takes "value, then timestamp" only; every other
    # Sample shape must decode as the reference does.
    value = b"\x09" + struct.pack("<d", 2.5)
    for body in (
        b"\x10\x07" + value,  # timestamp first
        value + b"\x10\x07" + b"\x18\x01",  # an unknown field after
        value + b"\x10\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02",  # a 10-byte timestamp
        value + b"\x10\x07" + value,  # value repeated: the last wins
        value,  # timestamp 0 omitted
        b"\x10\x07",  # value 0 omitted
        value + b"\x10",  # truncated timestamp
    ):
        smp = b"\x12" + bytes([len(body)]) + body
        ts = b"\x0a\x0e\x0a\x08__name__\x12\x02up" + smp + smp
        assert_same(b"\x0a" + bytes([len(ts)]) + ts)


def test_stale_nan_bits_survive(prompb):
    data = build(prompb, [({}, [(5, STALE)])])
    assert compiled(data).batch.values.view(np.uint64).tolist() == [0x7FF0000000000002]


def _one_exemplar(pb, labels: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    """A WriteRequest of series m with one sample and one exemplar (1.0 at 1500 ms) of these labels."""
    req = pb.WriteRequest()
    ts = req.timeseries.add()
    lb = ts.labels.add()
    lb.name, lb.value = "__name__", "m"
    ts.samples.add().timestamp = 1
    ex = ts.exemplars.add()
    ex.value, ex.timestamp = 1.0, 1500
    for name, value in labels:
        lb = ex.labels.add()
        lb.name, lb.value = name, value
    return req


def test_exemplars_decoded_metadata_kept(prompb):
    req = _one_exemplar(prompb, [("trace_id", "abc")])
    md = req.metadata.add()
    md.type, md.metric_family_name, md.help, md.unit = 1, "m", "help text", "seconds"
    data = req.SerializeToString()
    assert assert_same(data) == "ok"
    d = compiled(data)
    assert _exemplars(d.exemplars)[:5] == ([Labels([("__name__", "m")])], [0], [Labels([("trace_id", "abc")])],
                                           [1500], [np.float64(1.0).view(np.uint64)])
    assert [(m.metric, m.type, m.help, m.unit) for m in d.metadata] == [("m", "counter", "help text", "seconds")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(series_st, min_size=1, max_size=3), st.data())
def test_broken_bodies_agree_and_never_crash(prompb, series, data):
    assert_same(broken(build(prompb, series), data))


def broken(body: bytes, data: st.DataObject) -> bytes:
    """body truncated, with bytes changed or inserted, or replaced by junk."""
    out = bytearray(body)
    how = data.draw(st.sampled_from(["truncate", "flip", "splice", "junk"]))
    if how == "truncate":
        out = out[: data.draw(st.integers(0, max(0, len(out) - 1)))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(out) - 1))
            out[i] = data.draw(st.integers(0, 255))
    elif how == "splice":
        i = data.draw(st.integers(0, len(out)))
        out[i:i] = data.draw(st.binary(min_size=1, max_size=12))
    else:
        out = bytearray(data.draw(st.binary(max_size=64)))
    return bytes(out)


with_exemplars = st.tuples(st.dictionaries(label_names, label_values, max_size=2), samples_st,
                          st.lists(st.tuples(st.dictionaries(label_names, label_values, max_size=3),
                                             st.integers(-(2**63), 2**63 - 1), floats), min_size=1, max_size=3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(with_exemplars, min_size=1, max_size=2), st.data())
def test_broken_exemplars_agree(prompb, series, data):
    """Bodies broken inside their Exemplar messages: the compiled exemplar
    scan refuses exactly what the reference decoder refuses."""
    body = bytearray(build(prompb, series))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(len(body) // 2, len(body) - 1))  # exemplars come last in each series
        body[i] = data.draw(st.integers(0, 255))
    assert_same(bytes(body))


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x80",  # truncated length varint
        b"\x0a" + b"\xff" * 11,  # varint longer than 10 bytes
        b"\x02\x00",  # field number 0
        b"\x0b",  # wire type 3 (group)
        b"\x09\x00\x00",  # truncated fixed64
        b"\x0d\x00",  # truncated fixed32
        b"\x08\x01",  # timeseries as varint
        b"\x0a\x02\x12\x00" + b"",  # labels-less series: no __name__
        b"\x0a\x04\x12\x02\x08\x01",  # sample value as varint
        b"\x0a\x04\x12\x02\x11\x00",  # sample timestamp as fixed64 (truncated)
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02\x00",  # key beyond 64 bits: a skippable varint field
    ],
)
def test_malformed_vectors(data):
    assert_same(data)


def test_snappy_errors_and_caps():
    dec = CompiledDecoder(100)
    with pytest.raises(SnappyError):
        dec.decode_body(b"")
    with pytest.raises(SnappyError):
        dec.decode_body(b"\x05\x00garbage")
    with pytest.raises(TooLargeError):
        dec.decode_body(snappy.compress(b"\0" * 101))
    assert dec.decode_body(snappy.compress(b"")).batch.num_samples == 0


def test_cache_starts_over_when_full(prompb):
    dec = CompiledDecoder(1 << 20, max_refs=3)
    spaces: list = []
    for i in range(10):
        data = build(prompb, [({"i": str(i), "j": str(k)}, [(i, float(k))]) for k in range(2)])
        got = dec.decode(np.frombuffer(data, np.uint8), len(data)).batch
        ref = decode_write_request(data).batch
        assert list(got.series) == ref.series and got.ts.tolist() == ref.ts.tolist()
        if got.space not in spaces:
            spaces.append(got.space)
    assert dec.cache.resets >= 3 and len(spaces) >= 3


def test_exemplar_series_kept_by_ref_follow_the_cache_starting_over(prompb):
    # Refs are numbered again from 0 after a reset: the label sets kept for
    # exemplar series must go with the old numbering.
    dec = CompiledDecoder(1 << 20, max_refs=3)
    for i in range(10):
        data = build(prompb, [({"i": str(i), "j": str(k)}, [(i, float(k))], [({"t": str(i)}, i, 1.0)])
                              for k in range(2)])
        assert assert_same(data) == "ok"
        got = dec.decode(np.frombuffer(data, np.uint8), len(data)).exemplars
        assert _exemplars(got) == _exemplars(decode_write_request(data).exemplars)
    assert dec.cache.resets >= 3


def test_cache_starts_over_when_most_refs_are_no_longer_sent(prompb):
    # Pods replaced: the refs of series not named for a whole window are
    # dropped with the cache once they are more than half of it.
    now = [0.0]
    dec = CompiledDecoder(1 << 20)
    dec.cache = SeriesCache(idle_window_s=10.0, churn_min_refs=4, clock=lambda: now[0])

    def send(t: float, pods: str, n: int):
        now[0] = t
        data = build(prompb, [({"pod": f"{pods}{k}"}, [(int(t), 1.0)]) for k in range(n)])
        got = dec.decode(np.frombuffer(data, np.uint8), len(data)).batch
        assert list(got.series) == decode_write_request(data).batch.series
        return got.space

    first = send(0, "a", 6)  # window 1
    assert send(10, "b", 2) is first  # window 2
    assert send(20, "b", 2) is first  # window 3: the a-pods were named in window 1
    assert len(dec.cache) == 8 and dec.cache.resets == 0
    assert send(25, "b", 2) is first  # no check within a window
    churned = send(30, "b", 2)  # window 4: only 2 of 8 named in windows 2 and 3
    assert churned is not first and len(dec.cache) == 2
    assert dec.cache.resets == dec.cache.churn_resets == 1
    assert send(35, "c", 5) is churned and len(dec.cache) == 7
    # A pause in writing: named in the last window that had requests.
    assert send(1000, "b", 2) is churned and dec.cache.resets == 1


def test_batches_keep_their_labels_while_the_cache_grows(prompb):
    # A batch reads its labels from its own request, also after the decoder
    # has reused its buffer for other requests and the cache has grown.
    dec = CompiledDecoder(1 << 24)
    first = build(prompb, [({"k": "first", "pad": "x" * 100}, [(1, 1.0)])])
    kept = dec.decode_body(snappy.compress(first)).batch
    for i in range(6):  # 12,000 new label sets, ~2 MB of canonical bytes
        body = build(prompb, [({"i": str(i), "j": str(k), "pad": "y" * 150}, [(1, 1.0)]) for k in range(2000)])
        dec.decode(np.frombuffer(body, np.uint8), len(body))
    assert dec.cache.resets == 0 and len(dec.cache) == 12_001
    assert list(kept.series) == decode_write_request(first).batch.series
    again = dec.decode(np.frombuffer(first, np.uint8), len(first)).batch
    assert again.refs.tolist() == kept.refs.tolist() and list(again.series) == list(kept.series)


def test_the_cache_keeps_no_label_bytes(prompb):
    # What the router holds per series does not grow with the labels' size:
    # the batches take their labels from their own requests.
    dec = CompiledDecoder(1 << 24)
    label_bytes = 0
    bodies = []
    for i in range(10):  # 20,000 series of ~330 bytes of labels
        series = [({"i": str(i), "j": str(k), "pad": "z" * 300}, [(1, 1.0)]) for k in range(2000)]
        body = snappy.compress(build(prompb, series))
        batch = dec.decode_body(body).batch
        label_bytes += sum(len(batch.series.block(q)) for q in range(len(batch.series)))
        bodies.append((body, series))
    held = sum(a.nbytes for a in vars(dec.cache).values() if isinstance(a, np.ndarray))
    assert len(dec.cache) == 20_000 and held < label_bytes / 2
    # Seen again: the same refs, the labels read from the request only when asked for.
    body, series = bodies[3]
    again = dec.decode_body(body).batch
    assert again.series._data is None
    assert [lb.to_dict() for lb in again.series] == [
        {"__name__": "m", **labels} for labels, _ in series
    ]


def test_bodies_beyond_the_scratch_estimates(prompb):
    # Many tiny series (more than one per 64 bytes) and a body over the
    # counting threshold both take the counting pass; results stay exact.
    from athens.wire.scan import Scanner

    tiny = b"".join(b"\x0a\x0e" + b"\x0a\x0c\x0a\x08__name__\x12\x00" for _ in range(3000))
    assert assert_same(tiny) == "error"  # empty __name__ everywhere
    many = build(prompb, [({"i": str(i)}, [(t, 1.0) for t in range(30)]) for i in range(40)])
    assert assert_same(many) == "ok"
    old = Scanner.ESTIMATE_BYTES
    Scanner.ESTIMATE_BYTES = 100
    try:
        assert assert_same(many) == "ok"
    finally:
        Scanner.ESTIMATE_BYTES = old


def test_an_exemplar_label_sent_twice_keeps_its_last_value(prompb):
    data = _one_exemplar(prompb, [("trace_id", "1"), ("trace_id", "2")]).SerializeToString()
    assert assert_same(data) == "ok"
    assert compiled(data).exemplars.labels == [Labels([("trace_id", "2")])]
