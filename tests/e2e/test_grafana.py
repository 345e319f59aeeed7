"""What Grafana's Prometheus data source sends when a dashboard loads, replayed against both.

The sequence follows Grafana's data source (10.x/11.x): version detection
through buildinfo, the metrics browser and query builder (labels, label
values, series, metadata) with the dashboard's time range in whole seconds,
then each panel's query_range and instant query as POSTed forms, and the
exemplar query. Answers must have the same JSON shape, and the same values
wherever both servers hold the same data (the synthetic series).
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.harness import http, wait_until
from e2e.peers import STEP_MS, Peers, start_peers
from e2e.test_api import same_result

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian's prometheus package is not installed (apt-get install prometheus)",
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory, prompb: Any) -> Iterator[Peers]:
    p = start_peers(tmp_path_factory.mktemp("grafana"), prompb)
    yield p
    p.stop()


def recorded(p: Peers) -> list[tuple[str, str, dict[str, str], str]]:
    """(method, path, params, compare) in the order Grafana sends them.

    compare: "values" (equal answers), "shape" (equal JSON shape), or
    "subset" (Athens' list within Prometheus': Prometheus' head answers
    label queries for its whole head regardless of time range).
    """
    end_s = (p.end_ms - STEP_MS // 2) // 1000
    start_s = end_s - 3600
    rng = {"start": str(start_s), "end": str(end_s)}
    # Panels show the last 30 minutes, all inside the 40 minutes of synthetic
    # data (a counter appearing inside a rate window is a 2.x/3.x difference).
    panel = {"start": str(end_s - 1800), "end": str(end_s), "step": "30"}
    return [
        ("GET", "/api/v1/status/buildinfo", {}, "shape"),
        ("GET", "/api/v1/labels", rng, "subset"),
        ("GET", "/api/v1/label/__name__/values", rng, "subset"),
        ("GET", "/api/v1/metadata", {}, "shape"),
        ("GET", "/api/v1/metadata", {"metric": "go_goroutines"}, "values"),
        ("GET", "/api/v1/label/__name__/values", {**rng, "match[]": '{__name__=~"synth_.+"}'}, "values"),
        ("GET", "/api/v1/labels", {**rng, "match[]": "synth_requests_total"}, "values"),
        ("GET", "/api/v1/label/job/values", {**rng, "match[]": "synth_requests_total"}, "values"),
        ("GET", "/api/v1/label/instance/values", {**rng, "match[]": 'synth_gauge{env="prod"}'}, "values"),
        ("GET", "/api/v1/series", {**rng, "match[]": "synth_requests_total"}, "values"),
        ("POST", "/api/v1/series", {**rng, "match[]": '{__name__="synth_gauge",job="app"}'}, "values"),
        ("POST", "/api/v1/query_range",
         {"query": "sum by (job) (rate(synth_requests_total[1m]))", **panel}, "values"),
        ("POST", "/api/v1/query_range", {"query": "synth_gauge", **panel}, "values"),
        ("POST", "/api/v1/query_range",
         {"query": "histogram_quantile(0.95, sum by (le) (rate(synth_latency_seconds_bucket[5m])))",
          **panel}, "values"),
        ("POST", "/api/v1/query", {"query": "sum(synth_gauge)", "time": f"{end_s}.5"}, "values"),
        ("POST", "/api/v1/query_exemplars", {"query": "synth_gauge", **rng}, "values"),
        ("GET", "/api/v1/rules", {}, "values"),
        ("GET", "/api/v1/alerts", {}, "values"),
    ]


def _call(base: str, method: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
    data = urllib.parse.urlencode(params)
    if method == "GET":
        status, body = http("GET", f"{base}{path}?{data}" if data else base + path)
    else:
        status, body = http("POST", base + path, data.encode(), FORM)
    return status, json.loads(body)


def shape(v: Any) -> Any:
    """The JSON shape: dict keys with the shapes of their values, list element shapes."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return sorted({json.dumps(shape(x), sort_keys=True) for x in v})
    return type(v).__name__


def test_dashboard_load_sequence(peers: Peers) -> None:
    wait_until(lambda: _call(peers.athens.url, "GET", "/api/v1/metadata",
                             {"metric": "go_goroutines"})[1]["data"] != {}, 30, "metadata in Athens")
    for method, path, params, compare in recorded(peers):
        sa, a = _call(peers.athens.url, method, path, params)
        sp, b = _call(peers.source.url, method, path, params)
        where = (method, path, params)
        assert sa == sp == 200, (where, a, b)
        assert a["status"] == b["status"] == "success"
        if compare == "shape":
            if path.endswith("buildinfo"):
                assert b["data"].keys() <= a["data"].keys(), where
                # Grafana enables features by this version: it must parse as a modern Prometheus.
                assert int(a["data"]["version"].split(".")[0]) >= 2
            elif path.endswith("metadata"):  # {family: [entry]}: families differ by timing
                assert a["data"] and {json.dumps(shape(v)) for v in a["data"].values()} == {
                    json.dumps(shape(v)) for v in b["data"].values()}, where
            else:
                assert shape(a["data"]) == shape(b["data"]), where
        elif compare == "subset":
            assert set(a["data"]) <= set(b["data"]), (where, set(a["data"]) - set(b["data"]))
            assert {"synth_gauge", "synth_requests_total"} & set(a["data"]) or "job" in a["data"]
        elif path.endswith(("query_range", "/query")):
            assert shape(a["data"]) == shape(b["data"]), where
            assert a["data"]["resultType"] == b["data"]["resultType"]
            same_result(a["data"]["result"], b["data"]["result"])
        else:
            assert a["data"] == b["data"], where
