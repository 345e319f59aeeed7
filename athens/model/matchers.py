"""Label matchers, shared by PromQL, the storage index and the IPC protocol."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field


class MatchOp(enum.Enum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


class BadRegexError(ValueError):
    """A regex matcher whose pattern does not compile."""


_INLINE_FLAGS = re.compile(r"\(\?([imsU]*(?:-[imsU]*)?)\)")


def _scope_inline_flags(pattern: str) -> str:
    """Rewrite RE2's mid-pattern flag groups for Python's `re`.

    RE2 lets `(?i)` appear anywhere and apply to the rest of the enclosing
    group (`((?i)pro).*` is common in queries); Python only accepts global
    flags at the very start. `(?i)rest` becomes `(?i:rest)` closed where the
    enclosing group closes, which means the same thing.
    """
    if "(?" not in pattern:
        return pattern
    out: list[str] = []
    # Flag groups opened at each nesting level, to close (and reopen after
    # each `|`, since RE2 flags also cover later alternatives) at that level.
    pending: list[list[str]] = [[]]
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        if c == "(":
            m = _INLINE_FLAGS.match(pattern, i)
            if m is not None and m.group(1).strip("-"):
                out.append(f"(?{m.group(1)}:")
                pending[-1].append(m.group(1))
                i = m.end()
                continue
            pending.append([])
        elif c == ")" and len(pending) > 1:
            out.append(")" * len(pending.pop()))
        elif c == "|" and pending[-1]:
            out.append(")" * len(pending[-1]) + "|" + "".join(f"(?{f}:" for f in pending[-1]))
            i += 1
            continue
        out.append(c)
        i += 1
    out.append(")" * len(pending[0]))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher. A missing label matches as the empty string."""

    op: MatchOp
    name: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op in (MatchOp.RE, MatchOp.NRE):
            try:
                # Prometheus anchors regexes at both ends and lets '.' match
                # newlines (RE2's (?s) flag).
                rx = re.compile(f"(?s:{_scope_inline_flags(self.value)})")
            except re.error as e:
                raise BadRegexError(
                    f"error parsing regexp: {e.msg}: `{self.value}`"
                ) from None
            object.__setattr__(self, "_regex", rx)

    def matches(self, value: str) -> bool:
        op = self.op
        if op is MatchOp.EQ:
            return value == self.value
        if op is MatchOp.NE:
            return value != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(value) is not None
        return hit if op is MatchOp.RE else not hit

    def matches_empty(self) -> bool:
        """Whether a series without this label is selected by the matcher."""
        return self.matches("")

    def literal_alternatives(self) -> list[str] | None:
        """For `=` and simple `=~"a|b|c"` matchers: the exact values matched.

        Lets the index answer with postings lookups instead of a scan.
        """
        if self.op is MatchOp.EQ:
            return [self.value]
        if self.op is MatchOp.RE:
            parts = self.value.split("|")
            if all(p and re.escape(p) == p for p in parts):
                return parts
        return None

    def __str__(self) -> str:
        v = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op.value}"{v}"'

    def to_tuple(self) -> tuple[str, str, str]:
        return (self.op.value, self.name, self.value)

    @classmethod
    def from_tuple(cls, t: tuple[str, str, str] | list[str]) -> Matcher:
        return cls(MatchOp(t[0]), t[1], t[2])
