"""kill -9 at random moments, including during seals and compactions.

A forked child (it inherits the parent's imports, so a restart costs
milliseconds) appends deterministic batches with tiny seal and compaction
thresholds and reports each acknowledged batch on a pipe; the parent kills
it with SIGKILL at a random moment, reopens the shard and checks that every
acknowledged sample is there exactly once (workload.check). The same
directory goes through all iterations, so recoveries pile up on each other.

ATHENS_CRASH_ITERATIONS (default 20) sets the number of kills;
ATHENS_CRASH_SEED picks the random run.
"""

from __future__ import annotations

import os
import random
import select
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from athens.model.batch import WriteBatch
from athens.model.matchers import Matcher, MatchOp
from athens.shards import shard as shardmod
from athens.shards.shard import Shard
from crash import workload

ITERATIONS = int(os.environ.get("ATHENS_CRASH_ITERATIONS", "20"))
SEED = int(os.environ.get("ATHENS_CRASH_SEED", "1234"))


def _spawn(path: Path, seed: int, start: int, churn: bool = False) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: write until killed
        os.close(r)
        code = 0
        try:
            workload.run_writer(path, seed, start, w, churn)
        except BaseException:  # an assertion in the writer: make the parent see it
            import traceback

            traceback.print_exc()
            code = 3
        os._exit(code)
    os.close(w)
    return pid, r


def _read_acks(fd: int, until: int, timeout: float) -> int:
    """Read acknowledgements until batch `until` (or timeout); returns the newest."""
    newest = -1
    buf = b""
    deadline = time.monotonic() + timeout
    while newest < until and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        if lines:
            newest = int(lines[-1])
    return newest


def _in_flight(path: Path) -> dict[str, int]:
    """What the kill interrupted, judged from the files it left."""
    out = {}
    if list((path / "segments").glob("*.seg.tmp")):
        out["segment_tmp"] = 1
    if (path / "compact.journal").exists():
        out["compaction_journal"] = 1
    segs = sorted((path / "segments").glob("*.seg"))
    wal = sorted(p for p in (path / "wal").iterdir() if p.name.isdigit())
    if segs and wal:
        from athens.shards.segment import Segment

        newest = max(Segment(p, verify_data=False).wal_boundary for p in segs)
        if int(wal[0].name) < newest:
            out["wal_not_yet_truncated"] = 1
    return out


def _kill_at_random_moments(path: Path, churn: bool) -> tuple[int, int]:
    """ITERATIONS kills, each followed by the workload's check; returns its
    seed and the newest batch stored."""
    rng = random.Random(SEED)
    seed = rng.randrange(1 << 30)
    check = workload.check_churn if churn else workload.check
    stored = -1
    seen: dict[str, int] = {}
    t_start = time.monotonic()
    for _ in range(ITERATIONS):
        pid, fd = _spawn(path, seed, stored + 1, churn)
        try:
            # Let it acknowledge a random number of batches, then kill after
            # a random extra delay, while it keeps writing / sealing / compacting.
            target = stored + 1 + rng.randrange(5, 80)
            acked = _read_acks(fd, target, timeout=30)
            time.sleep(rng.random() * 0.03)
            acked = max(acked, _read_acks(fd, 1 << 62, timeout=0))
            os.kill(pid, signal.SIGKILL)
        finally:
            _, status = os.waitpid(pid, 0)
            os.close(fd)
        assert os.WIFSIGNALED(status), f"writer exited by itself (status {status}), see stderr"
        assert acked >= 0 or stored >= 0, "writer acknowledged nothing"
        for what, n in _in_flight(path).items():
            seen[what] = seen.get(what, 0) + n
        stored = check(path, seed, max(acked, stored))
    print(f"kills: {ITERATIONS}, caught in flight: {seen}")
    segs = list((path / "segments").glob("*.seg"))
    assert segs, "no segment was ever sealed: the test did not exercise seals"
    assert time.monotonic() - t_start < 60 * max(1, ITERATIONS / 20)
    return seed, stored


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    _kill_at_random_moments(tmp_path, churn=False)


def test_sigkill_amid_series_churn_and_retention_keeps_the_index_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pods come and go; retention deletes old files and their series are
    forgotten (FORGOTTEN records) while kills land anywhere; every open
    rewrites the index file (the forked writer inherits the setting)."""
    monkeypatch.setattr(shardmod, "REWRITE_MIN_FORGOTTEN", 0)
    seed, stored = _kill_at_random_moments(tmp_path, churn=True)
    sh = Shard(tmp_path, workload.churn_config(seed))
    sh.open()
    try:
        assert sh.index.forgotten > 0, "no series was forgotten: the test did not exercise forgetting"
        # A forgotten label set written again gets a new id and is found.
        old = workload.churn_labels(0, 0)
        assert sh.index.lookup([old], np.array([old.identity_hash()], np.uint64)).tolist() == [-1]
        ts = np.array([(stored + 1) * workload.STEP_MS], np.int64)
        assert sh.append(WriteBatch.from_series([(old, ts, np.array([1.0]))])).accepted == 1
        got = sh.select([Matcher(MatchOp.EQ, "pod", "p0")], 0, 2**62)
        assert [s.labels for s in got] == [old] and got[0].ts.tolist() == ts.tolist()
    finally:
        sh.close()
