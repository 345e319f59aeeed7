"""The crash tests' workload: deterministic batches, a writer loop, and a checker.

Batch k is a pure function of (seed, k): a random number of series, each with
a random number of in-order samples at k*STEP_MS + 10*i, some series with one
out-of-order sample up to OOO_LAG_BATCHES batches back, and always one sample
of the "progress" series at k*STEP_MS. Every value is a function of (series,
ts), so a sample produced twice is an exact duplicate (ignored), and a WAL
write is all-or-nothing, so "progress has k" means "batch k is stored".

The shard runs with tiny thresholds so that seals (every few batches),
merges of open time and compaction jobs (every few seals) take a large
share of the writer's time: a SIGKILL at a random moment lands in them
often.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher, MatchOp
from athens.shards import compact
from athens.shards.shard import Shard, ShardConfig

STEP_MS = 100
N_SERIES = 24
OOO_LAG_BATCHES = 12
PROGRESS = Labels([("__name__", "progress")])


def config(seed: int) -> ShardConfig:
    rng = np.random.default_rng(seed)
    return ShardConfig(
        wal_fsync=str(rng.choice(["off", "batch", "always"], p=[0.6, 0.3, 0.1])),
        wal_segment_bytes=4096 * int(rng.integers(1, 4)),
        head_flush_samples=int(rng.integers(40, 300)),
        compact_step_seconds=float(rng.choice([0.0, 0.25])),
        head_flush_age_ms=10_000,
        chunk_samples=int(rng.integers(8, 40)),
        chunk_window_ms=400,
        ooo_window_ms=OOO_LAG_BATCHES * STEP_MS + STEP_MS,
        compact_ranges_ms=(1600, 6400),
        merge_fanin=int(rng.choice([0, 2, 3, 4])),  # merges of the open 1.6 s partition's seals
        merge_after_ms=int(rng.integers(0, 800)),
        retention_ms=0,
    )


def series_labels(i: int) -> Labels:
    return Labels([("__name__", "m"), ("i", str(i)), ("job", "crash"), ("instance", f"w{i % 3}")])


def value_of(sid: int, ts: np.ndarray) -> np.ndarray:
    return ts.astype(np.float64) * 1.5 + sid * 1_000_003.0


def batch_samples(seed: int, k: int) -> dict[int, np.ndarray]:
    """{series number (-1 = progress): timestamps} of batch k."""
    rng = np.random.default_rng([seed, k])
    out: dict[int, np.ndarray] = {-1: np.array([k * STEP_MS], np.int64)}
    chosen = rng.choice(N_SERIES, int(rng.integers(1, N_SERIES + 1)), replace=False)
    for sid in chosen.tolist():
        n = int(rng.integers(1, 10))
        ts = k * STEP_MS + 10 * np.arange(n, dtype=np.int64)
        if k > 0 and rng.random() < 0.3:
            lag = int(rng.integers(1, min(k, OOO_LAG_BATCHES) + 1))
            ts = np.concatenate(([(k - lag) * STEP_MS + 5 + int(rng.integers(0, 4))], ts))
        out[sid] = ts
    return out


def make_batch(seed: int, k: int, churn: bool = False) -> WriteBatch:
    items = []
    for sid, ts in batch_samples(seed, k).items():
        lb = PROGRESS if sid < 0 else churn_labels(k, sid) if churn else series_labels(sid)
        items.append((lb, ts, value_of(sid if sid >= 0 else -7, ts)))
    return WriteBatch.from_series(items)


# Churn: batch k writes the series of pod generation k // GENERATION_BATCHES,
# and retention (CHURN_RETENTION_MS: 20 batches) deletes the files of older
# generations, whose series are then forgotten (SeriesIndex.forget).
GENERATION_BATCHES = 7
CHURN_RETENTION_MS = 2_000


def churn_config(seed: int) -> ShardConfig:
    return replace(config(seed), retention_ms=CHURN_RETENTION_MS)


def churn_labels(k: int, sid: int) -> Labels:
    return Labels([("__name__", "m"), ("i", str(sid)), ("pod", f"p{k // GENERATION_BATCHES}")])


def run_writer(path: Path, seed: int, start: int, ack_fd: int, churn: bool = False) -> None:
    """Append batches start, start+1, ... forever; write each acknowledged k to ack_fd.

    Every append is followed by flush_tick (seal / compaction / retention),
    with a clock that runs 10 ms per batch.
    """
    # Small series groups: with compact_step_seconds=0 a job then spans many
    # ticks (this runs in the forked child only).
    compact.GROUP_SAMPLES = 200
    sh = Shard(path, churn_config(seed) if churn else config(seed))
    sh.open()
    k = start
    while True:
        r = sh.append(make_batch(seed, k, churn))
        if r.too_old or r.conflicts:
            raise AssertionError(f"batch {k} refused samples: {r}")
        os.write(ack_fd, f"{k}\n".encode())
        sh.flush_tick(k * 10)
        k += 1


def expected(seed: int, upto: int) -> dict[Labels, set[int]]:
    """{labels: timestamps} of batches 0..upto."""
    out: dict[Labels, set[int]] = {}
    for k in range(upto + 1):
        for sid, ts in batch_samples(seed, k).items():
            lb = PROGRESS if sid < 0 else series_labels(sid)
            out.setdefault(lb, set()).update(ts.tolist())
    return out


def check(path: Path, seed: int, acked: int) -> int:
    """Reopen the shard and verify it; returns the newest batch stored.

    Every acknowledged batch is present, every stored batch is complete,
    nothing else is stored, values are right, and each sample is stored once
    (the shard's sample count equals the distinct samples expected).
    """
    sh = Shard(path, config(seed))
    sh.open()
    try:
        got = {s.labels: s for s in sh.select([Matcher(MatchOp.RE, "__name__", ".+")], -(2**62), 2**62)}
        prog = got.get(PROGRESS)
        newest = int(prog.ts[-1]) // STEP_MS if prog is not None else -1
        assert newest >= acked, f"acknowledged batch {acked} lost (newest stored {newest})"
        if prog is not None:
            assert prog.ts.tolist() == [k * STEP_MS for k in range(newest + 1)], "a batch is missing"
        want = expected(seed, newest)
        assert set(got) == set(want), "series differ"
        for lb, s in got.items():
            assert s.ts.tolist() == sorted(want[lb]), f"{lb}: samples differ"
            sid = -7 if lb == PROGRESS else int(lb.get("i"))
            assert s.values.tolist() == value_of(sid, s.ts).tolist(), f"{lb}: values differ"
        n = sum(len(v) for v in want.values())
        stats = sh.stats()
        assert stats["samples"] == n, f"{stats['samples']} samples stored, {n} distinct: duplicates"
        return newest
    finally:
        sh.close()


def check_churn(path: Path, seed: int, acked: int) -> int:
    """Reopen the churn workload's shard; returns the newest batch stored.

    Every acknowledged sample retention has not reached (ts at least the
    newest sample minus the retention) is there, nothing stored was not
    written, values are right, no sample twice; the series the index holds
    are exactly the series with data (the rest forgotten).
    """
    sh = Shard(path, churn_config(seed))
    sh.open()
    try:
        got = {s.labels: s for s in sh.select([Matcher(MatchOp.RE, "__name__", ".+")], -(2**62), 2**62)}
        prog = got[PROGRESS]
        newest = int(prog.ts[-1]) // STEP_MS
        assert newest >= acked, f"acknowledged batch {acked} lost (newest stored {newest})"
        cutoff = sh._newest_ts() - CHURN_RETENTION_MS
        want: dict[Labels, set[int]] = {}
        for k in range(newest + 1):
            for sid, ts in batch_samples(seed, k).items():
                lb = PROGRESS if sid < 0 else churn_labels(k, sid)
                want.setdefault(lb, set()).update(ts.tolist())
        for lb, ts_want in want.items():
            kept = sorted(t for t in ts_want if t >= cutoff)
            have = got[lb].ts.tolist() if lb in got else []
            assert set(kept) <= set(have), f"{lb}: samples retention must keep are missing"
            assert set(have) <= ts_want, f"{lb}: samples never written"
        for lb, s in got.items():
            sid = -7 if lb == PROGRESS else int(lb.get("i"))
            assert s.values.tolist() == value_of(sid, s.ts).tolist(), f"{lb}: values differ"
        stats = sh.stats()
        assert stats["samples"] == sum(len(s.ts) for s in got.values()), "a sample stored twice"
        # What the kill left unforgotten is forgotten by the next passes.
        while sh._dataless.size:
            sh.apply_retention()
        assert sh.stats()["series"] == len(got), "the index holds series without data"
        return newest
    finally:
        sh.close()
