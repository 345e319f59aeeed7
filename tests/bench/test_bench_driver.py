"""The benchmark driver's own guarantees, without any real system under test:
writes reach each series in time order under concurrency and retries, a
started server is always stopped and its temporary directory removed, and
memory peaks are kept per phase of the run."""

from __future__ import annotations

import asyncio
import mmap
import os
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import snappy
from aiohttp import web
from aiohttp.test_utils import TestServer

import numpy as np

from athens.wire.remote_write import decode_write_request
from athens.wire.remote_write_v2 import decode_request_v2
from bench import datagen, queries, report, rwencode
from bench.ingest import send_all
from bench.systems import MemorySampler, Server, ServerStartError, System, dir_bytes


def _requests() -> list[rwencode.EncodedRequest]:
    ds = datagen.generate(900, 24, seed=11, now_ms=1_790_000_000_000)
    return rwencode.encode_dataset(ds, series_per_request=200, samples_per_series=3)


def test_send_all_keeps_each_chunk_in_time_order_with_retries() -> None:
    reqs = _requests()
    by_body = {r.body: r for r in reqs}
    seen: list[tuple[int, int]] = []
    attempts: dict[bytes, int] = {}
    in_flight = 0
    max_in_flight = 0
    rnd = random.Random(5)

    async def write(request: web.Request) -> web.Response:
        nonlocal in_flight, max_in_flight
        body = await request.read()
        assert request.headers["Content-Encoding"] == "snappy"
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        try:
            await asyncio.sleep(rnd.random() * 0.01)  # answers overtake each other
            attempts[body] = attempts.get(body, 0) + 1
            if attempts[body] == 1 and rnd.random() < 0.2:
                return web.Response(status=503, headers={"Retry-After": "0"})
            r = by_body[body]
            seen.append((r.chunk, r.window))
            return web.Response(status=204)
        finally:
            in_flight -= 1

    async def main():
        app = web.Application()
        app.router.add_post("/api/v1/write", write)
        async with TestServer(app, host="127.0.0.1") as srv:
            return await send_all(str(srv.make_url("")).rstrip("/"), reqs, concurrency=4)

    res = asyncio.run(main())
    assert res.samples_ok == sum(r.n_samples for r in reqs)
    assert res.statuses["204"] == len(reqs)
    assert res.statuses["503"] == res.retries > 0
    assert 1 < max_in_flight <= 4
    last: dict[int, int] = {}
    for chunk, window in seen:
        assert window == last.get(chunk, -1) + 1, "a series chunk was sent out of time order"
        last[chunk] = window


def test_v2_requests_carry_what_the_v1_ones_do_and_are_sent_as_v2() -> None:
    ds = datagen.generate(450, 6, seed=3, now_ms=1_790_000_000_000)
    v1 = rwencode.encode_dataset(ds, series_per_request=200, samples_per_series=3)
    v2 = rwencode.encode_dataset(ds, series_per_request=200, samples_per_series=3, protocol=2)
    assert [(r.window, r.chunk, r.n_samples) for r in v1] == [(r.window, r.chunk, r.n_samples) for r in v2]
    for a, b in zip(v1, v2):
        one = decode_write_request(snappy.decompress(a.body)).batch
        two = decode_request_v2(snappy.decompress(b.body)).batch
        assert list(one.series) == list(two.series)
        assert one.series_idx.tolist() == two.series_idx.tolist() and one.ts.tolist() == two.ts.tolist()
        assert one.values.view(np.uint64).tolist() == two.values.view(np.uint64).tolist()
    odd = np.array([3, 7, 400], np.int64)  # not a run of series
    enc = rwencode.Encoder(ds)
    assert decode_request_v2(enc.raw_v2(odd, 0, 2)).batch.series == decode_write_request(enc.raw(odd, 0, 2)).batch.series
    seen: list[str] = []

    async def write(request: web.Request) -> web.Response:
        seen.append(request.headers["Content-Type"])
        return web.Response(status=204)

    async def main():
        app = web.Application()
        app.router.add_post("/api/v1/write", write)
        async with TestServer(app, host="127.0.0.1") as srv:
            return await send_all(str(srv.make_url("")).rstrip("/"), v2[:3], concurrency=2)

    assert asyncio.run(main()).samples_ok == sum(r.n_samples for r in v2[:3])
    assert set(seen) == {"application/x-protobuf;proto=io.prometheus.write.v2.Request"}


def test_queries_interleave_the_systems_and_stop_only_a_failing_one() -> None:
    # Each repeat asks every system once, in an order rotated per repeat; a
    # system that answers an error is not asked that query again, the others are.
    arrivals: list[tuple[str, str]] = []

    def app(name: str) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            arrivals.append((name, request.path))
            if name == "b" and request.path == "/api/v1/labels":
                return web.json_response({"status": "error", "error": "no"}, status=500)
            if request.path.startswith("/api/v1/query"):
                return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})
            return web.json_response({"status": "success", "data": []})

        a = web.Application()
        a.router.add_get("/{tail:.*}", answer)
        return a

    w = queries.Window(1000.0, 400, 900, 100, 0.0, 1000.0)

    async def main() -> dict[str, list[queries.Timing]]:
        async with TestServer(app("a"), host="127.0.0.1") as sa, TestServer(app("b"), host="127.0.0.1") as sb:
            urls = {"a": str(sa.make_url("")).rstrip("/"), "b": str(sb.make_url("")).rstrip("/")}
            return await queries.run_queries(urls, w, repeats=3)

    got = asyncio.run(main())
    n = sum(len(queries.requests_for(q, w)) for q in queries.QUERIES)
    assert [len(got[k]) for k in "ab"] == [n, n]
    labels = {k: next(t for t in got[k] if t.query == "labels") for k in "ab"}
    assert len(labels["a"].latencies_ms) == 3 and not labels["a"].errors
    assert labels["b"].latencies_ms == [] and labels["b"].errors[0].startswith("500")
    assert all(len(t.latencies_ms) == 3 for k in "ab" for t in got[k] if t.query != "labels")
    first = [name for name, path in arrivals if path == "/api/v1/query"][:6]
    assert first == ["a", "b", "b", "a", "a", "b"]  # repeat 0: a, b; repeat 1: b, a; repeat 2: a, b


@dataclass(frozen=True, slots=True)
class _HttpServer(System):
    """Python's http.server standing in for a system under test."""

    name: str = "fake"
    label: str = "fake"
    ready_path: str = "/"
    fail: bool = False

    def missing(self) -> str | None:
        return None

    def version(self) -> str:
        return "fake"

    def command(self, port: int, data_dir: Path, work_dir: Path) -> list[str]:
        if self.fail:
            return [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
        (data_dir / "blob").write_bytes(b"x" * 1000)
        return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def test_server_is_stopped_and_cleaned_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with Server(_HttpServer(), tmp_path) as srv:
        assert srv.proc is not None and srv.data_dir is not None
        pid = srv.proc.pid
        assert srv.data_dir.parent.parent == scratch
        assert dir_bytes(srv.data_dir) == 1000
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert list(scratch.iterdir()) == []


def test_server_that_exits_is_reported_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(ServerStartError, match="boom"):
        with Server(_HttpServer(fail=True), tmp_path):
            pass
    assert list(scratch.iterdir()) == []


def test_memory_peaks_are_kept_per_phase_of_the_run() -> None:
    sampler = MemorySampler(psutil.Process())  # the run's first phase: ingest
    sampler.sample()
    before = sampler.peak_rss_by_phase["ingest"]
    block = np.ones(64 << 20, np.uint8)  # written: resident
    sampler.sample()
    sampler.mark("queries")
    sampler.sample()
    del block
    by_phase = sampler.peak_rss_by_phase
    assert set(by_phase) == {"ingest", "queries"}
    assert by_phase["ingest"] >= before + (60 << 20)
    assert sampler.peak_rss == max(by_phase.values())
    summary = report.summary({"peak_rss_bytes_by_phase": {"ingest": 10 << 20}})
    assert summary["peak_rss_ingest_mib"] == 10 and summary["peak_rss_queries_mib"] is None


def test_anonymous_memory_leaves_out_mapped_files(tmp_path: Path) -> None:
    sampler = MemorySampler(psutil.Process())
    sampler.sample()
    anon0, rss0 = sampler.peak_anon, sampler.peak_rss
    assert 0 < anon0 < rss0  # the interpreter's and libraries' file pages are not anonymous
    data = tmp_path / "file"
    data.write_bytes(os.urandom(32 << 20))
    with open(data, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert sum(mm[i] for i in range(0, len(mm), 4096)) >= 0  # every page mapped
        sampler.sample()
    assert sampler.peak_rss >= rss0 + (30 << 20)
    assert sampler.peak_anon < anon0 + (8 << 20)
    block = np.ones(32 << 20, np.uint8)  # written: resident and anonymous
    sampler.sample()
    del block
    assert sampler.peak_anon >= anon0 + (30 << 20)
