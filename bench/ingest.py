"""Sending the pre-encoded remote-write requests, as Prometheus would.

At most `concurrency` requests are in flight. A request for series chunk c
and time window w starts only after (w-1, c) has been answered, so every
series arrives in time order (Prometheus 2.42 rejects anything older than a
series' newest sample). Like Prometheus' remote-write queue, 429 and 5xx
answers and connection errors are retried with backoff (honouring
Retry-After); other 4xx answers are final. Every answer's status is counted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from bench.rwencode import EncodedRequest

HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "User-Agent": "athens-bench/0.1",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
HEADERS_V2 = {
    **HEADERS,
    "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    "X-Prometheus-Remote-Write-Version": "2.0.0",
}
MAX_ATTEMPTS = 6
REQUEST_TIMEOUT_S = 120.0


@dataclass(slots=True)
class IngestResult:
    """What one system did with the whole request stream."""

    wall_s: float = 0.0
    requests: int = 0
    samples_sent: int = 0
    samples_ok: int = 0
    bytes_sent: int = 0
    retries: int = 0
    stopped_early: bool = False  # the time budget ran out before every request was sent
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # first few distinct error texts

    @property
    def samples_per_s(self) -> float:
        return self.samples_ok / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "wall_s": self.wall_s,
            "requests": self.requests,
            "samples_sent": self.samples_sent,
            "samples_ok": self.samples_ok,
            "bytes_sent": self.bytes_sent,
            "retries": self.retries,
            "stopped_early": self.stopped_early,
            "statuses": dict(sorted(self.statuses.items())),
            "errors": self.errors,
            "samples_per_s": self.samples_per_s,
        }


def _retry_after(resp: aiohttp.ClientResponse, attempt: int) -> float:
    try:
        return min(float(resp.headers.get("Retry-After", "")), 10.0)
    except ValueError:
        return min(0.1 * 2**attempt, 5.0)


async def _send_one(session: aiohttp.ClientSession, url: str, req: EncodedRequest,
                    after: asyncio.Task[None] | None, res: IngestResult) -> None:
    if after is not None:
        await after
    for attempt in range(MAX_ATTEMPTS):
        try:
            async with session.post(url, data=req.body, headers=HEADERS_V2 if req.protocol == 2 else HEADERS) as resp:
                body = await resp.read()
                res.statuses[str(resp.status)] += 1
                if 200 <= resp.status < 300:
                    res.samples_ok += req.n_samples
                    return
                retryable = resp.status == 429 or resp.status >= 500
                if len(res.errors) < 5:
                    text = f"{resp.status}: {body[:300].decode(errors='replace').strip()}"
                    if text not in res.errors:
                        res.errors.append(text)
                if not retryable:
                    return
                delay = _retry_after(resp, attempt)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            res.statuses[type(e).__name__] += 1
            if len(res.errors) < 5:
                res.errors.append(f"{type(e).__name__}: {e}")
            delay = min(0.1 * 2**attempt, 5.0)
        if attempt + 1 < MAX_ATTEMPTS:
            res.retries += 1
            await asyncio.sleep(delay)


async def send_all(base_url: str, requests: list[EncodedRequest], concurrency: int = 4,
                   budget_s: float = math.inf) -> IngestResult:
    """Send every request in order with bounded concurrency; time the whole stream.

    No new request starts after budget_s seconds (a very slow system still
    ends the run in bounded time; the result says it stopped early)."""
    res = IngestResult(requests=len(requests))
    url = base_url + "/api/v1/write"
    sem = asyncio.Semaphore(concurrency)
    last: dict[int, asyncio.Task[None]] = {}
    tasks: list[asyncio.Task[None]] = []
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t0 = time.perf_counter()
        try:
            for req in requests:
                await sem.acquire()
                if time.perf_counter() - t0 > budget_s:
                    sem.release()
                    res.stopped_early = True
                    break
                task = asyncio.create_task(_send_one(session, url, req, last.get(req.chunk), res))
                task.add_done_callback(lambda _t: sem.release())
                last[req.chunk] = task
                tasks.append(task)
                res.samples_sent += req.n_samples
                res.bytes_sent += len(req.body)
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        res.wall_s = time.perf_counter() - t0
    return res
