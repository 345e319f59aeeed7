"""Each system's fixed cost per request, back to back and after idle.

    python -m bench.floor [--systems athens,prometheus,victoriametrics[,aiohttp,asyncio]]
        [--athens-workers 2] [--series 2000] [--requests 300] [--idle-ms 20]

A dashboard fires many light queries, and their latency is mostly a
system's fixed cost per request; bench.compare's light queries are where
Athens is slower than its peers. Every system gets the same small data set
(bench.datagen: --series x 240 samples); then, one system at a time, on one
keep-alive connection: `1+1` (no storage read), a selector that matches
nothing, one series (instant) and the `__name__` label values, each
--requests times back to back ("hot") and as many times with --idle-ms of
sleep before each request ("idle": the processes sleep between requests and
their caches cool down, as between the interleaved requests of
bench.compare). Prints the median and p90 latency per system, request and
mode and Athens' ratios to its peers; results.json in --out.

`aiohttp` and `asyncio` are not peers but baselines (bench.baseline_server):
a constant answer from an aiohttp application and from a bare uvloop
protocol, timed the same way, with no data: what any Python HTTP service
pays per request on this machine, and how much of it is the framework.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

from bench import datagen, report, rwencode
from bench.ingest import send_all
from bench.systems import INSTALL_HINT, Server, all_systems, baselines, get_ok

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODES = ("hot", "idle")


def requests_for(ds: datagen.Dataset) -> dict[str, str]:
    """Name -> path and query string of each timed request, at the data's newest sample."""
    at = ds.end_ms / 1000.0
    single = "{" + ",".join(f'{n}="{v}"' for n, v in ds.labels[0]) + "}"  # one series, all its labels

    def query(expr: str) -> str:
        return "/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": at})

    return {
        "1+1": query("1+1"),
        "no_match": query("no_such_metric_anywhere"),
        "single_series": query(single),
        "label_values_name": "/api/v1/label/__name__/values?"
        + urllib.parse.urlencode({"start": ds.start_ms / 1000.0, "end": at}),
    }


def time_requests(port: int, path: str, n: int, idle_s: float) -> list[float]:
    """Latencies (ms) of n GETs of path on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(5):  # connect, warm the server's caches for this request
            get_ok(conn, path)
        out = []
        for _ in range(n):
            if idle_s:
                time.sleep(idle_s)
            t0 = time.perf_counter()
            get_ok(conn, path)
            out.append((time.perf_counter() - t0) * 1000.0)
        return out
    finally:
        conn.close()


def summary(lat: list[float]) -> dict[str, float]:
    s = sorted(lat)
    return {"median_ms": statistics.median(s), "p90_ms": s[int(len(s) * 0.9)]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default="athens,prometheus,victoriametrics")
    p.add_argument("--athens-workers", type=int, default=2)
    p.add_argument("--series", type=int, default=2000)
    p.add_argument("--requests", type=int, default=300, help="per request kind and mode")
    p.add_argument("--idle-ms", type=float, default=20.0, help="sleep before each request of the idle mode")
    p.add_argument("--out", type=Path, help="result directory (default bench/results/<time>-floor/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    known = all_systems(args.athens_workers) | baselines()
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    if not names or any(n not in known for n in names):
        print(f"choose systems from {sorted(known)}", file=sys.stderr)
        return 2
    missing = [m for m in (known[n].missing() for n in names) if m]
    if missing:
        print("\n".join(missing), file=sys.stderr)
        print(f"Install the peers with:\n    {INSTALL_HINT}", file=sys.stderr)
        return 2
    out_dir = args.out or RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-floor"
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = datagen.generate_profile(datagen.Profile("floor", args.series, 240))
    reqs = rwencode.encode_dataset(ds)
    paths = requests_for(ds)
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for name in names:
        with Server(known[name], out_dir) as srv:
            if known[name].stores:
                ing = asyncio.run(send_all(srv.base_url, reqs))
                if ing.samples_ok != ds.n_series * ds.n_samples:
                    print(f"{name}: only {ing.samples_ok} samples written: {ing.errors[:3]}", file=sys.stderr)
                    return 1
                known[name].disk_bytes(srv.base_url, srv.data_dir)  # flushed, as queries usually find data
            time.sleep(1.0)
            results[name] = {
                req: {mode: summary(time_requests(srv.port, path, args.requests,
                                                  args.idle_ms / 1000.0 if mode == "idle" else 0.0))
                      for mode in MODES}
                for req, path in paths.items()
            }
    run = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": report.machine(),
           "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    (out_dir / "results.json").write_text(json.dumps(run, indent=1) + "\n")
    print(markdown(run))
    return 0


def markdown(run: dict) -> str:
    """The median / p90 table, with Athens' ratios of medians to each peer."""
    res = run["results"]
    names = list(res)
    peers = [n for n in names if n != "athens"] if "athens" in res else []
    head = ["request", "mode", *names, *(f"athens/{p}" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for req in next(iter(res.values())):
        for mode in MODES:
            cells = [f"{res[n][req][mode]['median_ms']:.3g} / {res[n][req][mode]['p90_ms']:.3g}" for n in names]
            ratios = [f"{res['athens'][req][mode]['median_ms'] / res[p][req][mode]['median_ms']:.2f}" for p in peers]
            lines.append("| " + " | ".join([req, mode, *cells, *ratios]) + " |")
    return f"Machine: {report.machine_line(run['machine'])}\n\n" + "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
