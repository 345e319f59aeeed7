"""Building the kernels ahead of time, into an extension module per kind of process.

A serving process that imports Numba holds ~55-75 MiB more than one that
does not: Numba's modules, LLVM's code, the loaded kernels. Built ahead of
time (numba.pycc), the same kernels are a ~1.5 MiB extension module and
run as fast (`target_cpu="host"`): measured in docs/benchmarks.md.

`athens serve` (athens.launch) calls ensure() before it starts the supervisor: the
build for this source tree, Numba, Python and CPU is looked up in a cache
directory, or made there by two child processes at once (`python -m
athens.aot DIR KEY ROLE`), one for the router and one for the workers, each
running its role's warm-up under Numba's JIT and exporting every variant
(kernel, argument types) it compiled. A C compiler and Python's headers are needed for that; without
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
from typing import IO

from athens.log import kv

log = logging.getLogger("athens.aot")

# The directory of a build a process loads its kernels from (athens.kernels);
# unset: JIT. athens.launch names it for the router and the workers.
KERNELS_ENV = "ATHENS_KERNELS"
TABLE_FILE = "kernels.json"  # which exported function is which kernel variant
MODULE = "athens_kernels"
BUILD_TIMEOUT_S = 900
# A build child's temporary directory, inside its role's build directory.
SCRATCH = "tmp"
# One module per kind of process, built in parallel (the first start waits
# for the slower one): the kernels each one's warm-up calls.
ROLES = ("router", "worker")


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
    """The directory of this tree's build (made if missing), or None; the
    module for processes of a role is in role_dir(it, role)."""
    key = build_key()
    for root in cache_roots():
        done = root / f"aot-{key}"
        if all((role_dir(done, role) / TABLE_FILE).exists() for role in ROLES):
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
        error = _build_roles(tmp, key)
        if error:
            shutil.rmtree(tmp, ignore_errors=True)
            errors.append(error)
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


def role_dir(build_dir: Path, role: str) -> Path:
    return build_dir / role


def _build_roles(tmp: Path, key: str) -> str | None:
    """Build every role's module under tmp, each in a child process of its
    own, all at once; the first failure's last line, or None. A child's
    temporary files go to a scratch directory removed afterwards: the
    toolchain leaves its compiler probes and, when killed, its build
    directory behind in the system's temporary directory."""
    env = {k: v for k, v in os.environ.items() if k != KERNELS_ENV}
    procs = []
    try:
        for role in ROLES:
            scratch = role_dir(tmp, role) / SCRATCH
            scratch.mkdir(parents=True)
            out = open(role_dir(tmp, role) / "build.log", "w+b")
            argv = [sys.executable, "-m", "athens.aot", str(role_dir(tmp, role)), key, role]
            try:
                proc = subprocess.Popen(argv, env={**env, "TMPDIR": str(scratch)}, stdout=out,
                                        stderr=subprocess.STDOUT)
            except OSError as e:
                out.close()
                return str(e)
            procs.append((proc, out))
        return _wait_builds(procs)
    finally:
        for proc, out in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
        for role in ROLES:
            shutil.rmtree(role_dir(tmp, role) / SCRATCH, ignore_errors=True)


def _wait_builds(procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]]) -> str | None:
    """Wait for the build children; the first failure's last line, or None."""
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    error = None
    for proc, out in procs:
        try:
            code = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        if code != 0 and error is None:
            out.seek(0)
            lines = out.read().decode(errors="replace").strip().splitlines() or ["?"]
            error = f"build timed out after {BUILD_TIMEOUT_S} s" if code is None else lines[-1][:300]
    return error


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


def _stored_key(t: object) -> object:
    """How the table stores kernels.arg_keys of the arguments a Numba type
    stands for (kernels._variant_key reads it back)."""
    from numba.core import types  # noqa: PLC0415

    if isinstance(t, types.Array):
        if t.layout != "C" or not t.aligned:
            raise ValueError(f"no variant key for {t}")
        return [str(t.dtype), t.ndim, bool(t.mutable)]
    return str(t)


def build(out_dir: Path, key: str, role: str) -> None:
    """Compile the kernels a process of `role` calls into out_dir (run by
    ensure() in a child process: Numba's compiler stays out of the
    supervisor)."""
    import warnings  # noqa: PLC0415

    from numba.core.errors import NumbaPendingDeprecationWarning  # noqa: PLC0415
    from numba.core.registry import CPUDispatcher  # noqa: PLC0415

    warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
    from numba.pycc import CC  # noqa: PLC0415
    from numba.pycc import compiler as pycc_compiler  # noqa: PLC0415

    if role == "router":
        from athens.router.app import warm_up  # noqa: PLC0415
    elif role == "worker":
        from athens.shards.worker import warm_up  # noqa: PLC0415
    else:
        raise ValueError(f"no role {role!r}")
    warm_up()
    module = f"{MODULE}_{role}"
    cc = CC(module)
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
            table.setdefault(name, []).append([[_stored_key(t) for t in cres.signature.args], sym])
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
    files = [p.name for p in out_dir.iterdir() if p.name.startswith(module) and p.suffix in (".so", ".pyd")]
    if len(files) != 1:
        raise RuntimeError(f"expected one extension module in {out_dir}, found {files}")
    (out_dir / TABLE_FILE).write_text(json.dumps({"key": key, "module": module, "file": files[0], "kernels": table}))


def _calling(dispatcher: object, nargs: int) -> object:
    """A plain function of nargs arguments that calls `dispatcher`: what is
    exported, so the kernel itself compiles with its own options."""
    names = ", ".join(f"a{i}" for i in range(nargs))
    scope: dict[str, object] = {"kernel": dispatcher}
    exec(f"def call({names}):\n    return kernel({names})\n", scope)  # noqa: S102 - generated call
    return scope["call"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    build(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
