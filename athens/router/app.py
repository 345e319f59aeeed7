"""The router process: the Prometheus HTTP API in front of the shard workers.

Endpoints, parameters, status codes and errorTypes follow Prometheus'
web/api/v1 so that Grafana, promtool and Prometheus itself (remote read)
work unchanged. Handlers live here (queries, series and labels), in
status.py (/api/v1/status/*), remote_read.py, metrics.py (/metrics) and the
static query page in athens/ui; federate.py renders /federate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from athens import heap, kernels
from athens.config import META_FILE, ServeConfig, byte_size, cors_origin, duration_ms
from athens.errors import AdminDisabledError, AthensError, BadDataError, ExecutionError
from athens.log import kv
from athens.model.matchers import Matcher
from athens.query import ast
from athens.query.engine import Engine
from athens.query.parser import parse
from athens.query.printer import format_expr
from athens.query.values import QueryResult
from athens.router import api, federate, scatter
from athens.router.ingest import Ingest
from athens.router.metrics import Metrics, collect, render_text, self_scrape_loop
from athens.router.remote_read import RemoteRead
from athens.router.scatter import ScatterQuerier, ShardPool
from athens.router.status import Status
from athens.router.translate import translate
from athens.wire import compiled, remote_read

log = logging.getLogger("athens.router")

# Time range used by /series and label endpoints when the client gives none
# (Prometheus' MinTime/MaxTime, rounded to whole seconds).
MIN_TIME = api.TIME_MIN_MS // 1000 * 1000
MAX_TIME = api.TIME_MAX_MS // 1000 * 1000

TRUNCATED_WARNING = "results truncated due to limit"
# Results of more points than this are rendered off the event loop.
INLINE_RENDER_POINTS = 20_000
METRICS_KEY = web.AppKey("metrics", Metrics)
QUIET_KEY = web.AppKey("quiet", heap.QuietTrim)
# Requests that come all the time whether anyone queries or not: they do not
# hold off giving the free heap back (heap.QuietTrim).
WRITE_ROUTE = "/api/v1/write"
BACKGROUND_ROUTES = frozenset({WRITE_ROUTE, "/metrics", "/-/healthy", "/-/ready"})


class Router:
    """Request handlers; holds the shard pool, the engine and the router's counters."""

    def __init__(self, cfg: ServeConfig, pool: ShardPool) -> None:
        self.cfg = cfg
        self.pool = pool
        self.querier = ScatterQuerier(pool)
        self.lookback_ms = duration_ms(cfg.lookback_delta)
        self.timeout_ms = duration_ms(cfg.query_timeout)
        self.engine = Engine.from_config(cfg)
        self.ingest = Ingest.from_config(pool, cfg)
        self.remote_read = RemoteRead(pool, byte_size(cfg.max_body_bytes),
                                      byte_size(cfg.max_decompressed_bytes), cfg.query_max_samples)
        self.status = Status(cfg, pool)
        self.metrics = Metrics()
        self.max_series = cfg.api_max_series
        self.max_range_ms = duration_ms(cfg.api_max_range)
        self.run_dir = cfg.data_dir / "run"

    # --- queries ---------------------------------------------------------

    def _engine(self, p: dict[str, list[str]]) -> Engine:
        """The engine, or a copy with this request's timeout / lookback_delta."""
        timeout_ms, lookback_ms = self.timeout_ms, self.lookback_ms
        text = api.first(p, "timeout")
        if text:
            timeout_ms = min(timeout_ms, api.parse_duration_param(text, "timeout"))
        text = api.first(p, "lookback_delta")
        if text:
            try:
                lookback_ms = api.parse_duration_param(text, "lookback_delta")
            except BadDataError as e:
                raise BadDataError(f"error parsing lookback delta duration: {e}") from None
            if lookback_ms <= 0:
                lookback_ms = self.lookback_ms
        if (timeout_ms, lookback_ms) == (self.timeout_ms, self.lookback_ms):
            return self.engine
        return self.engine.with_limits(lookback_ms, timeout_ms / 1000)

    async def query(self, request: web.Request) -> web.StreamResponse:
        p = await api.params(request)
        limit = api.parse_limit(api.first(p, "limit"))
        t = api.parse_time_param(api.first(p, "time"), "time", int(time.time() * 1000))
        engine = self._engine(p)
        expr = api.first(p, "query") or ""
        t0 = time.perf_counter()
        with api.naming_param("query"):
            result = await engine.instant(self.querier, expr, t)
        return await self._render(request, engine, result, limit, _stats(p, t0))

    async def query_range(self, request: web.Request) -> web.StreamResponse:
        p = await api.params(request)
        limit = api.parse_limit(api.first(p, "limit"))
        start = api.parse_time(api.first(p, "start") or "", "start")
        end = api.parse_time(api.first(p, "end") or "", "end")
        if end < start:
            raise BadDataError('invalid parameter "end": end timestamp must not be before start time')
        step = api.parse_step(api.first(p, "step") or "", "step")
        if step <= 0:
            raise BadDataError(
                'invalid parameter "step": zero or negative query resolution step widths are not '
                "accepted. Try a positive integer"
            )
        if (end - start) // step > api.MAX_POINTS_PER_SERIES:
            raise BadDataError(
                "exceeded maximum resolution of 11,000 points per timeseries. "
                "Try decreasing the query resolution (?step=XX)"
            )
        engine = self._engine(p)
        expr = api.first(p, "query") or ""
        t0 = time.perf_counter()
        with api.naming_param("query"):
            result = await engine.range(self.querier, expr, start, end, step)
        return await self._render(request, engine, result, limit, _stats(p, t0))

    @staticmethod
    async def _render(
        request: web.Request, engine: Engine, result: QueryResult, limit: int, stats_t0: float | None
    ) -> web.StreamResponse:
        """The answer as one body, or, when big, streamed: made piece by piece
        on the engine's low-priority query thread, so its JSON neither holds
        up remote writes on the loop nor sits in memory whole."""
        if engine.executor is None or result_points(result) <= INLINE_RENDER_POINTS:
            return render_result(result, limit, stats_t0)
        return await stream_json(request, result_pieces(result, limit, stats_t0), engine.executor)

    async def format_query(self, request: web.Request) -> web.Response:
        p = await api.params(request)
        with api.naming_param("query"):
            return api.success(format_expr(parse(api.first(p, "query") or "")))

    async def parse_query(self, request: web.Request) -> web.Response:
        p = await api.params(request)
        with api.naming_param("query"):
            return api.success(translate(parse(api.first(p, "query") or "")))

    # --- series and labels ------------------------------------------------------

    async def _match_and_range(
        self, p: dict[str, list[str]]
    ) -> tuple[list[list[Matcher]], int, int]:
        start_text, end_text = api.first(p, "start"), api.first(p, "end")
        start = api.parse_time_param(start_text, "start", MIN_TIME)
        end = api.parse_time_param(end_text, "end", MAX_TIME)
        if self.max_range_ms > 0 and end - start > self.max_range_ms:
            if start_text:
                raise BadDataError(
                    f"the time range from start to end is longer than --api-max-range={self.cfg.api_max_range}"
                )
            start = (end if end_text else int(time.time() * 1000)) - self.max_range_ms
        sets = api.parse_match_params(p.get("match[]", []))
        return sets, start, end

    def _bound(self, items: list[Any], limit: int, what: str) -> tuple[list[Any], list[str]]:
        """Apply the request's `limit` (truncate, warn) and --api-max-series (refuse)."""
        if limit > 0 and (self.max_series == 0 or limit <= self.max_series):
            if len(items) > limit:
                return items[:limit], [TRUNCATED_WARNING]
            return items, []
        if self.max_series and len(items) > self.max_series:
            raise ExecutionError(
                f"more than --api-max-series={self.max_series} {what} match; narrow match[], the "
                "time range, or pass limit"
            )
        return items, []

    async def series(self, request: web.Request) -> web.Response:
        p = await api.params(request)
        if not p.get("match[]"):
            raise BadDataError("no match[] parameter provided")
        limit = api.parse_limit(api.first(p, "limit"))
        with api.naming_param("match[]"):  # in this API only, as Prometheus
            sets, start, end = await self._match_and_range(p)
        cap = min(x for x in (limit, self.max_series) if x > 0) if (limit or self.max_series) else 0
        runs = [(await self.pool.series_labels(ms, start, end, cap + 1 if cap else 0))[0] for ms in sets]
        found = runs[0] if len(runs) == 1 else sorted(set().union(*runs))
        out, warnings = self._bound(found, limit, "series")
        # Label sets are strings only (here and below): orjson writes what
        # json.dumps would, in C.
        return api.success_raw(orjson.dumps([dict(zip(it, it)) for it in map(iter, out)]), warnings)

    async def labels(self, request: web.Request) -> web.Response:
        p = await api.params(request)
        limit = api.parse_limit(api.first(p, "limit"))
        sets, start, end = await self._match_and_range(p)
        names: set[str] = set()
        for ms in sets or [[]]:
            names.update(await self.pool.label_names(ms, start, end))
        out, warnings = self._bound(sorted(names), limit, "label names")
        return api.success_raw(orjson.dumps(out), warnings)

    async def label_values(self, request: web.Request) -> web.Response:
        # From the raw path: the router leaves escapes that are not UTF-8
        # (`%FF`) as they are, which would read as a valid name.
        raw = urllib.parse.unquote_to_bytes(request.rel_url.raw_parts[-2])
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            raise BadDataError(f'invalid label name: "{raw.decode(errors="backslashreplace")}"') from None
        if name.startswith("U__"):
            name = _unescape_label_name(name)
        api.check_label_name(name)
        p = await api.params(request)
        limit = api.parse_limit(api.first(p, "limit"))
        sets, start, end = await self._match_and_range(p)
        values: set[str] = set()
        for ms in sets or [[]]:
            values.update(await self.pool.label_values(name, ms, start, end))
        out, warnings = self._bound(sorted(values), limit, "label values")
        return api.success_raw(orjson.dumps(out), warnings)

    async def federate(self, request: web.Request) -> web.Response:
        """Prometheus' /federate (athens/router/federate.py); errors in plain text, as there."""
        try:
            p = await api.params(request)
            sets = api.parse_selectors(p.get("match[]", []))
            now = int(time.time() * 1000)
            found = [await self.querier.select(ms, now - self.lookback_ms, now) for ms in sets]
            rows, ts, values = federate.newest_samples(scatter.merge_series(found))
            self._bound(rows, 0, "series")
        except AthensError as e:
            return api.text_error_response(e)
        return web.Response(body=federate.render(rows, ts, values), headers={"Content-Type": federate.CONTENT_TYPE})

    # --- metadata and what Athens does not have --------------------------------------

    async def metadata(self, request: web.Request) -> web.Response:
        p = await api.params(request)
        limit = _int_param(api.first(p, "limit"), "limit")
        per_metric = _int_param(api.first(p, "limit_per_metric"), "limit_per_metric")
        store = self.ingest.metadata  # fed by the write path from remote-write metadata
        return api.success(store.metadata(api.first(p, "metric"), max(limit, 0), max(per_metric, 0)))

    async def query_exemplars(self, request: web.Request) -> web.Response:
        p = await api.params(request)
        start = api.parse_time_param(api.first(p, "start"), "start", MIN_TIME)
        end = api.parse_time_param(api.first(p, "end"), "end", MAX_TIME)
        if end < start:
            raise BadDataError("end timestamp must not be before start timestamp")
        expr = parse(api.first(p, "query") or "")
        selectors = [node.matchers for node in ast.walk(expr) if isinstance(node, ast.VectorSelector)]
        if not selectors:
            return web.Response(status=204)  # as Prometheus answers an expression without selectors
        found = await self.pool.select_exemplars(selectors, start, end)
        return api.success_raw(b"[" + b",".join(
            b'{"seriesLabels":%s,"exemplars":[%s]}' % (orjson.dumps(series.to_dict()), b",".join(
                b'{"labels":%s,"value":"%s","timestamp":%s}'
                % (orjson.dumps(lb.to_dict()), api.fmt_sample(v).encode(), api.fmt_ts(t).encode())
                for lb, t, v in held))
            for series, held in found) + b"]")

    async def targets(self, request: web.Request) -> web.Response:
        return api.success({"activeTargets": [], "droppedTargets": [], "droppedTargetCounts": {}})

    async def rules(self, request: web.Request) -> web.Response:
        return api.success({"groups": []})

    async def alerts(self, request: web.Request) -> web.Response:
        return api.success({"alerts": []})

    async def alertmanagers(self, request: web.Request) -> web.Response:
        return api.success({"activeAlertmanagers": [], "droppedAlertmanagers": []})

    async def targets_metadata(self, request: web.Request) -> web.Response:
        return api.success([])

    # --- node status ---------------------------------------------------------------------

    async def force_flush(self, request: web.Request) -> web.Response:
        """Seal every worker's head into segment files now (VictoriaMetrics'
        name for the same thing): before a backup or a disk-size measurement."""
        await self.pool.flush()
        return web.Response(text="flushed\n")

    async def snapshot(self, request: web.Request) -> web.Response:
        """Prometheus' /api/v1/admin/tsdb/snapshot: <data-dir>/snapshots/<name>,
        a data directory `athens serve --data-dir` opens as it is. Segment
        files are hard-linked (no copy; they never change), so it costs
        disk only as the originals are compacted or deleted; the head is
        sealed into it first unless skip_head."""
        if self.cfg.admin_api != "on":
            raise AdminDisabledError()
        p = await api.params(request)
        skip = api.first(p, "skip_head")
        with_head = not api.parse_bool_param(skip, "skip_head") if skip else True
        name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{random.getrandbits(63):016x}"
        root = self.cfg.data_dir / "snapshots" / name
        root.mkdir(parents=True)
        try:
            shutil.copyfile(self.cfg.data_dir / META_FILE, root / META_FILE)
            await self.pool.snapshot(root, with_head)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)  # not a snapshot anyone should restore
            raise
        log.info("snapshot taken", extra=kv(name=name, with_head=with_head))
        return api.success({"name": name})

    async def delete_series(self, request: web.Request) -> web.Response:
        """Prometheus' /api/v1/admin/tsdb/delete_series: the samples between
        `start` and `end` (default: all) of every series a match[] selects
        are gone from every answer once each worker has recorded the
        deletion durably (Shard.delete_series)."""
        if self.cfg.admin_api != "on":
            raise AdminDisabledError()
        p = await api.params(request)
        if not p.get("match[]"):
            raise BadDataError("no match[] parameter provided")
        with api.naming_param("match[]"):
            sets = api.parse_selectors(p["match[]"])
        start = api.parse_time_param(api.first(p, "start"), "start", api.TIME_MIN_MS)
        end = api.parse_time_param(api.first(p, "end"), "end", api.TIME_MAX_MS)
        deleted = 0
        for ms in sets:
            deleted += await self.pool.delete_series(ms, start, end)
        log.info("series deleted", extra=kv(series=deleted, match=p["match[]"], start=start, end=end))
        return web.Response(status=204)

    async def clean_tombstones(self, request: web.Request) -> web.Response:
        """Prometheus' /api/v1/admin/tsdb/clean_tombstones: what
        delete_series deleted is removed from disk now, not when compaction
        gets to it (Sealer.clean_tombstones)."""
        if self.cfg.admin_api != "on":
            raise AdminDisabledError()
        await self.pool.clean_tombstones()
        log.info("tombstones cleaned")
        return web.Response(status=204)

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="Athens is Healthy.\n")

    async def ready(self, request: web.Request) -> web.Response:
        if await self.pool.ping_all():
            return web.Response(text="Athens is Ready.\n")
        return web.Response(status=503, text="Service Unavailable\n")

    async def prom_metrics(self, request: web.Request) -> web.Response:
        fams = await collect(self.metrics, self.pool, self.run_dir, self.ingest, self.engine)
        return web.Response(text=render_text(fams), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")

    # --- the query page --------------------------------------------------------------

    async def ui(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("file") or "index.html"
        if name not in UI_FILES:
            raise web.HTTPNotFound()
        data = resources.files("athens.ui").joinpath(name).read_bytes()
        return web.Response(body=data, content_type=UI_FILES[name], charset="utf-8")


UI_FILES = {"index.html": "text/html", "app.js": "application/javascript", "style.css": "text/css"}


def _unescape_label_name(name: str) -> str:
    """Prometheus 3's `U__` escaping of UTF-8 label names in URL paths."""
    out, i, s = [], 0, name[3:]
    while i < len(s):
        if s[i] == "_" and i + 1 < len(s) and s[i + 1] == "_":
            out.append("_")
            i += 2
        elif s[i] == "_":
            j = s.find("_", i + 1)
            if j < 0:
                return name
            try:
                out.append(chr(int(s[i + 1 : j], 16)))
            except ValueError:
                return name
            i = j + 1
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _int_param(text: str | None, name: str) -> int:
    if not text:
        return -1
    try:
        return int(text)
    except ValueError:
        raise BadDataError(f"{name} must be a number") from None


def _stats(p: dict[str, list[str]], t0: float) -> float | None:
    """`stats=all`: when the query started (its answer then carries timings)."""
    return t0 if api.first(p, "stats") else None


def result_points(result: QueryResult) -> int:
    if result.result_type == "matrix":
        return sum(len(t) for _, t, _ in result.value)
    return len(result.value) if result.result_type == "vector" else 1


def render_result(result: QueryResult, limit: int = 0, stats_t0: float | None = None) -> web.Response:
    body = b"".join(result_pieces(result, limit, stats_t0))
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def result_pieces(result: QueryResult, limit: int = 0, stats_t0: float | None = None) -> Iterator[bytes]:
    """A query's answer (the success envelope around its value) as JSON in
    pieces, rendered as they are asked for; with the "stats" of a query
    started at stats_t0 if given."""
    kind = result.result_type
    warnings = list(result.warnings)
    value = result.value
    if limit > 0 and kind in ("vector", "matrix") and len(value) > limit:
        value = value[:limit]
        warnings.append(TRUNCATED_WARNING)
    if kind == "vector":
        data = api.vector_pieces(value)
    elif kind == "matrix":
        data = api.matrix_pieces(value)
    elif kind == "scalar":
        data = iter([api.render_scalar(*value)])
    else:
        data = iter([api.render_string(*value)])
    if stats_t0 is not None:
        data = _with_stats(data, stats_t0)
    return api.success_pieces(data, warnings, result.infos)


def _with_stats(data: Iterator[bytes], t0: float) -> Iterator[bytes]:
    """`stats=all`: the data object (JSON in pieces) with Prometheus' "stats"
    field added last, timed once the rest is rendered (timings only; the
    engine does not count samples, and Athens has no query queue)."""
    last = next(data)
    for piece in data:
        yield last
        last = piece
    total = time.perf_counter() - t0
    timings = {"evalTotalTime": total, "execQueueTime": 0, "execTotalTime": total}
    yield bytes(last[:-1]) + b',"stats":' + orjson.dumps({"timings": timings}) + b"}"


async def stream_json(request: web.Request, pieces: Iterator[bytes], executor: Executor | None) -> web.StreamResponse:
    """Send JSON that comes in pieces as it is produced (chunked, gzipped
    as one stream if the client accepts it), each piece made and compressed
    on `executor`: the router holds one piece of a big answer at a time."""
    resp = web.StreamResponse(headers={"Vary": "Accept-Encoding"})
    resp.content_type = "application/json"
    resp.charset = "utf-8"
    if api.accepts_gzip(request.headers.get("Accept-Encoding", "")):
        resp.headers["Content-Encoding"] = "gzip"
        pieces = api.gzip_pieces(pieces)
    loop = asyncio.get_running_loop()
    await resp.prepare(request)
    try:
        while (piece := await loop.run_in_executor(executor, next, pieces, None)) is not None:
            await resp.write(piece)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as e:
        raise AnswerCutShort(f"{type(e).__name__}: {e}") from e
    await resp.write_eof()
    return resp


class AnswerCutShort(Exception):
    """A streamed answer failed after its first bytes were sent: no error
    answer can follow them, so the connection is closed instead (aiohttp
    does that for an exception once a response has started), and the
    client sees a truncated body."""


@web.middleware
async def observe(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count and time every request by route (for /metrics); AthensErrors become
    the API's error answer, unexpected errors 500 internal."""
    t0 = time.perf_counter()
    code = 500
    try:
        resp = await handler(request)
        code = resp.status
        return resp
    except web.HTTPException as e:
        code = e.status
        raise
    except AthensError as e:  # every handler's errors, mapped in api.error_status
        resp = api.error_response(e)
        code = resp.status
        return resp
    except (asyncio.CancelledError, ConnectionError):
        code = 499  # the client went away (Prometheus' "canceled")
        raise
    except AnswerCutShort:
        code = 500
        raise
    except Exception as e:  # a bug: answer in the API's format, keep serving
        log.exception("request failed", extra=kv(path=request.path))
        resp = api.error_response(AthensError(f"{type(e).__name__}: {e}"))
        code = resp.status
        return resp
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "other"
        metrics = request.app[METRICS_KEY]
        metrics.observe_http(name, code, time.perf_counter() - t0)
        if name == WRITE_ROUTE:
            request.app[QUIET_KEY].appended()
        elif name not in BACKGROUND_ROUTES:
            request.app[QUIET_KEY].query()


@web.middleware
async def gzip_answers(request: web.Request, handler: Any) -> web.StreamResponse:
    """JSON and text answers (/federate, /metrics) gzipped for clients that
    accept it (Grafana and Prometheus' own clients and scrapes ask for it);
    tiny ones are left as they are."""
    resp = await handler(request)
    if (
        isinstance(resp, web.Response)
        and resp.content_type in ("application/json", "text/plain")
        and isinstance(resp.body, bytes)
        and len(resp.body) >= api.GZIP_MIN_BYTES
        and "Content-Encoding" not in resp.headers
    ):
        resp.headers["Vary"] = "Accept-Encoding"
        if api.accepts_gzip(request.headers.get("Accept-Encoding", "")):
            resp.body = await api.gzip_body(resp.body)
            resp.headers["Content-Encoding"] = "gzip"
    return resp


# Go's net/http, which Prometheus serves with, reads up to 1 MiB of request
# line and headers (aiohttp's default, 8 KiB a line, refused GET dashboards
# whose selectors list many alternatives) and any number of form fields (a
# POST of 2,000 match[]; aiohttp 3.14.4+ refuses more than 1,000 by default).
MAX_REQUEST_HEAD_BYTES = 1 << 20
MAX_FORM_FIELDS = 1 << 20


# Prometheus' CORS answer (web/api/v1 SetCORS), for pages of another origin
# that read the API from a browser.
CORS_HEADERS = {
    "Access-Control-Allow-Headers": "Accept, Authorization, Content-Type, Origin",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Expose-Headers": "Date",
    "Vary": "Origin",
}


def cors(origins: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An on_response_prepare hook (streamed answers too) that adds the CORS
    headers to API answers for requests with an Origin: `*` for the default
    '.*', the origin itself where it matches, only the rest otherwise."""
    allowed = None if origins == ".*" else cors_origin(origins)

    async def add(request: web.Request, resp: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if not origin or not request.path.startswith("/api/v1/"):
            return
        resp.headers.update(CORS_HEADERS)
        if allowed is None:
            resp.headers["Access-Control-Allow-Origin"] = "*"
        elif allowed.fullmatch(origin):
            resp.headers["Access-Control-Allow-Origin"] = origin

    return add


@web.middleware
async def preflight(request: web.Request, handler: Any) -> web.StreamResponse:
    """204 to OPTIONS on any API path, what a browser asks before a
    cross-origin POST (a middleware, not a route: a catch-all route would
    turn unknown API paths from 404 into 405)."""
    if request.method == "OPTIONS" and request.path.startswith("/api/v1/"):
        return web.Response(status=204)
    return await handler(request)


def build_app(router: Router, quiet: heap.QuietTrim | None = None) -> web.Application:
    app = web.Application(
        client_max_size=router.ingest.max_body, client_max_fields=MAX_FORM_FIELDS,
        middlewares=[observe, preflight, gzip_answers],
    )
    app.on_response_prepare.append(cors(router.cfg.cors_origin))
    app[METRICS_KEY] = router.metrics
    app[QUIET_KEY] = quiet or heap.QuietTrim()
    r = app.router
    r.add_post("/api/v1/write", router.ingest.write)
    r.add_post("/api/v1/read", router.remote_read.read)
    st = router.status
    for path, handler in (
        ("/api/v1/query", router.query),
        ("/api/v1/query_range", router.query_range),
        ("/api/v1/series", router.series),
        ("/api/v1/labels", router.labels),
        ("/api/v1/format_query", router.format_query),
        ("/api/v1/parse_query", router.parse_query),
        ("/api/v1/query_exemplars", router.query_exemplars),
        ("/api/v1/status/tsdb", st.tsdb),
    ):
        r.add_get(path, handler)
        r.add_post(path, handler)
    for path, handler in (
        ("/api/v1/label/{name}/values", router.label_values),
        ("/api/v1/metadata", router.metadata),
        ("/api/v1/targets", router.targets),
        ("/api/v1/targets/metadata", router.targets_metadata),
        ("/api/v1/rules", router.rules),
        ("/api/v1/alerts", router.alerts),
        ("/api/v1/alertmanagers", router.alertmanagers),
        ("/api/v1/status/buildinfo", st.buildinfo),
        ("/api/v1/status/runtimeinfo", st.runtimeinfo),
        ("/api/v1/status/flags", st.flags),
        ("/api/v1/status/config", st.config),
        ("/api/v1/status/walreplay", st.walreplay),
        ("/metrics", router.prom_metrics),
        ("/federate", router.federate),
        ("/-/healthy", router.healthy),
        ("/internal/force_flush", router.force_flush),
        ("/-/ready", router.ready),
        ("/", router.ui),
        ("/graph", router.ui),
        ("/ui/{file}", router.ui),
    ):
        r.add_get(path, handler)
    r.add_post("/internal/force_flush", router.force_flush)
    for method in (r.add_post, r.add_put):
        method("/api/v1/admin/tsdb/snapshot", router.snapshot)
        method("/api/v1/admin/tsdb/delete_series", router.delete_series)
        method("/api/v1/admin/tsdb/clean_tombstones", router.clean_tombstones)
    return app


def warm_up() -> None:
    """Compile (or load from the cache) every kernel the router runs, before it serves."""
    for warm in (Engine.warm_up, remote_read.warm_up, compiled.warm_up, api.warm_up, scatter.warm_up):
        warm()


async def trim_when_quiet(quiet: heap.QuietTrim, every_s: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        quiet.tick()


async def run_router(cfg: ServeConfig) -> None:
    heap.keep_freed_memory()
    kernels.warm_up(warm_up)
    if cfg.workers <= 0 or cfg.placement == "auto":
        raise ValueError("the router needs the resolved worker count and placement")
    pool = ShardPool([cfg.socket_path(i) for i in range(cfg.workers)], cfg.placement)
    router = Router(cfg, pool)
    heap.settle()
    # handler_cancellation: a query whose client went away is cancelled, and
    # with it its shard evaluations (CANCEL frames, athens/router/scatter.py).
    app = build_app(router)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, handler_cancellation=True,
        max_line_size=MAX_REQUEST_HEAD_BYTES, max_field_size=MAX_REQUEST_HEAD_BYTES,
    )
    await runner.setup()
    host, port = cfg.host_port
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("router listening", extra=kv(address=f"{host}:{port}", pid=os.getpid()))
    scrape_ms = duration_ms(cfg.self_scrape_interval)
    scraper = None
    if scrape_ms > 0:
        scraper = asyncio.create_task(
            self_scrape_loop(router.metrics, pool, router.run_dir, scrape_ms / 1000, f"{host}:{port}",
                             router.ingest, router.engine)
        )
    trims = asyncio.create_task(trim_when_quiet(app[QUIET_KEY]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("router stopping")
    trims.cancel()
    if scraper is not None:
        scraper.cancel()
    await runner.cleanup()
    await pool.close()
