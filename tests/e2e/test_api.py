"""The Prometheus HTTP API side by side: promtool output, and every bad input's status and errorType.

One Athens and one Prometheus 2.42 hold the same synthetic series (see
peers.py); Prometheus also remote-writes its own scrapes into Athens.
"""

from __future__ import annotations

import json
import math
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import http, wait_until
from e2e.peers import STEP_MS, Peers, promtool, start_peers

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian's prometheus package is not installed (apt-get install prometheus)",
)

# Queries whose answers do not differ between Prometheus 2.42 and 3.x at
# times half a step away from any sample (see tests/e2e/test_prometheus.py).
QUERIES = [
    "synth_gauge",
    'synth_gauge{env="prod"}',
    "rate(synth_requests_total[1m])",
    "increase(synth_requests_total[5m])",
    "sum by (job) (rate(synth_requests_total[2m]))",
    "avg_over_time(synth_gauge[5m])",
    "max by (env) (synth_gauge) * 2 + 1",
    "count(synth_gauge > 50)",
    "synth_gauge offset 5m",
    "histogram_quantile(0.9, sum by (le) (rate(synth_latency_seconds_bucket[5m])))",
    'label_replace(synth_gauge, "host", "$1", "instance", "i(.*)")',
    "sum(synth_gauge) / count(synth_gauge)",
    "deriv(synth_gauge[5m])",
    "quantile_over_time(0.5, synth_gauge[10m])",
    "changes(synth_requests_total[10m])",
    "resets(synth_requests_total[20m])",
    "abs(delta(synth_gauge[2m]))",
    "topk(2, synth_gauge)",
    "clamp_max(synth_gauge, 60)",
    "scalar(sum(synth_gauge))",
    "vector(1) + 1",
]


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory, prompb: Any) -> Iterator[Peers]:
    p = start_peers(tmp_path_factory.mktemp("api"), prompb, athens_extra=["--self-scrape-interval", "1s"])
    yield p
    p.stop()


def _index(result: list) -> dict:
    out = {}
    for r in result:
        key = tuple(sorted(r["metric"].items()))
        out[key] = [r["value"]] if "value" in r else r["values"]
    return out


def same_result(a: Any, b: Any) -> None:
    """Equal promtool/API results: same series, timestamps, and values to 1e-9."""
    if a and not isinstance(a[0], dict):  # a scalar: [t, "v"]
        a, b = [{"metric": {}, "value": a}], [{"metric": {}, "value": b}]
    ia, ib = _index(a), _index(b)
    assert ia.keys() == ib.keys()
    for k in ia:
        assert [t for t, _ in ia[k]] == [t for t, _ in ib[k]], k
        for (_, va), (_, vb) in zip(ia[k], ib[k]):
            fa, fb = float(va), float(vb)
            assert fa == fb or math.isclose(fa, fb, rel_tol=1e-9) or (math.isnan(fa) and math.isnan(fb)), (k, va, vb)


def _times(p: Peers) -> tuple[str, str]:
    end = p.end_ms - STEP_MS // 2
    start = end - 30 * 60_000
    return f"{start / 1000:.3f}", f"{end / 1000:.3f}"


@pytest.mark.parametrize("query", QUERIES)
def test_promtool_instant_and_range_same_output(peers: Peers, query: str) -> None:
    start, end = _times(peers)
    a = promtool("instant", "--time", end, peers.athens.url, query)
    b = promtool("instant", "--time", end, peers.source.url, query)
    assert b, f"Prometheus returned nothing for {query}"
    same_result(a, b)
    if query.startswith("scalar") or query.startswith("vector"):
        return
    a = promtool("range", "--start", start, "--end", end, "--step", "15s", peers.athens.url, query)
    b = promtool("range", "--start", start, "--end", end, "--step", "15s", peers.source.url, query)
    same_result(a, b)


