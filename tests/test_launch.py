"""What `athens serve` prepares before it execs the supervisor: topology
discovery, the CPU-set plan, the data directory's layout, the children's
plan and environment."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from athens import aot
from athens.config import ConfigError, ServeConfig
from athens.launch import (
    Topology,
    check_data_dir,
    children_env,
    discover_topology,
    lock_data_dir,
    parse_cpulist,
    plan_children,
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
    monkeypatch.setenv(aot.KERNELS_ENV, "/elsewhere")  # not handed on: each start names its build
    assert aot.KERNELS_ENV not in children_env()


def test_the_plan_names_each_role_its_build(tmp_path: Path) -> None:
    cfg = ServeConfig(data_dir=tmp_path, workers=2, listen="0.0.0.0:9999")
    plan = plan_children(cfg, [[0], [1]], tmp_path / "build")
    assert plan["ready"] == ["0.0.0.0", 9999]
    workers, router = plan["workers"], plan["router"]
    assert [w["cpus"] for w in workers] == [[0], [1]] and router["cpus"] is None
    assert [w["argv"][3:6] for w in workers] == [["_worker", "--index", "0"], ["_worker", "--index", "1"]]
    assert router["argv"][3] == "_router" and cfg.to_args() == router["argv"][4:]
    assert {w["env"][aot.KERNELS_ENV] for w in workers} == {str(aot.role_dir(tmp_path / "build", "worker"))}
    assert router["env"] == {aot.KERNELS_ENV: str(aot.role_dir(tmp_path / "build", "router"))}
    assert plan_children(cfg, [[0], [1]], None)["router"]["env"] == {}  # --kernels jit
    json.dumps(plan)  # it crosses the exec as a file


def test_the_data_directory_is_locked_for_one_node(tmp_path: Path) -> None:
    fd = lock_data_dir(tmp_path)
    try:
        # The holder's pid is alive: refused at once, whatever the wait.
        with pytest.raises(ConfigError, match=rf"in use by another athens \(pid {os.getpid()}\)"):
            lock_data_dir(tmp_path, wait_s=60)
        # A dead holder's children still hold it: waited for, then refused.
        os.pwrite(fd, b"999999999\n", 0)
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match="in use"):
            lock_data_dir(tmp_path, wait_s=0.5)
        assert time.monotonic() - t0 >= 0.5
    finally:
        os.close(fd)
    os.close(lock_data_dir(tmp_path))  # free once its holders are gone
