"""PromQL lexer: query text to a list of tokens with byte offsets.

It is a hand loop over the text with the same three contexts as Prometheus'
lexer (promql/parser/lex.go): statements, the inside of `{...}` (where
keywords are plain identifiers and `=~`/`!~` exist) and the inside of `[...]`
(durations and duration arithmetic only). Keywords are case-insensitive,
identifiers are not. A lexing error does not raise here: it becomes a final
ERROR token, so the parser reports it only when it gets that far, as
Prometheus does.

Positions are byte offsets into the UTF-8 encoding of the query (what
Prometheus reports), not indices into the Python string.
"""

from __future__ import annotations

from dataclasses import dataclass

# Token kinds. Keywords and operators use their canonical lower-case text as
# kind; the other kinds are upper-case words so they cannot clash.
EOF = "EOF"
ERROR = "ERROR"
IDENT = "IDENT"
METRIC_IDENT = "METRIC_IDENT"
NUMBER = "NUMBER"
DURATION = "DURATION"
STRING = "STRING"

AGGREGATORS = frozenset(
    {
        "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar",
        "topk", "bottomk", "count_values", "quantile", "limitk", "limit_ratio",
    }
)
# Operators that are words; `@`, `=~` and `!~` count as operators too (for
# "<op:...>" error descriptions) but are not binary operators.
WORD_OPERATORS = frozenset({"and", "or", "unless", "atan2"})
KEYWORDS = frozenset(
    {
        "offset", "smoothed", "anchored", "by", "without", "on", "ignoring",
        "group_left", "group_right", "fill", "fill_left", "fill_right", "bool",
    }
)
PREPROCESSORS = frozenset({"start", "end", "step", "range"})
SYMBOL_OPERATORS = frozenset(
    {"+", "-", "*", "/", "%", "^", "==", "!=", "<", "<=", ">", ">=", "=~", "!~", "@", "</", ">/"}
)
OPERATORS = SYMBOL_OPERATORS | WORD_OPERATORS
# Words that are keywords only when followed by "(" (Prometheus does this for
# the fill modifiers so that existing metrics named `fill` keep working).
_PAREN_KEYWORDS = frozenset({"fill", "fill_left", "fill_right"})
_WORD_KINDS = AGGREGATORS | WORD_OPERATORS | KEYWORDS | PREPROCESSORS
# Words understood inside `[...]`.
DURATION_WORDS = frozenset({"step", "range", "min_of", "max_of"})

_SPACE = " \t\n\r"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"


