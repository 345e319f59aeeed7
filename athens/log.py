"""One log line per event on stderr, as logfmt or JSON (--log-format)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


def _logfmt_value(v: Any) -> str:
    s = str(v)
    if s == "" or any(c in s for c in ' ="\n\t'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str, component: str) -> None:
        super().__init__()
        self.fmt = fmt
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update(getattr(record, "kv", {}))
        if record.exc_info:
            fields["err"] = self.formatException(record.exc_info)
        if self.fmt == "json":
            return json.dumps(fields, default=str)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


def setup(fmt: str = "logfmt", level: str = "info", component: str = "athens") -> None:
    """Configure the root logger of this process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt, component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def kv(**fields: Any) -> dict[str, Any]:
    """`log.info("msg", extra=kv(a=1))` adds key=value pairs to the line."""
    return {"kv": fields}
