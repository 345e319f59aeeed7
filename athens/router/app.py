"""The router process: the HTTP API in front of the shard workers."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from aiohttp import web

import athens
from athens.config import ServeConfig, byte_size, duration_ms
from athens.errors import AthensError, BadDataError
from athens.log import kv
from athens.model.matchers import Matcher
from athens.query.engine import Engine
from athens.query.parser import parse_matchers
from athens.query.values import QueryResult
from athens.router import api
from athens.router.ingest import Ingest
from athens.router.scatter import ScatterQuerier, ShardPool

log = logging.getLogger("athens.router")

# Time range used by /series and label endpoints when the client gives none.
MIN_TIME = -(2**62) // 1000 * 1000
MAX_TIME = 2**62 // 1000 * 1000


class Router:
    """Request handlers; holds the shard pool and the engine."""

    def __init__(self, cfg: ServeConfig, pool: ShardPool) -> None:
        self.cfg = cfg
        self.pool = pool
        self.querier = ScatterQuerier(pool)
        self.engine = Engine(
            lookback_delta_ms=duration_ms(cfg.lookback_delta),
            max_samples=cfg.query_max_samples,
            timeout_s=duration_ms(cfg.query_timeout) / 1000,
        )
        self.ingest = Ingest(pool, byte_size(cfg.max_body_bytes), byte_size(cfg.max_decompressed_bytes))
        self.started = time.time()

    # --- queries ---------------------------------------------------------

    async def query(self, request: web.Request) -> web.Response:
        try:
            p = await api.params(request)
            expr = api.first(p, "query") or ""
            t_text = api.first(p, "time")
            t = api.parse_time(t_text, "time") if t_text else int(time.time() * 1000)
            result = await self.engine.instant(self.querier, expr, t)
            return render_result(result)
        except AthensError as e:
            return api.error_response(e)

    async def query_range(self, request: web.Request) -> web.Response:
        try:
            p = await api.params(request)
            start = api.parse_time(_required(p, "start"), "start")
            end = api.parse_time(_required(p, "end"), "end")
            if end < start:
                raise BadDataError("end timestamp must not be before start time")
            step = api.parse_step(_required(p, "step"), "step")
            if step <= 0:
                raise BadDataError(
                    "zero or negative query resolution step widths are not accepted. Try a positive integer"
                )
            if (end - start) // step > api.MAX_POINTS_PER_SERIES:
                raise BadDataError(
                    "exceeded maximum resolution of 11,000 points per timeseries. "
                    "Try decreasing the query resolution (?step=XX)"
                )
            expr = api.first(p, "query") or ""
            result = await self.engine.range(self.querier, expr, start, end, step)
            return render_result(result)
        except AthensError as e:
            return api.error_response(e)

    async def _match_and_range(self, request: web.Request) -> tuple[list[list[Matcher]], int, int]:
        p = await api.params(request)
        start = api.parse_time(api.first(p, "start") or "", "start") if api.first(p, "start") else MIN_TIME
        end = api.parse_time(api.first(p, "end") or "", "end") if api.first(p, "end") else MAX_TIME
        sets = [parse_matchers(m) for m in p.get("match[]", [])]
        return sets, start, end

    async def series(self, request: web.Request) -> web.Response:
        try:
            sets, start, end = await self._match_and_range(request)
            if not sets:
                raise BadDataError("no match[] parameter provided")
            found = {}
            for ms in sets:
                for s in await self.pool.select(ms, start, end):
                    found[s.labels] = None
            return api.success([lb.to_dict() for lb in sorted(found)])
        except AthensError as e:
            return api.error_response(e)

    async def labels(self, request: web.Request) -> web.Response:
        try:
            sets, start, end = await self._match_and_range(request)
            names: set[str] = set()
            for ms in sets or [[]]:
                names.update(await self.pool.label_names(ms, start, end))
            return api.success(sorted(names))
        except AthensError as e:
            return api.error_response(e)

    async def label_values(self, request: web.Request) -> web.Response:
        try:
            name = request.match_info["name"]
            sets, start, end = await self._match_and_range(request)
            values: set[str] = set()
            for ms in sets or [[]]:
                values.update(await self.pool.label_values(name, ms, start, end))
            return api.success(sorted(values))
        except AthensError as e:
            return api.error_response(e)

    # --- status ------------------------------------------------------------

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="Athens is Healthy.\n")

    async def ready(self, request: web.Request) -> web.Response:
        if await self.pool.ping_all():
            return web.Response(text="Athens is Ready.\n")
        return web.Response(status=503, text="Service Unavailable\n")

    async def buildinfo(self, request: web.Request) -> web.Response:
        return api.success(
            {
                "version": athens.__version__,
                "revision": "",
                "branch": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": "",
            }
        )


def _required(p: dict[str, list[str]], name: str) -> str:
    v = api.first(p, name)
    if v is None or v == "":
        raise BadDataError(f'invalid parameter "{name}": cannot parse "" to a valid timestamp'
                           if name != "step" else 'invalid parameter "step": cannot parse "" to a valid duration')
    return v


def render_result(result: QueryResult) -> web.Response:
    kind = result.result_type
    if kind == "vector":
        data = api.render_vector(result.value)
    elif kind == "matrix":
        data = api.render_matrix(result.value)
    elif kind == "scalar":
        data = api.render_scalar(*result.value)
    else:
        data = api.render_string(*result.value)
    return api.success_raw(data, result.warnings, result.infos)


def build_app(router: Router) -> web.Application:
    app = web.Application(client_max_size=router.ingest.max_body)
    r = app.router
    r.add_post("/api/v1/write", router.ingest.write)
    for path, handler in (
        ("/api/v1/query", router.query),
        ("/api/v1/query_range", router.query_range),
        ("/api/v1/series", router.series),
        ("/api/v1/labels", router.labels),
    ):
        r.add_get(path, handler)
        r.add_post(path, handler)
    r.add_get("/api/v1/label/{name}/values", router.label_values)
    r.add_get("/api/v1/status/buildinfo", router.buildinfo)
    r.add_get("/-/healthy", router.healthy)
    r.add_get("/-/ready", router.ready)
    return app


async def run_router(cfg: ServeConfig) -> None:
    Engine.warm_up()
    if cfg.workers <= 0:
        raise ValueError("the router needs the resolved worker count")
    pool = ShardPool([cfg.socket_path(i) for i in range(cfg.workers)])
    router = Router(cfg, pool)
    runner = web.AppRunner(build_app(router), access_log=None, handle_signals=False)
    await runner.setup()
    host, port = cfg.host_port
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("router listening", extra=kv(address=f"{host}:{port}", pid=os.getpid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("router stopping")
    await runner.cleanup()
    await pool.close()

