"""Two builds of Athens on one kept data set, in turn: which answers faster?

    python -m bench.compare --profile long --systems athens --keep-data --out RUN
    python -m bench.ab --run RUN --data DATA_DIR --a CHECKOUT_A --b CHECKOUT_B
        [--rounds 4] [--repeats 15] [--idle-ms 10] [--athens-workers 2] [--out DIR]
        [--requests "up_count_by_job range,labels api,..."]

On the shared 2-vCPU guests of this project one bench.compare run moves
every system's latencies by 10-30% (docs/benchmarks.md), more than most
changes are worth. Here one data directory (the `data` folder bench.compare
--keep-data left in /tmp) is served by build A and by build B in turn, one
`athens serve` at a time. Each round times every request of the benchmark's
query list (bench.queries, at the kept run's query window) --repeats times
with --idle-ms of sleep before each and no warm-up of its own, as
bench.compare's interleaved requests find the processes, and keeps the
median; the result is the median over rounds. Rounds alternate which
build starts first: the machine drifts over the minutes of a round (on
12-04 the order moved B/A by up to 10% either way), so B/A is also given
for each order apart. A build is the root of a checkout (its `athens`
package runs), e.g. a `git worktree add` of the commit to compare with.

A change worth less than the drift shows only when the requests it
affects are timed alone, over more rounds, next to a few it does not
affect as controls: --requests names them as the table does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

from bench import queries
from bench.report import geomean
from bench.systems import Athens, Server, get_ok

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def requests_of(run: dict) -> list[tuple[str, str]]:
    """(name, path and query string) of every timed request of a bench.compare run."""
    qw, ds = run["query_window"], run["dataset"]
    w = queries.Window(qw["instant"], qw["start"], qw["end"], qw["step"],
                       ds["start_ms"] / 1000.0, ds["end_ms"] / 1000.0)
    out = []
    for q in queries.QUERIES:
        for mode, path, params in queries.requests_for(q, w):
            out.append((f"{q.name} {mode}", f"{path}?{urllib.parse.urlencode(params)}"))
    return out


def select_requests(reqs: list[tuple[str, str]], names: str | None) -> list[tuple[str, str]]:
    """The requests named in `names` (comma-separated, as in the table), in
    the list's order; all of them if None."""
    if names is None:
        return reqs
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {n for n, _ in reqs})
    if unknown:
        raise SystemExit(f"bench.ab: no request named {', '.join(unknown)}; the names: {', '.join(n for n, _ in reqs)}")
    return [(n, path) for n, path in reqs if n in wanted]


def summarise(rounds: list[dict[str, dict[str, float]]], a_first: list[bool]) -> dict:
    """Per request: each build's median over rounds of its per-round
    medians, and B/A; over all requests the geometric mean of B/A, also
    within the rounds A started first and those B started first."""

    def ratios(which: list[int]) -> dict[str, float]:
        names = rounds[0]["a"]
        return {n: statistics.median(rounds[i]["b"][n] for i in which)
                / statistics.median(rounds[i]["a"][n] for i in which) for n in names}

    every = list(range(len(rounds)))
    per = {n: {build: statistics.median(r[build][n] for r in rounds) for build in ("a", "b")}
           for n in rounds[0]["a"]}
    out = {"requests": {n: {**v, "b_over_a": v["b"] / v["a"]} for n, v in per.items()},
           "geomean_b_over_a": geomean(list(ratios(every).values()))}
    for key, first in (("a_first", True), ("b_first", False)):
        which = [i for i in every if a_first[i] is first]
        out[f"geomean_b_over_a_{key}"] = geomean(list(ratios(which).values())) if which else None
    return out


def time_build(checkout: Path, data: Path, workers: int, reqs: list[tuple[str, str]],
               repeats: int, idle_s: float, log_dir: Path) -> dict[str, float]:
    """One `athens serve` of `checkout` on `data`: the median latency (ms) of
    each request. One untimed pass over the list first (connections, the
    first reads of the segments), then each request `repeats` times after
    `idle_s`, without warming it up alone: as in bench.compare, where the
    other systems' requests come between."""
    system = Athens(workers=workers, checkout=checkout)
    with Server(system, log_dir, data_dir=data) as srv:  # the given data dir is never removed
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        try:
            for _, path in reqs:
                get_ok(conn, path)
            out = {}
            for name, path in reqs:
                lat = []
                for _ in range(repeats):
                    time.sleep(idle_s)
                    t0 = time.perf_counter()
                    get_ok(conn, path)
                    lat.append((time.perf_counter() - t0) * 1000.0)
                out[name] = statistics.median(lat)
            return out
        finally:
            conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a bench.compare --out folder (its results.json)")
    p.add_argument("--data", type=Path, required=True, help="the data folder that run kept")
    p.add_argument("--a", type=Path, required=True, help="checkout of build A")
    p.add_argument("--b", type=Path, required=True, help="checkout of build B")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--idle-ms", type=float, default=10.0)
    p.add_argument("--athens-workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "ab")
    p.add_argument("--requests", help="time only these requests (comma-separated names, as in the table)")
    args = p.parse_args(argv)
    run = json.loads((args.run / "results.json").read_text())
    reqs = select_requests(requests_of(run), args.requests)
    builds = {"a": args.a.resolve(), "b": args.b.resolve()}
    rounds: list[dict[str, dict[str, float]]] = []
    a_first: list[bool] = []
    for i in range(args.rounds):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        timed = {}
        for build in order:
            print(f"round {i + 1}/{args.rounds}: build {build.upper()} ({builds[build]})", file=sys.stderr)
            timed[build] = time_build(builds[build], args.data, args.athens_workers, reqs,
                                      args.repeats, args.idle_ms / 1000.0, args.out / f"logs-{build}")
        rounds.append(timed)
        a_first.append(order[0] == "a")
    result = summarise(rounds, a_first)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ab.json").write_text(json.dumps(
        {"builds": {k: str(v) for k, v in builds.items()}, "args": {k: str(v) for k, v in vars(args).items()},
         "rounds": rounds, "a_first": a_first, **result}, indent=1))
    print("| request | A ms | B ms | B/A |\n|---|---|---|---|")
    for name, v in result["requests"].items():
        print(f"| {name} | {v['a']:.3g} | {v['b']:.3g} | {v['b_over_a']:.2f} |")
    print(f"\ngeometric mean of B/A: {result['geomean_b_over_a']:.3f} "
          f"(rounds A first: {result['geomean_b_over_a_a_first']:.3f}, "
          f"B first: {result['geomean_b_over_a_b_first'] or math.nan:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
