"""Topology discovery, the CPU-set plan, the data directory's layout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from athens.config import ConfigError, ServeConfig
from athens.supervisor import (
    Child,
    Topology,
    check_data_dir,
    children_env,
    discover_topology,
    parse_cpulist,
    plan_cpu_sets,
)


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


def test_a_new_data_directory_places_series_without_their_name(tmp_path: Path) -> None:
    cfg = check_data_dir(ServeConfig(data_dir=tmp_path / "d", workers=2))
    assert cfg.placement == "without-name"
    assert json.loads((tmp_path / "d" / "athens.json").read_text()) == {
        "version": 2, "workers": 2, "placement": "without-name"}
    assert check_data_dir(ServeConfig(data_dir=tmp_path / "d", workers=2)).placement == "without-name"
    with pytest.raises(ConfigError, match="places series by without-name"):
        check_data_dir(ServeConfig(data_dir=tmp_path / "d", workers=2, placement="identity"))
    explicit = check_data_dir(ServeConfig(data_dir=tmp_path / "e", workers=1, placement="identity"))
    assert explicit.placement == "identity"


def test_a_version_1_data_directory_keeps_placing_by_identity(tmp_path: Path) -> None:
    (tmp_path / "athens.json").write_text('{"version": 1, "workers": 2}\n')
    assert check_data_dir(ServeConfig(data_dir=tmp_path, workers=2)).placement == "identity"
    with pytest.raises(ConfigError, match="--workers=3"):
        check_data_dir(ServeConfig(data_dir=tmp_path, workers=3))
    with pytest.raises(ConfigError, match="--placement=without-name"):
        check_data_dir(ServeConfig(data_dir=tmp_path, workers=2, placement="without-name"))


def test_children_share_one_hash_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    seed = children_env()["PYTHONHASHSEED"]
    assert seed.isdigit() and int(seed) > 0
    monkeypatch.setenv("PYTHONHASHSEED", "random")  # would differ per child
    assert children_env()["PYTHONHASHSEED"].isdigit()
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    assert children_env()["PYTHONHASHSEED"] == "123"
