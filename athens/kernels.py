"""How Athens' compiled kernels are defined, and which compiled code runs them.

Every kernel is written once, as a Numba nopython function decorated with
`kernel(...)` (the options numba.njit takes). A process runs them one of two
ways, chosen once, before any kernel module is imported:

- JIT (a process given no build: tests, tools, `--kernels jit`): `kernel`
  is numba.njit with an on-disk cache. Numba, LLVM and the loaded kernels
  cost a process ~55-75 MiB of RSS (docs/benchmarks.md, "What a process
  holds before any series").
- Ahead of time: `athens serve` builds the kernels its router and its
  workers use into an extension module for each (athens/aot.py,
  numba.pycc, for the signatures their warm-ups call) and names the
  directory of a process's own in KERNELS_ENV.
  `kernel` then returns a _Compiled that picks the compiled function by the
  types of its arguments; Numba is never imported, unless a call comes with
  types nothing was compiled for (that kernel's module is then loaded once
  more in JIT mode, _jit_twin, and the call logged).

Helpers that only kernels call (inline ones, intrinsics) are never called
from Python, so in ahead-of-time mode their decorators leave them as they
are, and the Numba names they use at typing time are None.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import sys
from collections.abc import Callable
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from athens import heap
from athens.aot import KERNELS_ENV, TABLE_FILE
from athens.log import kv

log = logging.getLogger("athens.kernels")

# Argument key of a Python or NumPy scalar: the Numba type's name.
_SCALARS: dict[type, str] = {
    int: "int64", float: "float64", bool: "bool",
    np.int64: "int64", np.int32: "int32", np.int16: "int16", np.int8: "int8",
    np.uint64: "uint64", np.uint32: "uint32", np.uint16: "uint16", np.uint8: "uint8",
    np.float64: "float64", np.float32: "float32", np.bool_: "bool",
}


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of a (C-contiguous: a copy where a is not): the one
    array kind a kernel's callers pass where its inputs may come either way
    (a frame's or a segment's columns are read-only, a fresh array is not),
    so its build needs one variant and no call compiles another."""
    v = np.ascontiguousarray(a).view()
    v.flags.writeable = False
    return v


def arg_keys(args: tuple) -> tuple:
    """What selects a compiled variant for arguments `args`: for an array
    its dtype, dimensions and whether it is writeable (only C-contiguous,
    aligned arrays have variants; None for others); for a scalar its
    type's name. The compiled functions do not check their arguments (a
    wrong dtype is read as if it were right), so every call is checked
    this way: ~0.2 us an array (dtype.name would be 2 us). One loop over a
    call's arguments, not a function call each: a six-argument call's
    check 2.4 -> 1.1 us alone (a worker's single-series SELECT checks ~50
    arguments; its round trip in process, 166-187 us, did not move beyond
    its spread)."""
    keys = []
    for a in args:
        if type(a) is np.ndarray:
            f = a.flags
            keys.append((a.dtype, a.ndim, f.writeable) if f.c_contiguous and f.aligned else None)
        else:
            keys.append(_SCALARS.get(type(a)))
    return tuple(keys)


def _variant_key(stored: list) -> tuple:
    """An argument key as a build's table stores it (dtype by name)."""
    return tuple((np.dtype(k[0]), k[1], k[2]) if isinstance(k, list) else k for k in stored)


class _Compiled:
    """A kernel run by an ahead-of-time build: variants by argument keys."""

    __slots__ = ("py_func", "_variants", "_jit")

    def __init__(self, fn: Callable[..., Any], variants: dict[tuple, Callable]) -> None:
        self.py_func = fn
        self._variants = variants
        self._jit: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        f = self._variants.get(arg_keys(args))
        if f is None:
            return self._compile(args)
        return f(*args)

    def _compile(self, args: tuple) -> Any:
        if self._jit is None:
            log.warning("a kernel is compiled for argument types its build does not have",
                        extra=kv(kernel=self.py_func.__qualname__, types=repr(list(arg_keys(args)))))
            self._jit = getattr(_jit_twin(self.py_func.__module__), self.py_func.__qualname__)
        return self._jit(*args)


