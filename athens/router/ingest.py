"""The write path: remote write in, samples routed to their owning workers.

    POST /api/v1/write
      -> content negotiation (1.0 or 2.0; 415 otherwise)
      -> size caps (413) and the in-flight high-water mark (429)
      -> decode: 1.0 by the compiled decoder (athens/wire/compiled.py),
         2.0 by athens/wire/remote_write_v2.py; malformed -> 400, nothing stored
      -> ShardPool.append: one frame per owning worker, answered once the
         samples are in that worker's WAL; worker behind or restarting -> 503
      -> 204 (+ X-Prometheus-Remote-Write-*-Written headers)

Retries are idempotent: a resent request whose samples are stored already
is answered 204 and stores nothing (the shard ignores exact duplicates).
See docs/ingest.md.
"""

from __future__ import annotations

import logging
from collections import Counter

from aiohttp import web

from athens.config import ServeConfig, byte_size, duration_ms
from athens.errors import AthensError, OverloadedError, RejectedSamplesError, TooLargeError
from athens.log import kv
from athens.router import api
from athens.router.metadata import MetadataStore
from athens.router.scatter import ShardPool
from athens.wire import scan_v2
from athens.wire.cache import DEFAULT_MAX_REFS, IDLE_WINDOW_S
from athens.wire.compiled import CompiledDecoder
from athens.wire.protobuf import ProtobufError, read_varint
from athens.wire.remote_write import DecodedWrite
from athens.wire.remote_write_v2 import UnsupportedMediaTypeError, negotiate

log = logging.getLogger("athens.router")

DEFAULT_MAX_INFLIGHT_BYTES = 512 << 20
# Decoded arrays take about this many bytes per decompressed byte at most
# (20 bytes of ts/value/index per sample, a sample is >= 2 bytes of protobuf):
# the high-water mark counts body + decompressed + decoded bytes (and the
# 1.0 body a 2.0 one is rewritten as).
_DECODED_PER_BYTE = 2
RETRY_AFTER_S = "1"

H_SAMPLES = "X-Prometheus-Remote-Write-Samples-Written"
H_HISTOGRAMS = "X-Prometheus-Remote-Write-Histograms-Written"
H_EXEMPLARS = "X-Prometheus-Remote-Write-Exemplars-Written"


