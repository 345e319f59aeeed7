"""Building the kernels ahead of time, into one extension module.

A serving process that imports Numba holds ~55-75 MiB more than one that
does not: Numba's modules, LLVM's code, the loaded kernels. Built ahead of
time (numba.pycc), the same kernels are a ~1.5 MiB extension module and
run as fast (`target_cpu="host"`): measured in docs/benchmarks.md.

The supervisor calls ensure() before it starts its router and workers: the
build for this source tree, Numba, Python and CPU is looked up in a cache
directory, or made there by a child process (`python -m athens.aot DIR`),
which imports the router's and a worker's kernels, runs their warm-ups under
Numba's JIT and exports every variant (kernel, argument types) the warm-ups
compiled. A C compiler and Python's headers are needed for that; without
them, or if anything else fails, the build is skipped and the processes
compile their kernels at start as before (athens/jit.py).

numba.pycc is marked "pending deprecation" since Numba 0.57 (its successor
is not released); it compiles every kernel of this tree unchanged but for
two typing details (integer literals are not widened: head.INT64_MAX_C,
chunkenc._choose_tiers).
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from athens.log import kv

log = logging.getLogger("athens.aot")

# The directory of a build a process loads its kernels from (athens.kernels);
# unset: JIT. The supervisor sets it for its router and workers.
KERNELS_ENV = "ATHENS_KERNELS"
TABLE_FILE = "kernels.json"  # which exported function is which kernel variant
MODULE = "athens_kernels"
BUILD_TIMEOUT_S = 900


def build_key() -> str:
    """What a build depends on: every source file of the package (kernels and
    the warm-ups that choose their variants), Numba's and Python's versions
    and the CPU (the code is compiled for this one)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    for package in ("numba", "llvmlite"):  # their versions (importlib.metadata would import email)
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            version = Path(spec.origin).with_name("_version.py")
            h.update(version.read_bytes() if version.exists() else spec.origin.encode())
    h.update(f"{sys.version} {platform.machine()} {platform.system()}".encode())
    try:
        with open("/proc/cpuinfo") as f:
            h.update("".join(ln for ln in f if ln.startswith(("model name", "flags"))).encode())
    except OSError:
        h.update(platform.processor().encode())
    return h.hexdigest()[:20]


def cache_roots() -> list[Path]:
    """Where builds are kept, in order of preference: systemd's cache
    directory for the service (CacheDirectory=, deploy/athens.service),
    beside the package (as Numba's own cache is), the user's cache."""
    roots = []
    if os.environ.get("CACHE_DIRECTORY"):
        roots.append(Path(os.environ["CACHE_DIRECTORY"].split(":")[0]) / "aot")
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return roots + [Path(__file__).resolve().parent / "__pycache__", home_cache / "athens"]


def ensure() -> Path | None:
    """The directory of this tree's build (made if missing), or None."""
    key = build_key()
    for root in cache_roots():
        done = root / f"aot-{key}"
        if (done / TABLE_FILE).exists():
            return done
    errors = []
    for root in cache_roots():
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".aot-{key}-", dir=root))
        except OSError as e:
            errors.append(f"{root}: {e}")
            continue
        t0 = time.monotonic()
        log.info("building the kernels ahead of time (once per release and machine)", extra=kv(dir=str(root)))
        env = {k: v for k, v in os.environ.items() if k != KERNELS_ENV}
        try:
            out = subprocess.run([sys.executable, "-m", "athens.aot", str(tmp), key], env=env,
                                 capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            errors.append(str(e))
            break
        if out.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            lines = (out.stderr.strip() or out.stdout.strip() or "?").splitlines()
            errors.append(lines[-1][:300])
            break
        done = root / f"aot-{key}"
        try:
            tmp.rename(done)
        except OSError:  # another process finished the same build first
            shutil.rmtree(tmp, ignore_errors=True)
        _prune(root, keep=done.name)
        log.info("kernels built ahead of time", extra=kv(dir=str(done), seconds=round(time.monotonic() - t0, 1)))
        return done
    log.warning("kernels not built ahead of time; each process compiles them with Numba",
                extra=kv(err="; ".join(errors)))
    return None


def _prune(root: Path, keep: str) -> None:
    """Remove the builds of earlier trees (and abandoned temporaries)."""
    for old in root.glob("aot-*"):
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".aot-*"):
        try:
            abandoned = time.time() - tmp.stat().st_mtime > BUILD_TIMEOUT_S
        except OSError:  # finished or removed meanwhile
            continue
        if abandoned:
            shutil.rmtree(tmp, ignore_errors=True)


