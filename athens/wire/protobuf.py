"""Minimal protobuf wire-format reading, shared by the remote-write decoders.

Only what the Prometheus messages need: varints, 64-bit fixed and
length-delimited fields. Every malformation raises ProtobufError with a
message naming the problem, so the HTTP layer can answer 400 with it.
"""

from __future__ import annotations

from collections.abc import Iterator

from athens.errors import BadDataError

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_FIXED32 = 5

WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "length-delimited", 5: "fixed32"}


class ProtobufError(BadDataError):
    """The body is not a valid protobuf encoding of the expected message."""


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode one varint at pos; returns (value, new_pos)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes")


def to_int64(v: int) -> int:
    """Reinterpret a decoded varint as a two's complement int64."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >= 1 << 63 else v


def iter_fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field_number, wire_type, value_or_start, value_end).

    For varints value_or_start is the value (value_end unused); for fixed64
    and length-delimited fields it is the byte range [start, end).
    Unknown wire types (groups) are errors: no Prometheus message uses them.
    """
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtobufError("invalid field number 0")
        if wire == WIRE_VARINT:
            v, pos = read_varint(buf, pos, end)
            yield field, wire, v, pos
        elif wire == WIRE_FIXED64:
            if pos + 8 > end:
                raise ProtobufError("truncated fixed64 field")
            yield field, wire, pos, pos + 8
            pos += 8
        elif wire == WIRE_LEN:
            n, pos = read_varint(buf, pos, end)
            if pos + n > end:
                raise ProtobufError(
                    f"length-delimited field {field} of {n} bytes runs past the end of its message"
                )
            yield field, wire, pos, pos + n
            pos += n
        elif wire == WIRE_FIXED32:
            if pos + 4 > end:
                raise ProtobufError("truncated fixed32 field")
            yield field, wire, pos, pos + 4
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire} for field {field}")


def expect_wire(what: str, wire: int, want: int) -> None:
    if wire != want:
        raise ProtobufError(
            f"{what} has wire type {WIRE_NAMES.get(wire, wire)}, want {WIRE_NAMES[want]}"
        )


def decode_utf8(buf: bytes, start: int, end: int, what: str) -> str:
    try:
        return buf[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufError(f"{what} is not valid UTF-8") from None
