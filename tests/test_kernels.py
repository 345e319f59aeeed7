"""A kernel run by an ahead-of-time build picks its variant by argument types,
and compiles (with Numba) only for types its build lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from athens.kernels import _Compiled, arg_keys


def test_argument_keys_name_dtype_dimensions_and_writeability() -> None:
    a = np.zeros(4, np.int64)
    assert arg_keys((a, np.frombuffer(a.tobytes(), np.int64), np.zeros((2, 3), np.float64), np.zeros(3, bool))) == (
        (np.dtype("int64"), 1, True), (np.dtype("int64"), 1, False), (np.dtype("float64"), 2, True),
        (np.dtype("bool"), 1, True),
    )
    assert arg_keys((np.zeros(3, np.int32),)) != arg_keys((np.zeros(3, np.uint32),))
    # Only C-contiguous, aligned arrays have variants.
    assert arg_keys((a[::2], np.frombuffer(bytes(17), np.int64, 2, 1))) == (None, None)
    assert arg_keys((1, 1.5, True, np.int64(1), np.uint64(1), np.float64(1), np.int32(1))) == (
        "int64", "float64", "bool", "int64", "uint64", "float64", "int32",
    )
    assert arg_keys(()) == ()


KERNEL_MODULE = """
from athens.kernels import kernel

@kernel(cache=False)
def add(a, b):
    return a + b
"""


def test_compiled_calls_the_variant_of_its_argument_types_and_compiles_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kmod.py").write_text(KERNEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import kmod  # JIT here: kmod.add is Numba's dispatcher

    calls = []

    def variant(a, b):
        calls.append((a, b))
        return "variant"

    k = _Compiled(kmod.add.py_func, {((np.dtype("int64"), 1, True), "int64"): variant})
    x = np.arange(3, dtype=np.int64)
    assert k(x, 2) == "variant" and len(calls) == 1
    # A read-only array and a float: no variant, so Numba compiles `add` for
    # them, in a twin of its module.
    ro = np.frombuffer(x.tobytes(), np.int64)
    assert k(ro, 2.5).tolist() == [2.5, 3.5, 4.5] and len(calls) == 1
    assert k.py_func is kmod.add.py_func
