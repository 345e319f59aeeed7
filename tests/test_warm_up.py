"""Every compiled kernel is compiled before a process serves.

A kernel first compiled inside a request costs that request seconds on a
fresh install (~8 s for the remote-write decoder, ~0.6 s for the head's
kernels); loading it from Numba's cache still costs ~0.5 s. The router's and
the workers' warm_up() must reach every kernel of the package, with the
array types requests pass it (Numba compiles a variant per type: a read-only
array is another type).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
from numba.core.registry import CPUDispatcher

import athens
from athens.model.batch import WriteBatch
from athens.model.labels import Labels
from athens.model.matchers import Matcher
from athens.model.series import SeriesSet
from athens.query.engine import Engine
from athens.query.memquerier import MemQuerier, _roundtrip
from athens.router.app import warm_up as warm_up_router
from athens.router.scatter import merge_series
from athens.shards import ipc
from athens.shards.worker import warm_up as warm_up_worker


def _kernels() -> dict[str, CPUDispatcher]:
    found = {}
    for mod in pkgutil.walk_packages(athens.__path__, "athens."):
        if mod.name.endswith("__main__"):
            continue  # runs the command line
        m = importlib.import_module(mod.name)
        for name, obj in vars(m).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == m.__name__:
                # inline="always" helpers are compiled into their callers only.
                if obj.targetoptions.get("inline", "never") != "always":
                    found[f"{m.__name__}.{name}"] = obj
    return found


def _entry_points(kernels: dict[str, CPUDispatcher]) -> dict[str, CPUDispatcher]:
    """The kernels Python calls. A kernel called only by kernels is compiled into
    them, and a caller loaded from the cache leaves its dispatcher uncompiled."""
    called_by_kernels = {
        (k.__module__, n) for k in kernels.values() for n in k.py_func.__code__.co_names
    }
    return {
        name: k for name, k in kernels.items() if (k.__module__, k.__name__) not in called_by_kernels
    }


def _not_warmed() -> list[str]:
    kernels = _entry_points(_kernels())
    assert len(kernels) > 20
    warm_up_router()
    warm_up_worker()
    return sorted(name for name, k in kernels.items() if not k.signatures)


class _OneShardQuerier:
    """Series as `athens serve` hands them to the router's engine when one
    shard has them all: the arrays of that shard's frame, read-only."""

    def __init__(self, store: MemQuerier) -> None:
        self.store = store

    async def select(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> SeriesSet:
        series = self.store.select_sync(matchers, mint, maxt)
        frame = await _roundtrip(b"".join(ipc.encode_frame(ipc.series_response(1, series))))
        return merge_series([ipc.parse_series(frame)])


# What the router evaluates itself over a shard's series.
_ROUTER_QUERIES = (
    "m", "rate(m[5m])", "increase(m[5m])", "irate(m[5m])", "deriv(m[5m])", "predict_linear(m[5m], 60)",
    "avg_over_time(m[5m])", "max_over_time(m[5m])", "quantile_over_time(0.9, m[5m])",
    "double_exponential_smoothing(m[5m], 0.5, 0.5)", "changes(m[5m])", "resets(m[5m])",
)


def _loaded_after_warm_up() -> list[str]:
    warm_up_router()
    store = MemQuerier()
    ts = np.arange(0, 3_600_000, 15_000, dtype=np.int64)
    store.append(WriteBatch.from_series([(Labels({"__name__": "m", "i": "1"}.items()), ts, np.cumsum(ts) / 1e3)]))
    querier = _OneShardQuerier(store)
    before = {(name, sig) for name, k in _kernels().items() for sig in k.signatures}
    engine = Engine()

    async def run() -> None:
        for q in _ROUTER_QUERIES:
            await engine.instant(querier, q, 3_000_000)
            await engine.range(querier, q, 600_000, 3_000_000, 60_000)

    asyncio.run(run())
    after = {(name, sig) for name, k in _kernels().items() for sig in k.signatures}
    return sorted(f"{name}{sig}" for name, sig in after - before)


def test_warm_ups_compile_every_kernel() -> None:
    # In a process of its own: in the test session's, kernels earlier tests
    # ran would count as warmed.
    out = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=300, check=True)
    cold = json.loads(out.stdout)
    assert cold == [], f"not compiled by any warm_up(): {cold}"


def test_the_router_loads_no_kernel_variant_for_one_shards_read_only_answer() -> None:
    out = subprocess.run([sys.executable, __file__, "loads"], capture_output=True, text=True, timeout=300, check=True)
    loaded = json.loads(out.stdout)
    assert loaded == [], f"loaded after the router's warm_up(): {loaded}"


if __name__ == "__main__":
    print(json.dumps(_loaded_after_warm_up() if sys.argv[1:] == ["loads"] else _not_warmed()))
