"""Do queries starve ingest? Remote-write rate alone and under query load.

    python -m bench.query_ingest [--series 10000] [--samples 5760] [--rounds 4] [--clients 4]

One `athens serve` (default flags but --workers); the bench dataset (bench/datagen.py) is sent in
time-ordered parts: the first third preloads data for the queries, the
rest is cut into 2 x rounds parts, and each round times one part alone and
the next while `--clients` loops run the bench query list
(bench/queries.py, range mode, over the preloaded data) back to back. Alternating rounds, rather than one long phase of
each, keep the machine's drift out of the ratio. Prints each round, the
ingest rates over all rounds, their ratio (the target is at least 0.8) and
how many queries ran.
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
    p.add_argument("--samples", type=int, default=5760)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--athens-arg", action="append", default=[],
                   help="extra argument for `athens serve` (repeatable), e.g. --athens-arg=--query-max-concurrency=1")
    ns = p.parse_args(argv)
    ds = datagen.generate(ns.series, ns.samples)
    reqs = rwencode.encode_dataset(ds)
    windows = sorted({r.window for r in reqs})
    n_parts = 1 + 2 * ns.rounds
    pre_n = len(windows) // 3
    part_of = {w: 0 if k < pre_n else 1 + (k - pre_n) * (n_parts - 1) // (len(windows) - pre_n)
               for k, w in enumerate(windows)}
    parts: list[list[rwencode.EncodedRequest]] = [[] for _ in range(n_parts)]
    for r in reqs:
        parts[part_of[r.window]].append(r)
    totals = {"alone": [0, 0.0], "loaded": [0, 0.0]}  # samples, seconds
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="athens-qi-") as logs, \
            Server(Athens(workers=ns.workers, extra_args=tuple(ns.athens_arg)), Path(logs)) as srv:
        pre, _ = asyncio.run(_measure(srv.base_url, parts[0], None, 0))
        print(f"preload: {pre.samples_ok} samples in {pre.wall_s:.1f} s")
        pre_ts = ds.timestamps[:, : max(ns.samples // 3, 1)]
        window = queries.Window.for_data(int(pre_ts.min()), int(pre_ts[:, -1].min()))
        for k in range(ns.rounds):
            a, _ = asyncio.run(_measure(srv.base_url, parts[1 + 2 * k], None, 0))
            b, c = asyncio.run(_measure(srv.base_url, parts[2 + 2 * k], window, ns.clients))
            print(f"round {k + 1}: alone {a.samples_per_s:,.0f} samples/s, under load "
                  f"{b.samples_per_s:,.0f} samples/s ({b.samples_per_s / a.samples_per_s:.2f}); queries {c}")
            for key, res in (("alone", a), ("loaded", b)):
                totals[key][0] += res.samples_ok
                totals[key][1] += res.wall_s
            for key, n in c.items():
                counts[key] = counts.get(key, 0) + n
    (n_a, s_a), (n_l, s_l) = totals["alone"], totals["loaded"]
    ratio = (n_l / s_l) / (n_a / s_a) if n_a and n_l else 0.0
    print(f"ingest alone: {n_a / s_a:,.0f} samples/s ({n_a} samples, {s_a:.1f} s)")
    print(f"ingest under query load: {n_l / s_l:,.0f} samples/s ({n_l} samples, {s_l:.1f} s); "
          f"queries answered: {counts}")
    print(f"ratio {ratio:.2f} (target >= 0.80)")
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
