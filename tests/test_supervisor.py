"""Topology discovery and the CPU-set plan."""

from __future__ import annotations

from pathlib import Path

from athens.supervisor import Topology, discover_topology, parse_cpulist, plan_cpu_sets


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
