"""The router's HTTP handlers over an in-memory pool: limits, bounds, metadata, /metrics."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import snappy
from aiohttp.test_utils import TestClient, TestServer

from athens import heap
from athens.config import ConfigError, ServeConfig
from athens.model.labels import Labels
from athens.model.matchers import Matcher
from athens.model.series import Series
from athens.router.app import Router, build_app
from athens.router.metrics import Family, render_text, to_batch
from athens.router.status import cardinality
from athens.shards.ipc import Frame, Op

T0 = 1_700_000_000_000


class FakeClient:
    """A ShardClient answering PING and STATS like worker 0."""

    index = 0

    async def request(self, make: Any, timeout: float = 5.0) -> Frame:
        req = make(1)
        if req.op is Op.PING:
            return Frame(Op.OK, 1, {"worker": 0, "pid": os.getpid()})
        assert req.op is Op.STATS
        return Frame(Op.OK, 1, {"stats": {"series": 30, "samples_appended": 7, "wal_bytes": 100,
                                          "samples_rejected": {"out_of_order": 2},
                                          "compactions": 3, "compaction_in_progress": True}})


class MemPool:
    """ShardPool's read side over a list of series (one 'worker')."""

    def __init__(self, series: list[Series]) -> None:
        self.series = series
        self.appended: list[Any] = []
        self.clients: list[Any] = [FakeClient()]
        self.placement = "without-name"

    @property
    def size(self) -> int:
        return 1

    def _match(self, ms: Sequence[Matcher], mint: int, maxt: int) -> list[Series]:
        return [s for s in self.series
                if all(m.matches(s.labels.get(m.name)) for m in ms)
                and len(s.ts) and s.ts[0] <= maxt and s.ts[-1] >= mint]

    async def select(self, ms: Sequence[Matcher], mint: int, maxt: int) -> list[Series]:
        out = []
        for s in self._match(ms, mint, maxt):
            keep = (s.ts >= mint) & (s.ts <= maxt)
            if keep.any():
                out.append(Series(s.labels, s.ts[keep], s.values[keep]))
        return sorted(out, key=lambda s: s.labels)

    async def series_labels(self, ms: Sequence[Matcher], mint: int, maxt: int,
                            limit: int = 0) -> tuple[list[tuple[str, ...]], bool]:
        found = sorted(s.labels.flat() for s in self._match(ms, mint, maxt))
        return (found[:limit], True) if limit and len(found) > limit else (found, False)

    async def label_names(self, ms: Sequence[Matcher], mint: int, maxt: int) -> list[str]:
        return sorted({n for s in self._match(ms, mint, maxt) for n, _ in s.labels})

    async def label_values(self, name: str, ms: Sequence[Matcher], mint: int, maxt: int) -> list[str]:
        return sorted({s.labels.get(name) for s in self._match(ms, mint, maxt)} - {""})

    async def append(self, batch: Any) -> dict[str, int]:
        self.appended.append(batch)
        return {}

    async def postings_stats(self) -> list[dict[str, Any]]:
        pairs: dict[str, dict[str, int]] = {}
        for s in self.series:
            for n, v in s.labels:
                pairs.setdefault(n, {})[v] = pairs.setdefault(n, {}).get(v, 0) + 1
        return [{"series": len(self.series), "pairs": pairs, "min_time": T0, "max_time": T0, "chunks": 1}]


def _pool(n: int = 30) -> MemPool:
    ts = T0 + np.arange(10, dtype=np.int64) * 15_000
    return MemPool([Series(Labels([("__name__", "m"), ("i", f"{k:02d}"), ("odd", str(k % 2))]), ts,
                           np.full(10, float(k))) for k in range(n)])


def run(pool: MemPool, coro_fn: Any, tmp_path: Path, **cfg: Any) -> Any:
    async def main() -> Any:
        # MemPool answers selects, not EVAL frames: nothing is pushed down.
        config = replace(ServeConfig(), data_dir=tmp_path, workers=1, **{"query_pushdown": "off", **cfg})
        router = Router(config, pool)  # type: ignore[arg-type]
        client = TestClient(TestServer(build_app(router)))
        await client.start_server()
        try:
            return await coro_fn(client, router)
        finally:
            await client.close()

    return asyncio.run(main())


