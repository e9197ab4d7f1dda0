"""What every command shares: the usage error, closing a client (the core's, re-exported),
short text, and JSON Lines read and written safely."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .._client import close_client, unicode_error

__all__ = (
    "UsageError",
    "check_writable",
    "close_client",
    "dumps",
    "jsonl_lines",
    "loads",
    "short",
    "tokens",
)


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


def short(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with ``...``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 3)] + "..."


def tokens(n: int | None) -> str:
    return "unknown" if n is None else str(n)


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text: split at ``\\n`` only (``\\r\\n`` too), never at the
    other characters ``str.splitlines`` takes for line ends (U+2028, U+0085, ...), which JSON
    writes raw inside strings."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def dumps(doc: Any, indent: int | None = None) -> str:
    """JSON that is always valid UTF-8: text as it is, but a model's reply holding a lone
    surrogate (which UTF-8 cannot encode) is written as ``\\ud800`` escapes, which read back
    the same, rather than fail the write and lose the line."""
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    return text if unicode_error(text) is None else json.dumps(doc, indent=indent)


def loads(raw: str) -> Any:
    """``json.loads``, with the errors Python's own limits raise (an integer of over 4,300
    digits, nesting deeper than the recursion limit) reported as JSON errors."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        # Python's own message names a limit the user never set; say what is in the line.
        raise ValueError(
            f"it holds a number of more than {sys.get_int_max_str_digits():,} digits (an id "
            "is a string or a 64-bit integer, a seed a 64-bit integer)"
        ) from None


def check_writable(option: str, path: str | None) -> None:
    """A file the command will write after the run: a missing folder is found before any
    call is paid for, not after."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder, not a file")
