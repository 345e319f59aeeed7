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
import orjson
from aiohttp import web

from athens.errors import AthensError, BadDataError, TooLargeError
from athens.model.labels import Labels
from athens.model.matchers import Matcher

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


def success_raw(data_json: str, warnings: list[str] | None = None, infos: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> web.Response:
    """Wrap pre-rendered `data` JSON in the success envelope."""
    parts = ['{"status":"success","data":', data_json]
    if warnings:
        parts += [',"warnings":', json.dumps(warnings)]
    if infos:
        parts += [',"infos":', json.dumps(infos)]
    for k, v in (extra or {}).items():
        parts += [",", json.dumps(k), ":", json.dumps(v, separators=(",", ":"))]
    parts.append("}")
    return web.Response(text="".join(parts), content_type="application/json")


def success(data: Any, warnings: list[str] | None = None) -> web.Response:
    return success_raw(json.dumps(data, ensure_ascii=False, separators=(",", ":")), warnings)


# --- parameters --------------------------------------------------------------


async def params(request: web.Request) -> dict[str, list[str]]:
    """Form-body and query-string parameters merged (Grafana POSTs forms).

    Body values come first, as in Go's Request.Form, so a name given in both
    places takes the body's value.
    """
    out: dict[str, list[str]] = {}
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        for k, v in form.items():
            out.setdefault(k, []).append(str(v))
    for k, v in request.query.items():
        out.setdefault(k, []).append(v)
    return out


def first(p: dict[str, list[str]], name: str) -> str | None:
    vals = p.get(name)
    return vals[0] if vals else None


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
# Go's strconv.ParseFloat syntax (no surrounding spaces, unlike Python's float()).
_GO_FLOAT = re.compile(r"^[+-]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][+-]?\d+)?$|^[+-]?(inf|infinity|nan)$",
                       re.IGNORECASE)

# Timestamps are clamped to this range (ms): wide enough for any real time,
# small enough that time arithmetic in the engine cannot overflow int64.
TIME_MIN_MS = -(2**62)
TIME_MAX_MS = 2**62


def parse_time(text: str, name: str) -> int:
    """Unix seconds (float) or RFC 3339, in ms.

    Like Prometheus, any float is accepted; values beyond what a timestamp
    can hold (and NaN, Inf) are clamped to the representable range instead
    of failing.
    """
    if _GO_FLOAT.match(text):
        v = float(text)
        if v != v:
            return TIME_MIN_MS
        ms = v * 1000
        return TIME_MIN_MS if ms <= TIME_MIN_MS else TIME_MAX_MS if ms >= TIME_MAX_MS else round(ms)
    if _RFC3339.match(text):
        frac = ""
        t = text
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
        if not _GO_FLOAT.match(text):
            raise ValueError(text)
        v = float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except AthensError:
            raise BadDataError(
                f'invalid parameter "{name}": cannot parse "{text}" to a valid duration'
            ) from None
    if not math.isfinite(v) or abs(v) * 1e9 > 2**63 - 1:  # Go: a time.Duration in ns
        raise BadDataError(
            f'invalid parameter "{name}": cannot parse "{text}" to a valid duration. It overflows int64'
        )
    return round(v * 1000)


def parse_duration_param(text: str, name: str) -> int:
    """A duration parameter (timeout, lookback_delta): float seconds or "5m", in ms."""
    return parse_step(text, name)


def parse_limit(text: str | None) -> int:
    """`limit`: a non-negative integer, 0 (or absent) meaning no limit."""
    if not text:
        return 0
    try:
        limit = int(text, 10)
    except ValueError:
        raise BadDataError(f'invalid parameter "limit": cannot parse "{text}" to a valid integer') from None
    if limit < 0:
        raise BadDataError('invalid parameter "limit": limit must be non-negative')
    return limit


def parse_match_params(values: list[str]) -> list[list[Matcher]]:
    """match[] selectors; each must have a matcher that rejects the empty string."""
    from athens.query.parser import parse_matchers  # noqa: PLC0415

    sets = [parse_matchers(text) for text in values]
    for ms in sets:
        if not any(not m.matches("") for m in ms):
            raise BadDataError("match[] must contain at least one non-empty matcher")
    return sets


def check_label_name(name: str) -> None:
    """Label names in paths: any non-empty UTF-8 name (Prometheus 3 accepts UTF-8 names)."""
    if not name or "\ufffd" in name:
        raise BadDataError(f'invalid label name: "{name}"')


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


def fmt_floats(values: np.ndarray) -> list[str]:
    """fmt_float of every element. orjson writes the same shortest digits as
    repr (Ryu) in C; only elements where it would write an exponent, null
    (NaN, Inf) or a different notation go through fmt_float."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if len(values) <= 8:  # the array passes below cost more than a few reprs
        return [fmt_float(v) for v in values.tolist()]
    text = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode()
    out = (text + ",").replace(".0,", ",").split(",")
    out.pop()
    mag = np.abs(values)
    with np.errstate(invalid="ignore"):
        odd = ~np.isfinite(values) | (mag >= 1e16) | ((mag < 1e-4) & (mag != 0))
    for i in np.flatnonzero(odd).tolist():
        out[i] = fmt_float(float(values[i]))
    return out


def fmt_ts(t_ms: int) -> str:
    """Milliseconds as JSON seconds, exactly: 1500 -> 1.5, 2000 -> 2."""
    sign = "-" if t_ms < 0 else ""
    sec, ms = divmod(abs(int(t_ms)), 1000)
    if ms == 0:
        return f"{sign}{sec}"
    return f"{sign}{sec}.{ms:03d}".rstrip("0")


def fmt_tss(ts: np.ndarray) -> list[str]:
    """fmt_ts of every element (whole seconds, the usual range step, in one go)."""
    if len(ts) and not (ts % 1000).any():
        return list(map(str, (ts // 1000).tolist()))
    return [fmt_ts(t) for t in ts.tolist()]


def labels_json(labels: Labels) -> str:
    return orjson.dumps(dict(labels.pairs)).decode()


def render_vector(samples: list[tuple[Labels, int, float]]) -> str:
    vals = fmt_floats(np.array([v for _, _, v in samples], dtype=np.float64))
    items = [
        f'{{"metric":{labels_json(lb)},"value":[{fmt_ts(t)},"{v}"]}}'
        for (lb, t, _), v in zip(samples, vals)
    ]
    return '{"resultType":"vector","result":[' + ",".join(items) + "]}"


def render_matrix(series: list[tuple[Labels, np.ndarray, np.ndarray]]) -> str:
    if not series:
        return '{"resultType":"matrix","result":[]}'
    # All points formatted in one go; '<ts>,"' once per distinct timestamp
    # (the series of a range query share their steps).
    ts = np.concatenate([np.asarray(t, np.int64) for _, t, _ in series])
    steps = np.unique(ts)
    heads = dict(zip(steps.tolist(), (t + ',"' for t in fmt_tss(steps))))
    points = list(map(str.__add__, map(heads.__getitem__, ts.tolist()),
                      fmt_floats(np.concatenate([v for _, _, v in series]))))
    items = []
    a = 0
    for lb, t, _ in series:
        b = a + len(t)
        body = "[" + '"],['.join(points[a:b]) + '"]' if b > a else ""
        items.append(f'{{"metric":{labels_json(lb)},"values":[{body}]}}')
        a = b
    return '{"resultType":"matrix","result":[' + ",".join(items) + "]}"


def render_scalar(t: int, v: float) -> str:
    return f'{{"resultType":"scalar","result":[{fmt_ts(t)},"{fmt_float(v)}"]}}'


def render_string(t: int, s: str) -> str:
    return f'{{"resultType":"string","result":[{fmt_ts(t)},{json.dumps(s)}]}}'