async def _get(client: TestClient, path: str, **params: str) -> tuple[int, Any]:
    r = await client.get(path, params=params)
    return r.status, json.loads(await r.text())


def test_series_limit_truncates_with_warning_and_cap_refuses(tmp_path: Path) -> None:
    async def go(client: TestClient, router: Router) -> None:
        status, body = await _get(client, "/api/v1/series", **{"match[]": "m"})
        assert status == 422 and body["errorType"] == "execution" and "--api-max-series=20" in body["error"]
        status, body = await _get(client, "/api/v1/series", **{"match[]": "m", "limit": "5"})
        assert status == 200 and len(body["data"]) == 5
        assert body["warnings"] == ["results truncated due to limit"]
        assert [s["i"] for s in body["data"]] == ["00", "01", "02", "03", "04"]
        status, body = await _get(client, "/api/v1/series", **{"match[]": 'm{odd="1"}'})
        assert status == 200 and len(body["data"]) == 15 and "warnings" not in body
        status, body = await _get(client, "/api/v1/label/i/values", limit="3")
        assert body["data"] == ["00", "01", "02"] and body["warnings"]
        status, body = await _get(client, "/api/v1/label/i/values")
        assert status == 422
        status, body = await _get(client, "/api/v1/labels", **{"match[]": "m"})
        assert body["data"] == ["__name__", "i", "odd"]

    run(_pool(), go, tmp_path, api_max_series=20)


def test_series_of_several_match_sets_are_one_sorted_deduplicated_list(tmp_path: Path) -> None:
    async def go(client: TestClient, router: Router) -> None:
        r = await client.get("/api/v1/series", params=[("match[]", 'm{odd="1"}'), ("match[]", 'm{i=~"0.*"}')])
        body = json.loads(await r.text())
        want = sorted({f"{k:02d}" for k in range(30) if k % 2 or k < 10})
        assert r.status == 200 and [s["i"] for s in body["data"]] == want
        assert body["data"][0] == {"__name__": "m", "i": "00", "odd": "0"}

    run(_pool(), go, tmp_path)


def test_max_range_clamps_open_ranges_and_refuses_long_ones(tmp_path: Path) -> None:
    async def go(client: TestClient, router: Router) -> None:
        end = str((T0 + 200_000) / 1000)
        status, body = await _get(client, "/api/v1/series", **{"match[]": "m", "end": end})
        assert status == 200 and body["data"] == []  # start clamped to end - 1m: no data there
        status, body = await _get(client, "/api/v1/series", **{"match[]": "m", "start": "0", "end": end})
        assert status == 400 and body["errorType"] == "bad_data"
        status, body = await _get(client, "/api/v1/series",
                                  **{"match[]": 'm{i="03"}', "start": str(T0 / 1000 + 120),
                                     "end": str(T0 / 1000 + 170)})
        assert status == 200 and len(body["data"]) == 1

    run(_pool(), go, tmp_path, api_max_range="1m")


def test_query_limit_and_bad_params(tmp_path: Path) -> None:
    async def go(client: TestClient, router: Router) -> None:
        t = str(T0 / 1000 + 60)
        status, body = await _get(client, "/api/v1/query", query="m", time=t, limit="4")
        assert status == 200 and len(body["data"]["result"]) == 4 and body["warnings"]
        status, body = await _get(client, "/api/v1/query", query="m", time=t, limit="x")
        assert status == 400 and body["errorType"] == "bad_data"
        status, body = await _get(client, "/api/v1/query", query="m", time=t, lookback_delta="bad")
        assert status == 400 and "lookback delta" in body["error"]
        status, body = await _get(client, "/api/v1/query_range", query="m", start=t, end=t, step="1m",
                                  stats="all")
        assert status == 200 and body["data"]["stats"]["timings"]["evalTotalTime"] > 0
        status, body = await _get(client, "/api/v1/label/U__a_2e_b/values")
        assert status == 200 and body["data"] == []

    run(_pool(), go, tmp_path)


