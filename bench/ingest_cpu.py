"""Ingest only, side by side: samples per server CPU-second and peak memory.

    python -m bench.ingest_cpu --profile medium --systems athens,victoriametrics,prometheus

Each system gets the same pre-encoded remote-write 1.0 requests (bench.rwencode,
Prometheus' shape: 2000 series x 4 samples per request; with
--athens-protocol 2, Athens gets the same data as 2.0 requests, which
neither peer here receives), sent by
bench.ingest.send_all with retries as Prometheus would. Measured: CPU
seconds of the server's whole process tree (psutil, user + system; the
machine is shared, so CPU time is the comparable number, wall time is
reported for information), peak RSS and peak PSS of the tree (summed over
its processes) sampled every 0.2 s, and samples acknowledged. Athens runs with its defaults (WAL on,
--wal-fsync=always) unless --athens-arg says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from bench.datagen import PROFILES, generate
from bench.ingest import send_all
from bench.rwencode import encode_dataset
from bench.systems import MemorySampler, Server, all_systems, athens_role, tree_cpu_seconds, tree_rss


def _per_process(srv: Server) -> dict[str, float]:
    """CPU seconds per process of the tree, keyed by a short role name."""
    import psutil  # noqa: PLC0415

    assert srv.proc is not None
    out: dict[str, float] = {}
    for pr in [srv.proc] + srv.proc.children(recursive=True):
        try:
            cmd = pr.cmdline()
            t = pr.cpu_times()
        except psutil.Error:
            continue
        role = athens_role(cmd) or "main"
        key = role if role not in out else f"{role}-{pr.pid}"
        out[key] = t.user + t.system
    return out


def run(system_name: str, requests: list, n_series: int, args: argparse.Namespace, out: Path) -> dict:
    systems = all_systems(args.athens_workers, tuple(args.athens_arg))
    system = systems[system_name]
    why = system.missing()
    if why:
        return {"system": system_name, "skipped": why}
    with Server(system, out) as srv:
        assert srv.proc is not None
        time.sleep(1.0)
        idle_rss = tree_rss(srv.proc)
        cpu0 = tree_cpu_seconds(srv.proc)
        per0 = _per_process(srv)
        t0 = time.monotonic()
        with MemorySampler(srv.proc) as peak:
            res = asyncio.run(send_all(srv.base_url, requests, concurrency=args.concurrency))
        wall = time.monotonic() - t0
        cpu = tree_cpu_seconds(srv.proc) - cpu0
        per1 = _per_process(srv)
        per = {k: round(v - per0.get(k, 0.0), 2) for k, v in per1.items()}
        rss_end = tree_rss(srv.proc)
    return {
        "system": system_name,
        "samples_ok": res.samples_ok,
        "samples_sent": res.samples_sent,
        "statuses": dict(res.statuses),
        "retries": res.retries,
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "samples_per_cpu_s": round(res.samples_ok / cpu) if cpu else 0,
        "samples_per_wall_s": round(res.samples_ok / wall) if wall else 0,
        "peak_rss_bytes": peak.peak_rss,
        "peak_pss_bytes": peak.peak_pss,
        "idle_rss_bytes": idle_rss,
        "end_rss_bytes": rss_end,
        "peak_rss_per_series": round(peak.peak_rss / n_series, 1),
        "peak_pss_per_series": round(peak.peak_pss / n_series, 1),
        "cpu_s_by_process": per,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="small", choices=sorted(PROFILES))
    p.add_argument("--series", type=int, default=0)
    p.add_argument("--samples", type=int, default=0)
    p.add_argument("--systems", default="athens,victoriametrics,prometheus")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--athens-workers", type=int, default=2)
    p.add_argument("--athens-arg", action="append", default=[])
    p.add_argument("--athens-protocol", type=int, choices=(1, 2), default=1,
                   help="remote write version sent to Athens (the peers always get 1.0)")
    p.add_argument("--out", type=Path, default=Path("bench/results/ingest_cpu"))
    args = p.parse_args(argv)
    prof = PROFILES[args.profile]
    n_series = args.series or prof.n_series
    n_samples = args.samples or prof.n_samples
    t = time.monotonic()
    ds = generate(n_series, n_samples)
    requests = encode_dataset(ds)
    v2 = encode_dataset(ds, protocol=2) if args.athens_protocol == 2 else requests
    print(f"# {len(requests)} requests, {n_series * n_samples} samples, encoded in "
          f"{time.monotonic() - t:.1f}s", file=sys.stderr)
    results = []
    for name in args.systems.split(","):
        r = run(name.strip(), v2 if name.strip() == "athens" else requests, n_series, args, args.out)
        r["protocol"] = args.athens_protocol if name.strip() == "athens" else 1
        results.append(r)
        print(json.dumps(r), flush=True)
    base = {r["system"]: r for r in results if "samples_per_cpu_s" in r}
    if "athens" in base:
        a = base["athens"]["samples_per_cpu_s"]
        for other in ("victoriametrics", "prometheus"):
            if other in base and base[other]["samples_per_cpu_s"]:
                print(f"# athens / {other} samples per CPU-second: "
                      f"{a / base[other]['samples_per_cpu_s']:.2f}x; peak RSS per series "
                      f"{base['athens']['peak_rss_per_series']:.0f} vs {base[other]['peak_rss_per_series']:.0f} B, "
                      f"PSS {base['athens']['peak_pss_per_series']:.0f} vs {base[other]['peak_pss_per_series']:.0f} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