class Ingest:
    """POST /api/v1/write. A 2xx means every owning worker has the samples in its WAL."""

    def __init__(
        self,
        pool: ShardPool,
        max_body: int,
        max_decompressed: int,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        series_cache: int = DEFAULT_MAX_REFS,
        series_cache_idle_s: float = IDLE_WINDOW_S,
    ) -> None:
        self.pool = pool
        self.max_body = max_body
        self.max_inflight_bytes = max_inflight_bytes
        self.decoder = CompiledDecoder(max_decompressed, series_cache, series_cache_idle_s)
        self.metadata = MetadataStore()
        self.inflight_bytes = 0
        # athens_ingest_*: requests by outcome, samples by fate.
        self.requests: Counter[str] = Counter()
        self.samples: Counter[str] = Counter()

    @classmethod
    def from_config(cls, pool: ShardPool, cfg: ServeConfig) -> Ingest:
        """Built from the serve flags (--max-body-bytes, --ingest-*)."""
        return cls(
            pool,
            byte_size(cfg.max_body_bytes),
            byte_size(cfg.max_decompressed_bytes),
            byte_size(cfg.ingest_max_inflight_bytes),
            cfg.ingest_series_cache,
            duration_ms(cfg.ingest_series_cache_idle) / 1000,
        )

    def metadata_for(self, metric: str | None, limit: int) -> dict[str, list[dict[str, str]]]:
        """For /api/v1/metadata (the API helper calls this)."""
        return self.metadata.metadata(metric, limit)

    async def write(self, request: web.Request) -> web.Response:
        reserved = 0
        # Once the content is negotiated every answer says what was written
        # (the 2.0 spec's MUST; a sender learns it from a 400 or 503 too).
        headers: dict[str, str] = {}
        try:
            version = negotiate(request.headers.get("Content-Type"), request.headers.get("Content-Encoding"))
            headers = _written(0, 0)
            if request.content_length is not None and request.content_length > self.max_body:
                raise TooLargeError(
                    f"request body of {request.content_length} bytes exceeds the limit of {self.max_body} bytes"
                )
            if self.inflight_bytes >= self.max_inflight_bytes:
                raise _HighWater(
                    f"too many writes in progress ({self.inflight_bytes} bytes over the high-water mark); retry later"
                )
            reserved = request.content_length or 0
            self.inflight_bytes += reserved
            try:
                body = await request.read()  # bounded by client_max_size
            except web.HTTPRequestEntityTooLarge:
                raise TooLargeError(f"request body exceeds the limit of {self.max_body} bytes") from None
            per_byte = _DECODED_PER_BYTE + (scan_v2.OUT_PER_BYTE if version == 2 else 0)
            more = len(body) - reserved + per_byte * _claimed_size(body)
            self.inflight_bytes += more
            reserved += more
            decoded = self._decode(version, body)
            del body
            batch = decoded.batch
            if decoded.metadata:
                self.metadata.record(decoded.metadata)
            rejected = await self.pool.append(batch) if batch.num_samples else {}
            written = batch.num_samples - sum(rejected.values())
            headers = _written(written, 0)
            # After the samples: their series are then known to the workers.
            ex_written, ex_rejected = await self.pool.append_exemplars(decoded.exemplars) \
                if len(decoded.exemplars) else (0, {})
            headers = _written(written, ex_written)
            self.samples["written"] += written
            self.samples["native_histograms_not_written"] += decoded.histograms
            self.samples["exemplars_written"] += ex_written
            for reason, n in ex_rejected.items():  # not errors, as in Prometheus' receiver
                self.samples[f"exemplars_rejected_{reason}"] += n
            if rejected:
                for reason, n in rejected.items():
                    self.samples[f"rejected_{reason}"] += n
                self.requests["rejected"] += 1
                return web.Response(status=400, text=str(RejectedSamplesError(rejected)), headers=headers)
            if version == 2 and decoded.histograms:
                # 2.0 receivers must not pretend: the samples are stored, the
                # rest is reported as not written (4xx: resending cannot help).
                self.requests["partial"] += 1
                return web.Response(
                    status=400,
                    headers=headers,
                    text=f"native histograms are not supported: {decoded.histograms} histograms not written; "
                    f"{written} samples and {ex_written} exemplars written",
                )
            self.requests["ok"] += 1
            return web.Response(status=204, headers=headers)
        except AthensError as e:
            resp = self._error(e)
            resp.headers.update(headers)
            return resp
        finally:
            self.inflight_bytes -= reserved

    def _decode(self, version: int, body: bytes) -> DecodedWrite:
        if version == 2:
            return self.decoder.decode_v2_body(body)
        return self.decoder.decode_body(body)

    def _error(self, e: AthensError) -> web.Response:
        # Remote-write senders read a plain-text body; 5xx and 429 are retried.
        if isinstance(e, UnsupportedMediaTypeError):
            self.requests["unsupported_media_type"] += 1
            return web.Response(status=415, text=str(e))
        if isinstance(e, _HighWater):
            self.requests["throttled"] += 1
            return web.Response(status=429, text=str(e), headers={"Retry-After": RETRY_AFTER_S})
        status = api.error_status(e)
        if status >= 500:
            self.requests["unavailable"] += 1
            log.warning("write failed", extra=kv(err=str(e)))
            return web.Response(status=status, text=str(e), headers={"Retry-After": RETRY_AFTER_S})
        self.requests["too_large" if status == 413 else "bad_request"] += 1
        return web.Response(status=status, text=str(e))


def _written(samples: int, exemplars: int) -> dict[str, str]:
    """The X-Prometheus-Remote-Write-*-Written headers (histograms are never
    stored: native histograms are not supported)."""
    return {H_SAMPLES: str(samples), H_HISTOGRAMS: "0", H_EXEMPLARS: str(exemplars)}


class _HighWater(OverloadedError):
    """The router's in-flight write bytes are over the high-water mark (429)."""


def _claimed_size(body: bytes) -> int:
    """The decompressed size the snappy header announces (0 if unreadable)."""
    try:
        return read_varint(body, 0, min(len(body), 10))[0]
    except ProtobufError:
        return 0


__all__ = ["Ingest"]
