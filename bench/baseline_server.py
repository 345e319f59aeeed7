"""What serving an HTTP request from Python costs on this machine, without Athens.

    python -m bench.baseline_server {aiohttp,asyncio} PORT

`aiohttp`: an aiohttp application on uvloop (the framework and event loop
Athens' router serves with, handler cancellation on as there) answering
every GET with one constant Prometheus API body. `asyncio`: the same answer
written by a bare uvloop protocol that only looks for the end of each
request head. bench.floor times them beside the real systems
(`--systems aiohttp,asyncio`): the floor under any light query a Python
router can answer, and what the framework adds to it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvloop
from aiohttp import web

BODY = b'{"status":"success","data":{"resultType":"scalar","result":[0,"2"]}}'
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)


async def answer(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


class Constant(asyncio.Protocol):
    """One constant response per request head (GETs: no bodies)."""

    def __init__(self) -> None:
        self.pending = b""
        self.transport: Any = None  # uvloop's, not an asyncio.Transport subclass

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        heads = (self.pending + data).split(b"\r\n\r\n")
        self.pending = heads.pop()
        self.transport.write((HEAD + BODY) * len(heads))


async def serve(kind: str, port: int) -> None:
    if kind == "aiohttp":
        app = web.Application()
        app.router.add_get("/{path:.*}", answer)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    else:
        await asyncio.get_running_loop().create_server(Constant, "127.0.0.1", port)
    await asyncio.Event().wait()  # until SIGTERM


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("aiohttp", "asyncio"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    uvloop.run(serve(argv[0], int(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
