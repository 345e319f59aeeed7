"""RE2 (Go regexp) patterns translated to Python `re`: same matches, Go's errors.

What Go does is encoded from its documented behaviour (the RE2 syntax page
and Go's regexp/syntax parser), since Go cannot run here. Matching is checked
the way Prometheus and Athens use the patterns: anchored at both ends, with
`.` matching newlines, i.e. re.fullmatch of `(?s:...)`.
"""

from __future__ import annotations

import itertools
import pickle
import re
import unicodedata
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.model.re2 import _SCRIPTS, RE2Error, _unicode_set, to_python


def compiled(pattern: str) -> re.Pattern[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. FutureWarning: possible nested set
        return re.compile(f"(?s:{to_python(pattern)})")


def matches(pattern: str, text: str) -> bool:
    return compiled(pattern).fullmatch(text) is not None


# (pattern, strings Go matches, strings Go does not match)
CASES = [
    # \w \d \s \b are ASCII-only in RE2.
    (r"\w+", ["abc_09", "Z"], ["日本語", "é", "a-b"]),
    (r"\W+", ["日本語", "é-", " "], ["a", "日a"]),
    (r"\d+", ["0123456789"], ["٣", "²", "a"]),
    (r"\D", ["٣", "a"], ["5"]),
    (r"\s+", ["\t\n\f\r "], ["\v", "\u00a0", "\u2003"]),
    (r"\S", ["\v", "\u00a0", "x"], [" ", "\n"]),
    (r".*\bfoo\b.*", ["x foo y", "foo", "éfooé", "-foo-"], ["xfoo", "foo_", "foo1"]),
    (r"a\Bb", ["ab"], []),
    (r"\B", [""], []),  # Python's own \B never matches an empty string
    (r".\B.", ["ab", "é-", "--"], ["a-", "-a"]),
    (r"\b", [], [""]),
    # POSIX classes, only inside brackets.
    (r"[[:alpha:]]+", ["abcXYZ"], ["é", "a1", ""]),
    (r"[[:lower:]]+", ["abc"], ["aBc", "ß"]),
    (r"[^[:digit:]]+", ["abc", "٣"], ["a1"]),
    (r"p[[:alpha:]]*", ["prod", "p"], ["p1"]),
    (r"[[:^alpha:]]", ["1", "é"], ["a"]),
    (r"[[:alnum:]_-]+", ["a-b_1"], ["a.b"]),
    (r"[[:punct:]]+", ["!-/:@[`{~"], ["a", " "]),
    (r"[[:space:]]+", ["\t\n\v\f\r "], ["\u00a0"]),
    (r"[[:word:]]+", ["a_1"], ["-"]),
    (r"[[:xdigit:]]+", ["09afAF"], ["g"]),
    (r"[[:upper:][:digit:]]+", ["A1"], ["a"]),
    (r"[[:cntrl:]]", ["\x00", "\x7f"], [" "]),
    (r"[[:blank:]]", ["\t", " "], ["\n"]),
    (r"[[:print:]]+", [" ~"], ["\x7f"]),
    (r"[[:graph:]]", ["!"], [" "]),
    (r"[[:ascii:]]", ["\x7f"], ["\x80"]),
    (r"[:alpha:]+", [":alph"], ["b"]),  # outside brackets: a plain class
    # `{` that does not start a repetition is a literal.
    (r"h{,3}.*", ["h{,3}", "h{,3}x"], ["hhh", "h"]),
    (r"a{01}", ["a{01}"], ["a"]),
    (r"a{,}", ["a{,}"], ["a"]),
    (r"a{1", ["a{1"], ["a"]),
    (r"a{1,2", ["a{1,2"], []),
    (r"x{2}{", ["xx{"], []),
    (r"a{2,3}", ["aa", "aaa"], ["a", "aaaa"]),
    (r"a{2,}", ["aa", "aaaaa"], ["a"]),
    (r"a{0}b", ["b"], ["ab"]),
    (r"x{1000}", ["x" * 1000], ["x" * 999]),
    # Unicode classes.
    (r"\pL+", ["日本語", "abc", "αβγ"], ["123", "-"]),
    (r"\p{L}+", ["日本語"], ["1"]),
    (r"\P{L}+", ["123-"], ["a"]),
    (r"\p{^L}", ["1"], ["a"]),
    (r"\P{^L}", ["a"], ["1"]),
    (r"\p{Lu}\p{Ll}+", ["Hello", "Émile"], ["hello"]),
    (r"\pN+", ["12٣²Ⅻ"], ["a"]),
    (r"\p{Nd}+", ["12٣"], ["²"]),
    (r"\p{Han}+", ["日本", "漢字"], ["にほん", "a"]),
    (r"\p{Greek}+", ["αβγ", "Ω"], ["abc"]),
    (r"\p{Latin}+", ["abcé"], ["1", "α"]),
    (r"\p{Cyrillic}+", ["жук"], ["a"]),
    (r"\p{Hiragana}+", ["にほん"], ["ニホン"]),
    (r"\p{Katakana}+", ["ニホン"], ["ー"]),  # U+30FC is Common, not Katakana
    (r"\p{Hangul}+", ["한국어"], ["日"]),
    (r"\p{Arabic}+", ["عربي"], ["a"]),
    (r"\p{Hebrew}+", ["עברית"], ["a"]),
    (r"\p{Devanagari}+", ["हिन्दी"], ["a"]),
    (r"\p{Thai}+", ["ไทย"], ["a"]),
    (r"[\p{Han}\p{Hiragana}]+", ["日本にほん"], ["ニ"]),
    (r"[^\p{Han}]", ["a"], ["日"]),
    (r"[\P{Han}]", ["a"], ["日"]),
    (r"[\P{Han}\d]", ["a", "1"], ["日"]),
    (r"\p{Any}+", ["a\n日"], []),
    (r"\P{Any}", [], ["a", ""]),
    (r"\pZ", [" ", "\u2003"], ["\t"]),
    (r"\pC", ["\x00", "\u200b"], ["a"]),
    # Escapes.
    (r"\x{e9}", ["é"], ["e"]),
    (r"\x{1F600}", ["😀"], []),
    (r"\x{10FFFF}", ["\U0010ffff"], []),
    (r"\xe9\x41", ["éA"], []),
    (r"[\x{41}-\x{43}]+", ["ABC"], ["D"]),
    (r"\101\0\1234", ["A\x00S4"], []),
    (r"\a\f\t\n\r\v", ["\x07\x0c\t\n\r\x0b"], []),
    (r"\_\-\.\ \#\~\&", ["_-. #~&"], []),
    (r"[\]\\\-]+", ["]\\-"], ["a"]),
    (r"a\z", ["a"], ["a\n"]),
    (r"\Aa", ["a"], []),
    (r"\Q.*+\E", [".*+"], ["ab"]),
    (r"\Qa.b", ["a.b"], ["axb"]),
    (r"x\Qab\E+", ["xabbb"], ["xabab"]),
    (r"a\Q\E*", ["", "aaa"], []),
    (r"\Q(?i)[\E", ["(?i)["], []),
    # `^` and `$` are text anchors unless (?m): Python's `$` would also
    # match before a final newline.
    (r"a$\n", [], ["a\n"]),
    (r"(?m)a$\n", ["a\n"], []),
    (r"\n^a", [], ["\na"]),
    (r"(?m)\n^a", ["\na"], []),
    (r"^abc$", ["abc"], ["abc\n"]),
    (r"^*a", ["a"], []),  # Go repeats an anchor; Python refuses `^*`
    (r"(?m:a$)\n(?m)^b$", ["a\nb"], []),
    # `.` and inline flags.
    (r".", ["\n", "x"], [""]),
    (r"(?-s).", ["x"], ["\n"]),
    (r"(?-s:.)(?s:.)", ["x\n"], ["\nx"]),
    (r"a(?i)b|c", ["ab", "aB", "C", "c"], ["Ab", "AB"]),
    (r"((?i)pro).*", ["PROD", "pro"], []),
    (r"(?i)GET|post", ["get", "POST"], ["put"]),
    (r"(?i:a)b", ["Ab"], ["AB"]),
    (r"(?i)a(?-i)b", ["Ab"], ["AB"]),
    (r"(?i)a(?-i:b)c", ["AbC"], ["ABC"]),
    (r"(a(?i)b)c", ["aBc"], ["aBC"]),
    (r"(?i)(?-i)a", ["a"], ["A"]),
    (r"(?i-i)a", ["a"], ["A"]),
    (r"(?)a", ["a"], []),
    (r"(?i)é", ["É"], []),  # RE2 folds Unicode
    (r"(?i)\w", ["K", "\u212a", "ſ"], ["é"]),  # Kelvin sign and long s fold into [k] and [s]
    (r"(?i)[^k]", ["j"], ["K", "\u212a"]),
    (r"(?i)[\W]", ["-"], ["k", "\u212a"]),
    (r"(?i)[^\W\d]", ["a", "\u212a"], ["1", "-"]),
    (r"(?i)\p{Lu}", ["a", "A"], ["1"]),
    (r"(?i)[[:upper:]]+", ["aB"], ["1"]),
    # Bracket expressions.
    (r"[\w-]+", ["a-b_1"], ["a.b", "é"]),
    (r"[^\d]", ["a"], ["1"]),
    (r"[\W]", ["-", "é"], ["a"]),
    (r"[^\W\d]", ["a", "_"], ["1", "-"]),
    (r"[\D\d]", ["a", "1", "\n"], []),
    (r"[^\D\d]", [], ["a", "1"]),
    (r"[\d-z]", ["5", "-", "z"], ["a"]),
    (r"[a-]", ["a", "-"], ["b"]),
    (r"[-a]", ["a", "-"], ["b"]),
    (r"[]a]", ["]", "a"], ["b"]),
    (r"[^]a]", ["b"], ["]", "a"]),
    (r"[^a]", ["\n", "b"], ["a"]),
    (r"[[]", ["["], []),
    (r"[a-c-e]", ["b", "-", "e"], ["d"]),
    (r"[--/]", ["-", ".", "/"], ["a"]),
    (r"[&&~~||]", ["&", "~", "|"], []),
    (r"[\s\S]", ["\n", "x"], []),
    (r"[^\S\n]", [" ", "\t"], ["\n", "x"]),
    # Groups and repetition.
    (r"(?P<name>a)(?P<other>b)", ["ab"], []),
    (r"(?P<1a>x)(?P<n>y)|(?P<n>z)", ["xy", "z"], []),
    (r"()*(|a)+(?:)", ["", "aa"], []),
    (r"a*(?i)*", ["aaa"], []),  # the second star repeats `a*` (flags are not an operand)
    (r"(?:a{2}){500}", ["a" * 1000], []),
    (r"(?U)a+", ["aaa"], []),
    (r"[a-c]+?", ["abc"], []),
    (r"(a|ab)(c|bcd)(d*)", ["abcd"], []),
]


@pytest.mark.parametrize(("pattern", "yes", "no"), CASES, ids=[c[0] for c in CASES])
def test_matches_what_go_matches(pattern: str, yes: list[str], no: list[str]) -> None:
    for text in yes:
        assert matches(pattern, text), (pattern, text)
    for text in no:
        assert not matches(pattern, text), (pattern, text)


@pytest.mark.parametrize(
    ("pattern", "python"),
    [
        ("prod|staging|dev.*", "prod|staging|dev.*"),  # the common case is left alone
        (".*foo.*", ".*foo.*"),
        (r"\w+", "[0-9A-Z_a-z]+"),
        (r"[\w-]", r"[\-0-9A-Z_a-z]"),
        (r"[^\d]", "[^0-9]"),
        (r"[\W]", "[^0-9A-Z_a-z]"),
        ("h{,3}.*", r"h\{,3\}.*"),
        (r"\Qa.b\E+", r"a\.b+"),
        ("^a$", r"\Aa\Z"),
        ("(?m)^a$", "(?m:^)a(?m:$)"),
        ("a(?i)b|c", "a(?i:b)|(?i:c)"),
        ("((?i)pro).*", "((?i:pro)).*"),
        ("(?i)(?-s)a.", "(?i-s:a.)"),
        ("(?U)a*b+?c{2,}", "a*?b+c{2,}?"),
        ("(?P<n>x)(?P<m>y)(?P<n>z)(?P<1a>w)", "(?P<n>x)(?P<m>y)(z)(w)"),
        (r"\z", r"\Z"),
        (r"^*", r"(?:\A)*"),
        (r"[\D\d]", "(?s:.)"),
    ],
)
def test_translations(pattern: str, python: str) -> None:
    assert to_python(pattern) == python


def test_ungreedy_flag_swaps_greedy_and_lazy() -> None:
    assert compiled(r"(a+)(a*)").fullmatch("aaa").groups() == ("aaa", "")  # type: ignore[union-attr]
    assert compiled(r"(?U)(a+)(a*)").fullmatch("aaa").groups() == ("a", "aa")  # type: ignore[union-attr]
    assert compiled(r"(?U)(a+?)(a*)").fullmatch("aaa").groups() == ("aaa", "")  # type: ignore[union-attr]
    assert compiled(r"(?U:(a{1,3}))(a*)").fullmatch("aaa").groups() == ("a", "aa")  # type: ignore[union-attr]
    assert compiled(r"((?U)a*)(a*)").fullmatch("aa").groups() == ("", "aa")  # type: ignore[union-attr]


def test_named_groups_keep_their_numbers() -> None:
    m = compiled(r"(?P<1a>x)(?P<n>y)(?P<m>z)").fullmatch("xyz")
    assert m is not None and m.groups() == ("x", "y", "z")
    assert m.group("n") == "y" and m.group("m") == "z"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"\Z", r"invalid escape sequence: `\Z`"),
        (r"\u00e9", r"invalid escape sequence: `\u`"),
        (r"\e", r"invalid escape sequence: `\e`"),
        (r"\G", r"invalid escape sequence: `\G`"),
        (r"\C", r"invalid escape sequence: `\C`"),
        (r"\é", r"invalid escape sequence: `\é`"),
        (r"(a)\1", r"invalid escape sequence: `\1`"),
        (r"\18", r"invalid escape sequence: `\1`"),
        (r"\8", r"invalid escape sequence: `\8`"),
        (r"[\b]", r"invalid escape sequence: `\b`"),
        (r"[\Qa\E]", r"invalid escape sequence: `\Q`"),
        (r"[\A]", r"invalid escape sequence: `\A`"),
        (r"\x", r"invalid escape sequence: `\x`"),
        (r"\xA", r"invalid escape sequence: `\xA`"),
        (r"\xZ1", r"invalid escape sequence: `\xZ1`"),
        (r"\x{}", r"invalid escape sequence: `\x{}`"),
        (r"\x{12", r"invalid escape sequence: `\x{12`"),
        (r"\x{1g}", r"invalid escape sequence: `\x{1g`"),
        (r"\x{110000}", r"invalid escape sequence: `\x{110000`"),
        ("a\\", "trailing backslash at end of expression: ``"),
        ("[a\\", "trailing backslash at end of expression: ``"),
        ("a{1001}", "invalid repeat count: `{1001}`"),
        ("p{1,1001}", "invalid repeat count: `{1,1001}`"),
        ("p{1001,}", "invalid repeat count: `{1001,}`"),
        ("a{2,1}", "invalid repeat count: `{2,1}`"),
        ("a{99999999999}", "invalid repeat count: `{99999999999}`"),
        ("(a{500}){3}", "invalid repeat count: `{3}`"),
        ("((a{10}){10}b){11}", "invalid repeat count: `{11}`"),
        ("(?:(?:a{2})*){501}?", "invalid repeat count: `{501}?`"),
        (r"\p{Foo}", r"invalid character class range: `\p{Foo}`"),
        (r"\pX", r"invalid character class range: `\pX`"),
        (r"\p", r"invalid character class range: `\p`"),
        (r"\p{L", r"invalid character class range: `\p{L`"),
        (r"\p{Cn}", r"invalid character class range: `\p{Cn}`"),  # Go 1.25 knows Cn
        (r"\p{greek}", r"invalid character class range: `\p{greek}`"),  # Go 1.25 ignores case
        (r"[\p{Foo}]", r"invalid character class range: `\p{Foo}`"),
        ("[[:foo:]]", "invalid character class range: `[:foo:]`"),
        ("[z-a]", "invalid character class range: `z-a`"),
        (r"[\x{43}-A]", r"invalid character class range: `\x{43}-A`"),
        ("x[y", "missing closing ]: `[y`"),
        ("[]", "missing closing ]: `[]`"),
        ("[^]", "missing closing ]: `[^]`"),
        ("[[:alpha:]", "missing closing ]: `[[:alpha:]`"),
        ("[a-", "missing closing ]: `[a-`"),
        ("(abc", "missing closing ): `(abc`"),
        ("(?:a|(b)", "missing closing ): `(?:a|(b)`"),
        ("abc)", "unexpected ): `abc)`"),
        ("*a", "missing argument to repetition operator: `*`"),
        ("a|*", "missing argument to repetition operator: `*`"),
        ("(+)", "missing argument to repetition operator: `+`"),
        ("(?i)??", "missing argument to repetition operator: `??`"),
        ("{2}", "missing argument to repetition operator: `{2}`"),
        (r"\Q\E*", "missing argument to repetition operator: `*`"),
        ("a**", "invalid nested repetition operator: `**`"),
        ("a*+", "invalid nested repetition operator: `*+`"),
        ("a++", "invalid nested repetition operator: `++`"),
        ("a?+", "invalid nested repetition operator: `?+`"),
        ("a*?*", "invalid nested repetition operator: `*?*`"),
        ("a{2}{3}", "invalid nested repetition operator: `{2}{3}`"),
        ("a{2}+", "invalid nested repetition operator: `{2}+`"),
        ("a(?=b)", "invalid or unsupported Perl syntax: `(?=`"),
        ("a(?!b)", "invalid or unsupported Perl syntax: `(?!`"),
        ("(?<=a)b", "invalid or unsupported Perl syntax: `(?<`"),
        ("(?<!a)b", "invalid or unsupported Perl syntax: `(?<`"),
        ("(?<x>c)", "invalid or unsupported Perl syntax: `(?<`"),  # Go 1.22+ only
        ("(?#comment)", "invalid or unsupported Perl syntax: `(?#`"),
        ("(?P=n)", "invalid or unsupported Perl syntax: `(?P`"),
        ("(?>a)", "invalid or unsupported Perl syntax: `(?>`"),
        ("(?(1)a|b)", "invalid or unsupported Perl syntax: `(?(`"),
        ("(?x)a", "invalid or unsupported Perl syntax: `(?x`"),
        ("(?a)a", "invalid or unsupported Perl syntax: `(?a`"),
        ("(?i", "invalid or unsupported Perl syntax: `(?i`"),
        ("(?", "invalid or unsupported Perl syntax: `(?`"),
        ("(?-)", "invalid or unsupported Perl syntax: `(?-)`"),
        ("(?i-)", "invalid or unsupported Perl syntax: `(?i-)`"),
        ("(?i--s)", "invalid or unsupported Perl syntax: `(?i--`"),
        ("(?P<a-b>x)", "invalid named capture: `(?P<a-b>`"),
        ("(?P<>x)", "invalid named capture: `(?P<>`"),
        ("(?P<name", "invalid named capture: `(?P<name`"),
    ],
)
def test_errors_read_like_go(pattern: str, message: str) -> None:
    with pytest.raises(RE2Error) as err:
        to_python(pattern)
    assert str(err.value) == f"error parsing regexp: {message}"
    assert isinstance(err.value, re.error)  # callers catching re.error still do
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)


