"""The ``moa batch`` file format, read and written as it streams: no file is held whole.

Input, JSON Lines: each line a JSON string (the prompt) or ``{"prompt": ..., "id": ...}``; the
id defaults to the prompt's 0-based position among the prompts; ids are unique. Output, JSON
Lines: one object per prompt as it finishes, with the id, the prompt, the result or error, the
seed, calls, tokens, cost, the prices it was costed at and the whole history. Lines are split
at ``\\n`` only, so prompts and answers may hold U+2028 and friends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .._client import unicode_error
from .._cost import Prices, cost
from .._history import History
from .._seeds import row_seed
from .common import UsageError, dumps, loads, short
from .options import saved_prices

__all__ = ("Done", "Item", "items", "read_done", "result_line")


@dataclass(slots=True)
class Item:
    """One prompt of a batch: its id as written to OUT, its line in the input, its seed."""

    id: Any
    prompt: str
    line: int
    seed: int | None = None


def _lines(stream: IO[bytes], where: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a JSON Lines stream: split at ``\\n`` (``\\r\\n`` too) and
    nothing else, decoded line by line."""
    for lineno, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{where} line {lineno}: not UTF-8 ({exc.reason})") from None
        yield lineno, text.removesuffix("\n").removesuffix("\r")


def _open(path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
    """The file to read, as bytes (``-``: stdin, which is left open)."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _item(raw: str, where: str, position: int) -> Item:
    """The prompt one input line gives (its id defaulting to ``position``); UsageError for a
    line that is not one."""
    try:
        value = loads(raw)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else short(str(exc), 80)
        raise UsageError(
            f"{where}: not JSON ({reason}); each line must be "
            '{"prompt": "...", "id": ...} or a JSON string'
        ) from None
    if isinstance(value, str):
        prompt, ident = value, position
    elif isinstance(value, dict) and "prompt" in value:
        prompt, ident = value["prompt"], value.get("id", position)
    else:
        raise UsageError(
            f'{where}: each line must be {{"prompt": "...", "id": ...}} or a JSON string, '
            f"got {short(raw, 60)}"
        )
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError(
            f"{where}: the prompt must be a non-empty string, got {short(repr(prompt), 60)}"
        )
    if (bad := unicode_error(prompt)) is not None:
        raise UsageError(f"{where}: the prompt is not valid Unicode: {bad}")
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        raise UsageError(
            f"{where}: the id must be a string or an integer, got {short(repr(ident), 60)}"
        )
    if isinstance(ident, str) and (bad := unicode_error(ident)) is not None:
        raise UsageError(f"{where}: the id is not valid Unicode: {bad}")
    return Item(ident, prompt, 0)


def items(path: str, seed: int | None) -> Iterator[Item]:
    """The prompts of the input file (``-``: stdin), validated as they are read, each with
    the seed ``moa.run_many(prompts, ids=ids, seed=seed)`` gives it: from ``seed`` and its id,
    so a prompt keeps its seed however the batch is resumed, reordered or split."""
    seen: dict[str, int] = {}
    with _open(path) as stream:
        for lineno, raw in _lines(stream, path):
            if not raw.strip():
                continue
            item = _item(raw, f"{path} line {lineno}", len(seen))
            key = json.dumps(item.id)
            if key in seen:
                raise UsageError(
                    f"{path} line {lineno}: id {item.id!r} is already used on line "
                    f"{seen[key]}; ids must be unique, as a resumed batch skips the ids done"
                )
            seen[key] = item.line = lineno
            if seed is not None:
                item.seed = row_seed(seed, item.id)
            yield item
    if not seen:
        raise UsageError(f"{path}: no prompts")


def digest(prompt: str) -> bytes:
    """What OUT's ids are checked against: a prompt's hash, not the prompt (flat memory)."""
    return hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(slots=True)
class Done:
    """What OUT already holds: the ids with a success (each with its prompt's digest), and
    how many failures it held (they run again)."""

    ids: dict[str, tuple[bytes, str]]  # the prompt's digest, and its start for messages
    failed: int = 0

    def check(self, item: Item, out: Path) -> bool:
        """Whether ``item`` is done; UsageError when OUT holds its id for another prompt."""
        held = self.ids.get(json.dumps(item.id))
        if held is None:
            return False
        if held[0] != digest(item.prompt):
            raise UsageError(
                f"-o {out} holds id {item.id!r} for another prompt ({held[1]!r}, not "
                f"{short(item.prompt, 40)!r}); an id must keep its prompt across resumed "
                "runs: write to another file, or give each prompt its id"
            )
        return True


def read_done(path: Path) -> Done:
    """What OUT holds, read line by line. OUT is rewritten (as it streams, into a file beside
    it) without its failed lines, without a last line cut off by a kill, and ending in a
    newline, so the next result starts a line of its own."""
    done = Done({})
    if not path.exists():
        return done
    tmp = path.with_name(path.name + ".tmp")
    dirty = cut = False
    with _open(str(path)) as stream, open(tmp, "w", encoding="utf-8") as keep:
        pending: tuple[int, Exception] | None = None
        for lineno, raw in _lines(stream, f"-o {path}"):
            if pending is not None:  # a bad line with more after it is not a cut-off last one
                _not_a_result(path, *pending)
            if not raw.strip():
                continue
            try:
                entry = loads(raw)
                if not isinstance(entry, dict) or "id" not in entry:
                    raise ValueError("not a result object")
            except ValueError as exc:
                pending, dirty = (lineno, exc), True
                continue
            if entry.get("error") is None:
                prompt = str(entry.get("prompt"))
                done.ids[json.dumps(entry["id"])] = (digest(prompt), short(prompt, 40))
                keep.write(raw + "\n")
            else:
                done.failed, dirty = done.failed + 1, True
        cut = pending is not None
        dirty = dirty or not _ends_with_newline(path)
    if cut:
        print(
            f"moa: {path}: dropped a truncated last line (a run interrupted mid-write); "
            "that prompt runs again",
            file=sys.stderr,
        )
    if dirty:
        os.replace(tmp, path)
    else:
        tmp.unlink()
    return done


def _not_a_result(path: Path, lineno: int, exc: Exception) -> None:
    raise UsageError(
        f"-o {path} line {lineno} is not a moa batch result ({exc}); fix or remove that "
        "line, or write to another file"
    )


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def result_line(
    item: Item,
    result: str | None,
    history: History | None,
    error: BaseException | None,
    prices: Prices,
) -> str:
    """The output line of one finished prompt (without its newline)."""
    c = cost(history, prices) if history is not None else None
    return dumps(
        {
            "id": item.id,
            "prompt": item.prompt,
            "result": result,
            "error": None if error is None else (str(error) or type(error).__name__),
            "seed": history.seed if history is not None else item.seed,
            "calls": history.total_calls if history is not None else 0,
            "input_tokens": history.input_tokens if history is not None else None,
            "output_tokens": history.output_tokens if history is not None else None,
            "cost": None if c is None else c.total,
            "prices": None if history is None else saved_prices(prices, history),
            "history": None if history is None else history.to_dict(),
        }
    )
