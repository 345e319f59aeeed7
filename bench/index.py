"""Series index benchmark: what selecting, listing and registering series
costs a shard as its series count grows.

    python -m bench.index [--series 300000] [--generations 1] [--repeats 50] [--json out.json]

bench.compare's profiles hold 10,000-100,000 series over 2-4 workers, so a
cost that grows with the series of one metric stays under its light
queries' fixed cost (np.intersect1d in SeriesIndex.select was 983 us at
30,000 series a metric and showed in no profile). This runs one
SeriesIndex in process, no shard data, no IPC: bench/datagen.py's
node_exporter-like label sets, registered as a worker registers them (from
their canonical bytes, strings shared through the process's interner);
with --generations G every target's series come back G times with a new
`pod` label (a restarted pod: the churn that makes a long-term store hold
many more series than are active). Printed per operation: the median
over --repeats calls, and the index's memory per series (tracemalloc:
the registry, postings and the strings it holds).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from athens.model.labels import INTERNER, Labels, canonical_encoding, series_hash
from athens.model.matchers import Matcher, MatchOp
from athens.shards import index as indexmod
from athens.shards.index import SeriesIndex
from bench import datagen


def label_sets(n_series: int, generations: int) -> list[tuple[tuple[str, str], ...]]:
    """n_series sorted label sets: datagen's, each target's repeated per generation with its own `pod`."""
    base = datagen.generate(max(1, n_series // generations), 1).labels
    out = []
    for g in range(generations):
        for pairs in base:
            if generations > 1:
                host = dict(pairs)["instance"].split(":")[0]
                pairs = tuple(sorted((*pairs, ("pod", f"{host}-{g:05d}"))))
            out.append(pairs)
    return out[:n_series]


def build(sets: list[tuple[tuple[str, str], ...]], keep_last: int = 0) -> tuple[SeriesIndex, dict[str, Any]]:
    """The index of `sets` and what it took: seconds to register them,
    bytes a series; with keep_last, also the bytes a series left once all
    but the last keep_last are forgotten (SeriesIndex.forget, as retention
    does with series whose data it deleted) and the seconds that took."""
    blocks = [canonical_encoding(p) for p in sets]
    hashes = [series_hash(p) for p in sets]
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    idx = SeriesIndex()
    for b, h in zip(blocks, hashes):
        idx.add(Labels.from_canonical(b, INTERNER), h)
    out: dict[str, Any] = {"register_s": time.perf_counter() - t0}
    gc.collect()
    out["bytes_per_series"] = tracemalloc.get_traced_memory()[0] / max(1, len(sets))
    if 0 < keep_last < len(sets):
        t0 = time.perf_counter()
        idx.forget(np.arange(len(sets) - keep_last, dtype=np.int64))
        out["forget_s"] = time.perf_counter() - t0
        gc.collect()
        out["bytes_per_live_series_after_forget"] = tracemalloc.get_traced_memory()[0] / keep_last
    tracemalloc.stop()
    return idx, out


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median microseconds of fn() over `repeats` calls (after one untimed)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def operations(idx: SeriesIndex, sets: list[tuple[tuple[str, str], ...]], pods: bool) -> dict[str, Callable[[], Any]]:
    """Name -> call: the selections a dashboard's queries make, the label
    APIs, and the ingest path's lookup of a known batch."""
    eq, ne, rx, nrx = MatchOp.EQ, MatchOp.NE, MatchOp.RE, MatchOp.NRE
    cpu = Matcher(eq, "__name__", "node_cpu_seconds_total")
    one_host = Matcher(eq, "instance", dict(sets[0])["instance"])
    selectors = {
        "metric": [cpu],
        "metric, instance": [cpu, one_host],
        "metric, mode!=idle": [cpu, Matcher(ne, "mode", "idle")],
        "metric, instance=~prefix": [cpu, Matcher(rx, "instance", "host-00.*")],
        "name=~node_.*": [Matcher(rx, "__name__", "node_.*")],
        "name=~.*bytes.*": [Matcher(rx, "__name__", ".*bytes.*")],
        "metric, region!~us-.*": [cpu, Matcher(nrx, "region", "us-.*")],
        "job (no name)": [Matcher(eq, "job", "api")],
    }
    if pods:
        selectors["metric, pod=~host-0001-.*"] = [cpu, Matcher(rx, "pod", "host-0001-.*")]
    ops: dict[str, Callable[[], Any]] = {f"select {k}": (lambda ms=ms: idx.select(ms)) for k, ms in selectors.items()}
    cpu_ids = idx.select([cpu])
    ops["label_names (all)"] = idx.label_names
    ops["label_names (one metric)"] = lambda: idx.label_names(cpu_ids)
    ops["label_values instance (all)"] = lambda: idx.label_values("instance")
    ops["label_values instance (one metric)"] = lambda: idx.label_values("instance", cpu_ids)
    ops["value_codes instance (kept)"] = lambda: idx.value_codes("instance")
    batch = [Labels.from_sorted(p) for p in sets[:2000]]
    hashes = np.array([lb.identity_hash() for lb in batch], np.uint64)
    ops["lookup 2,000 known"] = lambda: idx.lookup(batch, hashes)
    return ops


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.index", description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=300_000)
    p.add_argument("--generations", type=int, default=1, help="pods per target over time (series churn)")
    p.add_argument("--forget-old", action="store_true",
                   help="forget every generation but the last (what retention does with their series) before timing")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.series <= 0 or args.generations <= 0 or args.repeats <= 0:
        p.error("--series, --generations and --repeats must be positive")
    indexmod.warm_up()
    sets = label_sets(args.series, args.generations)
    keep = args.series // args.generations if args.forget_old else 0
    idx, built = build(sets, keep)
    t0 = time.perf_counter()
    idx.value_codes("instance")
    first_codes_us = (time.perf_counter() - t0) * 1e6
    res: dict[str, Any] = {
        "series": len(idx), "live": idx.live, "generations": args.generations,
        "register_series_per_s": round(len(idx) / built["register_s"]),
        "index_bytes_per_series": round(built["bytes_per_series"]),
        "value_codes_instance_first_us": round(first_codes_us, 1),
        "median_us": {},
    }
    print(f"{len(idx):,} series ({args.generations} generation(s)): registered {res['register_series_per_s']:,}/s, "
          f"{res['index_bytes_per_series']} bytes a series; first value_codes(instance) {first_codes_us:,.0f} us")
    if keep:
        res["forget_s"] = round(built["forget_s"], 3)
        res["bytes_per_live_series_after_forget"] = round(built["bytes_per_live_series_after_forget"])
        print(f"all but the last generation forgotten in {res['forget_s']} s: {idx.live:,} live series, "
              f"{res['bytes_per_live_series_after_forget']} bytes a live series (all ids kept)")
    print("| operation | result size | median us |\n|---|---|---|")
    live_sets = sets[len(sets) - keep:] if keep else sets
    for name, fn in operations(idx, live_sets, args.generations > 1).items():
        out = fn()
        us = timed(fn, args.repeats)
        res["median_us"][name] = round(us, 1)
        size = len(out[0]) if isinstance(out, tuple) else len(out)
        print(f"| {name} | {size:,} | {us:,.1f} |")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
