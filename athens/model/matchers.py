"""Label matchers, shared by PromQL, the storage index and the IPC protocol."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from athens.model.re2 import RE2Error, to_python


class MatchOp(enum.Enum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


class BadRegexError(ValueError):
    """A regex matcher whose pattern does not compile."""


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
                rx = re.compile(f"(?s:{to_python(self.value)})")
            except RE2Error as e:
                raise BadRegexError(str(e)) from None
            except re.error as e:  # a translation Python refuses: a bad regex, not a crash
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
            # re.escape changes any part holding a character RE2 treats
            # specially (and more): `\Q`, `[`, `(?i)` parts are not literals.
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