def test_bad_parameters_are_named_as_prometheus_names_them(tmp_path: Path) -> None:
    """Prometheus 3's web API wording (web/api/v1: invalidParamError,
    parseTimeParam, parseLimitParam): what Grafana shows the user."""
    cases = [
        ("/api/v1/query", {"query": "sum(m"},
         'invalid parameter "query": 1:6: parse error: unclosed left parenthesis'),
        ("/api/v1/query", {"query": ""},
         'invalid parameter "query": unknown position: parse error: no expression found in input'),
        ("/api/v1/query", {"query": "m", "time": "abc"},
         'invalid parameter "time": Invalid time value for \'time\': cannot parse "abc" to a valid timestamp'),
        ("/api/v1/query", {"query": "m", "limit": "x"},
         'invalid parameter "limit": strconv.Atoi: parsing "x": invalid syntax'),
        ("/api/v1/query_range", {"query": '"s"', "start": "1", "end": "2", "step": "1"},
         'invalid parameter "query": invalid expression type "string" for range query, must be Scalar or '
         "instant Vector"),
        ("/api/v1/query_range", {"query": "m", "start": "abc", "end": "2", "step": "1"},
         'invalid parameter "start": cannot parse "abc" to a valid timestamp'),
        ("/api/v1/format_query", {"query": "m{"},
         'invalid parameter "query": 1:3: parse error: unexpected end of input inside braces'),
        ("/api/v1/series", {"match[]": "m{"},
         'invalid parameter "match[]": 1:3: parse error: unexpected end of input inside braces'),
        ("/api/v1/series", {"match[]": '{a=~".*"}'},
         'invalid parameter "match[]": match[] must contain at least one non-empty matcher'),
        ("/api/v1/series", {"match[]": "m", "end": "x"},
         'invalid parameter "end": Invalid time value for \'end\': cannot parse "x" to a valid timestamp'),
        ("/api/v1/labels", {"match[]": "m{"}, "1:3: parse error: unexpected end of input inside braces"),
        ("/api/v1/label/i/values", {"start": "x"},
         'invalid parameter "start": Invalid time value for \'start\': cannot parse "x" to a valid timestamp'),
        ("/api/v1/query_exemplars", {"query": "m{"}, "1:3: parse error: unexpected end of input inside braces"),
        ("/api/v1/label/%FF/values", {}, 'invalid label name: "\\xff"'),  # escapes that are not UTF-8
    ]

    async def go(client: TestClient, router: Router) -> None:
        for path, params, want in cases:
            status, body = await _get(client, path, **params)
            assert (status, body["errorType"], body["error"]) == (400, "bad_data", want), (path, params)

    run(_pool(), go, tmp_path)


def test_delayed_name_removal_follows_its_flag(tmp_path: Path) -> None:
    t = str(T0 / 1000 + 60)
    query = 'label_replace(rate(m{i="01"}[2m]), "n", "$1", "__name__", "(.*)")'

    async def go(client: TestClient, router: Router) -> list[dict[str, str]]:
        status, body = await _get(client, "/api/v1/query", query=query, time=t)
        assert status == 200, body
        return [r["metric"] for r in body["data"]["result"]]

    assert run(_pool(), go, tmp_path) == [{"i": "01", "odd": "1"}]  # off by default
    assert run(_pool(), go, tmp_path, query_delayed_name_removal="on") == [{"i": "01", "n": "m", "odd": "1"}]


