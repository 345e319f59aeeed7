"""Prometheus remote write 2.0: snappy-compressed `io.prometheus.write.v2.Request`.

    message Request    { repeated string symbols = 4; repeated TimeSeries timeseries = 5; }
    message TimeSeries { repeated uint32 labels_refs = 1; repeated Sample samples = 2;
                         repeated Histogram histograms = 3; repeated Exemplar exemplars = 4;
                         Metadata metadata = 5; int64 created_timestamp = 6; }
    message Sample     { double value = 1; int64 timestamp = 2; }
    message Metadata   { MetricType type = 1; uint32 help_ref = 3; uint32 unit_ref = 4; }
    message Exemplar   { repeated uint32 labels_refs = 1; double value = 2; int64 timestamp = 3; }

Labels are pairs of references into the request's string table. The same
validation as 1.0 applies (sorted unique names, __name__ present; the whole
request is rejected otherwise). Native histograms are not stored: they are
counted so the response headers can say they were not written. Created timestamps are read and not used (Athens, like Prometheus
without --enable-feature=created-timestamp-zero-ingestion, stores only the
samples sent).

This decoder is plain Python, the oracle the compiled path is tested
against: the router rewrites a 2.0 body as 1.0 in Numba (scan_v2.py) and
decodes that with the compiled 1.0 path.
"""

from __future__ import annotations

from athens.model.batch import BatchBuilder
from athens.model.exemplars import ExemplarBatch, exemplar_labels
from athens.model.labels import Labels
from athens.wire.metadata_pb import METRIC_TYPES, MetricMetadata
from athens.wire.protobuf import (
    WIRE_LEN,
    WIRE_VARINT,
    ProtobufError,
    decode_utf8,
    expect_wire,
    iter_fields,
    read_varint,
)
from athens.wire.remote_write import DecodedWrite, decode_sample, exemplar_fields, validate_label_pairs

CONTENT_TYPE = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
PROTO_V1 = "prometheus.WriteRequest"
PROTO_V2 = "io.prometheus.write.v2.Request"

_LEGACY_MEDIA = ("application/octet-stream", "")


class UnsupportedMediaTypeError(ProtobufError):
    """Content-Type or Content-Encoding the receiver does not speak (415)."""


def negotiate(content_type: str | None, content_encoding: str | None) -> int:
    """The protocol version (1 or 2) of a request, from its headers.

    As the 2.0 spec asks: `application/x-protobuf` without a proto parameter
    (or with proto=prometheus.WriteRequest) is 1.0, with
    proto=io.prometheus.write.v2.Request it is 2.0; anything else, and any
    encoding but snappy, is refused with 415. A missing Content-Type or a
    generic application/octet-stream is taken as 1.0 (older tools and curl
    send those; 1.0 is what they mean).
    """
    enc = (content_encoding or "snappy").strip().lower()
    if enc != "snappy":
        raise UnsupportedMediaTypeError(f"unsupported Content-Encoding {content_encoding!r}, want snappy")
    if not content_type:
        return 1
    media, *params = [p.strip() for p in content_type.split(";")]
    if media.lower() in _LEGACY_MEDIA:
        return 1
    if media.lower() != "application/x-protobuf":
        raise UnsupportedMediaTypeError(f"unsupported Content-Type {content_type!r}")
    proto = PROTO_V1
    for p in params:
        k, _, v = p.partition("=")
        if k.strip().lower() == "proto":
            proto = v.strip().strip('"')
    if proto == PROTO_V1:
        return 1
    if proto == PROTO_V2:
        return 2
    raise UnsupportedMediaTypeError(f"unsupported remote write message {proto!r}")


def _refs(data: bytes, wire: int, a: int, b: int, out: list[int]) -> None:
    """labels_refs, packed (the proto3 default) or one varint per field."""
    if wire == WIRE_VARINT:
        out.append(a)
        return
    expect_wire("labels_refs", wire, WIRE_LEN)
    pos = a
    while pos < b:
        v, pos = read_varint(data, pos, b)
        out.append(v)


