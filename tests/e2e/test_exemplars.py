"""Exemplars remote-written to Athens and to Prometheus 2.42 (exemplar storage on),
then read back through /api/v1/query_exemplars: the same answers, also after kill -9."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import snappy

from e2e.harness import Athens, Prometheus, beside_prometheus, http

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus package is not installed (apt-get install prometheus)")

def _request(pb: Any, end: int) -> Any:
    """Eight series of ex_metric with samples; exemplars on most, among them
    a repeat of a series' newest (a duplicate), one older than its series'
    newest (out of order) and one with labels over 128 runes."""
    req = pb.WriteRequest()
    for i in range(8):
        ts = req.timeseries.add()
        for n, v in (("__name__", "ex_metric"), ("i", str(i)), ("job", "a" if i < 4 else "b")):
            lb = ts.labels.add()
            lb.name, lb.value = n, v
        for k in range(10):
            s = ts.samples.add()
            s.timestamp, s.value = end - (10 - k) * 15_000, float(i * k)
        exemplars = [(f"t{i}-{k}", end - (9 - 2 * k) * 15_000 + 7, k + i / 8) for k in range(i % 4)]
        if i == 1:
            exemplars += [exemplars[-1], ("older", end - 9 * 15_000, 1.0)]
        if i == 2:
            exemplars.append(("x" * 130, end, 2.0))
        for trace, t, v in exemplars:
            e = ts.exemplars.add()
            lb = e.labels.add()
            lb.name, lb.value = "trace_id", trace
            e.timestamp, e.value = t, v
    return req


@pytest.fixture
def both(tmp_path: Path, prompb: Any) -> Iterator[tuple[Athens, Prometheus, int]]:
    end = int(time.time() * 1000) // 1000 * 1000 - 60_000
    body = snappy.compress(_request(prompb, end).SerializeToString())
    with beside_prometheus(tmp_path, body, prom_flags=["--enable-feature=exemplar-storage"]) as (athens, prom):
        yield athens, prom, end


def _get(url: str, params: list[tuple[str, str]]) -> tuple[int, Any]:
    status, body = http("GET", f"{url}/api/v1/query_exemplars?{urllib.parse.urlencode(params)}")
    return status, json.loads(body) if body else None


QUERIES = [
    [("query", "ex_metric")],
    [("query", 'sum(rate(ex_metric{job="a"}[5m])) / ex_metric{i=~"[57]"}')],
    [("query", "ex_metric"), ("start", "0"), ("end", "1")],
    [("query", "1 + 1")],  # no selector: 204 without a body
    [("query", "no_such_metric")],
]


def test_exemplars_answer_as_prometheus_and_survive_kill_9(both: tuple[Athens, Prometheus, int]) -> None:
    athens, prom, end = both
    ranged = [("query", "ex_metric"), ("start", str((end - 6 * 15_000) / 1000)), ("end", str(end / 1000))]
    answers = []
    for params in [*QUERIES, ranged]:
        got, want = _get(athens.url, params), _get(prom.url, params)
        assert got == want, params
        answers.append(got)
    series = answers[0][1]["data"]
    assert len(series) == 6 and sum(len(s["exemplars"]) for s in series) == 12  # 0+1+2+3 a job, twice
    assert answers[3] == (204, None)
    athens.kill_all()
    athens.start()
    assert [_get(athens.url, params) for params in [*QUERIES, ranged]] == answers


@pytest.mark.parametrize("params", [[("query", "ex_metric{")], [("query", "x"), ("start", "10"), ("end", "5")],
                                    [("query", "x"), ("start", "soon")]])
def test_bad_exemplar_queries_as_prometheus(both: tuple[Athens, Prometheus, int], params: list) -> None:
    athens, prom, _ = both
    (sa, ba), (sp, bp) = _get(athens.url, params), _get(prom.url, params)
    assert sa == sp == 400
    assert ba["errorType"] == bp["errorType"] == "bad_data"


class _OpenMetricsTarget:
    """A scrape target whose counter carries an exemplar; every third scrape
    repeats the last one (a duplicate both stores drop)."""

    def __init__(self) -> None:
        import http.server
        import threading

        target = self
        self.scrapes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                target.scrapes += 1
                n = target.scrapes - (target.scrapes % 3 == 0)
                body = (f'# TYPE req counter\nreq_total{{path="/a"}} {n} # {{trace_id="t{n}"}} {n}.5 '
                        f"{1_700_000_000 + n}.25\n# EOF\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_a_real_prometheus_remote_writes_its_scraped_exemplars(athens_factory: Any, tmp_path: Path) -> None:
    from e2e.harness import wait_until

    athens = athens_factory(workers=2).start()
    target = _OpenMetricsTarget()
    prom = Prometheus(tmp_path / "prometheus", f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ['127.0.0.1:{target.port}']
remote_write:
  - url: {athens.url}/api/v1/write
    send_exemplars: true
    queue_config:
      batch_send_deadline: 500ms
""")
    prom.argv.append("--enable-feature=exemplar-storage")
    prom.start()
    try:
        query = [("query", "req_total"), ("start", "1700000000"), ("end", "1700000010")]
        wait_until(lambda: len((_get(prom.url, query)[1]["data"] or [{}])[0].get("exemplars", [])) >= 6, 60,
                   "Prometheus to scrape exemplars", interval=0.5)
        want = _get(prom.url, query)
        wait_until(lambda: _get(athens.url, query) == want, 60, "Athens to hold the same exemplars", interval=0.5)
        series = want[1]["data"]
        assert [e["labels"]["trace_id"] for e in series[0]["exemplars"]][:4] == ["t1", "t2", "t4", "t5"]
    finally:
        prom.stop()
        target.close()