_CODE_POINTS = [*range(0, 0x3000, 7), *range(0x3000, 0x110000, 997), 0x10FFFF]


@pytest.mark.parametrize("category", ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No",
                                      "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So",
                                      "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"])
def test_general_categories_follow_unicodedata(category: str) -> None:
    rx = compiled(rf"\p{{{category}}}")
    major = compiled(rf"\p{category[0]}")
    for cp in _CODE_POINTS:
        c = chr(cp)
        cat = unicodedata.category(c)
        assert (rx.fullmatch(c) is not None) == (cat == category), hex(cp)
        # One-letter classes hold their two-letter ones; Go's C leaves out Cn.
        assert (major.fullmatch(c) is not None) == (cat[0] == category[0] and cat != "Cn"), hex(cp)


@pytest.mark.parametrize("script", sorted(_SCRIPTS))
def test_script_tables_are_sorted_disjoint_ranges(script: str) -> None:
    ranges = _unicode_set(script)
    assert all(lo <= hi for lo, hi in ranges)
    assert all(prev_hi + 1 < lo for (_, prev_hi), (lo, _) in itertools.pairwise(ranges))
    first = chr(ranges[0][0])
    assert matches(rf"\p{{{script}}}", first) and not matches(rf"\P{{{script}}}", first)