def test_metrics_and_tsdb_status(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "restarts.json").write_text('{"worker-0": 2, "router": 0}')

    async def go(client: TestClient, router: Router) -> None:
        await _get(client, "/api/v1/query", query="m", time=str(T0 / 1000))
        r = await client.get("/metrics")
        text = await r.text()
        assert r.status == 200 and r.content_type == "text/plain"
        assert 'athens_child_restarts_total{child="worker-0"} 2' in text
        assert 'athens_samples_rejected_total{worker="0",reason="out_of_order"} 2' in text
        assert 'athens_query_duration_seconds_count{handler="/api/v1/query"} 1' in text
        assert 'athens_http_requests_total{handler="/api/v1/query",code="200"} 1' in text
        assert 'athens_worker_up{worker="0"} 1' in text and 'athens_wal_bytes{worker="0"} 100' in text
        assert 'athens_compactions_total{worker="0"} 3' in text
        assert 'athens_compaction_in_progress{worker="0"} 1' in text
        assert 'athens_process_cpu_seconds_total{process="worker-0"}' in text
        assert "athens_ingest_series_cache_refs 0" in text
        assert 'athens_ingest_series_cache_resets_total{reason="churn"} 0' in text
        status, body = await _get(client, "/api/v1/status/tsdb", limit="2")
        assert body["data"]["seriesCountByMetricName"] == [{"name": "m", "value": 30}]
        assert body["data"]["labelValueCountByLabelName"] == [
            {"name": "i", "value": 30}, {"name": "odd", "value": 2}]

    run(_pool(), go, tmp_path)


def test_queries_hold_off_the_quiet_trim_and_background_requests_do_not(tmp_path: Path, monkeypatch: Any) -> None:
    now = [1000.0]
    trims: list[float] = []
    monkeypatch.setattr(heap, "trim", lambda: trims.append(now[0]) or True)
    quiet = heap.QuietTrim(60.0, clock=lambda: now[0])

    async def main() -> None:
        config = replace(ServeConfig(), data_dir=tmp_path, workers=1, query_pushdown="off")
        client = TestClient(TestServer(build_app(Router(config, _pool()), quiet)))  # type: ignore[arg-type]
        await client.start_server()
        try:
            for path in ("/metrics", "/-/healthy"):
                now[0] += 100
                await client.get(path)
                assert quiet.tick()
            now[0] += 100
            await _get(client, "/api/v1/query", query="m", time=str(T0 / 1000))
            assert not quiet.tick()
            now[0] += 30
            await _get(client, "/api/v1/labels")
            now[0] += 40
            assert not quiet.tick()
            # A write, then a pause: its free heap goes back once, queries or not.
            await client.post("/api/v1/write", data=b"not snappy")
            now[0] += 5
            assert not quiet.tick()
        finally:
            await client.close()

    asyncio.run(main())
    assert trims == [1100.0, 1200.0, 1375.0]


