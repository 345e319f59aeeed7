"""Runner for Prometheus' PromQL conformance files (promql/promqltest/testdata).

The file format is described in the README.md beside the upstream files; this
runner is written from that description. Data goes through a storage object
made by a factory (anything with `append(WriteBatch)` and a Querier-style
`select`, sync or async), so the same files exercise the in-memory store and
the real shard. Native-histogram cases are skipped and counted apart.

Usage: athens promql-test [-v] [--no-extra-checks] [--memory] FILE...

-v lists skipped cases; --no-extra-checks turns off the two checks upstream
adds to every instant eval (the same query as a range query, and with `@`
pinned and re-evaluated at other times). Data is stored in real shards
(athens.shards, the storage path of `athens serve`, in a temporary
directory); --memory uses the in-memory MemQuerier instead.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from athens.errors import AthensError
from athens.model.batch import WriteBatch
from athens.model.labels import METRIC_NAME, Labels, format_labels
from athens.model.series import STALE_NAN
from athens.query import ast
from athens.query.engine import Engine
from athens.query.memquerier import MemQuerier
from athens.query.parser import parse
from athens.query.printer import format_expr

_DUR_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DUR_MS = [365 * 86400_000, 7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1]


class TestFileError(ValueError):
    """The test file itself is malformed."""


def parse_test_duration(s: str) -> int:
    s = s.strip()
    if s == "0":
        return 0
    m = _DUR_RE.match(s)
    if not m or not s:
        raise TestFileError(f"bad duration {s!r}")
    return sum(int(g) * mul for g, mul in zip(m.groups(), _DUR_MS) if g)


# ----------------------------------------------------------------- series text

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"', "'": "'"}


def _read_string(s: str, i: int) -> tuple[str, int]:
    q = s[i]
    i += 1
    if q == "`":
        j = s.index("`", i)
        return s[i:j], j + 1
    out = []
    while s[i] != q:
        c = s[i]
        if c == "\\":
            n = s[i + 1]
            if n in _ESCAPES:
                out.append(_ESCAPES[n])
                i += 2
            elif n == "x":
                out.append(chr(int(s[i + 2 : i + 4], 16)))
                i += 4
            elif n == "u":
                out.append(chr(int(s[i + 2 : i + 6], 16)))
                i += 6
            elif n == "U":
                out.append(chr(int(s[i + 2 : i + 10], 16)))
                i += 10
            elif n in "01234567":
                out.append(chr(int(s[i + 1 : i + 4], 8)))
                i += 4
            else:
                raise TestFileError(f"bad escape in {s!r}")
            continue
        out.append(c)
        i += 1
    raw = "".join(out)
    # \x escapes produce bytes; reinterpret as UTF-8 when they form one.
    try:
        raw = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return raw, i + 1


_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def parse_series_desc(s: str) -> tuple[Labels, str]:
    """`name{l="v",...} rest` -> (labels, rest)."""
    s = s.strip()
    i = 0
    pairs: list[tuple[str, str]] = []
    m = _IDENT.match(s)
    if m and not s.startswith("{"):
        pairs.append((METRIC_NAME, m.group(0)))
        i = m.end()
    if i < len(s) and s[i] == "{":
        i += 1
        while True:
            while i < len(s) and s[i] in " \t,":
                i += 1
            if s[i] == "}":
                i += 1
                break
            if s[i] in "\"'`":
                name, i = _read_string(s, i)
            else:
                m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(s, i)
                if not m:
                    raise TestFileError(f"bad series {s!r}")
                name, i = m.group(0), m.end()
            while s[i] == " ":
                i += 1
            if s[i] == "=":
                i += 1
                while s[i] == " ":
                    i += 1
                val, i = _read_string(s, i)
                pairs.append((name, val))
            else:
                pairs.append((METRIC_NAME, name))
    return Labels(pairs), s[i:].strip()


def _num(s: str) -> float:
    t = s.strip()
    low = t.lower()
    if low in ("inf", "+inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    if low in ("nan", "+nan", "-nan"):
        return math.nan
    try:
        return float(int(t, 0))
    except ValueError:
        return float(t)


_NUM = r"[-+]?(?:0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[Ii]nf|NaN|nan)"
_SEQ_RE = re.compile(rf"^(?P<a>{_NUM})(?:(?P<op>[-+])(?P<b>{_NUM}))?x(?P<n>\d+)$")


def parse_values(text: str) -> list[float | None]:
    """Expand a value sequence; None is a missing slot."""
    out: list[float | None] = []
    for item in text.split():
        if item == "_":
            out.append(None)
        elif item.startswith("_x"):
            out.extend([None] * int(item[2:]))
        elif item == "stale":
            out.append(float(STALE_NAN))
        else:
            m = _SEQ_RE.match(item)
            if m:
                a = _num(m.group("a"))
                n = int(m.group("n"))
                b = _num(m.group("b")) if m.group("b") else 0.0
                if m.group("op") == "-":
                    b = -b
                v = a
                out.append(v)
                for _ in range(n):
                    v += b
                    out.append(v)
            else:
                out.append(_num(item))
    return out


# ------------------------------------------------------------------- the file


@dataclass
class Expectation:
    kind: str  # "fail", "warn", "info"
    mode: str = ""  # "", "msg", "regex"
    text: str = ""

    def matches(self, s: str) -> bool:
        if self.mode == "msg":
            return s == self.text
        if self.mode == "regex":
            return re.search(self.text, s) is not None
        return True


@dataclass
class EvalCase:
    file: str
    line: int
    expr: str
    is_range: bool
    t: int = 0
    start: int = 0
    end: int = 0
    step: int = 0
    fail: Expectation | None = None
    warns: list[Expectation] = field(default_factory=list)
    infos: list[Expectation] = field(default_factory=list)
    no_warn: bool = False
    no_info: bool = False
    ordered: bool = False
    range_vector: tuple[int, int, int] | None = None
    string: str | None = None
    expected: list[tuple[Labels | None, list[float | None]]] = field(default_factory=list)
    raw_expected: list[str] = field(default_factory=list)
    skip: str | None = None


@dataclass
class LoadCmd:
    line: int
    interval: int
    lines: list[str]
    nhcb: bool


@dataclass
class ClearCmd:
    line: int


_INSTANT_RE = re.compile(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
_RANGE_RE = re.compile(r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$")
_EXPECT_RE = re.compile(r"^expect\s+(fail|warn|info|no_warn|no_info|ordered|range vector|string)\s*(.*)$")


def parse_file(path: str) -> list[Any]:
    name = Path(path).name
    lines = Path(path).read_text().split("\n")
    cmds: list[Any] = []
    i = 0
    while i < len(lines):
        raw = lines[i].strip()
        if not raw or raw.startswith("#"):
            i += 1
            continue
        head_line = i + 1
        block = []
        i += 1
        if raw.split()[0].lower() == "clear":
            cmds.append(ClearCmd(head_line))
            continue
        while i < len(lines):
            t = lines[i].strip()
            if not t or t.startswith("#"):
                break
            block.append(t)
            i += 1
        word = raw.split()[0].lower()
        if word == "clear":
            cmds.append(ClearCmd(head_line))
        elif word.startswith("load"):
            interval = parse_test_duration(raw.split()[1])
            cmds.append(LoadCmd(head_line, interval, block, word == "load_with_nhcb"))
        elif word.startswith("eval"):
            cmds.append(_parse_eval(name, head_line, raw, block))
        else:
            raise TestFileError(f"{name}:{head_line}: unknown command {raw!r}")
    return cmds


def _parse_expect_text(rest: str) -> tuple[str, str]:
    rest = rest.strip()
    for mode in ("msg", "regex"):
        if rest.startswith(mode + ":"):
            return mode, rest[len(mode) + 1 :].strip()
    return "", ""


def _parse_eval(fname: str, line: int, head: str, block: list[str]) -> EvalCase:
    m = _INSTANT_RE.match(head)
    if m:
        legacy, at, expr = m.groups()
        case = EvalCase(fname, line, expr.strip(), False, t=parse_test_duration(at))
    else:
        m = _RANGE_RE.match(head)
        if not m:
            raise TestFileError(f"{fname}:{line}: bad eval {head!r}")
        legacy, a, b, st, expr = m.groups()
        case = EvalCase(
            fname, line, expr.strip(), True,
            start=parse_test_duration(a), end=parse_test_duration(b), step=parse_test_duration(st),
        )
    if legacy == "fail":
        case.fail = Expectation("fail")
    elif legacy == "warn":
        case.warns.append(Expectation("warn"))
    elif legacy == "info":
        case.infos.append(Expectation("info"))
    elif legacy == "ordered":
        case.ordered = True
    for ln in block:
        if ln.split(" ", 1)[0] == "expect":
            em = _EXPECT_RE.match(ln)
            if not em:
                raise TestFileError(f"{fname}:{line}: bad expect line {ln!r}")
            kind, rest = em.groups()
            if kind == "fail":
                case.fail = Expectation("fail", *_parse_expect_text(rest))
            elif kind == "warn":
                case.warns.append(Expectation("warn", *_parse_expect_text(rest)))
            elif kind == "info":
                case.infos.append(Expectation("info", *_parse_expect_text(rest)))
            elif kind == "no_warn":
                case.no_warn = True
            elif kind == "no_info":
                case.no_info = True
            elif kind == "ordered":
                case.ordered = True
            elif kind == "range vector":
                rm = re.match(r"^from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)$", rest.strip())
                if not rm:
                    raise TestFileError(f"{fname}:{line}: bad range vector expectation")
                case.range_vector = tuple(parse_test_duration(x) for x in rm.groups())  # type: ignore[assignment]
            elif kind == "string":
                s = rest.strip()
                case.string, _ = _read_string(s, 0)
            continue
        if ln.startswith("expected_fail_message"):
            case.fail = Expectation("fail", "msg", ln.split(None, 1)[1].strip())
            continue
        if ln.startswith("expected_fail_regexp"):
            case.fail = Expectation("fail", "regex", ln.split(None, 1)[1].strip())
            continue
        case.raw_expected.append(ln)
        if "{{" in ln:
            case.skip = "native histogram in expected output"
            continue
        try:
            v = _num(ln)
            case.expected.append((None, [v]))
            continue
        except ValueError:
            pass
        labels, rest = parse_series_desc(ln)
        case.expected.append((labels, parse_values(rest)))
    return case


# -------------------------------------------------------------- comparisons

_MIN_NORMAL = 2.2250738585072014e-308


def float_equal(a: float, b: float) -> bool:
    ab = np.array([a, b]).view(np.uint64)
    if ab[0] == ab[1]:
        return True
    sa, sb = (x == 0x7FF0000000000002 for x in ab)
    if sa or sb:
        return False
    if math.isnan(a) and math.isnan(b):
        return True
    if math.isnan(a) or math.isnan(b):
        return False
    if a == b:
        return True
    if a == 0 or b == 0:
        return abs(a - b) < 1e-6 * _MIN_NORMAL
    return abs(a - b) / (abs(a) + abs(b)) < 1e-6


@dataclass
class FileReport:
    name: str
    passed: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


class Runner:
    """Runs test files against an engine and a storage made by `storage_factory`."""

    def __init__(
        self,
        storage_factory: Callable[[], Any] = MemQuerier,
        engine: Engine | None = None,
        range_check: bool = False,
        at_check: bool = False,
    ) -> None:
        self.storage_factory = storage_factory
        # Upstream's test engine runs with delayed name removal, and the
        # files assume it.
        self.engine = engine or Engine(max_samples=10000, delayed_name_removal=True)
        # Upstream's extra check: every plain instant eval is also run as a
        # range query from t-1m to t+1m, whose point at t must agree.
        self.range_check = range_check
        # Upstream's other extra check: with `@ t` added to every selector
        # and subquery, the printed query must give the same result at
        # other evaluation times.
        self.at_check = at_check

    def run_file(self, path: str) -> FileReport:
        return asyncio.run(self._run_file(path))

    async def _run_file(self, path: str) -> FileReport:
        rep = FileReport(Path(path).name)
        text = Path(path).read_text()
        cmds = parse_file(path)
        if "@st " in text or re.search(r"\}@st\s", text):
            for c in cmds:
                if isinstance(c, EvalCase):
                    rep.skipped.append((c.line, "start timestamps not supported"))
            return rep
        storage = self.storage_factory()
        nh_names: set[str] = set()
        nh_series: list[Labels] = []
        for c in cmds:
            if isinstance(c, ClearCmd):
                storage = self.storage_factory()
                nh_names = set()
                nh_series = []
            elif isinstance(c, LoadCmd):
                self._load(storage, c, nh_names, nh_series)
            else:
                if c.skip is None and (nh_names or nh_series):
                    if _references_histograms(c.expr, nh_names, nh_series):
                        c.skip = "native histogram series referenced"
                if c.skip:
                    rep.skipped.append((c.line, c.skip))
                    continue
                try:
                    err = await self._run_eval(storage, c)
                except Exception as e:  # noqa: BLE001 - a crash is a failed case
                    err = f"internal error {type(e).__name__}: {e}"
                if err is None:
                    rep.passed += 1
                else:
                    rep.failed.append((c.line, err))
        return rep

    def _load(self, storage: Any, cmd: LoadCmd, nh_names: set[str], nh_series: list[Labels]) -> None:
        items: dict[Labels, tuple[np.ndarray, np.ndarray]] = {}
        for ln in cmd.lines:
            labels, rest = parse_series_desc(ln)
            if "{{" in rest:
                nh_names.add(labels.name)
                nh_series.append(labels)
                continue
            vals = parse_values(rest)
            ts = [k * cmd.interval for k, v in enumerate(vals) if v is not None]
            vs = [v for v in vals if v is not None]
            items[labels] = (np.array(ts, np.int64), np.array(vs, np.float64))
            if cmd.nhcb and labels.name.endswith("_bucket"):
                nh_names.add(labels.name[: -len("_bucket")])
        batch = WriteBatch.from_series([(lb, t, v) for lb, (t, v) in items.items()])
        storage.append(batch)

    async def _run_eval(self, storage: Any, c: EvalCase) -> str | None:
        try:
            if c.is_range:
                res = await self.engine.range(storage, c.expr, c.start, c.end, c.step)
            else:
                t = c.range_vector[1] if c.range_vector else c.t
                res = await self.engine.instant(storage, c.expr, t)
        except AthensError as e:
            if c.fail is None:
                return f"unexpected error: {type(e).__name__}: {e}"
            if not c.fail.matches(str(e)):
                return f"error {str(e)!r} does not match expected {c.fail.mode} {c.fail.text!r}"
            return None
        if c.fail is not None:
            return "expected failure, query succeeded"
        err = _check_annotations(c.warns, c.no_warn, res.warnings, "warn")
        err = err or _check_annotations(c.infos, c.no_info, res.infos, "info")
        if err:
            return err
        err = _compare(c, res)
        if err is None and self.range_check and _wants_range_check(c):
            err = await self._range_check(storage, c, res)
        if err is None and self.at_check and not c.is_range and not c.range_vector:
            err = await self._at_check(storage, c)
        return err

    async def _at_check(self, storage: Any, c: EvalCase) -> str | None:
        node = parse(c.expr)
        if not _add_at(node, c.t):
            return None
        text = format_expr(node)
        times = [-10 * c.t, 0, c.t // 5, c.t, 10 * c.t] if c.t else [-1000, 0, 1000]
        for t in times:
            try:
                res = await self.engine.instant(storage, text, t)
            except AthensError as e:
                return f"@ check: {text!r} at {t}: unexpected error {e}"
            err = _compare(c, res)
            if err:
                return f"@ check: {text!r} at {t}: {err}"
        return None
    async def _range_check(self, storage: Any, c: EvalCase, inst: Any) -> str | None:
        try:
            res = await self.engine.range(storage, c.expr, c.t - 60_000, c.t + 60_000, 60_000)
        except AthensError as e:
            return f"range check: unexpected error {e}"
        got = {}
        for lb, ts, vs in res.value:
            hit = np.flatnonzero(ts == c.t)
            if len(hit):
                got[lb] = float(vs[hit[0]])
        if inst.result_type == "scalar":
            want = {Labels(): inst.value[1]}
        else:
            want = {lb: v for lb, _, v in inst.value}
        if set(got) != set(want):
            return f"range check: series differ: range {sorted(map(str, got))} instant {sorted(map(str, want))}"
        for lb, v in want.items():
            if not float_equal(got[lb], v):
                return f"range check: {lb}: range {got[lb]} != instant {v}"
        return None


def _references_histograms(expr: str, nh_names: set[str], nh_series: list[Labels]) -> bool:
    """Whether the expression may read a native-histogram series (skipped cases)."""
    for n in nh_names:
        if re.search(rf"(?<![A-Za-z0-9_:]){re.escape(n)}(?![A-Za-z0-9_:])", expr):
            return True
    if not nh_series:
        return False
    try:
        node = parse(expr)
    except Exception:  # noqa: BLE001 - an unparsable case is judged when run
        return False
    for sub in ast.walk(node):
        if isinstance(sub, ast.VectorSelector):
            for lb in nh_series:
                if all(m.matches(lb.get(m.name)) for m in sub.matchers):
                    return True
    return False


_AT_UNSAFE = frozenset(
    ["days_in_month", "day_of_month", "day_of_week", "day_of_year", "hour", "minute",
     "month", "year", "predict_linear", "time", "timestamp", "start", "end", "step", "range"]
)


def _add_at(node: Any, t: int) -> bool:
    """Pin every selector and subquery without @ to t, in place (False if
    the expression is not step invariant under @)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and sub.func in _AT_UNSAFE:
            return False

    def visit(n: Any) -> None:
        if isinstance(n, ast.VectorSelector):
            if n.at is None:
                n.at = t
            return
        if isinstance(n, ast.SubqueryExpr):
            # Selectors inside a subquery run at its own steps: left alone.
            if n.at is None:
                n.at = t
            return
        for ch in ast.children(n):
            visit(ch)

    visit(node)
    return True


