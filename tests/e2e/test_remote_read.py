"""Remote read: a real Prometheus reads Athens' history; raw responses decode to the stored samples."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import snappy

from e2e.harness import http
from e2e.peers import STEP_MS, Peers, promtool, start_peers
from e2e.readpb import compile_read_proto, decode_xor_chunk, read_frames
from e2e.test_api import same_result

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian's prometheus package is not installed (apt-get install prometheus)",
)

QUERIES = [
    "synth_gauge",
    "rate(synth_requests_total[1m])",
    "sum by (job) (increase(synth_requests_total[5m]))",
    'max_over_time(synth_gauge{env="dev"}[5m])',
    "histogram_quantile(0.5, rate(synth_latency_seconds_bucket[5m]))",
]


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory, prompb: Any) -> Iterator[Peers]:
    p = start_peers(tmp_path_factory.mktemp("rr"), prompb, reader=True)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def readpb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return compile_read_proto(tmp_path_factory.mktemp("readpb"))


@pytest.mark.parametrize("query", QUERIES)
def test_prometheus_reads_athens_history(peers: Peers, query: str) -> None:
    """The reader Prometheus stores nothing itself: every answer comes through /api/v1/read."""
    assert peers.reader is not None
    end = f"{(peers.end_ms - STEP_MS // 2) / 1000:.3f}"
    start = f"{(peers.end_ms - STEP_MS // 2 - 30 * 60_000) / 1000:.3f}"
    a = promtool("instant", "--time", end, peers.athens.url, query)
    r = promtool("instant", "--time", end, peers.reader.url, query)
    assert r, f"the reader returned nothing for {query}"
    same_result(r, a)
    a = promtool("range", "--start", start, "--end", end, "--step", "30s", peers.athens.url, query)
    r = promtool("range", "--start", start, "--end", end, "--step", "30s", peers.reader.url, query)
    same_result(r, a)


def _request(readpb: Any, peers: Peers, accepted: list[int]) -> Any:
    req = readpb.ReadRequest()
    for name in ("synth_gauge", "synth_requests_total"):
        q = req.queries.add(start_timestamp_ms=peers.end_ms - 3_600_000, end_timestamp_ms=peers.end_ms)
        q.matchers.add(type=readpb.LabelMatcher.EQ, name="__name__", value=name)
        q.matchers.add(type=readpb.LabelMatcher.RE, name="instance", value="i[0-2]")
    req.accepted_response_types.extend(accepted)
    return req


def _expected(peers: Peers, name: str) -> dict[tuple, list[tuple[int, float]]]:
    return {tuple(sorted(lb.items())): samples for lb, samples in peers.data
            if lb["__name__"] == name and lb["instance"] in ("i0", "i1", "i2")}


def test_samples_response_decodes_to_stored_samples(peers: Peers, readpb: Any) -> None:
    body = snappy.compress(_request(readpb, peers, []).SerializeToString())
    status, raw = http("POST", peers.athens.url + "/api/v1/read", body,
                       {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                        "X-Prometheus-Remote-Read-Version": "0.1.0"})
    assert status == 200, raw
    resp = readpb.ReadResponse.FromString(snappy.uncompress(raw))
    assert len(resp.results) == 2
    for result, name in zip(resp.results, ("synth_gauge", "synth_requests_total")):
        got = {tuple(sorted((lb.name, lb.value) for lb in ts.labels)): [(s.timestamp, s.value) for s in ts.samples]
               for ts in result.timeseries}
        assert got == _expected(peers, name)


def test_streamed_xor_chunks_decode_to_stored_samples(peers: Peers, readpb: Any) -> None:
    req = _request(readpb, peers, [readpb.ReadRequest.STREAMED_XOR_CHUNKS, readpb.ReadRequest.SAMPLES])
    status, raw = http("POST", peers.athens.url + "/api/v1/read", snappy.compress(req.SerializeToString()),
                       {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"})
    assert status == 200, raw
    got: dict[int, dict[tuple, list[tuple[int, float]]]] = {0: {}, 1: {}}
    for msg in read_frames(raw):
        cr = readpb.ChunkedReadResponse.FromString(msg)
        for cs in cr.chunked_series:
            key = tuple(sorted((lb.name, lb.value) for lb in cs.labels))
            samples = got[cr.query_index].setdefault(key, [])
            for ch in cs.chunks:
                assert ch.type == readpb.Chunk.XOR
                decoded = decode_xor_chunk(ch.data)
                assert decoded[0][0] == ch.min_time_ms and decoded[-1][0] == ch.max_time_ms
                assert len(decoded) <= 120
                samples.extend(decoded)
    assert got[0] == _expected(peers, "synth_gauge")
    assert got[1] == _expected(peers, "synth_requests_total")


def test_bad_read_requests(peers: Peers, readpb: Any) -> None:
    status, _ = http("POST", peers.athens.url + "/api/v1/read", b"\x20not snappy")
    assert status == 400
    req = readpb.ReadRequest()
    q = req.queries.add(start_timestamp_ms=0, end_timestamp_ms=1)
    q.matchers.add(type=readpb.LabelMatcher.RE, name="job", value="(")
    status, body = http("POST", peers.athens.url + "/api/v1/read", snappy.compress(req.SerializeToString()))
    assert status == 400, body
