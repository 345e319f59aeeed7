"""A full disk: writes are refused, nothing acknowledged is lost, and Athens
goes on once there is space again.

The data directory is a small tmpfs, so the test needs root (mount); it is
skipped where mounting is not allowed.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import snappy

from athens.model.labels import Labels
from bench.rwencode import encode_series
from e2e.harness import Athens

T0 = 1_700_000_000_000
SERIES = 2000
PER = 30  # samples a series per request, 1 s apart


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _request(k: int) -> bytes:
    """Request k: PER samples of every series, after request k-1's."""
    ts = T0 + (k * PER + np.arange(PER, dtype=np.int64)) * 1000
    values = np.arange(PER, dtype=np.float64) + k
    series = [(Labels([("__name__", "fill"), ("s", str(i)), ("pad", "x" * 40)]), ts, values) for i in range(SERIES)]
    return snappy.compress(encode_series(series))


def _samples(athens: Athens, requests: int) -> float:
    t = (T0 + requests * PER * 1000) / 1000
    status, res = athens.api("/api/v1/query", {"query": f"sum(count_over_time(fill[{requests * PER + 60}s]))",
                                               "time": str(t)})
    assert status == 200, res
    return float(res["data"]["result"][0]["value"][1]) if res["data"]["result"] else 0.0


def test_a_full_disk_refuses_writes_and_loses_nothing_acknowledged(small_disk: Path) -> None:
    athens = Athens(small_disk, workers=1).start()  # its log beside, off the small disk
    try:
        acked = 0
        k = 0
        refused: list[tuple[int, bytes]] = []
        while len(refused) < 3 and k < 200:
            status, body = athens.post_raw(_request(k))
            k += 1
            if status == 204:
                assert not refused, "a write succeeded between refusals on a full disk"
                acked += 1
            else:
                refused.append((status, body))
        assert refused and acked, (acked, k)  # some requests fit, then the disk filled
        for status, body in refused:
            assert status >= 500, (status, body)
            assert b"No space left on device" in body, body
        assert athens.ready()
        assert _samples(athens, k) == acked * SERIES * PER  # refused requests left nothing behind

        # Space again: the same requests, retried as Prometheus would, are taken.
        subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
        for j in range(acked, k + 5):
            deadline = time.monotonic() + 30
            while (status := athens.post_raw(_request(j))[0]) != 204 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert status == 204
        total = (k + 5) * SERIES * PER
        assert _samples(athens, k + 5) == total

        athens.kill_all()  # every acknowledged sample survives kill -9 of the node
        athens.start()
        assert _samples(athens, k + 5) == total
    finally:
        athens.stop()
