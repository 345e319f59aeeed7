"""bench.memory's bookkeeping (no servers: the tool itself is run by hand)."""

from __future__ import annotations

import os

from bench.memory import PeakByPhase, role, status_kb


def test_processes_are_named_by_what_they_do() -> None:
    py = "/usr/bin/python3"
    assert role([py, "-m", "athens.supervisor", "/d/run/supervisor.json"]) == "supervisor"
    assert role([py, "-S", "-c", "...; from athens.supervisor import main; ...", "/d/run/supervisor.json", "/x"]) == "supervisor"
    assert role([py, "-m", "athens", "_router", "--listen", "127.0.0.1:1"]) == "router"
    assert role([py, "-m", "athens", "_worker", "--index", "1", "--listen", "x"]) == "worker-1"
    assert role([py, "-m", "athens", "_worker"]) == "worker"


def test_each_phase_keeps_its_largest_tree_and_every_process_at_that_moment() -> None:
    peaks = PeakByPhase()
    peaks.phase = "ingest"
    peaks.add({"router": (40_000, 20_000), "worker-0": (50_000, 10_000)})  # 120,000 kB
    peaks.add({"router": (60_000, 20_000), "worker-0": (30_000, 10_000)})  # 120,000: not larger
    peaks.add({"router": (45_000, 20_000), "worker-0": (60_000, 10_000)})  # 135,000
    peaks.phase = "after"
    peaks.add({"router": (40_000, 20_000), "worker-0": (30_000, 10_000)})
    assert peaks.peaks["ingest"] == (135_000, {"router": (45_000, 20_000), "worker-0": (60_000, 10_000)})
    assert peaks.peaks["after"][0] == 100_000
    table = peaks.table().splitlines()
    assert table[0] == "| phase | tree MiB | router anon + file | worker-0 anon + file |"
    assert table[2] == "| ingest | 132 | 43.9 + 19.5 | 58.6 + 9.8 |"


def test_own_status_is_read() -> None:
    anon, file = status_kb(os.getpid())
    assert anon > 0 and file > 0
    assert status_kb(2**22 + 12345) == (0, 0)  # no such process
