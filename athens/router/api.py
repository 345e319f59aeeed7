"""Prometheus HTTP API conventions: parameters, JSON rendering, error mapping.

This module is the one place where exception classes become HTTP statuses.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import numpy as np
from aiohttp import web

from athens.errors import AthensError, BadDataError, TooLargeError
from athens.model.labels import Labels

# errorType -> HTTP status, as Prometheus' web/api/v1 maps them.
ERROR_STATUS = {
    "bad_data": 400,
    "execution": 422,
    "canceled": 499,
    "timeout": 503,
    "unavailable": 503,
    "not_found": 404,
    "internal": 500,
}

# Prometheus refuses range queries with more points than this per series.
MAX_POINTS_PER_SERIES = 11_000


def error_status(err: AthensError) -> int:
    if isinstance(err, TooLargeError):
        return 413
    return ERROR_STATUS.get(err.error_type, 500)


def error_response(err: AthensError, headers: dict[str, str] | None = None) -> web.Response:
    body = {"status": "error", "errorType": err.error_type, "error": str(err)}
    return web.Response(
        status=error_status(err),
        text=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def success_raw(data_json: str, warnings: list[str] | None = None, infos: list[str] | None = None) -> web.Response:
    """Wrap pre-rendered `data` JSON in the success envelope."""
    parts = ['{"status":"success","data":', data_json]
    if warnings:
        parts += [',"warnings":', json.dumps(warnings)]
    if infos:
        parts += [',"infos":', json.dumps(infos)]
    parts.append("}")
    return web.Response(text="".join(parts), content_type="application/json")


def success(data: Any) -> web.Response:
    return success_raw(json.dumps(data, separators=(",", ":")))


# --- parameters --------------------------------------------------------------


async def params(request: web.Request) -> dict[str, list[str]]:
    """Query-string and form-body parameters merged (Grafana POSTs forms)."""
    out: dict[str, list[str]] = {}
    for k, v in request.query.items():
        out.setdefault(k, []).append(v)
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        for k, v in form.items():
            out.setdefault(k, []).append(str(v))
    return out


def first(p: dict[str, list[str]], name: str) -> str | None:
    vals = p.get(name)
    return vals[0] if vals else None


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(text: str, name: str) -> int:
    """Unix seconds (float) or RFC 3339, in ms."""
    try:
        v = float(text)
        if math.isfinite(v):
            return round(v * 1000)
    except ValueError:
        pass
    if _RFC3339.match(text):
        frac = ""
        t = text.replace("z", "Z").replace("t", "T")
        m = re.search(r"\.(\d+)", t)
        if m:
            frac = m.group(1)
            t = t[: m.start()] + t[m.end() :]
        try:
            dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            dt = None
        if dt is not None:
            ms = int((frac + "000")[:3]) if frac else 0
            return int(dt.timestamp()) * 1000 + ms
    raise BadDataError(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp')


def parse_step(text: str, name: str) -> int:
    """Float seconds or a Prometheus duration, in ms."""
    from athens.query.parser import parse_duration  # noqa: PLC0415

    try:
        v = float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except AthensError:
            raise BadDataError(
                f'invalid parameter "{name}": cannot parse "{text}" to a valid duration'
            ) from None
    if not math.isfinite(v) or abs(v) * 1000 >= 2**63:
        raise BadDataError(
            f'invalid parameter "{name}": cannot parse "{text}" to a valid duration. It overflows int64'
        )
    return round(v * 1000)


# --- rendering ---------------------------------------------------------------


def fmt_float(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): shortest digits, no exponent."""
    if v != v:
        return "NaN"
    if v == math.inf:
        return "+Inf"
    if v == -math.inf:
        return "-Inf"
    s = repr(v)
    if "e" in s:
        return np.format_float_positional(v, unique=True, trim="-")
    return s[:-2] if s.endswith(".0") else s


def fmt_ts(t_ms: int) -> str:
    """Milliseconds as JSON seconds, exactly: 1500 -> 1.5, 2000 -> 2."""
    sign = "-" if t_ms < 0 else ""
    sec, ms = divmod(abs(int(t_ms)), 1000)
    if ms == 0:
        return f"{sign}{sec}"
    return f"{sign}{sec}.{ms:03d}".rstrip("0")


def labels_json(labels: Labels) -> str:
    return json.dumps(dict(labels.pairs), ensure_ascii=False, separators=(",", ":"))


def render_vector(samples: list[tuple[Labels, int, float]]) -> str:
    items = [
        f'{{"metric":{labels_json(lb)},"value":[{fmt_ts(t)},"{fmt_float(v)}"]}}'
        for lb, t, v in samples
    ]
    return '{"resultType":"vector","result":[' + ",".join(items) + "]}"


def render_matrix(series: list[tuple[Labels, np.ndarray, np.ndarray]]) -> str:
    items = []
    for lb, ts, vals in series:
        points = ",".join(
            f'[{fmt_ts(t)},"{fmt_float(v)}"]' for t, v in zip(ts.tolist(), vals.tolist())
        )
        items.append(f'{{"metric":{labels_json(lb)},"values":[{points}]}}')
    return '{"resultType":"matrix","result":[' + ",".join(items) + "]}"


def render_scalar(t: int, v: float) -> str:
    return f'{{"resultType":"scalar","result":[{fmt_ts(t)},"{fmt_float(v)}"]}}'


def render_string(t: int, s: str) -> str:
    return f'{{"resultType":"string","result":[{fmt_ts(t)},{json.dumps(s)}]}}'