def test_write_keeps_metadata_from_metadata_requests(tmp_path: Path, prompb: Any) -> None:
    req = prompb.WriteRequest()
    req.metadata.add(type=prompb.MetricMetadata.COUNTER, metric_family_name="http_requests_total",
                     help="Requests.", unit="")
    req.metadata.add(type=prompb.MetricMetadata.GAUGE, metric_family_name="temp", help="T.", unit="celsius")
    body = snappy.compress(req.SerializeToString())

    async def go(client: TestClient, router: Router) -> None:
        r = await client.post("/api/v1/write", data=body, headers={
            "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        assert r.status == 204, await r.text()
        status, got = await _get(client, "/api/v1/metadata")
        assert got["data"] == {
            "http_requests_total": [{"type": "counter", "help": "Requests.", "unit": ""}],
            "temp": [{"type": "gauge", "help": "T.", "unit": "celsius"}],
        }
        _, got = await _get(client, "/api/v1/metadata", metric="temp")
        assert list(got["data"]) == ["temp"]
        _, got = await _get(client, "/api/v1/metadata", limit="1")
        assert len(got["data"]) == 1

    run(_pool(), go, tmp_path)


def test_cardinality_merges_workers() -> None:
    a = {"series": 2, "pairs": {"__name__": {"up": 2}, "job": {"x": 1, "y": 1}}, "min_time": 5, "max_time": 9}
    b = {"series": 1, "pairs": {"__name__": {"up": 1}, "job": {"x": 1}}, "min_time": 1, "max_time": 7}
    got = cardinality([a, b], 10)
    assert got["headStats"]["numSeries"] == 3 and got["headStats"]["minTime"] == 1
    assert got["seriesCountByMetricName"] == [{"name": "up", "value": 3}]
    assert got["labelValueCountByLabelName"] == [{"name": "job", "value": 2}, {"name": "__name__", "value": 1}]
    assert got["seriesCountByLabelValuePair"][0] == {"name": "__name__=up", "value": 3}
    assert {"name": "job", "value": 3} in got["memoryInBytesByLabelName"]  # 2 x "x" + 1 x "y"


def test_text_format_and_self_scrape_batch() -> None:
    fams = [Family("a_total", "counter", "Help with \\ and\nnewline.", [("", {"w": 'q"uote'}, 3.0)]),
            Family("b", "gauge", "B.", [("", {}, 0.5)])]
    text = render_text(fams)
    assert 'a_total{w="q\\"uote"} 3\n' in text and "\nb 0.5\n" in text
    assert "# HELP a_total Help with \\\\ and newline." in text
    batch = to_batch(fams, 1000, {"job": "athens", "instance": "h:1"})
    names = sorted(lb.get("__name__") for lb in batch.series)
    assert names == ["a_total", "b", "up"]
    assert all(lb.get("job") == "athens" for lb in batch.series)
    assert batch.ts.tolist() == [1000, 1000, 1000]


def test_unexpected_errors_answer_500_internal_in_api_format(tmp_path: Path) -> None:
    class Broken(MemPool):
        async def select(self, ms: Sequence[Matcher], mint: int, maxt: int) -> list[Series]:
            raise RuntimeError("disk on fire")

    async def go(client: TestClient, router: Router) -> None:
        status, body = await _get(client, "/api/v1/query", query="m", time=str(T0 / 1000))
        assert status == 500 and body["errorType"] == "internal" and "disk on fire" in body["error"]
        r = await client.get("/metrics")
        assert 'athens_http_requests_total{handler="/api/v1/query",code="500"} 1' in await r.text()

    run(Broken([]), go, tmp_path)


def test_json_answers_are_gzipped_when_the_client_accepts_it(tmp_path: Path) -> None:
    async def go(client: TestClient, router: Router) -> None:
        params = {"query": "m", "start": str(T0 / 1000), "end": str(T0 / 1000 + 135), "step": "15"}
        answers = {}
        for accept in ("gzip, deflate", "identity", "gzip;q=0", "br;q=1.0, gzip;q=0.5"):
            r = await client.get("/api/v1/query_range", params=params, headers={"Accept-Encoding": accept})
            answers[accept] = (r.headers.get("Content-Encoding"), json.loads(await r.read()))
            assert r.status == 200 and r.headers.get("Vary") == "Accept-Encoding"
        assert [enc for enc, _ in answers.values()] == ["gzip", None, None, "gzip"]
        assert all(a == answers["identity"][1] for _, a in answers.values())
        assert len(answers["identity"][1]["data"]["result"]) == 30
        r = await client.get("/api/v1/labels", headers={"Accept-Encoding": "gzip"})  # tiny: as it is
        assert r.headers.get("Content-Encoding") is None and json.loads(await r.read())["status"] == "success"

    run(_pool(), go, tmp_path)


def test_big_answers_are_streamed_in_pieces_and_read_back_the_same(tmp_path: Path, monkeypatch: Any) -> None:
    from athens.router import api
    from athens.router import app as appmod

    async def answers(client: TestClient) -> dict[str, tuple[Any, Any, Any]]:
        params = {"query": "m", "start": str(T0 / 1000), "end": str(T0 / 1000 + 135), "step": "15",
                  "stats": "all"}
        out = {}
        for accept in ("gzip", "identity"):
            r = await client.get("/api/v1/query_range", params=params, headers={"Accept-Encoding": accept})
            assert r.status == 200 and r.content_type == "application/json"
            body = json.loads(await r.read())
            assert body["data"]["stats"]["timings"]["evalTotalTime"] > 0
            del body["data"]["stats"]
            out[accept] = (r.headers.get("Content-Encoding"), r.headers.get("Transfer-Encoding"), body)
        return out

    async def go(client: TestClient, router: Router) -> dict[str, tuple[Any, Any, Any]]:
        return await answers(client)

    whole = run(_pool(), go, tmp_path / "a")
    assert whole["identity"][1] is None  # 300 points: one body
    monkeypatch.setattr(appmod, "INLINE_RENDER_POINTS", 0)
    monkeypatch.setattr(api, "RENDER_PIECE_POINTS", 25)  # 15 pieces of 2 series (10 points each)
    pieces: list[int] = []
    render = api._render_series
    monkeypatch.setattr(api, "_render_series", lambda *a: pieces.append(len(a[1])) or render(*a))
    streamed = run(_pool(), go, tmp_path / "b")
    assert pieces == [2] * 30  # 15 pieces an answer, two answers
    for accept, encoding in (("gzip", "gzip"), ("identity", None)):
        assert streamed[accept][:2] == (encoding, "chunked")
        assert streamed[accept][2] == whole[accept][2] == whole["identity"][2]


def test_a_streamed_answer_that_fails_midway_is_cut_short(tmp_path: Path, monkeypatch: Any) -> None:
    # Its first bytes are sent: the client must not get a well-formed but
    # partial answer, and the router must go on serving.
    import aiohttp

    from athens.router import api
    from athens.router import app as appmod

    monkeypatch.setattr(appmod, "INLINE_RENDER_POINTS", 0)
    monkeypatch.setattr(api, "RENDER_PIECE_POINTS", 25)
    render = api._render_series
    calls: list[int] = []

    def failing(*a: Any) -> bytes:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("renderer bug")
        return render(*a)

    monkeypatch.setattr(api, "_render_series", failing)

    async def go(client: TestClient, router: Router) -> None:
        params = {"query": "m", "start": str(T0 / 1000), "end": str(T0 / 1000 + 135), "step": "15"}
        r = await client.get("/api/v1/query_range", params=params)
        assert r.status == 200  # sent before the failure
        try:
            await r.read()
        except aiohttp.ClientPayloadError:
            pass
        else:
            raise AssertionError("a truncated answer read as complete")
        status, body = await _get(client, "/api/v1/query", query="1")
        assert status == 200 and body["data"]["result"][1] == "1"
        r = await client.get("/metrics")
        assert 'athens_http_requests_total{handler="/api/v1/query_range",code="500"} 1' in await r.text()

    run(_pool(), go, tmp_path)


@pytest.mark.parametrize("origins,origin,allowed", [
    (".*", "https://dash.example.com", "*"),
    (r"https?://(dash|ops)\.example\.com", "https://ops.example.com", "https://ops.example.com"),
    (r"https?://(dash|ops)\.example\.com", "https://evil.example.org", None),
])
def test_cors_as_prometheus_answers_browsers(tmp_path: Path, origins: str, origin: str, allowed: str | None) -> None:
    """Prometheus' --web.cors.origin (default '.*'): API answers to requests with
    an Origin carry the CORS headers, and OPTIONS is answered for a preflight."""
    async def go(client: TestClient, router: Router) -> None:
        r = await client.get("/api/v1/labels", headers={"Origin": origin})
        assert r.status == 200
        assert r.headers.get("Access-Control-Allow-Origin") == allowed
        assert r.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
        r = await client.options("/api/v1/query", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert r.status == 204 and r.headers.get("Access-Control-Allow-Origin") == allowed
        r = await client.get("/api/v1/labels")  # no Origin: no CORS headers
        assert "Access-Control-Allow-Origin" not in r.headers
        r = await client.get("/metrics", headers={"Origin": origin})  # the API's paths only
        assert "Access-Control-Allow-Origin" not in r.headers
        assert (await client.get("/api/v1/nope")).status == 404  # not 405: OPTIONS is no route

    run(_pool(), go, tmp_path, cors_origin=origins)


def test_a_bad_cors_origin_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"invalid --cors-origin '\(': error parsing regexp: missing closing \)"):
        replace(ServeConfig(), cors_origin="(").validate()
