"""The write path: remote write in, samples routed to their owning workers."""

from __future__ import annotations

import logging

from aiohttp import web

from athens.errors import AthensError, RejectedSamplesError, TooLargeError
from athens.log import kv
from athens.router import api
from athens.router.scatter import ShardPool
from athens.wire.remote_write import decode_write_request, decompress

log = logging.getLogger("athens.router")


class Ingest:
    """POST /api/v1/write. A 2xx means every owning worker has the samples in its WAL."""

    def __init__(self, pool: ShardPool, max_body: int, max_decompressed: int) -> None:
        self.pool = pool
        self.max_body = max_body
        self.max_decompressed = max_decompressed

    async def write(self, request: web.Request) -> web.Response:
        try:
            if request.content_length is not None and request.content_length > self.max_body:
                raise TooLargeError(
                    f"request body of {request.content_length} bytes exceeds the limit of {self.max_body} bytes"
                )
            try:
                body = await request.read()  # bounded by client_max_size
            except web.HTTPRequestEntityTooLarge:
                raise TooLargeError(f"request body exceeds the limit of {self.max_body} bytes") from None
            decoded = decode_write_request(decompress(body, self.max_decompressed))
            rejected = await self.pool.append(decoded.batch) if decoded.batch.num_samples else {}
            if rejected:
                raise RejectedSamplesError(rejected)
        except AthensError as e:
            # Remote-write senders read a plain-text body; 5xx and 429 are retried.
            status = api.error_status(e)
            if status >= 500:
                log.warning("write failed", extra=kv(err=str(e)))
                return web.Response(status=status, text=str(e), headers={"Retry-After": "1"})
            return web.Response(status=status, text=str(e))
        return web.Response(status=204)
