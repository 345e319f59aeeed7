"""/api/v1/status/*: what Prometheus' status pages and Grafana read.

Shapes follow Prometheus' API; the values describe Athens (its flags, its
configuration, cardinality over all workers).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

import athens
from athens.config import ServeConfig
from athens.errors import AthensError, BadDataError
from athens.router import api
from athens.router.scatter import ShardPool

# The Prometheus release whose HTTP API and PromQL semantics Athens follows.
PROMETHEUS_API_VERSION = "3.0.0"

# Entries per list of /api/v1/status/tsdb when `limit` is not given (Prometheus' default).
TSDB_DEFAULT_LIMIT = 10


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def top(counts: dict[str, int], limit: int) -> list[dict[str, Any]]:
    """The `limit` largest entries, largest first, ties by name (Prometheus' order)."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"name": k, "value": v} for k, v in items]


def cardinality(per_worker: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """Merge the workers' postings statistics into the /status/tsdb answer.

    Series are disjoint between workers, so series counts add up; distinct
    values of a label are the union of the workers' values. Memory by label
    name is Prometheus' estimate: sum over values of len(value) x series.
    """
    pairs: dict[str, dict[str, int]] = {}
    for st in per_worker:
        for name, values in st["pairs"].items():
            dst = pairs.setdefault(name, {})
            for v, n in values.items():
                dst[v] = dst.get(v, 0) + n
    by_metric = pairs.get("__name__", {})
    value_counts = {name: len(vals) for name, vals in pairs.items()}
    memory = {name: sum(len(v.encode()) * n for v, n in vals.items()) for name, vals in pairs.items()}
    pair_counts = {f"{name}={v}": n for name, vals in pairs.items() for v, n in vals.items()}
    mins = [st["min_time"] for st in per_worker if st.get("min_time") is not None]
    maxs = [st["max_time"] for st in per_worker if st.get("max_time") is not None]
    return {
        "headStats": {
            "numSeries": sum(st["series"] for st in per_worker),
            "numLabelPairs": sum(len(v) for v in pairs.values()),
            "chunkCount": sum(st.get("chunks", 0) for st in per_worker),
            "minTime": min(mins) if mins else 9223372036854775807,
            "maxTime": max(maxs) if maxs else -9223372036854775808,
        },
        "seriesCountByMetricName": top(by_metric, limit),
        "labelValueCountByLabelName": top(value_counts, limit),
        "memoryInBytesByLabelName": top(memory, limit),
        "seriesCountByLabelValuePair": top(pair_counts, limit),
    }


class Status:
    def __init__(self, cfg: ServeConfig, pool: ShardPool) -> None:
        self.cfg = cfg
        self.pool = pool
        self.started = time.time()

    async def buildinfo(self, request: web.Request) -> web.Response:
        # Clients pick features by this version (Grafana does): Athens
        # answers the API and PromQL of Prometheus 3, and says which Athens
        # it is in a field of its own.
        return api.success({
            "version": PROMETHEUS_API_VERSION,
            "athensVersion": athens.__version__,
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
        })

    async def runtimeinfo(self, request: web.Request) -> web.Response:
        return api.success({
            "startTime": _rfc3339(self.started),
            "CWD": os.getcwd(),
            "reloadConfigSuccess": True,
            "lastConfigTime": _rfc3339(self.started),
            "corruptionCount": 0,
            "goroutineCount": 0,
            "GOMAXPROCS": os.cpu_count() or 1,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": "unlimited",
        })

    def _flags(self) -> dict[str, str]:
        return {f.name.replace("_", "-"): str(getattr(self.cfg, f.name)) for f in fields(self.cfg)}

    async def flags(self, request: web.Request) -> web.Response:
        return api.success(self._flags())

    async def config(self, request: web.Request) -> web.Response:
        lines = [f"{k}: {_yaml_scalar(v)}" for k, v in sorted(self._flags().items())]
        return api.success({"yaml": "\n".join(lines) + "\n"})

    async def tsdb(self, request: web.Request) -> web.Response:
        p = await api.params(request)
        text = api.first(p, "limit")
        limit = TSDB_DEFAULT_LIMIT
        if text:
            try:
                limit = int(text)
            except ValueError:
                limit = 0
            if limit <= 0:
                raise BadDataError("limit must be a positive number")
        return api.success(cardinality(await self.pool.postings_stats(), limit))

    async def walreplay(self, request: web.Request) -> web.Response:
        # A worker binds its socket only after replaying its WAL: progress is
        # the number of workers that answer.
        ready = 0
        for c in self.pool.clients:
            try:
                await c.request(_ping, timeout=0.2)
                ready += 1
            except AthensError:
                pass
        return api.success({"min": 0, "max": self.pool.size, "current": ready})


def _ping(req_id: int) -> Any:
    from athens.shards.ipc import Frame, Op  # noqa: PLC0415

    return Frame(Op.PING, req_id, {})


def _yaml_scalar(v: str) -> str:
    if v == "" or any(c in v for c in ":#{}[],&*!|>'\"%@`") or v.strip() != v:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return v
