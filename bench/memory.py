"""Where an Athens tree's memory is: each process's anonymous and
file-backed RSS at the moments the tree peaks.

    python -m bench.memory ingest --profile long [--athens-workers 1] [--checkout .]
    python -m bench.memory queries --run RUN --data DATA [--athens-workers 1]
        [--checkout .] [--repeats 9] [--idle-ms 10]

bench.compare reports one peak for the whole tree; this says which process
holds it and whether as its own memory (anonymous: heaps, the head, query
arrays) or as pages of files it maps (libraries, segment files, which the
page cache holds anyway). `ingest` sends a profile's requests to a fresh
`athens serve`, as bench.compare does, and samples through the ingest and
a few idle seconds after; `queries` serves a copy of the data folder a
`bench.compare --keep-data` run left and times its query list (each
request --repeats times, as bench.ab does), one phase per request, so the
table shows which request sets the peak. Samples are taken every 50 ms
from /proc/PID/status (RssAnon, RssFile); each phase keeps the sample with
the largest tree total, with every process's share at that moment.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import datagen, rwencode
from bench.ab import requests_of
from bench.ingest import send_all
from bench.systems import Athens, Sampler, Server, athens_role, get_ok, tree

MIB = 1024.0  # /proc/PID/status reports kB


def role(cmdline: list[str]) -> str:
    """A process of the tree by what it does: supervisor, router, worker-N."""
    return athens_role(cmdline) or " ".join(cmdline[1:3]) or "?"


def status_kb(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) of a process in kB; (0, 0) once it is gone."""
    anon = file = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
                elif line.startswith("RssFile:"):
                    file = int(line.split()[1])
    except OSError:
        pass
    return anon, file


Sample = dict[str, tuple[int, int]]  # role -> (anonymous kB, file-backed kB)


class PeakByPhase:
    """Per phase, the sample whose tree total (anonymous + file-backed) was largest."""

    def __init__(self) -> None:
        self.phase = "start"
        self.peaks: dict[str, tuple[int, Sample]] = {}

    def add(self, sample: Sample) -> None:
        total = sum(a + f for a, f in sample.values())
        best = self.peaks.get(self.phase)
        if best is None or total > best[0]:
            self.peaks[self.phase] = (total, sample)

    def table(self) -> str:
        """Markdown: one row per phase, the tree's MiB and each process's anonymous + file-backed."""
        roles = sorted({r for _, s in self.peaks.values() for r in s})
        lines = ["| phase | tree MiB | " + " | ".join(f"{r} anon + file" for r in roles) + " |",
                 "|---|---|" + "---|" * len(roles)]
        for phase, (total, s) in self.peaks.items():
            cells = [f"{s[r][0] / MIB:.1f} + {s[r][1] / MIB:.1f}" if r in s else "" for r in roles]
            lines.append(f"| {phase} | {total / MIB:.0f} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


class TreeSampler(Sampler):
    """Samples the tree under `proc` every `interval_s` into a PeakByPhase."""

    def __init__(self, proc: psutil.Process, interval_s: float = 0.05) -> None:
        super().__init__(interval_s)
        self.proc = proc
        self.peaks = PeakByPhase()

    def sample(self) -> None:
        sample: Sample = {}
        for p in tree(self.proc):
            try:
                sample[role(p.cmdline())] = status_kb(p.pid)
            except psutil.Error:
                continue
        self.peaks.add(sample)


def measure_ingest(profile: datagen.Profile, workers: int, checkout: Path, settle_s: float) -> PeakByPhase:
    ds = datagen.generate_profile(profile)
    reqs = rwencode.encode_dataset(ds)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        with Server(Athens(workers=workers, checkout=checkout), Path(tmp)) as srv:
            assert srv.proc is not None
            with TreeSampler(srv.proc) as sampler:
                sampler.peaks.phase = "ingest"
                asyncio.run(send_all(srv.base_url, reqs))
                sampler.peaks.phase = "after"
                time.sleep(settle_s)
    return sampler.peaks


def measure_queries(run: Path, data: Path, workers: int, checkout: Path, repeats: int, idle_s: float) -> PeakByPhase:
    reqs = requests_of(json.loads((run / "results.json").read_text()))
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        copy = Path(tmp) / "data"
        shutil.copytree(data, copy)
        with Server(Athens(workers=workers, checkout=checkout), Path(tmp), data_dir=copy) as srv:
            assert srv.proc is not None
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            with TreeSampler(srv.proc) as sampler:
                time.sleep(1.0)  # the "start" row: the tree as it opened the data
                for name, path in reqs:
                    sampler.peaks.phase = name
                    latencies = []
                    for _ in range(repeats):
                        time.sleep(idle_s)
                        t0 = time.perf_counter()
                        get_ok(conn, path)
                        latencies.append(time.perf_counter() - t0)
                    print(f"{name}: {statistics.median(latencies) * 1000:.2f} ms", file=sys.stderr)
            conn.close()
    return sampler.peaks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    ing = sub.add_parser("ingest", help="a fresh server through a profile's ingest")
    ing.add_argument("--profile", choices=sorted(datagen.PROFILES), default="long")
    ing.add_argument("--settle-s", type=float, default=5.0, help="idle sampling after the ingest")
    qs = sub.add_parser("queries", help="a kept data folder through the query list")
    qs.add_argument("--run", type=Path, required=True, help="the bench.compare --out folder (its results.json)")
    qs.add_argument("--data", type=Path, required=True, help="the data folder that run kept (copied, not changed)")
    qs.add_argument("--repeats", type=int, default=9)
    qs.add_argument("--idle-ms", type=float, default=10.0)
    for s in (ing, qs):
        s.add_argument("--athens-workers", type=int, default=1)
        s.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1],
                       help="the root of the Athens checkout to run")
    args = p.parse_args(argv)
    checkout = args.checkout.resolve()
    if args.mode == "ingest":
        peaks = measure_ingest(datagen.PROFILES[args.profile], args.athens_workers, checkout, args.settle_s)
    else:
        peaks = measure_queries(args.run, args.data, args.athens_workers, checkout, args.repeats,
                                args.idle_ms / 1000.0)
    print(peaks.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
