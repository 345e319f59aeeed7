"""The fixed query list, timing it, and diffing answers against Prometheus.

Every PromQL query runs twice per system: as an instant query at the newest
sample and as a range query over the data (start 10 min in, so rate windows
are full), start and end aligned to the step, which VictoriaMetrics does
anyway. The metadata endpoints run over the whole data range. Latency is the
client's wall time for the full HTTP exchange, body read included.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np


@dataclass(frozen=True, slots=True)
class Query:
    """One benchmark query: a PromQL expression, or a metadata endpoint."""

    name: str
    kind: str  # "promql" | "series" | "labels" | "label_values"
    expr: str = ""  # PromQL, the series selector, or the label name


QUERIES: tuple[Query, ...] = (
    Query("cpu_busy_by_instance", "promql",
          'sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))'),
    Query("cpu_rate_total", "promql", "sum(rate(node_cpu_seconds_total[5m]))"),
    Query("latency_p90_by_handler", "promql",
          "histogram_quantile(0.9, sum by (le, handler) (rate(http_request_duration_seconds_bucket[5m])))"),
    Query("topk_net_receive", "promql", "topk(5, rate(node_network_receive_bytes_total[5m]))"),
    Query("load1_avg_over_time", "promql", "avg_over_time(node_load1[10m])"),
    Query("mem_available_max_over_time", "promql", "max_over_time(node_memory_MemAvailable_bytes[10m])"),
    Query("scrape_duration_p95_over_time", "promql", "quantile_over_time(0.95, scrape_duration_seconds[10m])"),
    Query("disk_read_regex", "promql",
          'sum by (instance, device) (rate(node_disk_read_bytes_total{device=~"sd.*|nvme.*"}[5m]))'),
    Query("fs_avail_ratio_on", "promql",
          "node_filesystem_avail_bytes / on(instance, device, mountpoint) node_filesystem_size_bytes"),
    Query("mean_latency_on", "promql",
          "sum by (instance, handler) (rate(http_request_duration_seconds_sum[5m]))"
          " / on(instance, handler) sum by (instance, handler) (rate(http_request_duration_seconds_count[5m]))"),
    Query("net_transmit_subquery", "promql",
          'max_over_time(rate(node_network_transmit_bytes_total{device="eth0"}[1m])[10m:1m])'),
    Query("ctx_switch_increase_by_region", "promql",
          "sum by (region) (increase(node_context_switches_total[10m]))"),
    Query("mem_used_by_region", "promql",
          "sum by (region) (node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)"),
    Query("up_count_by_job", "promql", "count by (job, region) (up)"),
    Query("single_series", "promql", 'node_load5{instance="host-0001:9100"}'),
    Query("series_net_receive", "series", "node_network_receive_bytes_total"),
    Query("labels", "labels"),
    Query("label_values_device", "label_values", "device"),
    Query("label_values_name", "label_values", "__name__"),
)


@dataclass(frozen=True, slots=True)
class Window:
    """Where the queries look: instant time, range start/end/step (seconds)."""

    instant: float
    start: int
    end: int
    step: int
    data_start: float
    data_end: float

    @staticmethod
    def for_data(start_ms: int, end_ms: int, interval_ms: int = 15_000, points: int = 100) -> Window:
        span_s = (end_ms - start_ms) / 1000.0
        q_start = start_ms / 1000.0 + min(600.0, span_s / 2)
        step_unit = interval_ms // 1000
        step = max(step_unit, int(round((end_ms / 1000.0 - q_start) / points / step_unit)) * step_unit)
        start = int(math.ceil(q_start / step)) * step
        end = int(math.floor(end_ms / 1000.0 / step)) * step
        return Window(end_ms / 1000.0, start, end, step, start_ms / 1000.0, end_ms / 1000.0)


@dataclass(slots=True)
class Timing:
    """Latencies and the first answer of one query in one mode on one system."""

    query: str
    mode: str  # "instant" | "range" | "api"
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    result: object = None  # normalised first answer (not serialised)
    n_series: int = 0
    diff: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        lat = np.array(self.latencies_ms)
        return {
            "query": self.query,
            "mode": self.mode,
            "runs": len(lat),
            "median_ms": float(np.median(lat)) if len(lat) else None,
            "p90_ms": float(np.percentile(lat, 90)) if len(lat) else None,
            "latencies_ms": [round(x, 3) for x in self.latencies_ms],
            "errors": self.errors[:3],
            "result_series": self.n_series,
            "diff_vs_prometheus": self.diff,
        }


def requests_for(q: Query, w: Window) -> list[tuple[str, str, dict[str, str]]]:
    """(mode, path, GET parameters) to time for one query."""
    if q.kind == "promql":
        return [
            ("instant", "/api/v1/query", {"query": q.expr, "time": f"{w.instant:.3f}"}),
            ("range", "/api/v1/query_range",
             {"query": q.expr, "start": str(w.start), "end": str(w.end), "step": str(w.step)}),
        ]
    span = {"start": f"{w.data_start:.3f}", "end": f"{w.data_end:.3f}"}
    if q.kind == "series":
        return [("api", "/api/v1/series", {"match[]": q.expr, **span})]
    if q.kind == "labels":
        return [("api", "/api/v1/labels", span)]
    if q.kind == "label_values":
        return [("api", f"/api/v1/label/{q.expr}/values", span)]
    raise ValueError(f"unknown query kind {q.kind!r}")


def _labels_key(metric: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(metric.items()))


def normalise(payload: dict[str, object]) -> tuple[object, int]:
    """A comparable form of an answer's data, and its number of series."""
    data = payload.get("data")
    if isinstance(data, list):
        if data and isinstance(data[0], dict):  # /api/v1/series
            keys = {_labels_key(m) for m in data}
            return ("set", keys), len(keys)
        return ("set", {str(x) for x in data}), len(data)
    assert isinstance(data, dict)
    rtype = data.get("resultType")
    result = data.get("result")
    if rtype == "vector":
        return ("points", {_labels_key(r["metric"]): {0.0: float(r["value"][1])} for r in result}), len(result)
    if rtype == "matrix":
        return ("points", {_labels_key(r["metric"]): {float(t): float(v) for t, v in r["values"]}
                           for r in result}), len(result)
    if rtype in ("scalar", "string"):
        return ("points", {(): {0.0: float(result[1])}}), 1
    raise ValueError(f"unknown resultType {rtype!r}")


