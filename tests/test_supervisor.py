"""Topology discovery and the CPU-set plan."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from athens.supervisor import Child, Topology, discover_topology, parse_cpulist, plan_cpu_sets


def test_parse_cpulist():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]


def test_discover_reads_sysfs(tmp_path: Path):
    import psutil

    allowed = psutil.Process().cpu_affinity()
    (tmp_path / "node0").mkdir()
    (tmp_path / "node0" / "cpulist").write_text(f"{allowed[0]}\n")
    (tmp_path / "node1").mkdir()
    (tmp_path / "node1" / "cpulist").write_text("4096\n")  # not ours: dropped
    assert discover_topology(tmp_path).nodes == {0: [allowed[0]]}


def test_discover_without_sysfs(tmp_path: Path):
    import psutil

    topo = discover_topology(tmp_path / "missing")
    assert topo.nodes == {0: sorted(psutil.Process().cpu_affinity())}


def test_plan_one_per_node():
    topo = Topology({0: [0, 1, 2, 3], 1: [4, 5, 6, 7]})
    assert plan_cpu_sets(topo, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_plan_splits_nodes_and_shares_when_short():
    topo = Topology({0: [0, 1, 2, 3], 1: [4, 5, 6, 7]})
    assert plan_cpu_sets(topo, 4) == [[0, 1], [4, 5], [2, 3], [6, 7]]
    assert plan_cpu_sets(Topology({0: [0, 1]}), 3) == [[0], [1], [0]]


# Counts the SIGTERMs it gets within half a second of the first, then exits 0.
_COUNTER = """
import signal, sys, time
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append(1))
while not got:
    time.sleep(0.01)
time.sleep(0.5)
open(sys.argv[1], "w").write(str(len(got)))
"""


def test_a_child_is_asked_to_stop_once(tmp_path: Path) -> None:
    # shutdown() terminates every worker, then stops each: a second SIGTERM
    # reaching a worker after its loop stopped handling signals killed it
    # while it exited (code -15 after a clean stop).
    out = tmp_path / "count"
    child = Child("counter", [sys.executable, "-c", _COUNTER, str(out)], None)
    child.start()
    time.sleep(0.3)  # its handler is installed
    child.terminate()
    time.sleep(0.1)
    child.stop(5)
    assert out.read_text() == "1"
