"""A one-day range query over many series, through a real `athens serve`.

    python -m bench.query_day [--series 10000] [--workers 2] [--repeats 5]

Builds the shards directly (Shard.append, no HTTP: remote-writing 57.6 M
samples would take minutes and is not what is measured), flushes them to
segments, starts `athens serve` on them with aggregation pushdown on and
off, waits for the compaction of the built data to finish, and times `sum by
(job) (rate(x[5m]))` over one day at 1-minute steps (15 s samples). Prints
median and best wall time per mode; the answers of both modes must agree to
1e-9.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.placement import WITHOUT_NAME
from athens.shards.shard import Shard, ShardConfig
from bench.systems import Athens, Server

T0 = 1_700_000_000_000
SAMPLES = 5760  # one day at 15 s
QUERY = "sum by (job) (rate(x[5m]))"


def build(root: Path, n_series: int, workers: int, t0: int = T0, seal_every: int = 0) -> None:
    """One day of `x` from t0, appended an hour at a time and sealed once at
    the end; with seal_every, appended and sealed that many samples a series
    at a time (as a worker holding more series seals more often)."""
    shards = [Shard(root / f"shard-{i}", ShardConfig(wal_fsync="off")) for i in range(workers)]
    for s in shards:
        s.open()
    rng = np.random.default_rng(1)
    labels = [Labels.from_dict({"__name__": "x", "job": f"j{i % 10}", "instance": f"h{i}"})
              for i in range(n_series)]
    n = seal_every or 240
    for k0 in range(0, SAMPLES, n):
        ts = t0 + np.arange(k0, k0 + n, dtype=np.int64) * 15_000
        batch = WriteBatch.from_series(
            [(lb, ts, np.round(rng.uniform(0, 5, n).cumsum() + k0 * 2.5, 2)) for lb in labels]
        )
        own = batch.owners(WITHOUT_NAME, workers)  # as a new data directory's router places them
        for i, s in enumerate(shards):
            s.append(batch.select_series(own == i))
            if seal_every:
                s.flush()
    for s in shards:
        s.flush()
        s.close()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.loads(r.read())


def wait_for_compaction(base_url: str, quiet_s: float = 3.0, limit_s: float = 600.0) -> float:
    """Wait until no worker has had a compaction job or merge for quiet_s
    (the server compacts or merges the built data after it starts: queries
    timed meanwhile share the CPUs with it). A worker starts one job a
    housekeeping tick, so a job may finish between two polls: the jobs'
    counters must not move either. Returns the seconds waited."""
    t0 = last_busy = time.monotonic()
    before: list[str] = []
    while time.monotonic() - t0 < limit_s:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=30) as r:
            lines = r.read().decode().splitlines()
        busy = any(line.startswith("athens_compaction_in_progress{") and not line.endswith(" 0") for line in lines)
        done = [line for line in lines if line.startswith(("athens_compactions_total{", "athens_segment_merges_total{"))]
        now = time.monotonic()
        if busy or done != before:
            last_busy = now
            before = done
        elif now - last_busy >= quiet_s:
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def run(data: Path, workers: int, pushdown: str, repeats: int) -> tuple[list[float], dict]:
    athens = Athens(workers=workers, extra_args=("--query-pushdown", pushdown, "--wal-fsync", "off"))
    with Server(athens, data / "logs", data_dir=data) as srv:
        waited = wait_for_compaction(srv.base_url)
        print(f"pushdown {pushdown}: compaction settled after {waited:.1f} s", flush=True)
        q = urllib.parse.urlencode({"query": QUERY, "start": T0 / 1000,
                                    "end": (T0 + (SAMPLES - 1) * 15_000) / 1000, "step": 60})
        return time_requests(f"{srv.base_url}/api/v1/query_range?{q}", repeats)


def time_requests(url: str, repeats: int) -> tuple[list[float], dict]:
    """Wall seconds of `repeats` GETs of url after one to warm up (the
    first query maps segments and fills caches), and the last answer."""
    get_json(url)
    times = []
    res: dict = {}
    for _ in range(repeats):
        t = time.perf_counter()
        res = get_json(url)
        times.append(time.perf_counter() - t)
    return times, res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--data", type=Path, help="reuse (or build into) this directory")
    ns = p.parse_args(argv)
    tmp = None
    data = ns.data
    if data is None:
        tmp = tempfile.mkdtemp(prefix="athens-qday-")
        data = Path(tmp)
    if not (data / "shard-0").exists():
        t = time.perf_counter()
        build(data, ns.series, ns.workers)
        print(f"built {ns.series} series x {SAMPLES} samples in {time.perf_counter() - t:.1f} s", flush=True)
    answers = {}
    try:
        for mode in ("on", "off"):
            times, res = run(data, ns.workers, mode, ns.repeats)
            answers[mode] = {tuple(sorted(r["metric"].items())): [float(v) for _, v in r["values"]]
                             for r in res["data"]["result"]}
            print(f"pushdown {mode}: median {statistics.median(times):.3f} s, best {min(times):.3f} s "
                  f"({len(times)} runs, {len(answers[mode])} series)", flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    a, b = answers["on"], answers["off"]
    worst = max((abs(x - y) / max(abs(x), abs(y), 1e-300) for k in a for x, y in zip(a[k], b.get(k, []))),
                default=0.0)
    same = a.keys() == b.keys() and all(len(a[k]) == len(b[k]) for k in a)
    print(f"answers agree: {same}, max relative difference {worst:.2e}")
    return 0 if same and worst <= 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