# Parts of a bracket expression, and which characters Go's class holds for each.
_HOLDS = {
    r"\d": lambda c: c in "0123456789",
    r"\s": lambda c: c in "\t\n\f\r ",
    r"\w": lambda c: c.isascii() and (c.isalnum() or c == "_"),
    "[:alpha:]": lambda c: c.isascii() and c.isalpha(),
    "[:space:]": lambda c: c in "\t\n\v\f\r ",
    "[:punct:]": lambda c: c.isascii() and c.isprintable() and not c.isalnum() and c != " ",
    r"\pL": lambda c: unicodedata.category(c)[0] == "L",
    "a": lambda c: c == "a",
    "0-9": lambda c: "0" <= c <= "9",
    r"\-": lambda c: c == "-",
    r"\]": lambda c: c == "]",
    r"\\": lambda c: c == "\\",
    r"\^": lambda c: c == "^",
    "é": lambda c: c == "é",
}
_NEGATED = {r"\D": r"\d", r"\S": r"\s", r"\W": r"\w", "[:^alpha:]": "[:alpha:]", "[:^space:]": "[:space:]",
            "[:^punct:]": "[:punct:]", r"\PL": r"\pL", r"\p{^L}": r"\pL"}
_SAMPLE = "aAzZ09_-]^\\ \t\n\v\f\ré٣日ſ\u212a"