def _is_alpha(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_alnum(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")


@dataclass(slots=True)
class Token:
    """One lexed item. `pos`/`end` are byte offsets; `val` is the source text
    (for ERROR tokens: the error message)."""

    kind: str
    val: str
    pos: int
    end: int


def go_quote_rune(c: str) -> str:
    """Go's %q for a rune: 'x' with escapes."""
    if c == "":
        return "EOF"
    if c == "'":
        return "'\\''"
    if c == "\\":
        return "'\\\\'"
    esc = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    if c in esc:
        return f"'{esc[c]}'"
    o = ord(c)
    if c.isprintable():
        return f"'{c}'"
    if o < 0x80:
        return f"'\\x{o:02x}'"
    if o < 0x10000:
        return f"'\\u{o:04x}'"
    return f"'\\U{o:08x}'"


class LexError(Exception):
    """Internal: raised inside the lexer loop, turned into an ERROR token."""

    def __init__(self, msg: str, start: int) -> None:
        super().__init__(msg)
        self.msg = msg
        self.start = start


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.tokens: list[Token] = []
        self.paren_depth = 0
        # Byte offset of each character index, only needed for non-ASCII text.
        self.ascii = text.isascii()
        self._byte_pos: list[int] | None = None

    # -- positions ---------------------------------------------------------
    def bpos(self, i: int) -> int:
        if self.ascii:
            return i
        if self._byte_pos is None:
            acc = [0] * (self.n + 1)
            b = 0
            for k, ch in enumerate(self.text):
                acc[k] = b
                b += len(ch.encode("utf-8", "surrogatepass"))
            acc[self.n] = b
            self._byte_pos = acc
        return self._byte_pos[i]

    def emit(self, kind: str, start: int, end: int) -> None:
        self.tokens.append(Token(kind, self.text[start:end], self.bpos(start), self.bpos(end)))

    # -- main loop ---------------------------------------------------------
    def run(self) -> list[Token]:
        try:
            self._statements(0)
        except LexError as e:
            p = self.bpos(e.start)
            self.tokens.append(Token(ERROR, e.msg, p, self.bpos(self.n)))
        return self.tokens

    def _statements(self, i: int) -> None:
        text, n = self.text, self.n
        while True:
            while i < n and text[i] in _SPACE:
                i += 1
            if i >= n:
                if self.paren_depth != 0:
                    raise LexError("unclosed left parenthesis", i)
                self.tokens.append(Token(EOF, "", self.bpos(n), self.bpos(n)))
                return
            c = text[i]
            if c == "#":
                while i < n and text[i] not in "\r\n":
                    i += 1
                continue
            if c in ",*%+-^@":
                self.emit(c, i, i + 1)
                i += 1
            elif c == "/":
                self.emit("/", i, i + 1)
                i += 1
            elif c == "=":
                nxt = text[i + 1] if i + 1 < n else ""
                if nxt == "=":
                    self.emit("==", i, i + 2)
                    i += 2
                elif nxt == "~":
                    raise LexError("unexpected character after '=': '~'", i)
                else:
                    self.emit("=", i, i + 1)
                    i += 1
            elif c == "!":
                nxt = text[i + 1] if i + 1 < n else ""
                if nxt != "=":
                    raise LexError(f"unexpected character after '!': {go_quote_rune(nxt)}", i)
                self.emit("!=", i, i + 2)
                i += 2
            elif c == "<" or c == ">":
                nxt = text[i + 1] if i + 1 < n else ""
                if nxt == "=" or nxt == "/":
                    self.emit(c + nxt, i, i + 2)
                    i += 2
                else:
                    self.emit(c, i, i + 1)
                    i += 1
            elif c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
                i = self._number_or_duration(i)
            elif c == '"' or c == "'":
                i = self._string(i)
            elif c == "`":
                i = self._raw_string(i)
            elif _is_alpha(c) or c == ":":
                i = self._keyword_or_identifier(i)
            elif c == "(":
                self.emit("(", i, i + 1)
                self.paren_depth += 1
                i += 1
            elif c == ")":
                self.emit(")", i, i + 1)
                i += 1
                self.paren_depth -= 1
                if self.paren_depth < 0:
                    self.tokens.pop()
                    raise LexError("unexpected right parenthesis ')'", i)
            elif c == "{":
                self.emit("{", i, i + 1)
                i = self._inside_braces(i + 1)
            elif c == "[":
                self.emit("[", i, i + 1)
                i = self._inside_brackets(i + 1)
            elif c == "]":
                raise LexError("unexpected right bracket ']'", i)
            else:
                raise LexError(f"unexpected character: {go_quote_rune(c)}", i)

    def _keyword_or_identifier(self, i: int) -> int:
        text, n = self.text, self.n
        j = i
        while j < n and (_is_alnum(text[j]) or text[j] == ":"):
            j += 1
        word = text[i:j]
        low = word.lower()
        if low in _WORD_KINDS:
            kind = low
            if low in _PAREN_KEYWORDS:
                k = j
                while k < n and text[k] in _SPACE:
                    k += 1
                if k >= n or text[k] != "(":
                    kind = IDENT
        elif low == "inf" or low == "nan":
            kind = NUMBER
        elif ":" in word:
            kind = METRIC_IDENT
        else:
            kind = IDENT
        self.emit(kind, i, j)
        return j

    # -- numbers -------------------------------------------------------------
    def _scan_number(self, i: int) -> tuple[bool, int]:
        """Prometheus' scanNumber: returns (valid, end)."""
        text, n = self.text, self.n
        start = i
        digits = _DIGITS
        if i < n and text[i] == "0":
            i += 1
            if i < n and text[i] in "xX":
                i += 1
                if i < n and text[i] == "_":
                    i += 1
                digits = _HEX
        if i < n and text[i] == ".":
            i += 1
        if i < n and text[i] in digits:
            i += 1
        dot = exp = False
        allowed = digits + "._eE"
        while i < n and text[i] in allowed:
            c = text[i]
            if c == "." and dot:
                return False, i + 1
            if c in "eE" and exp:
                return False, i + 1
            if c == ".":
                dot = True
                i += 1
                if i < n and text[i] in "_.":
                    return False, i + 1
                if digits is _HEX:
                    return False, i
                continue
            if c in "eE":
                exp = True
                i += 1
                if i < n and text[i] in "+-":
                    i += 1
                if i >= n:
                    return False, i
                if text[i] in "._eE":
                    return False, i + 1
                continue
            if c == "_":
                i += 1
                if i >= n:
                    return False, i
                if text[i] in "._eE":
                    return False, i + 1
                continue
            while i < n and text[i] in digits:
                i += 1
        if i == start:
            return False, i
        if i < n and _is_alnum(text[i]):
            return False, i
        return True, i

    def _number_or_duration(self, i: int) -> int:
        ok, j = self._scan_number(i)
        if ok:
            self.emit(NUMBER, i, j)
            return j
        text, n = self.text, self.n
        # A duration: the next two characters must be a unit, then digits and
        # units may repeat (bad unit orders are caught by parse_duration).
        k = j
        good = False
        if k < n and text[k] in "smhdwy":
            k += 1
            if k < n and text[k] == "s":
                k += 1
            good = True
            while k < n and text[k] in _DIGITS:
                while k < n and text[k] in _DIGITS:
                    k += 1
                if k < n and text[k] in "smhdw":
                    k += 1
                    if k < n and text[k] == "s":
                        k += 1
                else:
                    good = False
                    break
            if good and k < n and _is_alnum(text[k]):
                good = False
                k += 1
        if good:
            self.emit(DURATION, i, k)
            return k
        raise LexError(f"bad number or duration syntax: {go_quote(text[i:k])}", i)

    # -- strings -------------------------------------------------------------
    def _string(self, i: int) -> int:
        text, n = self.text, self.n
        q = text[i]
        j = i + 1
        while True:
            if j >= n or text[j] == "\n":
                raise LexError("unterminated quoted string", i)
            c = text[j]
            if c == "\\":
                j = self._escape(j + 1, q, i)
                continue
            j += 1
            if c == q:
                break
        self.emit(STRING, i, j)
        return j

    def _escape(self, j: int, q: str, start: int) -> int:
        text, n = self.text, self.n
        if j >= n:
            raise LexError("escape sequence not terminated", start)
        c = text[j]
        if c in "abfnrtv\\" or c == q:
            return j + 1
        if c in "01234567":
            count, base, maxval = 3, 8, 255
        elif c == "x":
            j += 1
            count, base, maxval = 2, 16, 255
        elif c == "u":
            j += 1
            count, base, maxval = 4, 16, 0x10FFFF
        elif c == "U":
            j += 1
            count, base, maxval = 8, 16, 0x10FFFF
        else:
            raise LexError(f"unknown escape sequence U+{ord(c):04X} {go_quote_rune(c)}", start)
        x = 0
        for _ in range(count):
            if j >= n:
                raise LexError("escape sequence not terminated", start)
            d = int(text[j], 16) if text[j] in _HEX else 16
            if d >= base:
                raise LexError(
                    f"illegal character U+{ord(text[j]):04X} {go_quote_rune(text[j])} in escape sequence",
                    start,
                )
            x = x * base + d
            j += 1
        if x > maxval or 0xD800 <= x < 0xE000:
            raise LexError("escape sequence is an invalid Unicode code point", start)
        return j

    def _raw_string(self, i: int) -> int:
        j = self.text.find("`", i + 1)
        if j < 0:
            raise LexError("unterminated raw string", i)
        self.emit(STRING, i, j + 1)
        return j + 1

    # -- { ... } ---------------------------------------------------------------
    def _inside_braces(self, i: int) -> int:
        text, n = self.text, self.n
        while True:
            while i < n and text[i] in _SPACE:
                i += 1
            if i >= n:
                raise LexError("unexpected end of input inside braces", i)
            c = text[i]
            if c == "#":
                while i < n and text[i] not in "\r\n":
                    i += 1
                continue
            if _is_alpha(c):
                j = i + 1
                while j < n and _is_alnum(text[j]):
                    j += 1
                self.emit(IDENT, i, j)
                i = j
            elif c == ",":
                self.emit(",", i, i + 1)
                i += 1
            elif c == '"' or c == "'":
                i = self._string(i)
            elif c == "`":
                i = self._raw_string(i)
            elif c == "=":
                if i + 1 < n and text[i + 1] == "~":
                    self.emit("=~", i, i + 2)
                    i += 2
                else:
                    self.emit("=", i, i + 1)
                    i += 1
            elif c == "!":
                nxt = text[i + 1] if i + 1 < n else ""
                if nxt == "~" or nxt == "=":
                    self.emit("!" + nxt, i, i + 2)
                    i += 2
                else:
                    raise LexError(
                        f"unexpected character after '!' inside braces: {go_quote_rune(nxt)}", i
                    )
            elif c == "{":
                raise LexError("unexpected left brace '{'", i)
            elif c == "}":
                self.emit("}", i, i + 1)
                return i + 1
            else:
                raise LexError(f"unexpected character inside braces: {go_quote_rune(c)}", i)

    # -- [ ... ] ---------------------------------------------------------------
    def _inside_brackets(self, i: int) -> int:
        text, n = self.text, self.n
        got_colon = False
        got_duration = False
        depth = 0
        while True:
            while i < n and text[i] in _SPACE:
                i += 1
            if i >= n:
                # Prometheus leaves its duration state after the first number.
                if got_duration:
                    raise LexError("unclosed left bracket", i)
                raise LexError("unexpected end of input in duration expression", i)
            c = text[i]
            if c == "]":
                self.emit("]", i, i + 1)
                return i + 1
            if c == ":":
                if not got_duration:
                    raise LexError("unexpected colon before duration in duration expression", i)
                if got_colon:
                    # After a number Prometheus lexes the rest of the brackets
                    # in its statement state, hence this message.
                    raise LexError("unexpected colon ':'", i)
                got_colon = True
                self.emit(":", i, i + 1)
                i += 1
            elif c == "(":
                depth += 1
                self.emit("(", i, i + 1)
                i += 1
            elif c == ")":
                depth -= 1
                if depth < 0:
                    raise LexError("unexpected right parenthesis ')'", i + 1)
                self.emit(")", i, i + 1)
                i += 1
            elif c in "+-*/%^,":
                self.emit(c, i, i + 1)
                i += 1
            elif c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
                got_duration = True
                i = self._number_or_duration(i)
            elif _is_alpha(c):
                j = i + 1
                while j < n and _is_alpha(text[j]):
                    j += 1
                word = text[i:j].lower()
                if word not in DURATION_WORDS:
                    if got_duration:
                        raise LexError(f"unexpected character: {go_quote_rune(c)}, expected ':'", i)
                    raise LexError(
                        f"unexpected character in duration expression: {go_quote_rune(c)}", i
                    )
                # step()/range() stand for a duration as much as a literal does.
                got_duration = True
                self.emit(word, i, j)
                i = j
            elif c == "[":
                raise LexError("unexpected left bracket '['", i)
            else:
                raise LexError(f"unexpected character in duration expression: {go_quote_rune(c)}", i)


def tokenize(text: str) -> list[Token]:
    """All tokens of `text`; the last one is EOF or ERROR."""
    return _Lexer(text).run()


_QUOTE_ESC = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
    "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"',
}


def go_quote(s: str) -> str:
    """Go's strconv.Quote: a double-quoted string with Go escapes."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    out = ['"']
    for c in s:
        e = _QUOTE_ESC.get(c)
        if e is not None:
            out.append(e)
        elif c.isprintable():
            out.append(c)
        else:
            o = ord(c)
            if o < 0x80:
                out.append(f"\\x{o:02x}")
            elif 0xD800 <= o < 0xE000:
                out.append("\\ufffd")
            elif o < 0x10000:
                out.append(f"\\u{o:04x}")
            else:
                out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def unquote(tok: str) -> str:
    """The value of a STRING token (with its quotes), Go escapes resolved.

    The lexer has already validated the escapes. Octal and \\x escapes are
    bytes (as in Go); the result is decoded as UTF-8 with replacement.
    """
    q = tok[0]
    body = tok[1:-1]
    if q == "`" or "\\" not in body:
        return body
    out = bytearray()
    i, n = 0, len(body)
    simple = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39, '"': 34}
    while i < n:
        c = body[i]
        if c != "\\":
            j = body.find("\\", i)
            if j < 0:
                j = n
            out += body[i:j].encode("utf-8", "surrogatepass")
            i = j
            continue
        e = body[i + 1]
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e in "01234567":
            out.append(int(body[i + 1 : i + 4], 8))
            i += 4
        elif e == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif e == "u":
            out += chr(int(body[i + 2 : i + 6], 16)).encode("utf-8")
            i += 6
        else:  # "U"
            out += chr(int(body[i + 2 : i + 10], 16)).encode("utf-8")
            i += 10
    return out.decode("utf-8", "replace")
