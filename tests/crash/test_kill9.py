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

from crash import workload

ITERATIONS = int(os.environ.get("ATHENS_CRASH_ITERATIONS", "20"))
SEED = int(os.environ.get("ATHENS_CRASH_SEED", "1234"))


def _spawn(path: Path, seed: int, start: int) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: write until killed
        os.close(r)
        code = 0
        try:
            workload.run_writer(path, seed, start, w)
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


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    seed = rng.randrange(1 << 30)
    stored = -1
    seen: dict[str, int] = {}
    t_start = time.monotonic()
    for it in range(ITERATIONS):
        pid, fd = _spawn(tmp_path, seed, stored + 1)
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
        for what, n in _in_flight(tmp_path).items():
            seen[what] = seen.get(what, 0) + n
        stored = workload.check(tmp_path, seed, max(acked, stored))
    print(f"kills: {ITERATIONS}, caught in flight: {seen}")
    segs = list((tmp_path / "segments").glob("*.seg"))
    assert segs, "no segment was ever sealed: the test did not exercise seals"
    assert time.monotonic() - t_start < 60 * max(1, ITERATIONS / 20)
