"""Metric metadata as remote write carries it (type, help, unit per family).

Remote write 1.0 sends `MetricMetadata` messages in WriteRequest field 3;
2.0 attaches a `Metadata` message to each TimeSeries. Both become a
MetricMetadata here, for the router's metadata store (/api/v1/metadata).
"""

from __future__ import annotations

from dataclasses import dataclass

from athens.wire.protobuf import WIRE_LEN, WIRE_VARINT, ProtobufError, decode_utf8, iter_fields

# The MetricType enum of both protocol versions, as /api/v1/metadata spells it.
METRIC_TYPES = {
    0: "unknown",
    1: "counter",
    2: "gauge",
    3: "histogram",
    4: "gaugehistogram",
    5: "summary",
    6: "info",
    7: "stateset",
}


@dataclass(frozen=True, slots=True)
class MetricMetadata:
    metric: str
    type: str
    help: str
    unit: str


def decode_v1_metadata(buf: bytes, start: int, end: int) -> MetricMetadata | None:
    """One v1 MetricMetadata; None if it names no metric family.

    Malformed metadata raises ProtobufError like any other part of the body.
    """
    mtype, name, help_, unit = 0, "", "", ""
    for field, wire, a, b in iter_fields(buf, start, end):
        if field == 1 and wire == WIRE_VARINT:
            mtype = a
        elif field in (2, 4, 5):
            if wire != WIRE_LEN:
                raise ProtobufError(f"metadata field {field} is not length-delimited")
            text = decode_utf8(buf, a, b, "metadata")
            if field == 2:
                name = text
            elif field == 4:
                help_ = text
            else:
                unit = text
    if not name:
        return None
    return MetricMetadata(name, METRIC_TYPES.get(mtype, "unknown"), help_, unit)
