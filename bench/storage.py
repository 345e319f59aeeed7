"""Storage engine benchmark: bytes per sample on disk, WAL replay and seal speed.

    python -m bench.storage [--series 1000] [--hours 27] [--variants ...] [--no-peers] [--json out.json]

Runs the shard engine in-process (no router, no IPC) on bench/datagen.py's
node_exporter-like data: every target scraped exactly on schedule, every
target with ±5 ms jitter, datagen's default half/half mix (what
bench.compare sends to Prometheus and VictoriaMetrics), and the first two
with non-integer values rounded to the 12 significant digits that
VictoriaMetrics keeps (VARIANTS). For each:

  * ingest in scrape-time order in batches of 5 minutes of data, sealing
    every 15 minutes of data time (athens serve's --head-flush-interval
    default), then run compaction until nothing is left; the data ends 3 h
    after a UTC midnight, so one whole day closes and becomes one file;
  * bytes per sample: of the compacted day file alone, and of all segment
    files (+ series index) before and after compaction;
  * the day file's chunk bytes before and after its zstd blocks;
  * decoding the whole day file: samples per second on one core;
  * WAL replay: the same samples appended without sealing, then the shard
    reopened: replayed samples per second of open().

  * the peers: the same dataset remote-written (5 minutes of data per
    request) to VictoriaMetrics and Prometheus, whichever are installed,
    and their data directory measured after their own flush (VictoriaMetrics:
    force_flush + force_merge; Prometheus: a snapshot including the head),
    as bench.compare does. --no-peers skips them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.shards.shard import Shard, ShardConfig
from bench import datagen, rwencode
from bench.ingest import send_all
from bench.systems import Prometheus, Server, System, VictoriaMetrics

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
BATCH_MS = 5 * 60 * 1000
SEAL_MS = 15 * 60 * 1000


def _batches(ds: datagen.Dataset, labels: list[Labels]):
    """WriteBatches of BATCH_MS of scrapes each, in time order (whole-array numpy)."""
    hashes = np.array([lb.identity_hash() for lb in labels], np.uint64)
    ts_all = ds.timestamps[ds.target]  # (n_series, n_samples)
    per = max(1, BATCH_MS // ds.interval_ms)
    n = ds.n_samples
    for a in range(0, n, per):
        b = min(n, a + per)
        k = b - a
        yield WriteBatch(
            labels,
            hashes,
            np.repeat(np.arange(len(labels), dtype=np.int32), k),
            np.ascontiguousarray(ts_all[:, a:b]).ravel(),
            np.ascontiguousarray(ds.values[:, a:b]).ravel(),
        )


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# VictoriaMetrics 1.79 keeps about 12 significant decimal digits of a
# non-integer value (0.012345678901234567 reads back as 0.01234567890123);
# Athens stores every float bit-exactly. The *_12_digits variants round the
# data's non-integer values to 12 significant digits first, so that both
# systems store exactly the same numbers.
VM_DIGITS = 12


def round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """Non-integer values rounded to `digits` significant decimal digits
    (whole-array numpy; integers, zeros and non-finite values unchanged)."""
    v = values.copy()
    m = np.isfinite(v) & (v != np.floor(v))
    x = v[m]
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(x))))
    v[m] = np.round(x * scale) / scale
    return v


# name -> (share of jittered targets, values rounded to VM_DIGITS).
VARIANTS = {
    "on_schedule": (0.0, False),
    "jitter_5ms": (1.0, False),
    # datagen's default mix, which bench.compare sends to the peers.
    "half_jittered": (0.5, False),
    "on_schedule_12_digits": (0.0, True),
    "jitter_5ms_12_digits": (1.0, True),
}


def run_variant(name: str, n_series: int, hours: int, workdir: Path, peers: list[System]) -> dict[str, Any]:
    jitter_fraction, rounded = VARIANTS[name]
    # Three hours past a UTC midnight: the watermark (newest - max(OOO window,
    # 2 h chunk window)) is then past the midnight, and the day before closes.
    end_ms = (int(time.time() * 1000) // DAY_MS) * DAY_MS + 3 * HOUR_MS
    n_samples = hours * HOUR_MS // datagen.INTERVAL_MS
    ds = datagen.generate(n_series, n_samples, seed=42, now_ms=end_ms, jitter_fraction=jitter_fraction)
    if rounded:
        ds.values = round_significant(ds.values, VM_DIGITS)
    labels = [Labels(list(pairs)) for pairs in ds.labels]
    total = ds.n_samples_total
    out: dict[str, Any] = {"variant": name, "series": n_series, "samples": total, "hours": hours}

    # 1. ingest + seal every 15 min of data time + compaction.
    d = workdir / f"{name}-sealed"
    cfg = ShardConfig(wal_fsync="off", head_flush_samples=1 << 40, head_flush_age_ms=1 << 60, retention_ms=0)
    sh = Shard(d, cfg)
    sh.open()
    t0 = time.perf_counter()
    next_seal = None
    seal_s = []
    for batch in _batches(ds, labels):
        r = sh.append(batch)
        assert r.accepted == batch.num_samples, r
        tmax = int(batch.ts.max())
        next_seal = next_seal if next_seal is not None else (tmax // SEAL_MS + 1) * SEAL_MS
        if tmax >= next_seal:
            t1 = time.perf_counter()
            sh.flush()
            seal_s.append(time.perf_counter() - t1)
            next_seal = (tmax // SEAL_MS + 1) * SEAL_MS
    sh.flush()
    out["ingest_and_seal_samples_per_s"] = round(total / (time.perf_counter() - t0))
    out["seal_seconds_median"] = round(statistics.median(seal_s), 4) if seal_s else None
    st = sh.stats()
    out["before_compaction"] = {
        "segments": st["segments"], "chunks": st["segment_chunks"],
        "bytes_per_sample": round((st["segment_bytes"] + st["index_bytes"]) / total, 3),
    }
    t0 = time.perf_counter()
    jobs = sh.compact_all()
    compact_s = time.perf_counter() - t0
    st = sh.stats()
    assert st["segment_samples"] == total, (st["segment_samples"], total)
    day = max(sh.segments, key=lambda s: s.samples)
    out["after_compaction"] = {
        "jobs": jobs,
        "seconds": round(compact_s, 3),
        "samples_per_s": round(st["compaction_samples_in"] / compact_s) if compact_s else None,
        "segments": st["segments"], "chunks": st["segment_chunks"],
        "bytes_per_sample": round((st["segment_bytes"] + st["index_bytes"]) / total, 3),
        "day_file_bytes_per_sample": round(day.size / day.samples, 3),
        "day_file_chunk_bytes_per_sample": round(day.chunk_bytes[1] / day.samples, 3),
        "day_file_chunk_bytes_before_zstd_per_sample": round(day.chunk_bytes[0] / day.samples, 3),
        "day_file_samples_per_chunk": round(day.samples / len(day.chunks), 1),
        "index_bytes": st["index_bytes"],
    }
    # Decoding the whole day file (shared timestamps included), one core.
    everything = np.arange(len(day.chunks), dtype=np.int64)
    best = min(_timed(lambda: day.select(everything).decode()) for _ in range(3))
    out["after_compaction"]["day_file_decode_samples_per_s"] = round(day.samples / best)
    sh.close()

    # 2. WAL replay: everything in the WAL, reopen.
    d2 = workdir / f"{name}-wal"
    sh = Shard(d2, cfg)
    sh.open()
    for batch in _batches(ds, labels):
        sh.append(batch)
    sh.close()
    wal_bytes = _dir_bytes(d2 / "wal")
    sh = Shard(d2, cfg)
    rs = sh.open()
    assert rs.samples_replayed == total
    out["wal"] = {
        "bytes_per_sample": round(wal_bytes / total, 2),
        "replay_seconds": rs.open_seconds,
        "replay_samples_per_s": round(total / rs.open_seconds),
    }
    sh.close()
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(d2, ignore_errors=True)

    # 3. The peers, on the same dataset.
    out["peers"] = {p.name: peer_bytes_per_sample(p, ds, workdir / "logs" / name) for p in peers}
    return out


def peer_bytes_per_sample(system: System, ds: datagen.Dataset, log_dir: Path) -> dict[str, Any]:
    """Remote-write the dataset to a peer, let it flush/merge, measure its data dir."""
    reason = system.missing()
    if reason:
        return {"status": "missing", "reason": reason}
    requests = rwencode.encode_dataset(ds, series_per_request=ds.n_series,
                                       samples_per_series=BATCH_MS // ds.interval_ms)
    with Server(system, log_dir) as srv:
        assert srv.data_dir is not None
        ing = asyncio.run(send_all(srv.base_url, requests))
        if ing.errors or ing.samples_ok != ds.n_samples_total:
            return {"status": "ingest failed", "samples_ok": ing.samples_ok, "errors": ing.errors[:3]}
        disk = system.disk_bytes(srv.base_url, srv.data_dir)
    return {"status": "ok", "version": system.version(), "bytes_per_sample": round(disk / ds.n_samples_total, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=1000)
    p.add_argument("--hours", type=int, default=27, help="data span ending 3 h after a UTC midnight; 27 = one whole day closes")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--no-peers", action="store_true", help="skip VictoriaMetrics and Prometheus")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {', '.join(VARIANTS)}")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    if unknown := set(names) - set(VARIANTS):
        p.error(f"unknown variants: {sorted(unknown)}")
    peers: list[System] = [] if args.no_peers else [VictoriaMetrics(), Prometheus()]
    from athens.shards import chunkenc

    chunkenc.warm_up()
    work = Path(tempfile.mkdtemp(prefix="athens-bench-storage-"))
    try:
        res = {"variants": [run_variant(n, args.series, args.hours, work, peers) for n in names]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