def _wants_range_check(c: EvalCase) -> bool:
    if c.is_range or c.range_vector or c.string is not None or c.ordered:
        return False
    return not re.search(r"\b(start|end|range|step)\(\)", c.expr)


def _check_annotations(exp: list[Expectation], none: bool, got: list[str], kind: str) -> str | None:
    if none and got:
        return f"expected no {kind} annotations, got {got}"
    if not exp:
        return None
    if not got:
        return f"expected {kind} annotations, got none"
    for e in exp:
        if not any(e.matches(g) for g in got):
            return f"no {kind} annotation matches {e.mode} {e.text!r}; got {got}"
    for g in got:
        if not any(e.matches(g) for e in exp):
            return f"unexpected {kind} annotation {g!r}"
    return None


def _compare(c: EvalCase, res: Any) -> str | None:
    if c.string is not None:
        if res.result_type != "string":
            return f"expected string, got {res.result_type}"
        return None if res.value[1] == c.string else f"string {res.value[1]!r} != {c.string!r}"
    if res.result_type == "scalar":
        if len(c.expected) != 1 or c.expected[0][0] is not None:
            return f"got scalar {res.value[1]}, expected {c.raw_expected}"
        exp = c.expected[0][1][0]
        return None if float_equal(res.value[1], exp) else f"scalar {res.value[1]} != {exp}"
    if any(lb is None for lb, _ in c.expected):
        return f"expected scalar, got {res.result_type}"
    if res.result_type == "string":
        return "got string result"
    if res.result_type == "vector":
        if c.is_range or c.range_vector:
            return "expected matrix, got vector"
        got = res.value
        if len(got) != len(c.expected):
            return f"expected {len(c.expected)} samples, got {len(got)}: {_fmt_vec(got)}"
        if c.ordered:
            for (lb, _, v), (elb, evs) in zip(got, c.expected):
                if lb != elb or len(evs) != 1 or not float_equal(v, evs[0] if evs[0] is not None else math.nan):
                    return f"ordered mismatch: got {_fmt_vec(got)}"
            return None
        want = {}
        for elb, evs in c.expected:
            if len(evs) != 1 or evs[0] is None:
                return f"bad expected line for {elb}"
            if elb in want:
                return f"duplicate expected series {elb}"
            want[elb] = evs[0]
        for lb, _, v in got:
            if lb not in want:
                return f"unexpected series {format_labels(lb)} {v}; got {_fmt_vec(got)}"
            if not float_equal(v, want[lb]):
                return f"{format_labels(lb)}: got {v}, want {want[lb]}"
        return None
    # matrix
    got = res.value
    if c.is_range:
        start, step = c.start, c.step
    elif c.range_vector:
        start, _, step = c.range_vector
    else:
        return "expected vector, got matrix"
    labels_sorted = [lb for lb, _, _ in got]
    if labels_sorted != sorted(labels_sorted):
        return "matrix not sorted by labels"
    exp = {}
    for elb, evs in c.expected:
        pts = [(start + i * step, v) for i, v in enumerate(evs) if v is not None]
        exp[elb] = pts
    if len(got) != len(exp):
        return f"expected {len(exp)} series, got {len(got)}: {_fmt_mat(got)}"
    for lb, ts, vs in got:
        if lb not in exp:
            return f"unexpected series {format_labels(lb)}; got {_fmt_mat(got)}"
        pts = exp[lb]
        if len(pts) != len(ts):
            return f"{format_labels(lb)}: expected {len(pts)} points, got {len(ts)}: {list(zip(ts.tolist(), vs.tolist()))}"
        for (et, ev_), t, v in zip(pts, ts, vs):
            if et != int(t) or not float_equal(float(v), ev_):
                return f"{format_labels(lb)}: point ({int(t)}, {float(v)}) != ({et}, {ev_})"
    return None


