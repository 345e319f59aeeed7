"""bench.floor's measuring loop and table, against a stand-in HTTP server; its baselines."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import datagen, floor
from bench.systems import Server, baselines


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the systems under test
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        self.seen.append(self.path)
        status = 500 if "fail" in self.path else 200
        body = b'{"status":"success","data":[]}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def test_times_each_request_after_warming_the_connection(port: int) -> None:
    _Handler.seen.clear()
    lat = floor.time_requests(port, "/api/v1/query?query=1%2B1", 7, 0.0)
    assert len(lat) == 7 and all(x > 0 for x in lat)
    assert len(_Handler.seen) == 5 + 7  # the warm-up requests are not timed
    with pytest.raises(RuntimeError, match="HTTP 500"):
        floor.time_requests(port, "/fail", 1, 0.0)


def test_requests_ask_for_the_data_sets_series_and_names() -> None:
    ds = datagen.generate_profile(datagen.Profile("t", 200, 8), now_ms=1_790_000_000_000)
    paths = floor.requests_for(ds)
    assert set(paths) == {"1+1", "no_match", "single_series", "label_values_name"}
    assert f"time={ds.end_ms / 1000.0}" in paths["single_series"]
    first = dict(ds.labels[0])
    assert urllib.parse.quote(f'__name__="{first["__name__"]}"') in paths["single_series"]
    assert paths["label_values_name"].startswith("/api/v1/label/__name__/values?")


def test_table_gives_athens_ratio_to_each_peer() -> None:
    cell = {"hot": {"median_ms": 2.0, "p90_ms": 3.0}, "idle": {"median_ms": 4.0, "p90_ms": 5.0}}
    peer = {"hot": {"median_ms": 1.0, "p90_ms": 1.5}, "idle": {"median_ms": 4.0, "p90_ms": 6.0}}
    run = {"machine": {"cpus": 2}, "results": {"athens": {"1+1": cell}, "victoriametrics": {"1+1": peer}}}
    table = floor.markdown(run).splitlines()
    assert table[-4].startswith("| request | mode | athens | victoriametrics | athens/victoriametrics |")
    assert table[-2:] == ["| 1+1 | hot | 2 / 3 | 1 / 1.5 | 2.00 |", "| 1+1 | idle | 4 / 5 | 4 / 6 | 1.00 |"]


@pytest.mark.parametrize("name", ["aiohttp", "asyncio"])
def test_baselines_answer_every_request_on_one_connection(name: str, tmp_path: Path) -> None:
    system = baselines()[name]
    assert not system.stores and system.missing() is None
    with Server(system, tmp_path) as srv:
        lat = floor.time_requests(srv.port, "/api/v1/query?query=1%2B1", 20, 0.0)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/api/v1/label/__name__/values")
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())["status"]) == (200, "success")
        conn.close()
    assert len(lat) == 20
