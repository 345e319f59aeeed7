"""Metric metadata received by remote write, for /api/v1/metadata.

(The API helper's router/app.py uses update(), query(), decode_metadata()
and is_metadata_only(); the ingest path uses record() and metadata().)

Both protocol versions carry type, help and unit per metric family (1.0 as
WriteRequest.metadata, 2.0 per TimeSeries). The router keeps the latest
distinct entries per family in memory: metadata is small, advisory and
resent by Prometheus every minute, so it is not stored durably.

Bounded: at most MAX_FAMILIES families (least recently updated dropped
first) and MAX_PER_FAMILY distinct entries per family.
"""

from __future__ import annotations

from collections import OrderedDict

from athens.wire.metadata_pb import MetricMetadata, decode_v1_metadata
from athens.wire.protobuf import WIRE_LEN, ProtobufError, iter_fields, read_varint

MAX_FAMILIES = 100_000
# Different targets may describe one family differently; Prometheus lists each.
MAX_PER_FAMILY = 8


class MetadataStore:
    """metric family -> distinct (type, help, unit) entries, newest last."""

    def __init__(self, max_families: int = MAX_FAMILIES) -> None:
        self.max_families = max_families
        self._by_metric: OrderedDict[str, list[tuple[str, str, str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_metric)

    def record(self, items: list[MetricMetadata]) -> None:
        for m in items:
            entry = (m.type, m.help, m.unit)
            entries = self._by_metric.get(m.metric)
            if entries is None:
                entries = self._by_metric[m.metric] = []
            else:
                self._by_metric.move_to_end(m.metric)
            if entry in entries:
                entries.remove(entry)
            entries.append(entry)
            del entries[:-MAX_PER_FAMILY]
        while len(self._by_metric) > self.max_families:
            self._by_metric.popitem(last=False)

    def update(self, items: list[MetricMetadata]) -> None:
        self.record(items)

    def query(self, metric: str | None = None, limit: int | None = None,
              limit_per_metric: int | None = None) -> dict[str, list[dict[str, str]]]:
        """/api/v1/metadata semantics: limit and limit_per_metric <= 0 or None = all."""
        return self.metadata(metric, limit or 0, limit_per_metric or 0)

    def metadata(self, metric: str | None = None, limit: int = 0, limit_per_metric: int = 0) -> dict[str, list[dict[str, str]]]:
        """The `data` of /api/v1/metadata: {metric: [{"type", "help", "unit"}, ...]}.

        metric: only this family (None or "" = all); limit: at most this many
        families (<= 0 = all); limit_per_metric: entries per family (<= 0 = all).
        """
        if metric:
            names = [metric] if metric in self._by_metric else []
        else:
            names = sorted(self._by_metric)
        if limit > 0:
            names = names[:limit]
        out: dict[str, list[dict[str, str]]] = {}
        for name in names:
            entries = self._by_metric[name]
            if limit_per_metric > 0:
                entries = entries[-limit_per_metric:]
            out[name] = [{"type": t, "help": h, "unit": u} for t, h, u in reversed(entries)]
        return out


def decode_metadata(data: bytes) -> list[MetricMetadata]:
    """The MetricMetadata entries (field 3) of an uncompressed v1 WriteRequest."""
    out = []
    for field, wire, a, b in iter_fields(data, 0, len(data)):
        if field == 3 and wire == WIRE_LEN:
            m = decode_v1_metadata(data, a, b)
            if m is not None:
                out.append(m)
    return out


def is_metadata_only(body: bytes) -> bool:
    """Whether a snappy-compressed v1 body starts with metadata (field 3).

    Prometheus sends metadata in requests of their own. O(1): a snappy
    stream starts with a literal, whose first byte is the first protobuf
    tag (0x1a for field 3, 0x0a for a TimeSeries); nothing is decompressed.
    """
    try:
        _, pos = read_varint(body, 0, min(len(body), 10))
    except ProtobufError:
        return False
    if pos >= len(body) or body[pos] & 3 != 0:
        return False
    n = body[pos] >> 2
    pos += 1 if n < 60 else 1 + (n - 59)
    return pos < len(body) and body[pos] == 0x1A