def _fmt_vec(v: list[Any]) -> str:
    return "[" + ", ".join(f"{format_labels(lb)} {x}" for lb, _, x in v[:10]) + "]"


def _fmt_mat(m: list[Any]) -> str:
    return "[" + ", ".join(f"{format_labels(lb)} {vs.tolist()[:8]}" for lb, _, vs in m[:6]) + "]"


def _shard_factory(root: Path) -> Callable[[], Any]:
    """Fresh real shards (athens.shards) in numbered directories under root."""
    from athens.shards.shard import Shard, ShardConfig  # noqa: PLC0415 - optional storage

    made: list[Any] = []

    def make() -> Any:
        shard = Shard(root / str(len(made)), ShardConfig(wal_fsync="off"))
        shard.open()
        made.append(shard)
        return shard

    make.made = made  # type: ignore[attr-defined]
    return make


def main(argv: list[str] | None = None) -> int:
    """`athens promql-test FILE...`: exit status 1 if any case failed."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args or "--verbose" in args
    # Upstream's extra checks (range mode, @ invariance) run unless disabled.
    extra = "--no-extra-checks" not in args
    range_check = extra or "--range-check" in args
    at_check = extra or "--at-check" in args
    use_shard = "--memory" not in args
    flags = ("-v", "--verbose", "--range-check", "--at-check", "--no-extra-checks", "--memory")
    args = [a for a in args if a not in flags]
    if not args:
        print("usage: promql-test [-v] [--no-extra-checks] [--memory] FILE...", file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory(prefix="promqltest-") if use_shard else None
    factory = _shard_factory(Path(tmp.name)) if tmp is not None else MemQuerier
    runner = Runner(factory, range_check=range_check, at_check=at_check)
    tot_p = tot_f = tot_s = 0
    reasons: dict[str, int] = {}
    for path in args:
        rep = runner.run_file(path)
        tot_p += rep.passed
        tot_f += len(rep.failed)
        tot_s += len(rep.skipped)
        for _, r in rep.skipped:
            reasons[r] = reasons.get(r, 0) + 1
        print(f"{rep.name}: {rep.passed} passed, {len(rep.failed)} failed, {len(rep.skipped)} skipped")
        for line, msg in rep.failed:
            print(f"  FAIL {rep.name}:{line}: {msg}")
        if verbose:
            for line, msg in rep.skipped:
                print(f"  skip {rep.name}:{line}: {msg}")
    if tmp is not None:
        for shard in factory.made:  # type: ignore[attr-defined]
            shard.close()
        tmp.cleanup()
    print(f"total: {tot_p} passed, {tot_f} failed, {tot_s} skipped")
    for r, n in sorted(reasons.items()):
        print(f"  skipped ({r}): {n}")
    return 1 if tot_f else 0


if __name__ == "__main__":
    raise SystemExit(main())