def _holds(part: str, c: str) -> bool:
    return not _HOLDS[_NEGATED[part]](c) if part in _NEGATED else _HOLDS[part](c)


@given(st.lists(st.sampled_from(sorted([*_HOLDS, *_NEGATED])), min_size=1, max_size=4), st.booleans())
def test_bracket_expressions_hold_what_go_holds(parts: list[str], negate: bool) -> None:
    pattern = f"[{'^' if negate else ''}{''.join(parts)}]"
    rx = compiled(pattern)
    for c in _SAMPLE:
        want = any(_holds(p, c) for p in parts) != negate
        assert (rx.fullmatch(c) is not None) == want, (pattern, c)


def _patterns() -> st.SearchStrategy[str]:
    """Patterns in the syntax RE2 and Python share: literals, `.`, classes,
    groups, alternation and (lazy) `* + ?` on an atom."""
    atoms = st.sampled_from(["a", "b", "c", ".", "[ab]", "[^a]", "[a-c]", "-", "日"])

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        group = st.tuples(st.sampled_from(["(", "(?:"]), inner).map(lambda t: f"{t[0]}{t[1]})")
        quantifier = st.sampled_from(["*", "+", "?", "*?", "+?", "??"])
        repeated = st.tuples(st.one_of(atoms, group), quantifier).map("".join)
        concat = st.lists(st.one_of(atoms, group, repeated), min_size=1, max_size=4).map("".join)
        return st.lists(concat, min_size=1, max_size=3).map("|".join)

    return st.recursive(atoms, extend, max_leaves=8)


# A leading flag group, and how Python says the same around the (?s:) callers add.
_PYTHON_FLAGS = {"": "(?s:{})", "(?i)": "(?i)(?s:{})", "(?s)": "(?s:{})", "(?-s)": "(?-s:{})"}


@settings(max_examples=300)
@given(_patterns(), st.sampled_from(sorted(_PYTHON_FLAGS)), st.lists(st.text("abcABC-\n日", max_size=6), max_size=8))
def test_shared_syntax_means_what_python_reads(pattern: str, flags: str, texts: list[str]) -> None:
    """Where both syntaxes agree, the translation changes no match and no group."""
    ours = compiled(flags + pattern)
    python = re.compile(_PYTHON_FLAGS[flags].format(pattern))
    for text in texts:
        a, b = ours.fullmatch(text), python.fullmatch(text)
        assert (a is None) == (b is None), (pattern, text)
        if a is not None and b is not None:
            assert a.regs == b.regs, (pattern, text)
