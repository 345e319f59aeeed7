"""Queries over a day that has not closed yet: its seals as they are, and merged.

    python -m bench.open_day [--series 10000] [--workers 2] [--seal-every 40] [--repeats 7]

Builds one day of `x` (bench.query_day's series, 15 s samples) starting at a
UTC midnight, so the whole day is still open time when the server starts:
nothing is compacted, and each worker holds one segment file per seal. The
shards are sealed every --seal-every samples (40: every 10 minutes of data,
as a worker with 100,000 series seals at its default 4 M samples; at most
15 minutes apart by default whatever the series), then served twice: with
`--seal-merge-fanin 0` (the seals as they are), then with the default (the
server merges them at start; timed after the merges settle). Prints each query's median and best wall time per mode, and the
ratio of medians; the answers of both modes must be identical.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path

from athens.config import ServeConfig
from athens.shards.compact import DAY_MS
from bench.query_day import SAMPLES, build, time_requests, wait_for_compaction
from bench.systems import Athens, Server

T0 = 1_700_000_000_000 // DAY_MS * DAY_MS
END_S = (T0 + (SAMPLES - 1) * 15_000) / 1000
QUERIES = (  # (name, PromQL, range or instant)
    ("one series, 24 h", 'x{instance="h5"}', True),
    ("sum by (job) (rate), 24 h", "sum by (job) (rate(x[5m]))", True),
    ("count by (job), 24 h", "count by (job) (x)", True),
    ("max_over_time 1 h, 100 series, 24 h", 'max_over_time(x{instance=~"h1.."}[1h])', True),
    ("sum by (job) (rate), instant", "sum by (job) (rate(x[5m]))", False),
)


def run(data: Path, workers: int, fanin: int, repeats: int) -> dict[str, tuple[list[float], dict]]:
    athens = Athens(workers=workers, extra_args=("--seal-merge-fanin", str(fanin), "--wal-fsync", "off"))
    with Server(athens, data / "logs", data_dir=data) as srv:
        waited = wait_for_compaction(srv.base_url)
        files = sum(len(list((data / f"shard-{i}" / "segments").glob("*.seg"))) for i in range(workers))
        print(f"--seal-merge-fanin {fanin}: {files} segment files after {waited:.1f} s", flush=True)
        out = {}
        for name, expr, ranged in QUERIES:
            if ranged:
                q = {"query": expr, "start": T0 / 1000, "end": END_S, "step": 60}
                url = f"{srv.base_url}/api/v1/query_range?{urllib.parse.urlencode(q)}"
            else:
                url = f"{srv.base_url}/api/v1/query?{urllib.parse.urlencode({'query': expr, 'time': END_S})}"
            times, res = time_requests(url, repeats)
            out[name] = (times, res["data"])
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seal-every", type=int, default=40, help="samples a series between seals")
    p.add_argument("--repeats", type=int, default=7)
    ns = p.parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="athens-openday-"))
    try:
        t = time.perf_counter()
        build(data, ns.series, ns.workers, T0, ns.seal_every)
        print(f"built {ns.series} series x {SAMPLES} samples, sealed every {ns.seal_every} samples, "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        seals = run(data, ns.workers, 0, ns.repeats)
        merged = run(data, ns.workers, ServeConfig().seal_merge_fanin, ns.repeats)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    same = True
    print("| query | seals: median / best ms | merged: median / best ms | merged/seals |")
    print("|---|---|---|---|")
    for name, _, _ in QUERIES:
        (a, ra), (b, rb) = seals[name], merged[name]
        same &= ra == rb
        ma, mb = statistics.median(a) * 1e3, statistics.median(b) * 1e3
        print(f"| {name} | {ma:.1f} / {min(a) * 1e3:.1f} | {mb:.1f} / {min(b) * 1e3:.1f} | {mb / ma:.2f} |")
    print(f"answers identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
