"""An acknowledged write survives kill -9 of any process, and of the whole node."""

from __future__ import annotations

import time
import urllib.request

import psutil

from e2e.harness import Athens, make_write

T0 = 1_700_000_000_000
SERIES = 20
WRITE_DEADLINE_S = 60.0


def _write_round(athens: Athens, pb, k: int) -> bool:
    """Send round k (one sample per series); retry like Prometheus until 2xx or deadline."""
    req = make_write(pb, [({"__name__": "crash_metric", "s": str(i)}, [(T0 + k * 1000, float(k * 100 + i))])
                          for i in range(SERIES)])
    deadline = time.monotonic() + WRITE_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            status, _ = athens.remote_write(req)
        except OSError:
            status = 0
        if status == 204:
            return True
        time.sleep(0.05)
    return False


def _stored(athens: Athens, rounds: int) -> dict[str, dict[int, float]]:
    t_end = (T0 + rounds * 1000) / 1000
    status, res = athens.api("/api/v1/query", {"query": f"crash_metric[{rounds + 10}s]", "time": str(t_end)})
    assert status == 200, res
    out: dict[str, dict[int, float]] = {}
    for r in res["data"]["result"]:
        pts = [(round(float(t) * 1000), float(v)) for t, v in r["values"]]
        assert len({t for t, _ in pts}) == len(pts), "duplicate timestamps returned"
        out[r["metric"]["s"]] = dict(pts)
    return out


def _assert_all_acked_present(athens: Athens, acked: list[int], rounds: int) -> None:
    stored = _stored(athens, rounds)
    for k in acked:
        for i in range(SERIES):
            assert stored.get(str(i), {}).get(T0 + k * 1000) == float(k * 100 + i), (k, i)


def test_kill_worker_and_router_mid_stream(athens_factory, prompb):
    athens = athens_factory(workers=2).start()
    acked = []
    rounds = 90
    for k in range(rounds):
        if k == 30:
            athens.children("_worker")[0].kill()
        if k == 60:
            athens.children("_router")[0].kill()
        if _write_round(athens, prompb, k):
            acked.append(k)
    assert acked == list(range(rounds)), "writes kept failing after the restart"
    athens.wait_ready()
    _assert_all_acked_present(athens, acked, rounds)
    assert "child exited; restarting" in athens.log()


def _restart_finds_every_sample(athens: Athens, prompb, acked: list[int], rounds: int) -> None:  # type: ignore[no-untyped-def]
    """Start a node on a crashed one's data: every acknowledged round is
    there, and so is what it acknowledges itself across a clean restart."""
    athens.start()
    _assert_all_acked_present(athens, acked, rounds)
    more = [k for k in range(rounds, rounds + 20) if _write_round(athens, prompb, k)]
    assert athens.stop() == 0
    athens.start()
    _assert_all_acked_present(athens, acked + more, rounds + 20)


def test_whole_node_kill_and_restart(athens_factory, prompb):
    athens = athens_factory(workers=2).start()
    acked = [k for k in range(40) if _write_round(athens, prompb, k)]
    athens.kill_all()
    _restart_finds_every_sample(athens, prompb, acked, 40)


def test_supervisor_killed_alone_takes_its_children_along_and_a_restart_finds_every_sample(athens_factory, prompb):
    # SIGKILL of the supervisor only: its router and workers used to serve
    # on, orphaned, while a restarted node opened the same shards a second time.
    athens = athens_factory(workers=2).start()
    acked = [k for k in range(30) if _write_round(athens, prompb, k)]
    children = [*athens.children("_worker"), *athens.children("_router")]
    assert len(children) == 3
    assert athens.proc is not None
    athens.proc.kill()
    athens.proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, alive
    _restart_finds_every_sample(athens_factory(workers=2), prompb, acked, 30)  # a new node, the same data


def test_a_second_node_on_a_data_directory_in_use_is_refused(athens_factory):
    athens = athens_factory(workers=1).start()
    second = athens_factory(workers=1)  # the same data directory
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(120) == 2  # at once: the first node's supervisor is alive
    assert f"data directory {athens.data_dir} is in use by another athens (pid {athens.proc.pid})" in second.log()
    assert athens.ready()


def test_kill_worker_while_its_head_is_sealed_off_the_loop(athens_factory, prompb):
    # Seals every second (the segment written on the worker's seal thread
    # while writes go on): kills land before, during and after seals.
    athens = athens_factory(workers=2, extra=["--head-flush-interval", "1s"]).start()
    acked = []
    rounds = 80
    for k in range(rounds):
        if k in (25, 50):
            athens.children("_worker")[k % 2].kill()
        if _write_round(athens, prompb, k):
            acked.append(k)
        time.sleep(0.05)
    assert acked == list(range(rounds))
    athens.wait_ready()
    _assert_all_acked_present(athens, acked, rounds)
    metrics = urllib.request.urlopen(athens.url + "/metrics", timeout=10).read().decode()
    flushes = [float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("athens_head_flushes_total")]
    assert flushes and sum(flushes) > 0, "no seal ran"
    athens.stop()
    athens.start()
    _assert_all_acked_present(athens, acked, rounds)
