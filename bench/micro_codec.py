"""Micro-benchmark of the chunk codec: ns/sample and bytes/sample.

Run: ``python -m bench.micro_codec [--series N] [--repeat R]``. It builds three
node_exporter-like data sets of 120-sample chunks and times the batch kernels
(encode_chunks / decode_chunks) over all series at once, reporting the best
of R runs. Sizes are of the chunk encoding alone and, as a stand-in for the
segment-level compression applied later, after zstd (cramjam, level 3) of the
concatenated chunks.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from athens.shards import chunkenc

SAMPLES_PER_CHUNK = 120
SCRAPE_MS = 15_000
T0 = 1_700_000_000_000


def _timestamps(rng: np.random.Generator, series: int, jitter_ms: int) -> np.ndarray:
    grid = T0 + np.arange(SAMPLES_PER_CHUNK, dtype=np.int64) * SCRAPE_MS
    ts = np.broadcast_to(grid, (series, SAMPLES_PER_CHUNK)).copy()
    # Each target is scraped at its own phase within the interval.
    ts += rng.integers(0, SCRAPE_MS, (series, 1))
    if jitter_ms:
        ts += rng.integers(-jitter_ms, jitter_ms + 1, ts.shape)
    return ts.reshape(-1)


def counters(rng: np.random.Generator, series: int, jitter_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer counters starting anywhere below 1e9, rising by 0..999 per scrape."""
    steps = rng.integers(0, 1000, (series, SAMPLES_PER_CHUNK))
    steps[:, 0] = rng.integers(0, 10**9, series)
    return _timestamps(rng, series, jitter_ms), np.cumsum(steps, axis=1).astype(np.float64).reshape(-1)


def gauges(rng: np.random.Generator, series: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauges with two decimals: round(random(), 2)."""
    return _timestamps(rng, series, 0), np.round(rng.random(series * SAMPLES_PER_CHUNK), 2)


def node_mix(rng: np.random.Generator, series: int) -> tuple[np.ndarray, np.ndarray]:
    """A node_exporter-like mix (the shares are a guess, not a survey).

    30% constants (info metrics, sizes, limits); 30% CPU-seconds counters
    (+15 s +- a little per scrape, two decimals); 20% byte/packet counters
    (integer, +0..1e6); 20% gauges on a random walk with two decimals (load,
    temperatures). Half the targets have +-2 ms timestamp jitter.
    """
    n = SAMPLES_PER_CHUNK
    kind = rng.choice(4, size=series, p=[0.3, 0.3, 0.2, 0.2])
    values = np.empty((series, n))
    c = kind == 0
    values[c] = rng.integers(0, 10**12, (int(c.sum()), 1))
    c = kind == 1
    steps = np.round(rng.normal(15.0, 0.05, (int(c.sum()), n)), 2)
    values[c] = np.round(np.cumsum(steps, axis=1) + rng.integers(0, 10**6, (int(c.sum()), 1)), 2)
    c = kind == 2
    values[c] = np.cumsum(rng.integers(0, 10**6, (int(c.sum()), n)), axis=1)
    c = kind == 3
    walk = np.cumsum(rng.integers(-5, 6, (int(c.sum()), n)), axis=1) + rng.integers(0, 10**4, (int(c.sum()), 1))
    values[c] = walk / 100
    ts = _timestamps(rng, series, 0).reshape(series, n)
    jittered = rng.random(series) < 0.5
    ts[jittered] += rng.integers(-2, 3, (int(jittered.sum()), n))
    return ts.reshape(-1), values.reshape(-1)


def random_floats(rng: np.random.Generator, series: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-precision random floats: the Gorilla XOR path's worst realistic case."""
    return _timestamps(rng, series, 0), rng.random(series * SAMPLES_PER_CHUNK) * 1000


def _best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    chunkenc.warm_up()
    try:
        import cramjam
    except ImportError:  # pragma: no cover - cramjam ships with python-snappy here
        cramjam = None
    rng = np.random.default_rng(42)
    sets = {
        "a counters, on schedule": counters(rng, args.series, 0),
        "b counters, +-5 ms jitter": counters(rng, args.series, 5),
        "c gauges round(x, 2)": gauges(rng, args.series),
        "d random floats (XOR)": random_floats(rng, args.series),
        "e node_exporter-like mix": node_mix(rng, args.series),
    }
    starts = np.arange(args.series + 1, dtype=np.int64) * SAMPLES_PER_CHUNK
    print(f"{args.series} series x {SAMPLES_PER_CHUNK} samples, best of {args.repeat}")
    print(f"{'data set':28} {'enc ns/s':>9} {'dec ns/s':>9} {'dec Ms/s':>9} {'B/sample':>9} {'zstd B/s':>9}")
    for name, (ts, values) in sets.items():
        data, offsets = chunkenc.encode_chunks(ts, values, starts)
        ts2, values2, _ = chunkenc.decode_chunks(data, offsets)
        assert np.array_equal(ts2, ts) and np.array_equal(values2.view(np.uint64), values.view(np.uint64))
        n = ts.shape[0]
        enc = _best_of(args.repeat, lambda: chunkenc.encode_chunks(ts, values, starts)) / n
        dec = _best_of(args.repeat, lambda: chunkenc.decode_chunks(data, offsets)) / n
        zstd = (
            len(bytes(cramjam.zstd.compress(data.tobytes(), level=3))) / n if cramjam else float("nan")
        )
        print(
            f"{name:28} {enc * 1e9:9.1f} {dec * 1e9:9.1f} {1e-6 / dec:9.0f} "
            f"{data.shape[0] / n:9.3f} {zstd:9.3f}"
        )


if __name__ == "__main__":
    main()
