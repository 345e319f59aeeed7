"""POST /api/v1/admin/tsdb/snapshot: a data directory a second `athens serve` opens with what was acknowledged."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import snappy

from e2e.harness import Athens, http, make_write


def _write(athens: Athens, prompb: Any, name: str, end_ms: int, n: int = 40) -> int:
    series = [({"__name__": name, "job": "j", "instance": f"i{k}"},
               [(end_ms - (n - 1 - t) * 15_000, float(t + k)) for t in range(n)]) for k in range(25)]
    status, body = athens.post_raw(snappy.compress(make_write(prompb, series).SerializeToString()))
    assert status == 204, body
    return 25 * n


def _count(athens: Athens, name: str, at_ms: int) -> float:
    _, res = athens.api("/api/v1/query", {"query": f"sum(count_over_time({name}[1h]))", "time": str(at_ms / 1000)})
    rows = res["data"]["result"]
    return float(rows[0]["value"][1]) if rows else 0.0


def test_a_snapshot_restores_what_was_acknowledged_before_it(tmp_path: Path, prompb: Any) -> None:
    now = int(time.time() * 1000) // 1000 * 1000
    athens = Athens(tmp_path / "data", workers=2, extra=["--admin-api", "on"]).start()
    try:
        before = _write(athens, prompb, "snap_before", now - 60_000)
        status, body = http("POST", athens.url + "/api/v1/admin/tsdb/snapshot")
        assert status == 200, body
        name = json.loads(body)["data"]["name"]
        assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{16}", name)
        _write(athens, prompb, "snap_after", now - 30_000)
        assert _count(athens, "snap_after", now) > 0
        status, body = http("PUT", athens.url + "/api/v1/admin/tsdb/snapshot?skip_head=true")
        assert status == 200, body
        status, body = http("POST", athens.url + "/api/v1/admin/tsdb/snapshot?skip_head=maybe")
        assert status == 400 and json.loads(body)["error"] == (
            'invalid parameter "skip_head": unable to parse boolean \'skip_head\' argument: '
            'strconv.ParseBool: parsing "maybe": invalid syntax')
    finally:
        athens.stop()
    # Restored elsewhere: the snapshot is a data directory of its own.
    restored = tmp_path / "restored"
    shutil.copytree(tmp_path / "data" / "snapshots" / name, restored)
    again = Athens(restored, workers=2).start()
    try:
        assert _count(again, "snap_before", now) == before
        assert _count(again, "snap_after", now) == 0
    finally:
        again.stop()
