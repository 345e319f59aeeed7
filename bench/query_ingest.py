"""Do queries starve ingest? Remote-write rate alone and under query load.

    python -m bench.query_ingest [--series 10000] [--samples 360] [--clients 4]

One `athens serve`; the bench dataset (bench/datagen.py) is sent in three
time-ordered thirds: the first preloads data for the queries, the second
is timed alone, the third is timed while `--clients` loops run the bench
query list (bench/queries.py, range mode) back to back. Prints both ingest
rates, their ratio (the target is at least 0.8) and how many queries ran.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import aiohttp

from bench import datagen, ingest, queries, rwencode
from bench.systems import Athens, Server


async def _query_loop(base: str, window: queries.Window, stop: asyncio.Event, counts: dict[str, int]) -> None:
    exprs = [q.expr for q in queries.QUERIES if q.kind == "promql"]
    async with aiohttp.ClientSession() as session:
        i = 0
        while not stop.is_set():
            params = {"query": exprs[i % len(exprs)], "start": str(window.start), "end": str(window.end),
                      "step": str(window.step)}
            i += 1
            async with session.post(base + "/api/v1/query_range", data=params) as r:
                await r.read()
                counts[str(r.status)] = counts.get(str(r.status), 0) + 1


async def _measure(base: str, reqs: list[rwencode.EncodedRequest], window: queries.Window | None,
                   clients: int) -> tuple[ingest.IngestResult, dict[str, int]]:
    stop = asyncio.Event()
    counts: dict[str, int] = {}
    loops = [asyncio.create_task(_query_loop(base, window, stop, counts))
             for _ in range(clients if window is not None else 0)]
    if loops:
        await asyncio.sleep(1.0)  # let the query load build up first
    res = await ingest.send_all(base, reqs, concurrency=4)
    stop.set()
    await asyncio.gather(*loops, return_exceptions=True)
    return res, counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--samples", type=int, default=360)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--athens-arg", action="append", default=[],
                   help="extra argument for `athens serve` (repeatable), e.g. --athens-arg=--query-max-concurrency=1")
    ns = p.parse_args(argv)
    ds = datagen.generate(ns.series, ns.samples)
    reqs = rwencode.encode_dataset(ds)
    windows = sorted({r.window for r in reqs})
    third = len(windows) // 3
    parts = [[r for r in reqs if r.window in set(windows[k * third:(k + 1) * third] if k < 2 else windows[2 * third:])]
             for k in range(3)]
    with tempfile.TemporaryDirectory(prefix="athens-qi-") as logs, \
            Server(Athens(ns.workers, ("--wal-fsync", "off", *ns.athens_arg)), Path(logs)) as srv:
        pre, _ = asyncio.run(_measure(srv.base_url, parts[0], None, 0))
        t_end = int(ds.timestamps[:, max(ns.samples * third // len(windows) - 1, 0)].min())
        t_start = int(ds.timestamps[:, 0].min())
        window = queries.Window.for_data(t_start, t_end)
        alone, _ = asyncio.run(_measure(srv.base_url, parts[1], None, 0))
        loaded, counts = asyncio.run(_measure(srv.base_url, parts[2], window, ns.clients))
    ratio = loaded.samples_per_s / alone.samples_per_s if alone.samples_per_s else 0.0
    print(f"preload: {pre.samples_ok} samples in {pre.wall_s:.1f} s")
    print(f"ingest alone: {alone.samples_per_s:,.0f} samples/s ({alone.samples_ok} samples, {alone.wall_s:.1f} s)")
    print(f"ingest under query load: {loaded.samples_per_s:,.0f} samples/s ({loaded.samples_ok} samples, "
          f"{loaded.wall_s:.1f} s); queries answered: {counts}")
    print(f"ratio {ratio:.2f} (target >= 0.80)")
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
