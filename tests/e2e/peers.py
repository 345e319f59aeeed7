"""Athens next to real Prometheus servers, holding the same data.

`start_peers` starts Athens and a Prometheus ("source") that scrapes itself
and remote-writes what it scrapes (and its metadata) into Athens. The
synthetic series are pushed into both by the test's own remote-write
encoder: Prometheus forwards only samples newer than its remote-write queue,
so history cannot reach Athens through it. Optionally a second, empty
Prometheus ("reader") reads Athens through remote_read.

Timestamps of the synthetic data are multiples of STEP_MS; tests evaluate
half a step away from them, where Prometheus 2.42 (closed range selectors)
and Athens (3.x, left-open) agree.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import snappy

from e2e.harness import SELF_SCRAPE_CONFIG, Athens, Prometheus, http, make_write, wait_until

STEP_MS = 15_000
SPAN_STEPS = 160  # 40 minutes: well inside what a fresh Prometheus accepts

# The self-scraping source also sends metric metadata to Athens.
SOURCE_CONFIG = SELF_SCRAPE_CONFIG + """\
    metadata_config:
      send: true
      send_interval: 2s
"""

READER_CONFIG = """
global:
  scrape_interval: 1m
scrape_configs: []
remote_read:
  - url: {url}/api/v1/read
    read_recent: true
"""


def synthetic(end_ms: int) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """Gauges, counters (one with a reset) and a classic histogram, ending at end_ms."""
    ts = [end_ms - (SPAN_STEPS - 1 - k) * STEP_MS for k in range(SPAN_STEPS)]
    out: list[tuple[dict[str, str], list[tuple[int, float]]]] = []
    for i in range(4):
        env = "prod" if i % 2 == 0 else "dev"
        out.append(({"__name__": "synth_gauge", "job": "app", "instance": f"i{i}", "env": env},
                    [(t, round(50 + 40 * math.sin(k / 9 + i), 2)) for k, t in enumerate(ts)]))
        counter = []
        total = 0.0
        for k, t in enumerate(ts):
            total += (k * 7 + i * 3) % 11
            if i == 3 and k == SPAN_STEPS // 2:
                total = 2.0  # a counter reset
            counter.append((t, total))
        job = "app" if i < 3 else "db"
        out.append(({"__name__": "synth_requests_total", "job": job, "instance": f"i{i}",
                     "code": "200" if i != 1 else "500"}, counter))
    for j, le in enumerate(("0.1", "0.5", "1", "+Inf")):
        out.append(({"__name__": "synth_latency_seconds_bucket", "job": "app", "le": le},
                    [(t, float(k * (j + 1) * 3)) for k, t in enumerate(ts)]))
    return out


def promtool(*args: str) -> Any:
    out = subprocess.run(["promtool", "query", *args, "-o", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@dataclass
class Peers:
    athens: Athens
    source: Prometheus
    reader: Prometheus | None
    end_ms: int  # last synthetic sample
    data: list[tuple[dict[str, str], list[tuple[int, float]]]]

    def stop(self) -> None:
        for p in (self.reader, self.source):
            if p is not None:
                p.stop()
        self.athens.stop()


def start_peers(tmp: Path, prompb: Any, reader: bool = False, athens_extra: list[str] | None = None) -> Peers:
    athens = Athens(tmp / "athens", extra=athens_extra).start()
    source = reader_p = None
    try:
        source = Prometheus(tmp / "source", SOURCE_CONFIG.format(url=athens.url)).start()
        end_ms = (int(time.time() * 1000) - 30_000) // STEP_MS * STEP_MS
        data = synthetic(end_ms)
        body = snappy.compress(make_write(prompb, data).SerializeToString())
        status, answer = http("POST", source.url + "/api/v1/write", body,
                              {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                               "X-Prometheus-Remote-Write-Version": "0.1.0"})
        assert status == 204, answer
        status, answer = athens.post_raw(body)
        assert status == 204, answer
        total = sum(len(s) for _, s in data)

        def arrived() -> bool:
            q = 'sum(count_over_time({__name__=~"synth_.+"}[1h]))'
            _, res = athens.api("/api/v1/query", {"query": q, "time": str(end_ms / 1000 + 1)})
            rows = res.get("data", {}).get("result", [])
            return bool(rows) and float(rows[0]["value"][1]) == total

        wait_until(arrived, 30, "the synthetic data to be queryable in Athens")
        wait_until(lambda: athens.api("/api/v1/query", {"query": "up{job=\"prometheus\"}"})[1]["data"]["result"] != [], 30,
                   "Prometheus to remote-write its scrapes into Athens")
        if reader:
            reader_p = Prometheus(tmp / "reader", READER_CONFIG.format(url=athens.url)).start()
        return Peers(athens, source, reader_p, end_ms, data)
    except BaseException:
        for p in (reader_p, source):
            if p is not None:
                p.stop()
        athens.stop()
        raise
