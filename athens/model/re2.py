"""Go regexp (RE2) syntax translated to Python `re` syntax.

Prometheus compiles label matchers and label_replace() regexes with Go's
regexp package, whose syntax is RE2's. Python's `re` reads much of it the same
way but not all of it, and the differences give silently wrong answers:
RE2's `\\w \\d \\s \\b` are ASCII-only, `$` matches only at the very end, `{,3}`
is literal text, and RE2 has POSIX classes (`[[:alpha:]]`), Unicode classes
(`\\pL`, `\\p{Greek}`), `\\Q...\\E`, `\\x{...}`, `(?U)` and mid-pattern flags
while it rejects Python-only syntax (lookaround, backreferences, possessive
repeats, `\\Z`). `to_python` parses a pattern with Go's grammar (following
regexp/syntax/parse.go) and writes a Python pattern that matches the same
strings, or raises RE2Error with the message Go gives.

The result means what Go's parse with the caller's flags means: callers
wrap it in `(?s:...)` and use fullmatch, as Prometheus does with `^(?s:...)$`.

Not covered, on purpose or for lack of data:
- Unicode data is Python's `unicodedata` (Unicode 14.0 in Python 3.11) where
  Go 1.21+ has 15.0: code points added in 15.0 are in no class here.
- `\\p{Script}` knows only the 29 scripts Unicode recommends for identifiers
  (UAX #31, table 5: Latin, Greek, Cyrillic, Han, Arabic, ... see _SCRIPTS);
  other script names are rejected as Go rejects unknown names.
- `\\p` names are matched exactly, as before Go 1.25 (which also accepts
  `\\p{letter}`, `\\p{Cn}`, `\\p{LC}`, `\\p{ASCII}`, `\\p{Assigned}`).
- Case-insensitive matching folds with Python's rules, which differ from
  Go's simple folding on a few code points (Python's `(?i)i` also matches
  `ı` and `İ`; Go's does not).
- Go's size and depth limits ("expression too large", "expression nests too
  deeply") are not checked.
- Group names Python cannot take (a leading digit, a repeated name) become
  plain capturing groups: matching and group numbers are unchanged.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Iterable
from operator import itemgetter

__all__ = ["RE2Error", "to_python"]

_MAX_RUNE = 0x10FFFF
_MAX_REPEAT = 1000

# Go's regexp/syntax ErrorCode texts.
_INVALID_CHAR_RANGE = "invalid character class range"
_INVALID_ESCAPE = "invalid escape sequence"
_INVALID_NAMED_CAPTURE = "invalid named capture"
_INVALID_PERL_OP = "invalid or unsupported Perl syntax"
_INVALID_REPEAT_OP = "invalid nested repetition operator"
_INVALID_REPEAT_SIZE = "invalid repeat count"
_MISSING_BRACKET = "missing closing ]"
_MISSING_PAREN = "missing closing )"
_MISSING_REPEAT_ARGUMENT = "missing argument to repetition operator"
_TRAILING_BACKSLASH = "trailing backslash at end of expression"
_UNEXPECTED_PAREN = "unexpected )"


class RE2Error(re.error):
    """A pattern Go's regexp package rejects; the message is Go's, word for word.

    A subclass of re.error, so code that caught Python's errors still does.
    """

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")
        self.code = code
        self.expr = expr

    def __reduce__(self) -> tuple[type[RE2Error], tuple[str, str]]:
        return RE2Error, (self.code, self.expr)  # re.error's own would call RE2Error(message)


# -- character sets ---------------------------------------------------------------
# A set is a sorted tuple of disjoint, non-adjacent (lo, hi) code point ranges.

Ranges = tuple[tuple[int, int], ...]

_DIGIT: Ranges = ((0x30, 0x39),)
_SPACE: Ranges = ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20))  # \t \n \f \r and space: no \v
_WORD: Ranges = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))

# `\d` etc.: (set, negated).
_PERL: dict[str, tuple[Ranges, bool]] = {
    "d": (_DIGIT, False), "D": (_DIGIT, True),
    "s": (_SPACE, False), "S": (_SPACE, True),
    "w": (_WORD, False), "W": (_WORD, True),
}

_POSIX_SETS: dict[str, Ranges] = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": _DIGIT,
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": _WORD,
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
# `[:alpha:]` and `[:^alpha:]` as they appear inside brackets: (set, negated).
_POSIX: dict[str, tuple[Ranges, bool]] = {
    f"[:{neg}{name}:]": (ranges, neg == "^") for name, ranges in _POSIX_SETS.items() for neg in ("", "^")
}


def _normalize(ranges: Iterable[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(ranges: Ranges) -> Ranges:
    out = []
    nxt = 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX_RUNE:
        out.append((nxt, _MAX_RUNE))
    return tuple(out)


_ASCII_IN_CLASS = [
    chr(c) if chr(c).isalnum() or c == 0x5F else "\\" + chr(c) if 0x20 <= c < 0x7F else f"\\x{c:02x}"
    for c in range(0x80)
]


def _class_char(cp: int) -> str:
    if cp < 0x80:
        return _ASCII_IN_CLASS[cp]
    c = chr(cp)
    if c.isprintable():
        return c
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def _class_text(ranges: Ranges, negate: bool = False, fold: bool = False) -> str:
    """A Python class for the set (or its complement, if negate).

    Without case folding, a set reaching U+10FFFF is written as the negation
    of its complement: Python compiles `[\\x00-\\U0010ffff]` in milliseconds,
    `[^a]` in microseconds. With (?i) on, Python folds a class before negating
    it, so the two are not the same set (think of the Kelvin sign K and k).
    """
    if not fold and ranges and ranges[-1][1] == _MAX_RUNE:
        ranges, negate = _complement(ranges), not negate
    if not ranges:
        return r"(?s:.)" if negate else r"(?!)"
    parts = []
    for lo, hi in ranges:
        parts.append(_class_char(lo))
        if hi > lo + 1:
            parts.append("-")
        if hi > lo:
            parts.append(_class_char(hi))
    return ("[^" if negate else "[") + "".join(parts) + "]"


# -- Unicode classes ---------------------------------------------------------------

# The general categories Go's unicode.Categories has (no Cn, no LC).
_CATEGORIES = frozenset([
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl", "No",
    "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
])

# Script ranges (hex, Unicode 14.0, from the UCD's Scripts.txt: Script, not
# Script_Extensions, as Go's unicode.Scripts) for the scripts UAX #31 table 5
# recommends for identifiers. Go knows every script; the others are rejected.
_SCRIPTS: dict[str, str] = {
    "Arabic": (
        "600-604 606-60b 60d-61a 61c-61e 620-63f 641-64a 656-66f 671-6dc 6de-6ff 750-77f "
        "870-88e 890-891 898-8e1 8e3-8ff fb50-fbc2 fbd3-fd3d fd40-fd8f fd92-fdc7 fdcf "
        "fdf0-fdff fe70-fe74 fe76-fefc 10e60-10e7e 1ee00-1ee03 1ee05-1ee1f 1ee21-1ee22 "
        "1ee24 1ee27 1ee29-1ee32 1ee34-1ee37 1ee39 1ee3b 1ee42 1ee47 1ee49 1ee4b "
        "1ee4d-1ee4f 1ee51-1ee52 1ee54 1ee57 1ee59 1ee5b 1ee5d 1ee5f 1ee61-1ee62 1ee64 "
        "1ee67-1ee6a 1ee6c-1ee72 1ee74-1ee77 1ee79-1ee7c 1ee7e 1ee80-1ee89 1ee8b-1ee9b "
        "1eea1-1eea3 1eea5-1eea9 1eeab-1eebb 1eef0-1eef1"
    ),
    "Armenian": "531-556 559-58a 58d-58f fb13-fb17",
    "Bengali": (
        "980-983 985-98c 98f-990 993-9a8 9aa-9b0 9b2 9b6-9b9 9bc-9c4 9c7-9c8 9cb-9ce 9d7 "
        "9dc-9dd 9df-9e3 9e6-9fe"
    ),
    "Bopomofo": "2ea-2eb 3105-312f 31a0-31bf",
    "Cyrillic": "400-484 487-52f 1c80-1c88 1d2b 1d78 2de0-2dff a640-a69f fe2e-fe2f",
    "Devanagari": "900-950 955-963 966-97f a8e0-a8ff",
    "Ethiopic": (
        "1200-1248 124a-124d 1250-1256 1258 125a-125d 1260-1288 128a-128d 1290-12b0 "
        "12b2-12b5 12b8-12be 12c0 12c2-12c5 12c8-12d6 12d8-1310 1312-1315 1318-135a "
        "135d-137c 1380-1399 2d80-2d96 2da0-2da6 2da8-2dae 2db0-2db6 2db8-2dbe 2dc0-2dc6 "
        "2dc8-2dce 2dd0-2dd6 2dd8-2dde ab01-ab06 ab09-ab0e ab11-ab16 ab20-ab26 ab28-ab2e "
        "1e7e0-1e7e6 1e7e8-1e7eb 1e7ed-1e7ee 1e7f0-1e7fe"
    ),
    "Georgian": "10a0-10c5 10c7 10cd 10d0-10fa 10fc-10ff 1c90-1cba 1cbd-1cbf 2d00-2d25 2d27 2d2d",
    "Greek": (
        "370-373 375-377 37a-37d 37f 384 386 388-38a 38c 38e-3a1 3a3-3e1 3f0-3ff "
        "1d26-1d2a 1d5d-1d61 1d66-1d6a 1dbf 1f00-1f15 1f18-1f1d 1f20-1f45 1f48-1f4d "
        "1f50-1f57 1f59 1f5b 1f5d 1f5f-1f7d 1f80-1fb4 1fb6-1fc4 1fc6-1fd3 1fd6-1fdb "
        "1fdd-1fef 1ff2-1ff4 1ff6-1ffe 2126 ab65 10140-1018e 101a0 1d200-1d245"
    ),
    "Gujarati": (
        "a81-a83 a85-a8d a8f-a91 a93-aa8 aaa-ab0 ab2-ab3 ab5-ab9 abc-ac5 ac7-ac9 acb-acd "
        "ad0 ae0-ae3 ae6-af1 af9-aff"
    ),
    "Gurmukhi": (
        "a01-a03 a05-a0a a0f-a10 a13-a28 a2a-a30 a32-a33 a35-a36 a38-a39 a3c a3e-a42 "
        "a47-a48 a4b-a4d a51 a59-a5c a5e a66-a76"
    ),
    "Han": (
        "2e80-2e99 2e9b-2ef3 2f00-2fd5 3005 3007 3021-3029 3038-303b 3400-4dbf 4e00-9fff "
        "f900-fa6d fa70-fad9 16fe2-16fe3 16ff0-16ff1 20000-2a6df 2a700-2b738 2b740-2b81d "
        "2b820-2cea1 2ceb0-2ebe0 2f800-2fa1d 30000-3134a"
    ),
    "Hangul": (
        "1100-11ff 302e-302f 3131-318e 3200-321e 3260-327e a960-a97c ac00-d7a3 d7b0-d7c6 "
        "d7cb-d7fb ffa0-ffbe ffc2-ffc7 ffca-ffcf ffd2-ffd7 ffda-ffdc"
    ),
    "Hebrew": "591-5c7 5d0-5ea 5ef-5f4 fb1d-fb36 fb38-fb3c fb3e fb40-fb41 fb43-fb44 fb46-fb4f",
    "Hiragana": "3041-3096 309d-309f 1b001-1b11f 1b150-1b152 1f200",
    "Kannada": (
        "c80-c8c c8e-c90 c92-ca8 caa-cb3 cb5-cb9 cbc-cc4 cc6-cc8 cca-ccd cd5-cd6 cdd-cde "
        "ce0-ce3 ce6-cef cf1-cf2"
    ),
    "Katakana": (
        "30a1-30fa 30fd-30ff 31f0-31ff 32d0-32fe 3300-3357 ff66-ff6f ff71-ff9d "
        "1aff0-1aff3 1aff5-1affb 1affd-1affe 1b000 1b120-1b122 1b164-1b167"
    ),
    "Khmer": "1780-17dd 17e0-17e9 17f0-17f9 19e0-19ff",
    "Lao": "e81-e82 e84 e86-e8a e8c-ea3 ea5 ea7-ebd ec0-ec4 ec6 ec8-ecd ed0-ed9 edc-edf",
    "Latin": (
        "41-5a 61-7a aa ba c0-d6 d8-f6 f8-2b8 2e0-2e4 1d00-1d25 1d2c-1d5c 1d62-1d65 "
        "1d6b-1d77 1d79-1dbe 1e00-1eff 2071 207f 2090-209c 212a-212b 2132 214e 2160-2188 "
        "2c60-2c7f a722-a787 a78b-a7ca a7d0-a7d1 a7d3 a7d5-a7d9 a7f2-a7ff ab30-ab5a "
        "ab5c-ab64 ab66-ab69 fb00-fb06 ff21-ff3a ff41-ff5a 10780-10785 10787-107b0 "
        "107b2-107ba 1df00-1df1e"
    ),
    "Malayalam": "d00-d0c d0e-d10 d12-d44 d46-d48 d4a-d4f d54-d63 d66-d7f",
    "Myanmar": "1000-109f a9e0-a9fe aa60-aa7f",
    "Oriya": (
        "b01-b03 b05-b0c b0f-b10 b13-b28 b2a-b30 b32-b33 b35-b39 b3c-b44 b47-b48 b4b-b4d "
        "b55-b57 b5c-b5d b5f-b63 b66-b77"
    ),
    "Sinhala": (
        "d81-d83 d85-d96 d9a-db1 db3-dbb dbd dc0-dc6 dca dcf-dd4 dd6 dd8-ddf de6-def "
        "df2-df4 111e1-111f4"
    ),
    "Tamil": (
        "b82-b83 b85-b8a b8e-b90 b92-b95 b99-b9a b9c b9e-b9f ba3-ba4 ba8-baa bae-bb9 "
        "bbe-bc2 bc6-bc8 bca-bcd bd0 bd7 be6-bfa 11fc0-11ff1 11fff"
    ),
    "Telugu": (
        "c00-c0c c0e-c10 c12-c28 c2a-c39 c3c-c44 c46-c48 c4a-c4d c55-c56 c58-c5a c5d "
        "c60-c63 c66-c6f c77-c7f"
    ),
    "Thaana": "780-7b1",
    "Thai": "e01-e3a e40-e5b",
    "Tibetan": "f00-f47 f49-f6c f71-f97 f99-fbc fbe-fcc fce-fd4 fd9-fda",
}


@functools.cache
def _general_categories() -> dict[str, Ranges]:
    """Two-letter general category -> set, from one pass over every code point.

    About 0.15 s, paid once, the first time a pattern uses `\\p`.
    """
    table: dict[str, list[tuple[int, int]]] = {}
    cp = 0
    for cat, run in itertools.groupby(map(unicodedata.category, map(chr, range(_MAX_RUNE + 1)))):
        n = sum(1 for _ in run)
        table.setdefault(cat, []).append((cp, cp + n - 1))
        cp += n
    return {cat: tuple(ranges) for cat, ranges in table.items()}


def _is_unicode_class(name: str) -> bool:
    """Whether Go (before 1.25) knows `\\p{name}`, within the scripts covered here."""
    return name == "Any" or name in _CATEGORIES or name in _SCRIPTS


@functools.cache
def _unicode_set(name: str) -> Ranges:
    """The set `\\p{name}` stands for in Go; name must pass _is_unicode_class."""
    if name == "Any":
        return ((0, _MAX_RUNE),)
    if name in _CATEGORIES:
        cats = _general_categories()
        if len(name) == 2:
            return cats.get(name, ())
        return _normalize(r for cat, ranges in cats.items() if cat[0] == name and cat != "Cn" for r in ranges)
    ranges = []
    for part in _SCRIPTS[name].split():
        lo, dash, hi = part.partition("-")
        ranges.append((int(lo, 16), int(hi if dash else lo, 16)))
    return tuple(ranges)


@functools.cache
def _unicode_class_text(name: str, negate: bool, fold: bool) -> str:
    return _class_text(_unicode_set(name), negate, fold)


# -- the translator --------------------------------------------------------------------

# Flag bits. Python's own scoped flags carry i and s; m, U are applied here.
_FOLD = 1  # i
_DOT_NL = 2  # s set in the pattern
_DOT_NOT_NL = 4  # -s set in the pattern (neither: the caller's flags decide)
_MULTI_LINE = 8  # m
_UNGREEDY = 16  # U
_PY_FLAGS = _FOLD | _DOT_NL | _DOT_NOT_NL

# Item kinds: what a repetition operator may follow as is.
_ATOM = 0  # one character, class or group
_RUN = 1  # several literal characters: only the last repeats
_OTHER = 2  # anything else (anchors, repeats): wrapped in (?:) first

# Python specials outside classes (no verbose mode), escaped in literal text.
_ESCAPE_LITERAL = str.maketrans({c: "\\" + c for c in "\\.^$*+?{}[]|()"})
# Characters RE2 and Python both read literally outside classes.
_LITERAL_RUN = re.compile(r"[^\\\[(){|*+?.^$]+")
_REPEAT_BRACES = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")
_CAPTURE_NAME = re.compile(r"[0-9A-Za-z_]+")
# Anything but literals, `.`, `|` and well-formed `* + ?` (which mean the
# same in both syntaxes) needs the parser.
_NEEDS_PARSING = re.compile(r"[\\\[(){^$]|(?:^|\|)[*+?]|[*+?](?:[*+]|\?[*+?])")

_WORD_BOUNDARY = r"(?a:\b)"
# Not Python's \B, which never matches an empty string (before 3.14).
_NOT_WORD_BOUNDARY = r"(?-i:(?<=[0-9A-Za-z_])(?=[0-9A-Za-z_])|(?<![0-9A-Za-z_])(?![0-9A-Za-z_]))"

_PERL_TEXT = {c: _class_text(ranges, negate) for c, (ranges, negate) in _PERL.items()}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_C_ESCAPES = {"a": 0x07, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}

# (text, python flags, kind, repeat weight, raw literal text for _RUN)
_Item = tuple[str, int, int, int, str]


def to_python(pattern: str) -> str:
    """The Python `re` pattern matching what the Go (RE2) pattern matches.

    Raises RE2Error, with Go's message, for patterns Go rejects.
    """
    if _NEEDS_PARSING.search(pattern) is None:
        return pattern
    return _Translator(pattern).run()


def _flag_diff(outer: int, inner: int) -> str:
    """The Python flags for `(?flags:...)` that turn `outer` into `inner`."""
    on = ("i" if inner & _FOLD and not outer & _FOLD else "") + (
        "s" if inner & _DOT_NL and not outer & _DOT_NL else ""
    )
    off = ("i" if outer & _FOLD and not inner & _FOLD else "") + (
        "s" if inner & _DOT_NOT_NL and not outer & _DOT_NOT_NL else ""
    )
    return on + "-" + off if off else on


def _set_flag(flags: int, letter: str, on: bool) -> int:
    if letter == "s":
        return flags & ~(_DOT_NL | _DOT_NOT_NL) | (_DOT_NL if on else _DOT_NOT_NL)
    bit = {"i": _FOLD, "m": _MULTI_LINE, "U": _UNGREEDY}[letter]
    return flags | bit if on else flags & ~bit


def _count(digits: str) -> int:
    return int(digits) if len(digits) <= 4 else _MAX_REPEAT + 1


class _Group:
    """An open group: the alternatives done and the items of the current one."""

    __slots__ = ("alts", "base", "items", "prefix", "saved", "weight")

    def __init__(self, prefix: str, saved: int, base: int) -> None:
        self.prefix = prefix  # Python text opening the group
        self.saved = saved  # flags to restore at `)`
        self.base = base  # flags at the start of its contents
        self.alts: list[str] = []
        self.items: list[_Item] = []
        self.weight = 1  # largest product of counted repeats nested inside


class _Translator:
    """One pass over the pattern, Go's parser's decisions at each token."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.flags = 0
        self.groups = [_Group("", 0, 0)]
        self.names: set[str] = set()

    def run(self) -> str:
        p, n = self.p, len(self.p)
        i = 0
        last_repeat = -1  # where the previous token started, if it was a repetition
        while i < n:
            c = p[i]
            repeat = -1
            if c == "(":
                i = self.open_group(i)
            elif c == "|":
                self.end_alternative()
                i += 1
            elif c == ")":
                self.close_group()
                i += 1
            elif c == "^":
                self.push("(?m:^)" if self.flags & _MULTI_LINE else r"\A", _OTHER)
                i += 1
            elif c == "$":
                # Python's `$` would also match before a final newline.
                self.push("(?m:$)" if self.flags & _MULTI_LINE else r"\Z", _OTHER)
                i += 1
            elif c == ".":
                self.push(".", _ATOM)
                i += 1
            elif c == "[":
                i = self.char_class(i)
            elif c in "*+?":
                repeat = i
                i = self.repeat(i, i + 1, c, last_repeat)
            elif c == "{":
                m = _REPEAT_BRACES.match(p, i)
                if m is None:  # not a repetition: a literal `{`
                    self.push(r"\{", _ATOM)
                    i += 1
                else:
                    lo = _count(m[1])
                    hi = lo if m[2] is None else -1 if m[3] is None else _count(m[3])
                    if lo > _MAX_REPEAT or hi > _MAX_REPEAT or 0 <= hi < lo:
                        raise RE2Error(_INVALID_REPEAT_SIZE, m[0])
                    repeat = i
                    i = self.repeat(i, m.end(), m[0], last_repeat, lo, hi)
            elif c == "\\":
                i = self.escape(i)
            else:
                m = _LITERAL_RUN.match(p, i)
                assert m is not None
                self.push_literal(m[0])
                i = m.end()
            last_repeat = repeat
        if len(self.groups) > 1:
            raise RE2Error(_MISSING_PAREN, p)
        self.end_alternative()
        return "|".join(self.groups[0].alts)

    # -- items ------------------------------------------------------------------------

    def push(self, text: str, kind: int) -> None:
        self.groups[-1].items.append((text, self.flags & _PY_FLAGS, kind, 1, ""))

    def push_literal(self, raw: str) -> None:
        kind = _ATOM if len(raw) == 1 else _RUN
        self.groups[-1].items.append((raw.translate(_ESCAPE_LITERAL), self.flags & _PY_FLAGS, kind, 1, raw))

    def repeat(self, start: int, after: int, op: str, last_repeat: int, lo: int = 0, hi: int = -1) -> int:
        """Apply the repetition p[start:after] (`{lo,hi}` if counted) to the last item."""
        p = self.p
        lazy = bool(self.flags & _UNGREEDY)
        if after < len(p) and p[after] == "?":
            lazy = not lazy
            after += 1
        if last_repeat >= 0:
            raise RE2Error(_INVALID_REPEAT_OP, p[last_repeat:after])
        items = self.groups[-1].items
        if not items:
            raise RE2Error(_MISSING_REPEAT_ARGUMENT, p[start:after])
        text, flags, kind, weight, raw = items.pop()
        if kind == _RUN:
            items.append((raw[:-1].translate(_ESCAPE_LITERAL), flags, _ATOM if len(raw) == 2 else _RUN, 1, raw[:-1]))
            text = raw[-1].translate(_ESCAPE_LITERAL)
        elif kind == _OTHER:
            text = f"(?:{text})"
        if op[0] == "{":
            # Go caps the product of nested counted repetitions at 1000 too.
            weight = 1 if hi == 0 else max(hi if hi >= 0 else lo, 1) * weight
            if (lo >= 2 or hi >= 2) and weight > _MAX_REPEAT:
                raise RE2Error(_INVALID_REPEAT_SIZE, p[start:after])
        items.append((text + op + ("?" if lazy else ""), flags, _OTHER, weight, ""))
        return after

    # -- groups -----------------------------------------------------------------------

    def open_group(self, i: int) -> int:
        p, n = self.p, len(self.p)
        if not p.startswith("(?", i):
            self.groups.append(_Group("(", self.flags, self.flags))
            return i + 1
        # `(?P<name>` only: Go 1.22 added `(?<name>`, which the regexp that
        # Prometheus compiles matchers with (github.com/grafana/regexp, and
        # 2.42's Go 1.19) refuses as `(?<`, like lookbehind.
        if n - i > 4 and p[i + 2] == "P" and p[i + 3] == "<":
            begin = i + 4
            end = p.find(">", i)
            if end < 0:
                raise RE2Error(_INVALID_NAMED_CAPTURE, p[i:])
            name = p[begin:end]
            if not _CAPTURE_NAME.fullmatch(name):
                raise RE2Error(_INVALID_NAMED_CAPTURE, p[i : end + 1])
            prefix = "("
            if name.isidentifier() and name not in self.names:
                self.names.add(name)
                prefix = f"(?P<{name}>"
            self.groups.append(_Group(prefix, self.flags, self.flags))
            return end + 1
        # Flags, `(?flags)` or `(?flags:...)`: flags after `-` are cleared.
        flags = self.flags
        on = True
        saw_flag = False
        k = i + 2
        while k < n:
            c = p[k]
            k += 1
            if c in "imsU":
                flags = _set_flag(flags, c, on)
                saw_flag = True
            elif c == "-" and on:
                on = False
                saw_flag = False
            elif c in ":)" and (on or saw_flag):
                if c == ":":
                    prefix = f"(?{_flag_diff(self.flags & _PY_FLAGS, flags & _PY_FLAGS)}:"
                    self.groups.append(_Group(prefix, self.flags, flags))
                self.flags = flags
                return k
            else:
                break
        raise RE2Error(_INVALID_PERL_OP, p[i:k])

    def end_alternative(self) -> None:
        """Close the current alternative, scoping each run of items with flags
        set mid-pattern in Python's `(?flags:...)` (Python takes global flags
        only at the very start; RE2's apply to the rest of the enclosing group)."""
        g = self.groups[-1]
        base = g.base & _PY_FLAGS
        parts = []
        for flags, run in itertools.groupby(g.items, key=itemgetter(1)):
            text = "".join([item[0] for item in run])
            parts.append(text if flags == base else f"(?{_flag_diff(base, flags)}:{text})")
        g.alts.append("".join(parts))
        g.weight = max(g.weight, max([item[3] for item in g.items], default=1))
        g.items = []

    def close_group(self) -> None:
        if len(self.groups) == 1:
            raise RE2Error(_UNEXPECTED_PAREN, self.p)
        self.end_alternative()
        g = self.groups.pop()
        self.flags = g.saved
        text = g.prefix + "|".join(g.alts) + ")"
        self.groups[-1].items.append((text, g.saved & _PY_FLAGS, _ATOM, g.weight, ""))

    # -- escapes and classes ------------------------------------------------------

    def escape(self, i: int) -> int:
        """A backslash outside brackets."""
        p, n = self.p, len(self.p)
        if i + 1 < n:
            c = p[i + 1]
            if c == "A":
                self.push(r"\A", _OTHER)
                return i + 2
            if c == "z":
                self.push(r"\Z", _OTHER)
                return i + 2
            if c == "b":
                self.push(_WORD_BOUNDARY, _OTHER)
                return i + 2
            if c == "B":
                self.push(_NOT_WORD_BOUNDARY, _OTHER)
                return i + 2
            if c == "C":
                raise RE2Error(_INVALID_ESCAPE, p[i : i + 2])
            if c == "Q":  # literal text up to \E or the end
                end = p.find(r"\E", i + 2)
                literal = p[i + 2 :] if end < 0 else p[i + 2 : end]
                if literal:
                    self.push_literal(literal)
                return n if end < 0 else end + 2
            if c in "pP":
                name, negate, k = self.unicode_class(i)
                self.push(_unicode_class_text(name, negate, bool(self.flags & _FOLD)), _ATOM)
                return k
            if c in _PERL_TEXT:
                self.push(_PERL_TEXT[c], _ATOM)
                return i + 2
        cp, k = self.escaped_char(i)
        self.push(chr(cp).translate(_ESCAPE_LITERAL), _ATOM)
        return k

    def escaped_char(self, i: int) -> tuple[int, int]:
        """The code point a single-character escape at p[i] stands for, and the index after it."""
        p, n = self.p, len(self.p)
        if i + 1 >= n:
            raise RE2Error(_TRAILING_BACKSLASH, "")
        c = p[i + 1]
        k = i + 2
        if c < "\x80" and not c.isalnum():  # escaped punctuation is itself
            return ord(c), k
        if c == "0" or "1" <= c <= "7" and k < n and "0" <= p[k] <= "7":
            # Octal: up to three digits. A lone \1-\7 is a backreference: invalid.
            end = k
            while end < n and end < i + 4 and "0" <= p[end] <= "7":
                end += 1
            return int(p[i + 1 : end], 8), end
        if c == "x":
            return self.hex_escape(i, k)
        if c in _C_ESCAPES:
            return _C_ESCAPES[c], k
        raise RE2Error(_INVALID_ESCAPE, p[i:k])

    def hex_escape(self, i: int, k: int) -> tuple[int, int]:
        """`\\xHH` or `\\x{H...}`; k is the index after the `x`."""
        p, n = self.p, len(self.p)
        if k < n and p[k] == "{":
            # Go reads one character at a time and reports what it read so far.
            cp = 0
            j = k + 1
            while j < n:
                d = p[j]
                j += 1
                if d == "}":
                    if j == k + 2:  # no digits
                        break
                    return cp, j
                if d not in _HEX_DIGITS:
                    break
                cp = cp * 16 + int(d, 16)
                if cp > _MAX_RUNE:
                    break
            raise RE2Error(_INVALID_ESCAPE, p[i:j])
        digits = p[k : k + 2]
        if len(digits) < 2 or not _HEX_DIGITS.issuperset(digits):
            raise RE2Error(_INVALID_ESCAPE, p[i : k + 2])
        return int(digits, 16), k + 2

    def unicode_class(self, i: int) -> tuple[str, bool, int]:
        """`\\pN`, `\\p{Name}`, `\\P{...}`, `\\p{^Name}` at p[i]: (name, negated, index after)."""
        p, n = self.p, len(self.p)
        negate = p[i + 1] == "P"
        k = i + 2
        if k < n and p[k] == "{":
            end = p.find("}", i)
            if end < 0:
                raise RE2Error(_INVALID_CHAR_RANGE, p[i:])
            seq, name, k = p[i : end + 1], p[i + 3 : end], end + 1
        else:
            seq, name, k = p[i : k + 1], p[k : k + 1], k + 1
        if name.startswith("^"):
            negate = not negate
            name = name[1:]
        if not _is_unicode_class(name):
            raise RE2Error(_INVALID_CHAR_RANGE, seq)
        return name, negate, k

    def char_class(self, i: int) -> int:
        """A bracket expression at p[i]; returns the index after its `]`."""
        p, n = self.p, len(self.p)
        j = i + 1
        negate = j < n and p[j] == "^"
        if negate:
            j += 1
        ranges: list[tuple[int, int]] = []
        negated: list[Ranges] = []  # sets the class holds the complement of
        first = True  # `]` first is a literal
        while j >= n or p[j] != "]" or first:
            first = False
            group = self.class_group(j)
            if group is not None:
                members, neg, j = group
                if neg:
                    negated.append(members)
                else:
                    ranges.extend(members)
                continue
            start = j
            lo, j = self.class_char(i, j)
            hi = lo
            if n - j >= 2 and p[j] == "-" and p[j + 1] != "]":
                hi, j = self.class_char(i, j + 1)
                if hi < lo:
                    raise RE2Error(_INVALID_CHAR_RANGE, p[start:j])
            ranges.append((lo, hi))
        self.push(self.class_text(_normalize(ranges), negated, negate), _ATOM)
        return j + 1

    def class_group(self, j: int) -> tuple[Ranges, bool, int] | None:
        """A named set inside brackets at p[j] (`[:alpha:]`, `\\pL`, `\\d`, ...):
        (set, negated, index after), or None."""
        p, n = self.p, len(self.p)
        if n - j > 2 and p[j] == "[" and p[j + 1] == ":":
            end = p.find(":]", j + 2)
            if end >= 0:
                name = p[j : end + 2]
                if name not in _POSIX:
                    raise RE2Error(_INVALID_CHAR_RANGE, name)
                return (*_POSIX[name], end + 2)
        if j + 1 < n and p[j] == "\\":
            c = p[j + 1]
            if c in "pP":
                name, neg, k = self.unicode_class(j)
                return _unicode_set(name), neg, k
            if c in _PERL:
                return (*_PERL[c], j + 2)
        return None

    def class_char(self, class_start: int, j: int) -> tuple[int, int]:
        p = self.p
        if j >= len(p):
            raise RE2Error(_MISSING_BRACKET, p[class_start:])
        if p[j] == "\\":
            return self.escaped_char(j)
        return ord(p[j]), j + 1

    def class_text(self, ranges: Ranges, negated: list[Ranges], negate: bool) -> str:
        """Python for a bracket holding `ranges` and the complements of `negated`.

        Python cannot nest a negation inside brackets: with case folding off
        the exact set is computed; with (?i) on, Python must fold each part
        before negating it (Go's order), so the parts become alternatives.
        """
        fold = bool(self.flags & _FOLD)
        if not negated:
            return _class_text(ranges, negate, fold)
        if not fold:
            union = _normalize(itertools.chain(ranges, *map(_complement, negated)))
            return _class_text(union, negate)
        parts = ([_class_text(ranges, fold=True)] if ranges else []) + [
            _class_text(r, negate=True, fold=True) for r in negated
        ]
        either = "|".join(parts)
        return f"(?:(?!{either})(?s:.))" if negate else f"(?:{either})"