@functools.cache
def _jit_twin(module: str) -> ModuleType:
    """Module `module` executed once more, with Numba's JIT behind kernel():
    its kernels call each other (never another module's), so the twin's
    are compiled together. Not through Numba's on-disk cache: an entry
    compiled here names the twin's module, which a JIT process loading the
    same function's cache cannot import, and its call then failed (a
    test's append did, after an e2e server's worker had compiled a twin)."""
    import numba  # noqa: PLC0415 - only for calls nothing was compiled for
    from numba.core import types as nb_types  # noqa: PLC0415
    from numba.cpython.unsafe import numbers  # noqa: PLC0415
    from numba.extending import intrinsic as nb_intrinsic  # noqa: PLC0415

    def kernel(**options: Any) -> Callable[..., Any]:
        return numba.njit(**{**options, "cache": False})

    jit = ModuleType(__name__)
    jit.__dict__.update(kernel=kernel, intrinsic=nb_intrinsic, types=nb_types, read_only=read_only,
                        leading_zeros=numbers.leading_zeros, trailing_zeros=numbers.trailing_zeros)
    origin = sys.modules[module].__file__
    spec = spec_from_file_location(f"_jit_twin.{module}", origin)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {module} again from {origin}")
    twin = module_from_spec(spec)
    ours = sys.modules[__name__]
    sys.modules[spec.name] = twin
    sys.modules[__name__] = jit
    try:
        spec.loader.exec_module(twin)
    finally:
        sys.modules[__name__] = ours
    return twin


class _MemoizedLoads:
    """pickle.loads for a numba.pycc module, remembering what it unpickled.

    Compiled code boxes its results with Python objects it holds pickled:
    its environment's constants (a list of dtypes) and numpy.ndarray for
    every array it returns. Numba's JIT unpickles each once and keeps it
    (numba.core.serialize._numba_unpickle); a pycc module's C helper calls
    pickle.loads each time, 1-2.5 us an object (`long` data, one worker:
    a single-series SELECT 81-85 -> 73-76 us in process, a 12-hour
    `sum(rate(...[5m]))` over 2,900 series 76 -> 71 ms and 113 -> 104 ms
    of CPU, alternated with the unmemoized build). The helper looks
    pickle.loads up once, when the module initialises, and keeps it; so
    this stands in for pickle.loads while the module loads, and puts the
    original back at its first call: only that module's helper holds it.
    Its inputs are the module's constants (a finite set), and like the
    JIT's memo it hands the same object to every call.
    """

    __slots__ = ("loads", "memo")

    def __init__(self, loads: Callable[..., Any]) -> None:
        self.loads = loads
        self.memo: dict[bytes, Any] = {}

    def __call__(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        if pickle.loads is self:
            pickle.loads = self.loads
        if args or kwargs:  # not the helper's call: a caller came first
            return self.loads(data, *args, **kwargs)
        obj = self.memo.get(data)
        if obj is None:
            obj = self.memo[data] = self.loads(data)
        return obj


def _load(directory: str) -> dict[str, list[tuple[tuple, Callable]]] | None:
    """The compiled variants of every kernel in a build directory, by
    "module:qualname"; None (JIT) if it cannot load."""
    try:
        table = json.loads((Path(directory) / TABLE_FILE).read_text())
        spec = spec_from_file_location(table["module"], Path(directory) / table["file"])
        if spec is None or spec.loader is None:
            raise ImportError(f"no extension module in {directory}")
        memo = pickle.loads = _MemoizedLoads(pickle.loads)  # for the module's init to take
        try:
            mod = module_from_spec(spec)
            spec.loader.exec_module(mod)
        finally:
            if pickle.loads is memo:  # not taken
                pickle.loads = memo.loads
        return {
            name: [(_variant_key(key), getattr(mod, sym)) for key, sym in variants]
            for name, variants in table["kernels"].items()
        }
    except (OSError, ValueError, KeyError, ImportError, AttributeError) as e:
        log.warning("ahead-of-time kernels not loaded; compiling them with Numba",
                    extra=kv(dir=directory, err=str(e)))
        return None


_AOT = _load(os.environ[KERNELS_ENV]) if os.environ.get(KERNELS_ENV) else None
AHEAD_OF_TIME = _AOT is not None

if _AOT is None:
    import numba
    from numba.core import types
    from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros
    from numba.extending import intrinsic
else:
    numba = types = leading_zeros = trailing_zeros = None  # type: ignore[assignment]

    def intrinsic(fn: Callable[..., Any]) -> Callable[..., Any]:  # type: ignore[no-redef]
        return fn


def kernel(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """numba.njit(**options), or the function's ahead-of-time variants."""

    def wrap(fn: Callable[..., Any]) -> Any:
        if _AOT is None:
            return numba.njit(**options)(fn)
        # No variants: called by kernels only (inlined, or linked into theirs).
        return _Compiled(fn, dict(_AOT.get(f"{fn.__module__}:{fn.__qualname__}", ())))

    return wrap


def warm_up(warm: Callable[[], None]) -> None:
    """Run `warm` (a process's calls of every kernel it serves with) before
    serving. Ahead of time that only checks the build has them all (a
    kernel it lacks is compiled here, and logged); JIT, athens.jit loads or
    compiles them from Numba's cache."""
    if _AOT is not None:
        warm()
        heap.trim()
        return
    from athens import jit  # noqa: PLC0415 - imports Numba's compiler machinery

    jit.warm_up(warm)