def test_promtool_series_and_label_values_same_output(peers: Peers) -> None:
    start, end = _times(peers)
    for match in ("synth_gauge", '{__name__=~"synth_.+", job="app"}', '{env="dev"}'):
        args = ["--match", match, "--start", start, "--end", end]
        a = promtool("series", *args, peers.athens.url)
        b = promtool("series", *args, peers.source.url)
        assert b and sorted(map(json.dumps, a)) == sorted(map(json.dumps, b))
        for name in ("__name__", "instance", "job", "le"):
            a = promtool("labels", *args, peers.athens.url, name)
            b = promtool("labels", *args, peers.source.url, name)
            assert a == b, (match, name)
    # Without a time range both see everything, including Prometheus' own
    # scrapes that it remote-wrote into Athens.
    a = promtool("labels", "--match", 'up{job="prometheus"}', peers.athens.url, "instance")
    b = promtool("labels", "--match", 'up{job="prometheus"}', peers.source.url, "instance")
    assert a == b == [peers.source.url.removeprefix("http://")]


# (path, params) of bad requests; each is sent with GET and POST to both servers.
BAD = [
    ("/api/v1/query", {"query": "sum("}),
    ("/api/v1/query", {"query": ""}),
    ("/api/v1/query", {"query": "up", "time": "yesterday"}),
    ("/api/v1/query", {"query": "up", "time": "2024-13-45T00:00:00Z"}),
    ("/api/v1/query", {"query": "up", "timeout": "soon"}),
    ("/api/v1/query", {"query": 'up{job=~"(unclosed"}'}),
    ("/api/v1/query", {"query": 'up{job=~"a**"}'}),
    ("/api/v1/query", {"query": "up{job=}"}),
    ("/api/v1/query", {"query": 'rate(up)'}),
    ("/api/v1/query", {"query": "synth_gauge * on(job) synth_gauge", "time": "{end}"}),
    ("/api/v1/query", {"query": "synth_requests_total + on(job) group_left synth_requests_total",
                       "time": "{end}"}),
    ("/api/v1/query_range", {"query": "up", "start": "abc", "end": "{end}", "step": "15"}),
    ("/api/v1/query_range", {"query": "up", "start": "{start}", "end": "x", "step": "15"}),
    ("/api/v1/query_range", {"query": "up", "end": "{end}", "step": "15"}),
    ("/api/v1/query_range", {"query": "up", "start": "{start}", "end": "{end}"}),
    ("/api/v1/query_range", {"query": "up", "start": "{start}", "end": "{end}", "step": "0"}),
    ("/api/v1/query_range", {"query": "up", "start": "{start}", "end": "{end}", "step": "-15"}),
    ("/api/v1/query_range", {"query": "up", "start": "{start}", "end": "{end}", "step": "fast"}),
    ("/api/v1/query_range", {"query": "up", "start": "{end}", "end": "{start}", "step": "15"}),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "11001", "step": "1"}),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "86400", "step": "5"}),
    ("/api/v1/query_range", {"query": "up[5m]", "start": "{start}", "end": "{end}", "step": "15"}),
    ("/api/v1/query_range", {"query": '"a string"', "start": "{start}", "end": "{end}", "step": "15"}),
    ("/api/v1/query_range", {"query": 'up{a=~"("}', "start": "{start}", "end": "{end}", "step": "15"}),
    ("/api/v1/query_range", {"query": "up", "start": "{start}", "end": "{end}", "step": "15",
                             "timeout": "-"}),
    ("/api/v1/series", {}),
    ("/api/v1/series", {"match[]": "synth_gauge{"}),
    ("/api/v1/series", {"match[]": '{job=""}'}),
    ("/api/v1/series", {"match[]": '{job=~".*"}'}),
    ("/api/v1/series", {"match[]": '{job=~"(?<name>x)"}'}),
    ("/api/v1/series", {"match[]": "synth_gauge", "start": "soon"}),
    ("/api/v1/series", {"match[]": "synth_gauge", "end": "later"}),
    ("/api/v1/series", {"match[]": "rate(synth_gauge[5m])"}),
    ("/api/v1/labels", {"match[]": "{"}),
    ("/api/v1/labels", {"start": "x"}),
    ("/api/v1/labels", {"match[]": '{a!=""}', "end": "2020-02-30T00:00:00Z"}),
    ("/api/v1/labels", {"match[]": '{a=~"["}'}),
    ("/api/v1/label/job/values", {"start": "x"}),
    ("/api/v1/label/job/values", {"match[]": "{job=~\"x\"", "end": "{end}"}),
    ("/api/v1/label/job/values", {"match[]": '{job!~".+"}'}),
    ("/api/v1/format_query", {"query": "sum by (a (up)"}),
    ("/api/v1/query_exemplars", {"query": "up{", "start": "{start}", "end": "{end}"}),
    ("/api/v1/query_exemplars", {"query": "up", "start": "x", "end": "{end}"}),
    ("/api/v1/no_such_endpoint", {}),
    # Edge cases Prometheus accepts or refuses in its own way.
    ("/api/v1/query", {"query": "synth_gauge", "time": "NaN"}),
    ("/api/v1/query", {"query": "synth_gauge", "time": "-Inf"}),
    ("/api/v1/query", {"query": "synth_gauge", "time": "1e100"}),
    ("/api/v1/query", {"query": "synth_gauge", "time": "-1e20"}),
    ("/api/v1/query", {"query": "synth_gauge", "time": "2020-01-01 00:00:00Z"}),
    ("/api/v1/query", {"query": "synth_gauge", "time": " 15"}),
    ("/api/v1/query", {"query": "synth_gauge", "time": "0x10"}),
    ("/api/v1/query", {"query": "synth_gauge", "time": "2020-01-01T00:00:00.123456789+01:00"}),
    ("/api/v1/query", {"query": "synth_gauge", "time": "{end}", "timeout": "0"}),
    ("/api/v1/query", {"query": "synth_gauge", "time": "{end}", "timeout": "1ns"}),
    ("/api/v1/query_range", {"query": "synth_gauge", "start": "1e30", "end": "1e30", "step": "1"}),
    ("/api/v1/query_range", {"query": "synth_gauge", "start": "0", "end": "1", "step": "1e10"}),
    ("/api/v1/query_range", {"query": "synth_gauge", "start": "0", "end": "1", "step": "1e300"}),
    ("/api/v1/query_range", {"query": "synth_gauge", "start": "0", "end": "100", "step": "0.0001"}),
    ("/api/v1/query_range", {"query": "synth_gauge", "start": "0", "end": "100", "step": "1e-10"}),
    ("/api/v1/query_range", {"query": "synth_gauge", "start": "0", "end": "100", "step": "1h30m"}),
    ("/api/v1/series", {"match[]": "synth_gauge", "start": "1e30"}),
    ("/api/v1/labels", {"match[]": "synth_gauge", "start": "2e9", "end": "1e9"}),
]


