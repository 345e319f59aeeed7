"""POST /api/v1/read: Prometheus remote read over all workers.

A Prometheus with `remote_read: [{url: http://athens/api/v1/read}]` queries
Athens' history through this. Answers SAMPLES (one snappy ReadResponse) or,
when the client lists it first among the types it accepts,
STREAMED_XOR_CHUNKS (framed ChunkedReadResponse messages, Prometheus' XOR
chunks; athens/wire/remote_read.py).
"""

from __future__ import annotations

import logging

import snappy
from aiohttp import web

from athens.errors import AthensError, BadDataError
from athens.log import kv
from athens.model.series import SeriesSet
from athens.router import api
from athens.router.scatter import ShardPool
from athens.wire import remote_read as rr
from athens.wire.remote_write import decompress

log = logging.getLogger("athens.router")

STREAMED_CONTENT_TYPE = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"


class RemoteRead:
    """The handler; `max_samples` bounds one request like Prometheus' read sample limit."""

    def __init__(self, pool: ShardPool, max_body: int, max_decompressed: int, max_samples: int) -> None:
        self.pool = pool
        self.max_body = max_body
        self.max_decompressed = max_decompressed
        self.max_samples = max_samples

    async def _select(self, q: rr.ReadQuery) -> SeriesSet:
        return await self.pool.select(q.matchers, q.start_ms, q.end_ms)

    async def read(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
            req = rr.decode_read_request(decompress(body, self.max_decompressed))
            for t in req.accepted_response_types:
                if t in (rr.SAMPLES, rr.STREAMED_XOR_CHUNKS):
                    mode = t
                    break
            else:
                if req.accepted_response_types:
                    raise BadDataError(
                        f"none of the accepted response types {req.accepted_response_types} is supported"
                    )
                mode = rr.SAMPLES
            if mode == rr.STREAMED_XOR_CHUNKS:
                return await self._stream(request, req)
            results = []
            total = 0
            for q in req.queries:
                series = await self._select(q)
                total += sum(len(s.ts) for s in series)
                if total > self.max_samples:
                    raise BadDataError(f"exceeded sample limit ({self.max_samples})")
                results.append(series)
            payload = snappy.compress(rr.encode_read_response(results))
            return web.Response(
                body=payload,
                headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"},
            )
        except AthensError as e:
            resp = api.text_error_response(e)  # remote-read clients read a plain-text error body
            if resp.status >= 500:
                log.warning("remote read failed", extra=kv(err=str(e)))
            return resp

    async def _stream(self, request: web.Request, req: rr.ReadRequest) -> web.StreamResponse:
        # Fetch the first query before committing to a 200, so that an
        # unreachable worker still turns into an error status.
        first = await self._select(req.queries[0]) if req.queries else []
        resp = web.StreamResponse(headers={"Content-Type": STREAMED_CONTENT_TYPE})
        await resp.prepare(request)
        for i, q in enumerate(req.queries):
            series = first if i == 0 else await self._select(q)
            for frame in rr.stream_chunked(series, i):
                await resp.write(frame)
        await resp.write_eof()
        return resp