def _symbol(symbols: list[str], ref: int) -> str:
    if ref >= len(symbols):
        raise ProtobufError(f"symbol reference {ref} outside the table of {len(symbols)} symbols")
    return symbols[ref]


def decode_request_v2(data: bytes) -> DecodedWrite:
    """Decode an uncompressed v2 Request into one WriteBatch (+ metadata, counts)."""
    symbols: list[str] = []
    series_ranges: list[tuple[int, int]] = []
    for field, wire, a, b in iter_fields(data, 0, len(data)):
        if field == 4:
            expect_wire("symbol", wire, WIRE_LEN)
            symbols.append(decode_utf8(data, a, b, "symbol"))
        elif field == 5:
            expect_wire("timeseries", wire, WIRE_LEN)
            series_ranges.append((a, b))

    builder = BatchBuilder()
    histograms = 0
    exemplars: list[tuple[Labels, Labels, int, float]] = []
    metadata: dict[str, MetricMetadata] = {}
    for a0, b0 in series_ranges:
        refs: list[int] = []
        samples: list[tuple[float, int]] = []
        series_exemplars: list[tuple[Labels, int, float]] = []
        meta: tuple[int, int, int] | None = None
        for field, wire, a, b in iter_fields(data, a0, b0):
            if field == 1:
                _refs(data, wire, a, b, refs)
            elif field == 2:
                expect_wire("sample", wire, WIRE_LEN)
                samples.append(decode_sample(data, a, b))
            elif field == 3:
                histograms += 1
            elif field == 4:
                expect_wire("exemplar", wire, WIRE_LEN)
                series_exemplars.append(_exemplar(data, a, b, symbols))
            elif field == 5:
                expect_wire("metadata", wire, WIRE_LEN)
                mtype = help_ref = unit_ref = 0
                for f2, w2, a2, _b2 in iter_fields(data, a, b):
                    if f2 in (1, 3, 4):
                        expect_wire("metadata field", w2, WIRE_VARINT)
                        if f2 == 1:
                            mtype = a2
                        elif f2 == 3:
                            help_ref = a2
                        else:
                            unit_ref = a2
                meta = (mtype, help_ref, unit_ref)
            elif field == 6:
                expect_wire("created_timestamp", wire, WIRE_VARINT)
        labels = validate_label_pairs(_pairs(refs, symbols, "label references"))
        if meta is not None:
            mtype, help_ref, unit_ref = meta
            m = MetricMetadata(
                labels.name, METRIC_TYPES.get(mtype, "unknown"),
                _symbol(symbols, help_ref), _symbol(symbols, unit_ref),
            )
            if m.type != "unknown" or m.help or m.unit:
                metadata[labels.name] = m
        builder.add(labels, samples)
        exemplars.extend((labels, *e) for e in series_exemplars)
    batch = builder.build()
    return DecodedWrite(batch, histograms, ExemplarBatch.of(exemplars), list(metadata.values()))


def _exemplar(data: bytes, a: int, b: int, symbols: list[str]) -> tuple[Labels, int, float]:
    """A 2.0 Exemplar message: (labels, timestamp ms, value)."""
    refs: list[int] = []
    t, value = exemplar_fields(data, a, b, lambda wire, a2, b2: _refs(data, wire, a2, b2, refs))
    return exemplar_labels(_pairs(refs, symbols, "exemplar label references")), t, value


def _pairs(refs: list[int], symbols: list[str], what: str) -> list[tuple[str, str]]:
    """Label pairs from labels_refs (name, value, name, value, ...)."""
    if len(refs) % 2:
        raise ProtobufError(f"odd number of {what} ({len(refs)})")
    return [(_symbol(symbols, refs[i]), _symbol(symbols, refs[i + 1])) for i in range(0, len(refs), 2)]
