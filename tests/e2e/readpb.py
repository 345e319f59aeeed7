"""The tests' independent remote-read decoder: protoc messages and a Prometheus XOR chunk reader.

The XOR reader follows the published chunk layout (see
athens/wire/remote_read.py's docstring) bit by bit; it shares no code with
Athens' encoder.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from compiled_proto import compile_proto

PROTO = Path(__file__).parent / "proto" / "read.proto"


def compile_read_proto(out: Path) -> Any:
    return compile_proto(PROTO, out)


class BitReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        b = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return b

    def bits(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | self.bit()
        return v

    def uvarint(self) -> int:
        v, shift = 0, 0
        while True:
            b = self.bits(8)
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v


def _signed(v: int, n: int) -> int:
    return v - (1 << n) if v >= 1 << (n - 1) else v


def decode_xor_chunk(data: bytes) -> list[tuple[int, float]]:
    """(timestamp ms, value) pairs of one Prometheus XOR chunk."""
    (n,) = struct.unpack(">H", data[:2])
    r = BitReader(data[2:])
    out: list[tuple[int, float]] = []
    if n == 0:
        return out
    zz = r.uvarint()
    t = (zz >> 1) ^ -(zz & 1)
    vbits = r.bits(64)
    out.append((t, struct.unpack(">d", vbits.to_bytes(8, "big"))[0]))
    delta = 0
    leading = trailing = 0
    for i in range(1, n):
        if i == 1:
            delta = r.uvarint()
        else:
            if r.bit() == 0:
                dod = 0
            elif r.bit() == 0:
                dod = _signed(r.bits(14), 14)
            elif r.bit() == 0:
                dod = _signed(r.bits(17), 17)
            elif r.bit() == 0:
                dod = _signed(r.bits(20), 20)
            else:
                dod = _signed(r.bits(64), 64)
            delta += dod
        t += delta
        if r.bit() == 1:
            if r.bit() == 1:
                leading = r.bits(5)
                sig = r.bits(6) or 64
                trailing = 64 - leading - sig
            x = r.bits(64 - leading - trailing) << trailing
            vbits ^= x
        out.append((t, struct.unpack(">d", vbits.to_bytes(8, "big"))[0]))
    return out


def read_frames(body: bytes) -> list[bytes]:
    """Messages of a streamed response, checking each frame's CRC-32C."""
    out = []
    pos = 0
    while pos < len(body):
        n, shift = 0, 0
        while True:
            b = body[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        (crc,) = struct.unpack(">I", body[pos : pos + 4])
        msg = body[pos + 4 : pos + 4 + n]
        assert len(msg) == n, "truncated frame"
        assert crc32c(msg) == crc, "frame checksum mismatch"
        out.append(msg)
        pos += 4 + n
    return out


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF
