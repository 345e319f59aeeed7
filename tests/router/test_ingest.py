"""POST /api/v1/write: status codes, headers, back-pressure and metadata, over a fake pool."""

from __future__ import annotations

import asyncio

import pytest
import snappy
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from athens.config import ConfigError, ServeConfig
from athens.errors import OverloadedError, UnavailableError
from athens.router.ingest import H_EXEMPLARS, H_HISTOGRAMS, H_SAMPLES, Ingest
from wire.conftest import compile_v2
from wire.test_remote_write_v2 import build_v2

V2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"


@pytest.fixture(scope="module")
def prompb_v2(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return compile_v2(tmp_path_factory.mktemp("pbv2r"))


class FakePool:
    """Records batches; optionally fails or blocks."""

    def __init__(self) -> None:
        self.batches = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.rejected: dict[str, int] = {}
        self.exemplars = []

    async def append(self, batch):  # type: ignore[no-untyped-def]
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.batches.append(batch)
        return dict(self.rejected)

    async def append_exemplars(self, ex):  # type: ignore[no-untyped-def]
        self.exemplars.append(ex)
        return len(ex), {}


def v1_body(prompb, n_series: int = 3, n_samples: int = 2, meta: bool = False) -> bytes:
    req = prompb.WriteRequest()
    for i in range(n_series):
        ts = req.timeseries.add()
        for n, v in (("__name__", "m"), ("i", str(i))):
            lb = ts.labels.add()
            lb.name, lb.value = n, v
        for j in range(n_samples):
            s = ts.samples.add()
            s.timestamp, s.value = j, float(j)
    if meta:
        md = req.metadata.add()
        md.type, md.metric_family_name, md.help = 2, "m", "the m"
    return snappy.compress(req.SerializeToString())


def run(pool: FakePool, coro_fn, **kw):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        ingest = Ingest(pool, kw.pop("max_body", 1 << 20), kw.pop("max_decompressed", 1 << 22), **kw)
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/api/v1/write", ingest.write)
        async with TestClient(TestServer(app)) as client:
            return await coro_fn(client, ingest)

    return asyncio.run(main())


def test_v1_write_is_204_with_written_headers(prompb):
    pool = FakePool()

    async def go(client, ingest):  # type: ignore[no-untyped-def]
        r = await client.post("/api/v1/write", data=v1_body(prompb, meta=True),
                              headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"})
        assert r.status == 204
        assert r.headers[H_SAMPLES] == "6"
        assert ingest.metadata.metadata("m", 0) == {"m": [{"type": "gauge", "help": "the m", "unit": ""}]}

    run(pool, go)
    assert pool.batches[0].num_samples == 6 and len(pool.batches[0].series) == 3


def test_v2_written_headers_histograms_exemplars_and_metadata(prompb_v2):
    pool = FakePool()
    with_extras = snappy.compress(build_v2(prompb_v2, [({"a": "1"}, [(1, 1.0), (2, 2.0)]), ({"a": "2"}, [(1, 3.0)])],
                                           metadata=(1, "counts things", "bytes"), histograms=2, exemplars=1))
    plain = snappy.compress(build_v2(prompb_v2, [({"a": "3"}, [(1, 1.0)])]))

    async def go(client, ingest):  # type: ignore[no-untyped-def]
        h = {"Content-Encoding": "snappy", "Content-Type": V2, "X-Prometheus-Remote-Write-Version": "2.0.0"}
        r = await client.post("/api/v1/write", data=with_extras, headers=h)
        # Samples and exemplars stored; histograms reported as not written.
        assert r.status == 400
        assert (r.headers[H_SAMPLES], r.headers[H_HISTOGRAMS], r.headers[H_EXEMPLARS]) == ("3", "0", "1")
        assert "2 histograms" in await r.text()
        r = await client.post("/api/v1/write", data=plain, headers=h)
        assert r.status == 204 and r.headers[H_SAMPLES] == "1"
        assert ingest.metadata.metadata(None, 0) == {"m": [{"type": "counter", "help": "counts things", "unit": "bytes"}]}
        assert ingest.samples["native_histograms_not_written"] == 2
        assert ingest.samples["exemplars_written"] == 1

    run(pool, go)
    assert [b.num_samples for b in pool.batches] == [3, 1]


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v9.Request"},
        {"Content-Type": "text/plain"},
        {"Content-Encoding": "identity"},
    ],
)
def test_unsupported_media_type_is_415(prompb, headers):
    pool = FakePool()

    async def go(client, ingest):  # type: ignore[no-untyped-def]
        r = await client.post("/api/v1/write", data=v1_body(prompb), headers=headers)
        assert r.status == 415

    run(pool, go)
    assert not pool.batches


def test_oversize_bodies_are_413(prompb):
    pool = FakePool()

    async def go(client, ingest):  # type: ignore[no-untyped-def]
        r = await client.post("/api/v1/write", data=v1_body(prompb, 50, 50))
        assert r.status == 413
        r = await client.post("/api/v1/write", data=snappy.compress(b"\0" * 5000))
        assert r.status == 413

    run(pool, go, max_body=2000, max_decompressed=4000)
    assert not pool.batches


def test_malformed_is_400_and_nothing_is_sent(prompb):
    pool = FakePool()

    async def go(client, ingest):  # type: ignore[no-untyped-def]
        for body in (b"\x05garbage", snappy.compress(b"\x0a\x03\x12\x01"), b""):
            r = await client.post("/api/v1/write", data=body)
            assert r.status == 400, body
            assert r.headers["X-Prometheus-Remote-Write-Samples-Written"] == "0"  # every negotiated answer

    run(pool, go)
    assert not pool.batches


@pytest.mark.parametrize("err", [UnavailableError("worker 0 restarting"), OverloadedError("worker behind")])
def test_worker_trouble_is_503_with_retry_after(prompb, err):
    pool = FakePool()
    pool.fail = err

    async def go(client, ingest):  # type: ignore[no-untyped-def]
        r = await client.post("/api/v1/write", data=v1_body(prompb))
        assert r.status == 503
        assert r.headers["Retry-After"] == "1"
        assert [r.headers[f"X-Prometheus-Remote-Write-{k}-Written"] for k in ("Samples", "Histograms", "Exemplars")] \
            == ["0", "0", "0"]

    run(pool, go)


def test_high_water_mark_answers_429_before_memory_grows(prompb):
    pool = FakePool()

    async def go(client, ingest):  # type: ignore[no-untyped-def]
        pool.gate = asyncio.Event()
        first = asyncio.create_task(client.post("/api/v1/write", data=v1_body(prompb)))
        while ingest.inflight_bytes == 0:
            await asyncio.sleep(0.01)
        r = await client.post("/api/v1/write", data=v1_body(prompb))
        assert r.status == 429 and r.headers["Retry-After"] == "1"
        pool.gate.set()
        assert (await first).status == 204
        assert ingest.inflight_bytes == 0
        r = await client.post("/api/v1/write", data=v1_body(prompb))
        assert r.status == 204

    run(pool, go, max_inflight_bytes=1)


def test_rejected_samples_are_400_with_counts(prompb):
    pool = FakePool()
    pool.rejected = {"series_limit": 4}

    async def go(client, ingest):  # type: ignore[no-untyped-def]
        r = await client.post("/api/v1/write", data=v1_body(prompb))
        assert r.status == 400
        assert "4 series_limit" in await r.text()
        assert r.headers[H_SAMPLES] == "2"
        assert ingest.samples["rejected_series_limit"] == 4

    run(pool, go)


def test_series_cache_flags_reach_the_cache() -> None:
    cfg = ServeConfig(ingest_series_cache=1000, ingest_series_cache_idle="30s")
    cfg.validate()
    cache = Ingest.from_config(FakePool(), cfg).decoder.cache  # type: ignore[arg-type]
    assert cache.max_refs == 1000 and cache.idle_window_s == 30.0
    with pytest.raises(ConfigError, match="--ingest-series-cache-idle"):
        ServeConfig(ingest_series_cache_idle="0s").validate()
