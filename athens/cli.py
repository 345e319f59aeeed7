"""The one `athens` binary: `serve`, and the internal child-process commands."""

from __future__ import annotations

import argparse
import sys

from athens import __version__, log
from athens.config import ConfigError, ServeConfig, add_serve_flags, config_from_args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="athens",
        description="Durable, long-term storage for Prometheus data that speaks PromQL.",
    )
    p.add_argument("--version", action="version", version=f"athens {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the server (supervisor, router and shard workers) in the foreground",
        description="Run Athens in the foreground: a supervisor that starts one shard worker "
        "per CPU set and the HTTP router (remote write at /api/v1/write, PromQL at "
        "/api/v1/query and /api/v1/query_range).",
    )
    add_serve_flags(serve)
    worker = sub.add_parser("_worker", help=argparse.SUPPRESS)
    worker.add_argument("--index", type=int, required=True)
    add_serve_flags(worker)
    router = sub.add_parser("_router", help=argparse.SUPPRESS)
    add_serve_flags(router)
    pt = sub.add_parser(
        "promql-test",
        help="run upstream PromQL .test files against the engine and print pass counts",
    )
    pt.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="[-v] [--no-extra-checks] [--memory] FILE... (.test files in Prometheus' promqltest "
        "format; data goes through a real shard unless --memory)",
    )
    return p


def _run_async(coro) -> None:  # type: ignore[no-untyped-def]
    try:
        import uvloop  # noqa: PLC0415

        uvloop.run(coro)
    except ImportError:
        import asyncio  # noqa: PLC0415 - not in the supervisor, which runs no loop

        asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    if ns.command == "promql-test":
        from athens.query.promqltest import main as promql_test  # noqa: PLC0415

        return promql_test(ns.args)
    try:
        cfg: ServeConfig = config_from_args(ns)
    except ConfigError as e:
        print(f"athens: error: {e}", file=sys.stderr)
        return 2
    if ns.command == "serve":
        from athens.launch import launch  # noqa: PLC0415

        log.setup(cfg.log_format, cfg.log_level, "supervisor")
        try:
            return launch(cfg)
        except ConfigError as e:
            print(f"athens: error: {e}", file=sys.stderr)
            return 2
    if ns.command in ("_worker", "_router"):
        from athens.query.parser import RECURSION_LIMIT  # noqa: PLC0415

        sys.setrecursionlimit(RECURSION_LIMIT)  # for expressions of up to parser.MAX_DEPTH levels
    if ns.command == "_worker":
        from athens.shards.worker import run_worker  # noqa: PLC0415

        log.setup(cfg.log_format, cfg.log_level, f"worker-{ns.index}")
        _run_async(run_worker(cfg, ns.index))
        return 0
    from athens.router.app import run_router  # noqa: PLC0415

    log.setup(cfg.log_format, cfg.log_level, "router")
    _run_async(run_router(cfg))
    return 0
