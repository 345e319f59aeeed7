"""Label matchers: regexes read as Prometheus (Go's RE2 syntax) reads them."""

from __future__ import annotations

import pytest

from athens.model.matchers import BadRegexError, Matcher, MatchOp


@pytest.mark.parametrize(
    ("value", "label", "hit"),
    [
        (r"\w+", "日本語", False),
        (r"\w+", "node_1", True),
        (r"[[:alpha:]]+", "prod", True),
        (r"h{,3}.*", "hhh", False),
        (r"h{,3}.*", "h{,3}", True),
        (r"\p{Han}+", "日本", True),
        (r"\x{e9}t\x{e9}", "été", True),
        (r"\Q10.0.0.1\E", "10.0.0.1", True),
        (r"\Q10.0.0.1\E", "10a0b0c1", False),
        ("prod$\n", "prod\n", False),
        ("((?i)pro).*", "PROD", True),
        ("a(?i)b|c", "C", True),
        (".*", "multi\nline", True),
        ("", "", True),
        ("", "x", False),
    ],
)
def test_regex_matchers_read_go_syntax(value: str, label: str, hit: bool) -> None:
    assert Matcher(MatchOp.RE, "l", value).matches(label) is hit
    assert Matcher(MatchOp.NRE, "l", value).matches(label) is not hit


def test_negated_ascii_word_matcher() -> None:
    m = Matcher(MatchOp.NRE, "l", r"\w*")
    assert m.matches("日本") and not m.matches("abc") and not m.matches_empty()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (r"\Z", r"error parsing regexp: invalid escape sequence: `\Z`"),
        (r"\u00e9", r"error parsing regexp: invalid escape sequence: `\u`"),
        ("a{1001}", "error parsing regexp: invalid repeat count: `{1001}`"),
        ("p{1,1001}", "error parsing regexp: invalid repeat count: `{1,1001}`"),
        (r"\p{Foo}", r"error parsing regexp: invalid character class range: `\p{Foo}`"),
        ("a(?=b)", "error parsing regexp: invalid or unsupported Perl syntax: `(?=`"),
        ("(abc", "error parsing regexp: missing closing ): `(abc`"),
    ],
)
@pytest.mark.parametrize("op", [MatchOp.RE, MatchOp.NRE])
def test_bad_regexes_fail_with_go_messages(op: MatchOp, value: str, message: str) -> None:
    with pytest.raises(BadRegexError) as err:
        Matcher(op, "l", value)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("matcher", "literals"),
    [
        (Matcher(MatchOp.EQ, "l", "a.b"), ["a.b"]),
        (Matcher(MatchOp.RE, "l", "prod|staging|dev"), ["prod", "staging", "dev"]),
        (Matcher(MatchOp.RE, "l", "日本|x_1"), ["日本", "x_1"]),
        (Matcher(MatchOp.RE, "l", "prod|dev.*"), None),
        (Matcher(MatchOp.RE, "l", r"a|\Qb\E"), None),
        (Matcher(MatchOp.RE, "l", r"\Qa|b\E"), None),
        (Matcher(MatchOp.RE, "l", "(?i)a|b"), None),
        (Matcher(MatchOp.RE, "l", "a|[b]"), None),
        (Matcher(MatchOp.RE, "l", "a||b"), None),
        (Matcher(MatchOp.NRE, "l", "a|b"), None),
    ],
)
def test_literal_alternatives_only_for_plain_literals(matcher: Matcher, literals: list[str] | None) -> None:
    assert matcher.literal_alternatives() == literals
    if literals is not None and matcher.op is MatchOp.RE:
        assert all(matcher.matches(v) for v in literals)