def _variant_key(t: object) -> object:
    """kernels.arg_key of the arguments a Numba type stands for."""
    from numba.core import types  # noqa: PLC0415

    if isinstance(t, types.Array):
        if t.layout != "C" or not t.aligned:
            raise ValueError(f"no variant key for {t}")
        return [str(t.dtype), t.ndim, bool(t.mutable)]
    return str(t)


def build(out_dir: Path, key: str) -> None:
    """Compile the kernels the router and a worker call into out_dir (run
    by ensure() in a child process: Numba's compiler stays out of the
    supervisor)."""
    import warnings  # noqa: PLC0415

    from numba.core.errors import NumbaPendingDeprecationWarning  # noqa: PLC0415
    from numba.core.registry import CPUDispatcher  # noqa: PLC0415

    warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
    from numba.pycc import CC  # noqa: PLC0415
    from numba.pycc import compiler as pycc_compiler  # noqa: PLC0415

    from athens.router.app import warm_up as router_warm_up  # noqa: PLC0415
    from athens.shards.worker import warm_up as worker_warm_up  # noqa: PLC0415

    router_warm_up()
    worker_warm_up()
    cc = CC(MODULE)
    cc.target_cpu = "host"
    cc.output_dir = str(out_dir)
    table: dict[str, list[list[object]]] = {}
    release_gil: dict[object, bool] = {}
    kernels = sorted(
        (d for d in gc.get_objects() if isinstance(d, CPUDispatcher) and d.py_func.__module__.startswith("athens.")),
        key=lambda d: (d.py_func.__module__, d.py_func.__qualname__),
    )
    for d in kernels:
        for cres in d.overloads.values():
            sym = f"k{sum(map(len, table.values()))}"
            wrapper = _calling(d, len(cres.signature.args))
            cc.export(sym, cres.signature)(wrapper)
            release_gil[wrapper] = bool(d.targetoptions.get("nogil"))
            name = f"{d.py_func.__module__}:{d.py_func.__qualname__}"
            table.setdefault(name, []).append([[_variant_key(t) for t in cres.signature.args], sym])
    # pycc compiles every export with one set of flags; a kernel's own
    # options (error model, fastmath, ...) hold for the call inside its
    # wrapper, and the wrapper releases the GIL where the kernel did.
    compile_extra = pycc_compiler.compile_extra

    def per_kernel(typingctx, targetctx, func, args, return_type, flags, locals, library):  # type: ignore[no-untyped-def]
        flags = flags.copy()
        flags.release_gil = release_gil.get(func, False)
        return compile_extra(typingctx, targetctx, func, args, return_type, flags, locals=locals, library=library)

    pycc_compiler.compile_extra = per_kernel
    try:
        cc.compile()
    finally:
        pycc_compiler.compile_extra = compile_extra
    files = [p.name for p in out_dir.iterdir() if p.name.startswith(MODULE) and p.suffix in (".so", ".pyd")]
    if len(files) != 1:
        raise RuntimeError(f"expected one extension module in {out_dir}, found {files}")
    (out_dir / TABLE_FILE).write_text(json.dumps({"key": key, "module": MODULE, "file": files[0], "kernels": table}))


def _calling(dispatcher: object, nargs: int) -> object:
    """A plain function of nargs arguments that calls `dispatcher`: what is
    exported, so the kernel itself compiles with its own options."""
    names = ", ".join(f"a{i}" for i in range(nargs))
    scope: dict[str, object] = {"kernel": dispatcher}
    exec(f"def call({names}):\n    return kernel({names})\n", scope)  # noqa: S102 - generated call
    return scope["call"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    build(Path(sys.argv[1]), sys.argv[2])
