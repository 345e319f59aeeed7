"""Query limits through a real `athens serve`: pushdown answers, the memory
budget, timeouts, cancellation (CANCEL frames, client disconnect) and the
concurrency queue."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import numpy as np
import pytest

from e2e.harness import Athens, make_write
from athens.query.planner import PartialRequest
from athens.router.scatter import ShardClient, WorkerError
from athens.shards import evaluate

T0 = 1_700_000_000_000
N_SERIES = 400
N_SAMPLES = 240  # one hour at 15 s
# Slow for its work per window: two sorts of every window (mad_over_time's
# medians; quantile_over_time slides its windows sorted from step to step).
SLOW = "sum(mad_over_time(m[1h]))"
# Several seconds over the HTTP API (two pushed-down evaluations, 7200 steps).
SLOWER = "sum(mad_over_time(m[1h])) + sum(mad_over_time(m[50m]))"


def _load(athens: Athens, prompb) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    for lo in range(0, N_SERIES, 100):
        series = []
        for i in range(lo, lo + 100):
            labels = {"__name__": "m", "job": f"j{i % 4}", "instance": f"h{i}"}
            vals = np.cumsum(rng.uniform(0, 10, N_SAMPLES))
            series.append((labels, [(T0 + k * 15_000, float(v)) for k, v in enumerate(vals)]))
        status, body = athens.remote_write(make_write(prompb, series))
        assert status == 204, body


def _range(athens: Athens, query: str, step: str = "15", **extra: str) -> tuple[int, dict]:
    params = {"query": query, "start": str(T0 / 1000), "end": str((T0 + (N_SAMPLES - 1) * 15_000) / 1000),
              "step": step, **extra}
    return athens.api("/api/v1/query_range", params)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, prompb) -> Iterator[Athens]:  # type: ignore[no-untyped-def]
    """One loaded server for the tests that leave it as they found it; its
    workers evaluate a query's slices on two threads each."""
    a = Athens(tmp_path_factory.mktemp("query-limits") / "data",
               extra=["--query-max-concurrency", "2", "--query-threads", "2"])
    a.start()
    try:
        _load(a, prompb)
        yield a
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.stop()
        a.kill_all()


def _by_metric(res: dict) -> dict[tuple, list[float]]:
    return {tuple(sorted(r["metric"].items())): [float(v) for _, v in r["values"]]
            for r in res["data"]["result"]}


@pytest.mark.parametrize("agg", ["sum by (job)", "avg by (job)", "stddev", "max without (instance)",
                                 "count", "topk(3,"])
def test_pushdown_matches_router_evaluation(loaded: Athens, agg: str) -> None:
    """An aggregation the workers pre-aggregate equals the same aggregation
    over an argument the planner cannot push (a vector/vector operation)."""
    inner, unpushable = "rate(m[5m])", "(rate(m[5m]) + 0 * rate(m[5m]))"
    if agg.endswith(","):
        q1, q2 = f"{agg} {inner})", f"{agg} {unpushable})"
    else:
        q1, q2 = f"{agg} ({inner})", f"{agg} ({unpushable})"
    s1, r1 = _range(loaded, q1)
    s2, r2 = _range(loaded, q2)
    assert s1 == 200 and s2 == 200, (r1, r2)
    a, b = _by_metric(r1), _by_metric(r2)
    assert a.keys() == b.keys() and a
    for k in a:
        assert len(a[k]) == len(b[k])
        for x, y in zip(a[k], b[k]):
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (q1, k, x, y)


def test_memory_bound_fails_only_that_query(athens_factory, prompb) -> None:  # type: ignore[no-untyped-def]
    a = athens_factory(extra=["--query-max-bytes", "1MiB"]).start()
    _load(a, prompb)
    status, res = _range(a, "count_over_time(m[1h])")
    assert status == 422, res
    assert res["errorType"] == "execution"
    assert "too many samples" in res["error"]
    # The same budget holds on every worker for the part pushed to it.
    status, res = _range(a, "sum(count_over_time(m[1h]))", step="5")
    assert status == 422, res
    # Small queries still work, and the server stays up.
    status, res = _range(a, "sum by (job) (rate(m[5m]))", step="60")
    assert status == 200, res
    assert len(res["data"]["result"]) == 4
    assert a.ready()


def test_timeout_stops_the_workers(loaded: Athens) -> None:
    t = time.monotonic()
    status, res = _range(loaded, SLOWER, step="0.5", timeout="500ms")
    took = time.monotonic() - t
    assert status == 503 and res["errorType"] == "timeout", res
    assert took < 5, took
    # The workers dropped that evaluation: a quick query is not held up.
    t = time.monotonic()
    status, _ = _range(loaded, "sum by (job) (rate(m[5m]))", step="60")
    assert status == 200
    assert time.monotonic() - t < 3


def _worker_eval(athens: Athens, cancel_after: float | None) -> tuple[object, float]:
    """Send SLOW as an EVAL straight to worker 0; CANCEL it after a while."""

    async def run() -> tuple[object, float]:
        client = ShardClient(0, athens.data_dir / "run" / "worker-0.sock")
        steps = np.arange(T0, T0 + N_SAMPLES * 15_000, 200, dtype=np.int64)
        req = PartialRequest(SLOW, 0, int(steps[0]), int(steps[-1]), 200, 300_000, steps,
                             50_000_000, 0, 120.0)
        ids: list[int] = []

        def make(req_id: int):  # type: ignore[no-untyped-def]
            ids.append(req_id)
            return evaluate.eval_request(req_id, req)

        t = time.monotonic()
        task = asyncio.ensure_future(client.request(make))
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)
            from athens.router.scatter import _send_cancel  # noqa: PLC0415

            await _send_cancel(client, ids[0])
        try:
            out: object = evaluate.parse_partial(await task, len(steps))
        except WorkerError as e:
            out = e
        took = time.monotonic() - t
        await client.close()
        return out, took

    return asyncio.run(run())


def test_cancel_frame_stops_a_worker_evaluation(loaded: Athens) -> None:
    full, full_took = _worker_eval(loaded, None)
    assert not isinstance(full, Exception), full
    assert full_took > 1.0, "the test query must be slow enough to cancel"
    out, took = _worker_eval(loaded, 0.3)
    assert isinstance(out, WorkerError) and out.error_type == "canceled", out
    assert took < full_took / 2 + 0.5


def test_client_disconnect_cancels_the_workers(loaded: Athens) -> None:
    mark = len(loaded.log())
    path = (f"/api/v1/query_range?query={urllib.parse.quote(SLOWER)}&start={T0 / 1000}"
            f"&end={(T0 + (N_SAMPLES - 1) * 15_000) / 1000}&step=0.5")
    with socket.create_connection(("127.0.0.1", loaded.port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while "evaluation canceled" not in loaded.log()[mark:]:
        assert time.monotonic() < deadline, "the workers did not stop after the client left"
        time.sleep(0.1)


def test_concurrency_limit_queues_queries(athens_factory, prompb) -> None:  # type: ignore[no-untyped-def]
    a = athens_factory(extra=["--query-max-concurrency", "1"]).start()
    _load(a, prompb)
    slow: list[int] = []
    th = threading.Thread(target=lambda: slow.append(_range(a, SLOWER, step="0.5", timeout="10s")[0]))
    th.start()
    time.sleep(0.5)
    status, res = _range(a, "sum(m)", step="60", timeout="1s")
    assert status == 503 and "queue" in res["error"], res
    th.join(30)
    # With the slot free again the same query answers.
    status, res = _range(a, "sum(m)", step="60")
    assert status == 200, res