def _api(base: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
    return _send(base, path, params, "GET")


def _send(base: str, path: str, params: dict[str, str], method: str) -> tuple[int, Any]:
    data = urllib.parse.urlencode(params)
    if method == "GET":
        status, body = http("GET", f"{base}{path}?{data}")
    else:
        status, body = http("POST", base + path, data.encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


@pytest.mark.parametrize("path,params", BAD, ids=[f"{p}-{i}" for i, (p, _) in enumerate(BAD)])
def test_bad_input_same_status_and_error_type(peers: Peers, path: str, params: dict[str, str]) -> None:
    start, end = _times(peers)
    params = {k: v.replace("{start}", start).replace("{end}", end) for k, v in params.items()}
    methods = ["GET"] if "/label/" in path or "no_such" in path else ["GET", "POST"]
    for method in methods:
        sa, ba = _send(peers.athens.url, path, params, method)
        sp, bp = _send(peers.source.url, path, params, method)
        assert sa == sp, (method, sa, ba, sp, bp)
        if sp == 200:
            assert ba["status"] == bp["status"] == "success"
        elif sp != 404:
            assert bp["status"] == "error", bp
            assert ba["status"] == "error" and ba["errorType"] == bp["errorType"], (method, ba, bp)


@pytest.mark.parametrize("path", ["snapshot", "delete_series?match[]=synth_gauge", "clean_tombstones"])
def test_admin_api_off_by_default_as_prometheus(peers: Peers, path: str) -> None:
    for method in ("POST", "PUT"):
        answers = [http(method, f"{url}/api/v1/admin/tsdb/{path}") for url in (peers.athens.url, peers.source.url)]
        (sa, ba), (sp, bp) = answers
        assert sa == sp == 500  # Prometheus' status for errorType unavailable
        assert json.loads(ba) == json.loads(bp) == {"status": "error", "errorType": "unavailable",
                                                    "error": "admin APIs disabled"}


def test_error_envelope_matches_prometheus(peers: Peers) -> None:
    sa, ba = _send(peers.athens.url, "/api/v1/query_range",
                   {"query": "up", "start": "0", "end": "11001", "step": "1"}, "GET")
    sp, bp = _send(peers.source.url, "/api/v1/query_range",
                   {"query": "up", "start": "0", "end": "11001", "step": "1"}, "GET")
    assert ba == bp
    assert sa == sp == 400


def test_query_params_time_formats_and_limits(peers: Peers) -> None:
    """RFC 3339 and float times, duration steps, limit, stats: Athens equals itself across spellings."""
    end_s = (peers.end_ms - STEP_MS // 2) / 1000
    from datetime import datetime, timezone

    rfc = datetime.fromtimestamp(end_s, timezone.utc).isoformat().replace("+00:00", "Z")
    base = {"query": "synth_gauge", "start": str(end_s - 600), "end": str(end_s), "step": "60"}
    _, ref = peers.athens.api("/api/v1/query_range", base)
    _, alt = peers.athens.api("/api/v1/query_range", {**base, "end": rfc, "step": "1m"})
    assert ref["data"] == alt["data"] and len(ref["data"]["result"]) == 4
    _, prom = _api(peers.source.url, "/api/v1/query_range", {**base, "end": rfc, "step": "1m"})
    assert prom["data"] == ref["data"]
    status, lim = peers.athens.api("/api/v1/query_range", {**base, "limit": "2"})
    assert status == 200 and len(lim["data"]["result"]) == 2
    assert lim["warnings"] == ["results truncated due to limit"]
    status, st = peers.athens.api("/api/v1/query", {"query": "synth_gauge", "time": rfc, "stats": "all"})
    assert status == 200 and "timings" in st["data"]["stats"]
    status, bad = peers.athens.api("/api/v1/query", {"query": "up", "limit": "-1"})
    assert status == 400 and bad["errorType"] == "bad_data"
    # lookback_delta: with 1s no sample is near the evaluation time.
    _, lb = peers.athens.api("/api/v1/query", {"query": "synth_gauge", "time": str(end_s),
                                               "lookback_delta": "1s"})
    assert lb["data"]["result"] == []
    status, ser = peers.athens.api("/api/v1/series", {"match[]": "synth_gauge", "limit": "3"})
    assert status == 200 and len(ser["data"]) == 3 and ser["warnings"]


def test_long_operator_chains_and_deep_nesting_answer_as_prometheus(peers: Peers) -> None:
    """Generated queries: 2,000 operators in a chain, 1,000 nested calls. Prometheus has
    no bound; Athens answers the same up to parser.MAX_DEPTH levels and refuses past it."""
    _, end = _times(peers)
    deep = [" or ".join(["synth_gauge"] * 2000), " + ".join(['synth_gauge{env="prod"}'] * 2000),
            "abs(" * 999 + "synth_gauge" + ")" * 999]
    for query in deep:
        sa, ba = _send(peers.athens.url, "/api/v1/query", {"query": query, "time": end}, "POST")
        sp, bp = _send(peers.source.url, "/api/v1/query", {"query": query, "time": end}, "POST")
        assert sa == sp == 200, (query[:40], ba)
        assert ba["data"]["result"]
        same_result(ba["data"]["result"], bp["data"]["result"])
    status, body = _send(peers.athens.url, "/api/v1/query", {"query": " or ".join(["synth_gauge"] * 2001)}, "POST")
    assert status == 400 and body["errorType"] == "bad_data" and "nested too deeply" in body["error"]


@pytest.mark.parametrize("query", ["vector(1e-7)", "vector(-2.5e-7)", "vector(0.000001)", "vector(1e21)",
                                   "vector(9.99e20)", "vector(1.2345678901234567e300)", "synth_gauge * 1e-9"])
def test_sample_values_are_written_as_prometheus_writes_them(peers: Peers, query: str) -> None:
    # Go's 'f' format, but 'e' below 1e-6 and from 1e21 on (jsonutil.MarshalValue).
    start, end = _times(peers)
    for path, params in (("/api/v1/query", {"query": query, "time": end}),
                         ("/api/v1/query_range", {"query": query, "start": start, "end": end, "step": "60"})):
        _, a = _api(peers.athens.url, path, params)
        _, b = _api(peers.source.url, path, params)
        assert _index(a["data"]["result"]) == _index(b["data"]["result"]), (path, query)


def test_long_requests_and_multipart_forms_answer_as_prometheus(peers: Peers) -> None:
    """A GET of 20 KB (a dashboard's selector listing many instances), a POST of
    2,000 match[] fields, and a query sent as multipart/form-data."""
    _, end = _times(peers)
    alternatives = "|".join(["i0", "i1"] + [f"host-{i:05d}.example.com" for i in range(800)])
    long_get = {"query": f'synth_gauge{{instance=~"{alternatives}"}}', "time": end}
    assert len(urllib.parse.urlencode(long_get)) > 20_000
    sa, ba = _api(peers.athens.url, "/api/v1/query", long_get)
    sp, bp = _api(peers.source.url, "/api/v1/query", long_get)
    assert sa == sp == 200, ba
    same_result(ba["data"]["result"], bp["data"]["result"])
    assert len(ba["data"]["result"]) == 2
    matches = urllib.parse.urlencode([("match[]", f'synth_gauge{{instance="i{i}"}}') for i in range(2000)])
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    answers = [http("POST", url + "/api/v1/series", matches.encode(), headers) for url in (peers.athens.url,
                                                                                           peers.source.url)]
    (sa, ba), (sp, bp) = answers
    assert sa == sp == 200, ba[:200]
    assert sorted(map(str, json.loads(ba)["data"])) == sorted(map(str, json.loads(bp)["data"]))
    boundary = "athensboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="query"\r\n\r\ncount(synth_gauge)\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="time"\r\n\r\n{end}\r\n--{boundary}--\r\n')
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    answers = [http("POST", url + "/api/v1/query", body.encode(), headers) for url in (peers.athens.url,
                                                                                       peers.source.url)]
    (sa, ba), (sp, bp) = answers
    assert sa == sp == 200, ba[:200]
    assert json.loads(ba)["data"] == json.loads(bp)["data"]


def test_format_and_parse_query(peers: Peers) -> None:
    q = "sum(rate(synth_requests_total{job='app'}[5m]))by(job)"
    _, a = peers.athens.api("/api/v1/format_query", {"query": q})
    _, b = _api(peers.source.url, "/api/v1/format_query", {"query": q})
    assert a == b
    status, tree = peers.athens.api("/api/v1/parse_query", {"query": q})
    assert status == 200 and tree["data"]["type"] == "aggregation"
    assert tree["data"]["expr"]["args"][0]["range"] == 300_000


def test_status_endpoints_shapes(peers: Peers) -> None:
    for path in ("/api/v1/status/buildinfo", "/api/v1/status/runtimeinfo", "/api/v1/status/flags",
                 "/api/v1/status/config", "/api/v1/status/tsdb", "/api/v1/targets", "/api/v1/rules",
                 "/api/v1/alerts", "/api/v1/status/walreplay"):
        sa, a = peers.athens.api(path, {})
        sp, b = _api(peers.source.url, path, {})
        assert sa == sp == 200, path
        assert a["status"] == "success"
        if isinstance(b["data"], dict):
            missing = set(b["data"]) - set(a["data"])
            if path == "/api/v1/status/runtimeinfo":
                missing -= {"GOMEMLIMIT"}  # not in 2.42's answer, not Athens' business either
            if path == "/api/v1/status/flags":
                continue  # different programs, different flags
            assert not missing, (path, missing)


def test_tsdb_status_counts(peers: Peers) -> None:
    _, res = peers.athens.api("/api/v1/status/tsdb", {"limit": "1000"})
    d = res["data"]
    by_name = {e["name"]: e["value"] for e in d["seriesCountByMetricName"]}
    assert by_name["synth_gauge"] == 4 and by_name["synth_latency_seconds_bucket"] == 4
    pairs = {e["name"]: e["value"] for e in d["seriesCountByLabelValuePair"]}
    assert pairs["env=prod"] == 2 and pairs["instance=i3"] == 2
    values = {e["name"]: e["value"] for e in d["labelValueCountByLabelName"]}
    assert values["env"] == 2
    assert d["headStats"]["numSeries"] >= 12
    status, bad = peers.athens.api("/api/v1/status/tsdb", {"limit": "0"})
    assert status == 400 and bad["errorType"] == "bad_data"


def test_metadata_from_remote_write(peers: Peers) -> None:
    """Prometheus sends metadata with remote write; Athens answers /metadata from it."""
    def arrived() -> bool:
        return peers.athens.api("/api/v1/metadata", {"metric": "go_goroutines"})[1]["data"] != {}

    wait_until(arrived, 30, "metadata to arrive")
    _, a = peers.athens.api("/api/v1/metadata", {"metric": "go_goroutines"})
    _, b = _api(peers.source.url, "/api/v1/metadata", {"metric": "go_goroutines"})
    assert a == b
    _, a = peers.athens.api("/api/v1/metadata", {"limit": "2"})
    assert len(a["data"]) == 2


def test_metrics_endpoint(peers: Peers) -> None:
    status, body = http("GET", peers.athens.url + "/metrics")
    text = body.decode()
    assert status == 200
    for name in ("athens_samples_appended_total", "athens_wal_bytes", "athens_segment_bytes",
                 "athens_shard_series", "athens_query_duration_seconds_bucket",
                 "athens_remote_write_requests_total", "athens_child_restarts_total",
                 "athens_samples_rejected_total"):
        assert f"\n{name}" in text or text.startswith(name) or f"# TYPE {name}" in text, name
    appended = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("athens_samples_appended_total{"))
    assert appended >= sum(len(s) for _, s in peers.data)
    # The exposition parses as Prometheus' text format.
    path = Path(peers.athens.data_dir.parent / "metrics.txt")
    path.write_text(text)
    import subprocess

    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert "error" not in out.stderr.lower() or out.returncode == 0, out.stderr


def test_self_scrape_stores_athens_metrics_in_athens(peers: Peers) -> None:
    def scraped() -> bool:
        _, res = peers.athens.api("/api/v1/query", {"query": 'athens_shard_series{job="athens"}'})
        return len(res["data"]["result"]) == 2

    wait_until(scraped, 20, "a self-scrape")
    _, res = peers.athens.api("/api/v1/query", {"query": 'sum(athens_samples_appended_total{job="athens"})'})
    assert float(res["data"]["result"][0]["value"][1]) >= sum(len(s) for _, s in peers.data)
    _, res = peers.athens.api("/api/v1/query", {"query": 'up{job="athens"}'})
    assert res["data"]["result"][0]["value"][1] == "1"


def test_worker_restart_is_counted(peers: Peers) -> None:
    """Runs last in this module: kills a worker of the shared Athens and waits until it is back."""
    (worker,) = [w for w in peers.athens.children("_worker") if "--index" in w.cmdline()
                 and w.cmdline()[w.cmdline().index("--index") + 1] == "0"]
    worker.kill()

    def counted() -> bool:
        status, body = http("GET", peers.athens.url + "/metrics")
        return status == 200 and 'athens_child_restarts_total{child="worker-0"} 1' in body.decode()

    wait_until(counted, 30, "the restart to show in /metrics")
    peers.athens.wait_ready()
