"""Side-by-side benchmark: Athens, Prometheus and VictoriaMetrics on the same data.

    python -m bench.compare --profile small|medium|long|day
        [--systems athens,prometheus,victoriametrics] [--out DIR]

The data is generated and encoded once (bench.datagen, bench.rwencode), so
every system receives the same bytes. Each system runs on a free loopback
port with a fresh temporary data directory:

1. ingest, one system after another: all requests, at most --concurrency in
   flight; wall time, HTTP statuses, CPU time of the server's whole process
   tree before/after;
2. disk: bytes on disk after the system's own flush/compaction, per sample;
   the server then waits, idle, until every system has ingested;
3. queries, all systems up: bench.queries.QUERIES, instant and range,
   --repeats times each, the systems asked in turn for each repeat (so they
   are measured under the same machine conditions); answers diffed against
   Prometheus' answer to the same query;
peak RSS of each process tree is sampled throughout. Every server is stopped
and waited for at the end, also on errors and Ctrl-C. Nothing is installed:
missing peers are reported with the command that installs them.

Results: results.json, results.md and ratios.png (if matplotlib is
installed) in --out (default bench/results/<UTC time>-<profile>/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import aiohttp
import psutil

from bench import datagen, queries, report, rwencode
from bench.ingest import send_all
from bench.systems import (
    INSTALL_HINT,
    BenchError,
    MemorySampler,
    Server,
    System,
    all_systems,
    tree_cpu_seconds,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_SYSTEMS = "athens,prometheus,victoriametrics"
REPEATS = {"small": 5, "medium": 9, "long": 9, "day": 3}
# Per-system time budgets (ingest, queries) in seconds: they keep a slow system
# from stretching the small profile past its 5-minute target.
BUDGETS = {"small": (120.0, 60.0), "medium": (900.0, 300.0), "long": (900.0, 300.0), "day": (900.0, 600.0)}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ingest_system(system: System, srv: Server, requests: list[rwencode.EncodedRequest],
                  args: argparse.Namespace) -> dict[str, object]:
    """Ingest into a started server, measure its disk use, wait until it is idle."""
    assert srv.proc is not None and srv.data_dir is not None
    out: dict[str, object] = {"version": system.version(), "status": "ok",
                              "startup_s": srv.startup_s, "log": str(srv.log_path)}
    _log(f"{system.name}: ready on {srv.base_url} after {srv.startup_s:.2f}s; ingesting")
    cpu0 = tree_cpu_seconds(srv.proc)
    ing = asyncio.run(send_all(srv.base_url, requests, args.concurrency, args.ingest_budget))
    cpu1 = tree_cpu_seconds(srv.proc)
    out["ingest"] = ing.to_json()
    out["ingest_cpu_s"] = cpu1 - cpu0
    out["samples_per_cpu_s"] = ing.samples_ok / (cpu1 - cpu0) if cpu1 > cpu0 else None
    _log(f"{system.name}: {ing.samples_ok:,} samples ok in {ing.wall_s:.2f}s "
         f"({ing.samples_per_s:,.0f}/s), statuses {dict(ing.statuses)}, server CPU {cpu1 - cpu0:.2f}s")
    if ing.stopped_early:
        _log(f"{system.name}: ingest budget of {args.ingest_budget:.0f}s used up; "
             f"{ing.samples_sent:,} of {sum(r.n_samples for r in requests):,} samples sent")
    for e in ing.errors:
        _log(f"{system.name}: write error {e}")
    t0 = time.perf_counter()
    disk = system.disk_bytes(srv.base_url, srv.data_dir)
    out["disk_bytes"] = disk
    out["disk_measure_s"] = time.perf_counter() - t0
    out["bytes_per_sample"] = disk / ing.samples_ok if ing.samples_ok else None
    # VictoriaMetrics acknowledges before persisting, Prometheus compacts its head
    # later, Athens may queue appends: the CPU until the measured on-disk state is
    # reached and the server has gone idle is the fuller cost.
    out["settle_s"] = _wait_idle(srv.proc)
    cpu_flushed = tree_cpu_seconds(srv.proc)
    out["ingest_flush_cpu_s"] = cpu_flushed - cpu0
    out["samples_per_cpu_s_with_flush"] = (ing.samples_ok / (cpu_flushed - cpu0)
                                           if cpu_flushed > cpu0 else None)
    _log(f"{system.name}: {disk:,} bytes on disk, {out['bytes_per_sample'] or 0:.3f} bytes/sample")
    return out


def _wait_idle(proc: psutil.Process, window_s: float = 0.5, busy_cpu_s: float = 0.05,
               limit_s: float = 15.0) -> float:
    """Wait until the tree uses under busy_cpu_s of CPU per window_s (at most limit_s);
    returns the seconds waited."""
    t0 = time.perf_counter()
    prev = tree_cpu_seconds(proc)
    while time.perf_counter() - t0 < limit_s:
        time.sleep(window_s)
        cur = tree_cpu_seconds(proc)
        if cur - prev < busy_cpu_s:
            break
        prev = cur
    return time.perf_counter() - t0


def _term_as_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM takes the Ctrl-C path: inside asyncio.run the runner's SIGINT
    handler cancels the main task cleanly; elsewhere KeyboardInterrupt unwinds
    the `with Server` blocks, which stop the servers."""
    signal.raise_signal(signal.SIGINT)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=sorted(datagen.PROFILES), default="small")
    p.add_argument("--systems", default=DEFAULT_SYSTEMS,
                   help=f"comma-separated, run in this order (default {DEFAULT_SYSTEMS})")
    p.add_argument("--out", type=Path, help="result directory (default bench/results/<time>-<profile>)")
    p.add_argument("--series", type=int, help="override the profile's series count (quick trials)")
    p.add_argument("--samples", type=int, help="override the profile's samples per series (quick trials)")
    p.add_argument("--range-points", type=int,
                   help="about how many steps a range query has (default 100; 1440 for day: 1-minute steps)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--concurrency", type=int, default=4, help="remote-write requests in flight")
    p.add_argument("--series-per-request", type=int, default=rwencode.SERIES_PER_REQUEST)
    p.add_argument("--samples-per-series", type=int, default=rwencode.SAMPLES_PER_SERIES)
    p.add_argument("--repeats", type=int, help="runs per query (default 5 for small, 9 for medium and long, 3 for day)")
    p.add_argument("--ingest-budget", type=float,
                   help="seconds after which no further write request is started (the result is "
                        "marked stopped_early); default 120 for small, 900 otherwise")
    p.add_argument("--query-budget", type=float,
                   help="seconds of query time per system: a slow query is repeated fewer times, and "
                        "queries left when it is used up are not run; default 60 for small, 300 otherwise")
    p.add_argument("--athens-workers", type=int, default=2)
    p.add_argument("--athens-arg", action="append", default=[],
                   help="extra argument for `athens serve` (repeatable), e.g. --athens-arg=--wal-fsync=batch")
    p.add_argument("--keep-data", action="store_true", help="keep the servers' temporary data directories")
    ns = p.parse_args(argv)
    if ns.repeats is None:
        ns.repeats = REPEATS[ns.profile]
    if ns.ingest_budget is None:
        ns.ingest_budget = BUDGETS[ns.profile][0]
    if ns.query_budget is None:
        ns.query_budget = BUDGETS[ns.profile][1]
    return ns


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; 130 if interrupted (every started server is stopped first)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        _log("interrupted; every started server was stopped")
        return 130


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    command = "python -m bench.compare " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    known = all_systems(args.athens_workers, tuple(args.athens_arg))
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        print(f"unknown systems {unknown}; choose from {sorted(known)}", file=sys.stderr)
        return 2
    missing_peers = [known[n].missing() for n in names if n != "athens" and known[n].missing()]
    if missing_peers:
        for m in missing_peers:
            print(m, file=sys.stderr)
        print(f"Install the peers with:\n    {INSTALL_HINT}", file=sys.stderr)
        return 2
    # A driver started in the background by a shell inherits SIGINT ignored; restore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _term_as_interrupt)

    profile = datagen.PROFILES[args.profile]
    if args.series or args.samples or args.range_points:
        profile = datagen.Profile(f"{profile.name}-custom", args.series or profile.n_series,
                                  args.samples or profile.n_samples, profile.interval_ms,
                                  args.range_points or profile.range_points)
    started = dt.datetime.now(dt.timezone.utc)
    out_dir = args.out or RESULTS_DIR / f"{started:%Y%m%d-%H%M%S}-{profile.name}"
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    ds = datagen.generate_profile(profile, seed=args.seed)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    reqs = rwencode.encode_dataset(ds, args.series_per_request, args.samples_per_series)
    enc_s = time.perf_counter() - t0
    comp = sum(len(r.body) for r in reqs)
    _log(f"data: {ds.n_series:,} series x {ds.n_samples} samples generated in {gen_s:.1f}s; "
         f"{len(reqs)} requests, {comp / 2**20:.1f} MiB snappy, encoded in {enc_s:.1f}s")
    window = queries.Window.for_data(ds.start_ms, ds.end_ms, ds.interval_ms, profile.range_points)

    run: dict[str, object] = {
        "profile": profile.name,
        "date": started.isoformat(timespec="seconds"),
        "command": command,
        "machine": report.machine(),
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "dataset": {
            "n_series": ds.n_series,
            "n_samples": ds.n_samples,
            "n_samples_total": ds.n_samples_total,
            "start_ms": ds.start_ms,
            "end_ms": ds.end_ms,
            "seed": args.seed,
            "jittered_targets": int(ds.jittered.sum()),
            "targets": int(len(ds.jittered)),
            "requests": len(reqs),
            "series_per_request": args.series_per_request,
            "samples_per_series": args.samples_per_series,
            "compressed_bytes": comp,
            "raw_bytes": sum(r.raw_size for r in reqs),
            "generate_s": gen_s,
            "encode_s": enc_s,
        },
        "query_window": {"instant": window.instant, "start": window.start, "end": window.end,
                         "step": window.step},
        "systems": {},
    }
    systems: dict[str, dict[str, object]] = run["systems"]  # type: ignore[assignment]
    all_timings: dict[str, list[queries.Timing]] = {}
    with contextlib.ExitStack() as stack:
        # Ingest one system at a time (CPU per sample is measured per tree);
        # each stays up, idle, for the query phase, which interleaves them.
        up: dict[str, tuple[Server, MemorySampler]] = {}
        for name in names:
            system = known[name]
            why = system.missing()
            if why:
                _log(f"{name}: skipped: {why}")
                systems[name] = {"status": "skipped", "reason": why}
                continue
            try:
                srv = stack.enter_context(Server(system, out_dir, keep_data=args.keep_data))
                assert srv.proc is not None
                rss = stack.enter_context(MemorySampler(srv.proc))
                systems[name] = ingest_system(system, srv, reqs, args)
                up[name] = (srv, rss)
            except (BenchError, OSError, aiohttp.ClientError) as e:
                _log(f"{name}: failed: {e}")
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [repr(e)]
                reason = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"
                systems[name] = {"status": "failed", "reason": reason[:400], "detail": str(e),
                                 "log": str(out_dir / f"{name}.log")}
        for name, (srv, _) in up.items():
            assert srv.proc is not None
            _wait_idle(srv.proc)  # later ingests may have delayed its background work
        _log(f"querying {', '.join(up)}, interleaved")
        for _, rss in up.values():
            rss.mark("queries")
        cpu0 = {name: tree_cpu_seconds(srv.proc) for name, (srv, _) in up.items() if srv.proc}
        all_timings = asyncio.run(queries.run_queries({name: srv.base_url for name, (srv, _) in up.items()},
                                                      window, args.repeats, args.query_budget))
        for name, (srv, _) in up.items():
            assert srv.proc is not None
            systems[name]["query_cpu_s"] = tree_cpu_seconds(srv.proc) - cpu0[name]
            systems[name]["query_wall_s"] = sum(sum(t.latencies_ms) for t in all_timings[name]) / 1000.0
    for name, (_, rss) in up.items():
        systems[name]["peak_rss_bytes"] = rss.peak_rss
        systems[name]["peak_pss_bytes"] = rss.peak_pss
        systems[name]["peak_anon_bytes"] = rss.peak_anon
        systems[name]["peak_rss_bytes_by_phase"] = rss.peak_rss_by_phase
        failed = [t for t in all_timings[name] if t.errors]
        phases = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in rss.peak_rss_by_phase.items())
        _log(f"{name}: stopped; {len(all_timings[name]) - len(failed)}/{len(all_timings[name])} "
             f"queries answered, peak RSS {rss.peak_rss / 2**20:.0f} MiB ({phases}), PSS {rss.peak_pss / 2**20:.0f} MiB, "
             f"anonymous {rss.peak_anon / 2**20:.0f} MiB")

    ref = {(t.query, t.mode): t.result for t in all_timings.get("prometheus", [])}
    for name, timings in all_timings.items():
        for t in timings:
            if name != "prometheus" and (t.query, t.mode) in ref:
                t.diff = queries.diff(ref[(t.query, t.mode)], t.result)
        systems[name]["queries"] = [t.to_json() for t in timings]

    (out_dir / "results.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    md = report.markdown(run)
    header = (f"# Benchmark `{profile.name}` — {run['date']}\n\n"
              f"Machine: {report.machine_line(run['machine'])}  \n"  # type: ignore[arg-type]
              f"Command: `{command}`\n\n")
    (out_dir / "results.md").write_text(header + md)
    print(header + md)
    hint = report.chart(run, out_dir / "ratios.png")
    if hint:
        _log(hint)
    else:
        _log(f"chart: {out_dir / 'ratios.png'}")
    _log(f"results: {out_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
