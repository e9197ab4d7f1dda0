"""The text of a pipeline expression before Python's parser sees it, and the error it raises.

The limits on an expression (:data:`EXPR_MAX_CHARS` and the rest, named apart from the limits
on values in :mod:`moa._bounds`), the check that it holds no character Python cannot read, and
the check of its brackets and operators, which finds an unbalanced or too deeply nested one
where its position is still known and before Python's recursive parser could overflow on it.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import MoaError

__all__ = (
    "EXPR_MAX_BRACKETS",
    "EXPR_MAX_CHARS",
    "EXPR_MAX_DEPTH",
    "EXPR_MAX_INT_DIGITS",
    "EXPR_MAX_ITEMS",
    "EXPR_MAX_MESSAGE",
    "EXPR_MAX_OPERATORS",
    "EXPR_MAX_REPEAT",
    "EXPR_MAX_STEPS",
    "EXPR_MAX_STRING",
    "NEWLINE",
    "SURROGATE",
    "PipelineSyntaxError",
    "check_characters",
    "check_length",
    "check_nesting",
)

EXPR_MAX_CHARS = 10_000  # length of the whole expression
EXPR_MAX_BRACKETS = 50  # bracket nesting in the raw text
EXPR_MAX_DEPTH = 50  # AST nesting (a chain of | or & counts once)
EXPR_MAX_STEPS = 200  # steps in the result, repetitions expanded; also step calls written
EXPR_MAX_REPEAT = 100  # n in step * n
EXPR_MAX_ITEMS = 1_000  # items in one list or tuple literal
EXPR_MAX_STRING = 10_000  # characters in one string literal
EXPR_MAX_INT_DIGITS = 18  # decimal digits in one integer literal
EXPR_MAX_OPERATORS = 1_000  # operator characters (| & * - . ...) in the raw text
EXPR_MAX_MESSAGE = 500  # characters of an error's reason

#: Characters Python's parser cannot take: lone surrogates (not valid Unicode; how a byte that is
#: not UTF-8 arrives from the shell, decoded with surrogateescape) and the null byte.
_BAD_CHARACTER = re.compile(r"[\ud800-\udfff\x00]")
SURROGATE = re.compile(r"[\ud800-\udfff]")
#: Characters of the operators that nest Python's syntax tree one level each: a chain
#: ``a | a | ...``, ``- - 1`` or ``a.b.c`` is as deep as it is long.
_OPERATOR_CHARS = frozenset("|&*+-/%@^~<>.")
NEWLINE = re.compile(r"\r\n|\r|\n")  # line breaks as Python's tokenizer counts them


class PipelineSyntaxError(MoaError, ValueError):
    """A pipeline expression that cannot be parsed or is not allowed.

    ``offset`` is the 0-based character offset of the offending token in the text (its column,
    for one-line text); ``message`` is the reason alone, while ``str(error)`` adds the offending
    line with a caret underneath.
    """

    def __init__(self, message: str, text: str, offset: int, length: int = 1) -> None:
        self.message = message
        self.text = text
        self.offset = max(0, min(offset, len(text)))
        self.length = max(1, length)
        super().__init__(self._render())

    def _render(self) -> str:
        start = max(self.text.rfind("\n", 0, self.offset), self.text.rfind("\r", 0, self.offset))
        start += 1
        newline = NEWLINE.search(self.text, self.offset)
        end = newline.start() if newline else len(self.text)
        # A lone surrogate would make the message itself unprintable (UnicodeEncodeError on
        # a UTF-8 terminal); U+FFFD keeps the width, so the caret still lines up.
        line = SURROGATE.sub("\ufffd", self.text[start:end])
        if len(line) > 200:  # keep the pointer readable for long input: show a window
            lo = max(0, self.offset - start - 80)
            line, start = line[lo : lo + 160], start + lo
        col = self.offset - start
        pad = "".join("\t" if ch == "\t" else " " for ch in line[:col])
        width = max(1, min(self.length, len(line) - col))
        return f"{SURROGATE.sub(chr(0xFFFD), self.message)}\n{line}\n{pad}{'^' * width}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.text, self.offset, self.length))


def check_length(text: str) -> None:
    """Reject an expression longer than :data:`EXPR_MAX_CHARS`."""
    if len(text) > EXPR_MAX_CHARS:
        raise PipelineSyntaxError(
            f"expression is too long: {len(text)} characters, at most {EXPR_MAX_CHARS}",
            text[:EXPR_MAX_CHARS],
            EXPR_MAX_CHARS,
        )


def check_characters(text: str) -> None:
    """Reject a lone surrogate or a null byte, which Python's parser cannot read, at its place."""
    bad = _BAD_CHARACTER.search(text)
    if bad is None:
        return
    if bad.group() == "\x00":
        reason = "a null byte"
    else:
        reason = "a lone surrogate (not valid Unicode; a byte that is not UTF-8?)"
    raise PipelineSyntaxError(
        f"invalid character U+{ord(bad.group()):04X}: {reason}", text, bad.start()
    )


def check_nesting(text: str) -> None:
    """Reject deeply nested or unbalanced brackets, and long operator chains, before Python's
    parser recurses into them.

    String literals and comments are skipped; an unterminated string is left for the parser to
    report. (The parser sees the text wrapped in parentheses, so an unclosed or extra bracket
    must be caught here, where its position is still known.)
    """
    opened: list[int] = []
    operators = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            i = _skip_string(text, i)
            if i < 0:
                return  # unterminated: the parser says so, with its position
            continue
        if ch == "#":  # a comment runs to the end of the line
            newline = NEWLINE.search(text, i)
            i = newline.start() if newline else n
            continue
        if ch in _OPERATOR_CHARS:
            operators += 1
            if operators > EXPR_MAX_OPERATORS:
                raise PipelineSyntaxError(
                    f"expression has too many operators: more than {EXPR_MAX_OPERATORS} "
                    f"(| & * - . and the like)",
                    text,
                    i,
                )
        elif ch in "([{":
            opened.append(i)
            if len(opened) > EXPR_MAX_BRACKETS:
                raise PipelineSyntaxError(
                    f"expression is nested too deeply: more than {EXPR_MAX_BRACKETS} brackets",
                    text,
                    i,
                )
        elif ch in ")]}":
            if not opened:
                raise PipelineSyntaxError(f"invalid syntax: unmatched {ch!r}", text, i)
            if "([{".index(text[opened[-1]]) != ")]}".index(ch):
                raise PipelineSyntaxError(
                    f"invalid syntax: {ch!r} does not match {text[opened[-1]]!r} at column "
                    f"{opened[-1]}",
                    text,
                    i,
                )
            opened.pop()
        i += 1
    if opened:
        raise PipelineSyntaxError(
            f"invalid syntax: {text[opened[-1]]!r} was never closed", text, opened[-1]
        )


def _skip_string(text: str, i: int) -> int:
    """The index just past the string literal whose quote is at ``i``; -1 if it never ends."""
    quote = text[i : i + 3] if text[i : i + 3] == text[i] * 3 else text[i]
    i += len(quote)
    n = len(text)
    while i < n and not text.startswith(quote, i):
        if text[i] in "\r\n" and len(quote) == 1:
            return -1
        if text[i] == "\\":  # an escaped character, or a line continued: \ then \r\n
            i += 3 if text.startswith("\r\n", i + 1) else 2
        else:
            i += 1
    return -1 if i >= n else i + len(quote)