def _rel(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def diff(ref: object, got: object) -> dict[str, object]:
    """How `got` differs from the reference answer (Prometheus')."""
    if ref is None or got is None:
        return {"comparable": False}
    rk, rv = ref  # type: ignore[misc]
    gk, gv = got  # type: ignore[misc]
    if rk != gk:
        return {"comparable": False}
    if rk == "set":
        return {"comparable": True, "same_series": rv == gv, "only_in_reference": len(rv - gv),
                "only_here": len(gv - rv)}
    rkeys, gkeys = set(rv), set(gv)
    out: dict[str, object] = {
        "comparable": True,
        "same_series": rkeys == gkeys,
        "only_in_reference": len(rkeys - gkeys),
        "only_here": len(gkeys - rkeys),
    }
    if rkeys != gkeys:
        # VictoriaMetrics keeps __name__ where Prometheus drops it (e.g. *_over_time):
        # if the sets agree once names are dropped, still compare the values.
        rv2, gv2 = _without_name(rv), _without_name(gv)
        if rv2 is not None and gv2 is not None and set(rv2) == set(gv2):
            out["same_series_ignoring_name"] = True
            rv, gv = rv2, gv2
            rkeys = gkeys = set(rv)
    common = rkeys & gkeys
    max_rel = 0.0
    missing = extra = 0
    for k in common:
        a, b = rv[k], gv[k]
        missing += len(a.keys() - b.keys())
        extra += len(b.keys() - a.keys())
        for t in a.keys() & b.keys():
            max_rel = max(max_rel, _rel(a[t], b[t]))
    out.update({
        "points_only_in_reference": missing,
        "points_only_here": extra,
        "max_rel_diff": max_rel if max_rel != math.inf else "inf",
    })
    return out


def _without_name(points: dict) -> dict | None:
    """The same answer keyed by labels minus __name__, or None if that merges series."""
    out = {tuple(p for p in k if p[0] != "__name__"): v for k, v in points.items()}
    return out if len(out) == len(points) else None


async def run_queries(base_urls: dict[str, str], w: Window, repeats: int, budget_s: float = 120.0,
                      request_timeout_s: float | None = None) -> dict[str, list[Timing]]:
    """Time every query `repeats` times on every system, interleaved: each
    repeat asks the systems one after another, in an order rotated from one
    repeat to the next, so all of them are measured under the same machine
    conditions (one system after the other, the same system's medians moved
    up to 2x between runs, its peers' as much). A system that has used its
    share of budget_s on a query is not asked that query again, and once it
    has used budget_s it is asked nothing more (a slow system ends in
    bounded time)."""
    names = list(base_urls)
    out: dict[str, list[Timing]] = {n: [] for n in names}
    if request_timeout_s is None:
        request_timeout_s = min(60.0, max(budget_s / 2, 5.0))
    n_requests = sum(len(requests_for(q, w)) for q in QUERIES)
    budget_per_query_s = budget_s / n_requests
    total = dict.fromkeys(names, 0.0)
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for q in QUERIES:
            for mode, path, form in requests_for(q, w):
                timings = {n: Timing(q.name, mode) for n in names}
                spent = dict.fromkeys(names, 0.0)
                done: set[str] = set()
                for n in names:
                    out[n].append(timings[n])
                    if total[n] > budget_s:
                        timings[n].errors.append(f"not run: the query budget of {budget_s:.0f}s was used up")
                        done.add(n)
                for i in range(repeats):
                    k = i % len(names)
                    for n in names[k:] + names[:k]:
                        if n in done:
                            continue
                        dt = await _time_one(session, base_urls[n] + path, form, timings[n], first=(i == 0))
                        spent[n] += dt
                        total[n] += dt
                        if timings[n].errors or spent[n] > budget_per_query_s:
                            done.add(n)
    return out


async def _time_one(session: aiohttp.ClientSession, url: str, form: dict[str, str], t: Timing,
                    first: bool) -> float:
    """One timed request into t (its latency, or an error); the first answer
    is kept for the comparison. Returns the seconds it took."""
    t0 = time.perf_counter()
    try:
        async with session.get(url, params=form) as resp:
            body = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as e:
        t.errors.append(f"{type(e).__name__}: {e}")
        return time.perf_counter() - t0
    dt = time.perf_counter() - t0
    if status != 200:
        t.errors.append(f"{status}: {body[:300].decode(errors='replace')}")
        return dt
    t.latencies_ms.append(dt * 1000.0)
    if first:
        try:
            t.result, t.n_series = normalise(json.loads(body))
        except (ValueError, KeyError, TypeError) as e:
            t.errors.append(f"unreadable answer: {e}")
    return dt
