"""Prometheus remote write 1.0: snappy-compressed `prometheus.WriteRequest`.

The decoder validates the whole request before anything is stored, so a
rejected request is never half-applied.

    message WriteRequest { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2;
                           repeated Exemplar exemplars = 3; repeated Histogram histograms = 4; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }
    message Exemplar     { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass

import snappy

from athens.errors import BadDataError, TooLargeError
from athens.model.batch import BatchBuilder, WriteBatch
from athens.model.exemplars import ExemplarBatch, exemplar_labels
from athens.model.labels import METRIC_NAME, Labels
from athens.wire.metadata_pb import MetricMetadata, decode_v1_metadata
from athens.wire.protobuf import (
    WIRE_FIXED64,
    WIRE_LEN,
    WIRE_VARINT,
    ProtobufError,
    decode_utf8,
    expect_wire,
    iter_fields,
    read_varint,
    to_int64,
)

_DOUBLE = struct.Struct("<d")


class SnappyError(BadDataError):
    """The body is not snappy block-compressed data."""


@dataclass(slots=True)
class DecodedWrite:
    """A decoded request: the samples and exemplars, the native histograms
    it held (not stored: counted), and metric metadata."""

    batch: WriteBatch
    histograms: int = 0
    exemplars: ExemplarBatch = dataclasses.field(default_factory=ExemplarBatch.empty)
    metadata: list[MetricMetadata] = dataclasses.field(default_factory=list)


def decompress(body: bytes, max_bytes: int) -> bytes:
    """Snappy block decompression with a cap on the decompressed size."""
    try:
        # The snappy block format starts with the uncompressed length (varint).
        n, _ = read_varint(body, 0, min(len(body), 10))
    except ProtobufError:
        raise SnappyError("snappy: corrupt input (bad length header)") from None
    if n > max_bytes:
        raise TooLargeError(
            f"decompressed body of {n} bytes exceeds the limit of {max_bytes} bytes"
        )
    try:
        return snappy.uncompress(body)
    except Exception:
        raise SnappyError("snappy: corrupt input") from None


def _decode_labels(buf: bytes, start: int, end: int) -> tuple[str, str]:
    name = value = ""
    for field, wire, a, b in iter_fields(buf, start, end):
        if field == 1:
            expect_wire("label name", wire, WIRE_LEN)
            name = decode_utf8(buf, a, b, "label name")
        elif field == 2:
            expect_wire("label value", wire, WIRE_LEN)
            value = decode_utf8(buf, a, b, "label value")
    return name, value


def decode_sample(buf: bytes, start: int, end: int) -> tuple[float, int]:
    """A Sample message, 1.0's and 2.0's alike: (value, timestamp ms)."""
    value = 0.0
    ts = 0
    for field, wire, a, _b in iter_fields(buf, start, end):
        if field == 1:
            expect_wire("sample value", wire, WIRE_FIXED64)
            value = _DOUBLE.unpack_from(buf, a)[0]
        elif field == 2:
            expect_wire("sample timestamp", wire, WIRE_VARINT)
            ts = to_int64(a)
    return value, ts


def exemplar_fields(
    buf: bytes, start: int, end: int, on_labels: Callable[[int, int, int], None]
) -> tuple[int, float]:
    """An Exemplar message's (timestamp ms, value), fields 3 and 2 in 1.0
    and 2.0 alike; each labels field (1) goes to on_labels(wire, start, end),
    as the two versions encode labels differently."""
    value = 0.0
    ts = 0
    for field, wire, a, b in iter_fields(buf, start, end):
        if field == 1:
            on_labels(wire, a, b)
        elif field == 2:
            expect_wire("exemplar value", wire, WIRE_FIXED64)
            value = _DOUBLE.unpack_from(buf, a)[0]
        elif field == 3:
            expect_wire("exemplar timestamp", wire, WIRE_VARINT)
            ts = to_int64(a)
    return ts, value


def decode_exemplar(buf: bytes, start: int, end: int) -> tuple[Labels, int, float]:
    """A 1.0 Exemplar message: (labels, timestamp ms, value)."""
    pairs: list[tuple[str, str]] = []

    def label(wire: int, a: int, b: int) -> None:
        expect_wire("exemplar label", wire, WIRE_LEN)
        pairs.append(_decode_labels(buf, a, b))

    ts, value = exemplar_fields(buf, start, end, label)
    return exemplar_labels(pairs), ts, value


def series_labels(buf: bytes, start: int, end: int) -> Labels:
    """The validated labels of the TimeSeries message in buf[start:end]."""
    return validate_label_pairs([_decode_labels(buf, a, b) for f, _w, a, b in iter_fields(buf, start, end) if f == 1])


def series_exemplars(
    series: list[int], exemplars: list[tuple[Labels, int, float]], labels_of: Callable[[int], Labels]
) -> ExemplarBatch:
    """The exemplars of a 1.0 request: exemplars[k] (decode_exemplar's)
    belongs to the request's series[k]th series, whose labels are
    labels_of(that index) (asked once per series)."""
    labels: dict[int, Labels] = {}
    for i in series:
        if i not in labels:
            labels[i] = labels_of(i)
    return ExemplarBatch.of([(labels[i], *e) for i, e in zip(series, exemplars)])


def validate_label_pairs(pairs: list[tuple[str, str]]) -> Labels:
    """Check remote-write label rules and build the Labels.

    The spec requires label names sorted and unique, and __name__ present.
    """
    for i, (name, _) in enumerate(pairs):
        if name == "":
            raise BadDataError("label with empty name")
        if i and pairs[i - 1][0] >= name:
            if pairs[i - 1][0] == name:
                raise BadDataError(f"duplicate label name {name!r} in series {_fmt(pairs)}")
            raise BadDataError(
                f"label names not sorted: {pairs[i - 1][0]!r} before {name!r} in series {_fmt(pairs)}"
            )
    labels = Labels.from_sorted(tuple(p for p in pairs if p[1] != ""))
    if not labels.name:
        raise BadDataError(f"series {_fmt(pairs)} has no {METRIC_NAME} label")
    return labels


def _fmt(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f'{n}="{v}"' for n, v in pairs) + "}"


def decode_write_request(data: bytes) -> DecodedWrite:
    """Decode an uncompressed WriteRequest into one WriteBatch.

    A series sent twice in one request is merged into one entry.
    """
    builder = BatchBuilder()
    histograms = 0
    series: list[tuple[int, int]] = []
    exemplars: list[tuple[int, int, int]] = []
    metadata: list[MetricMetadata] = []
    for field, wire, a, b in iter_fields(data, 0, len(data)):
        if field == 3 and wire == WIRE_LEN:
            m = decode_v1_metadata(data, a, b)
            if m is not None:
                metadata.append(m)
        if field != 1:
            continue
        expect_wire("timeseries", wire, WIRE_LEN)
        pairs: list[tuple[str, str]] = []
        samples: list[tuple[float, int]] = []
        for f2, w2, a2, b2 in iter_fields(data, a, b):
            if f2 == 1:
                expect_wire("label", w2, WIRE_LEN)
                pairs.append(_decode_labels(data, a2, b2))
            elif f2 == 2:
                expect_wire("sample", w2, WIRE_LEN)
                samples.append(decode_sample(data, a2, b2))
            elif f2 == 3:
                expect_wire("exemplar", w2, WIRE_LEN)
                exemplars.append((len(series), a2, b2))
            elif f2 == 4:
                histograms += 1
        labels = validate_label_pairs(pairs)
        series.append((a, b))
        builder.add(labels, samples)
    batch = builder.build()
    ex = series_exemplars([i for i, _, _ in exemplars], [decode_exemplar(data, a, b) for _, a, b in exemplars],
                          lambda i: series_labels(data, *series[i]))
    return DecodedWrite(batch, histograms, ex, metadata)


__all__ = [
    "DecodedWrite",
    "ProtobufError",
    "SnappyError",
    "decode_write_request",
    "decompress",
    "validate_label_pairs",
]
