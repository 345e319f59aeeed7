"""Every compiled kernel is compiled before a process serves.

A kernel first compiled inside a request costs that request seconds on a
fresh install (~8 s for the remote-write decoder, ~0.6 s for the head's
kernels); loading it from Numba's cache still costs ~0.5 s. The router's and
the workers' warm_up() must reach every kernel of the package.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

from numba.core.registry import CPUDispatcher

import athens
from athens.router.app import warm_up as warm_up_router
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


def test_warm_ups_compile_every_kernel() -> None:
    # In a process of its own: in the test session's, kernels earlier tests
    # ran would count as warmed.
    out = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=300, check=True)
    cold = json.loads(out.stdout)
    assert cold == [], f"not compiled by any warm_up(): {cold}"


if __name__ == "__main__":
    print(json.dumps(_not_warmed()))
