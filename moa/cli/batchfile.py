"""The ``moa batch`` input, read as it streams: no file is held whole.

JSON Lines: each line a JSON string (the prompt), ``{"prompt": ..., "id": ...}``, or
``{"messages": [...], "id": ...}`` (a conversation: ``{"role", "content"}`` messages whose last
is the user's question, as ``moa.run`` takes one); the id defaults to the prompt's 0-based
position among the prompts; ids are unique, a str or a 64-bit int. Lines are split at ``\\n``
only, so prompts may hold U+2028 and friends. Parquet (with pyarrow, which ``moa-dsl[ray]``
installs): a ``.parquet`` file or a folder of them, with a ``prompt`` column, a ``messages``
column (a list of ``role``, ``content`` structs) or both (each row fills one), and an optional
``id`` column. Where results go: :mod:`moa.cli.batchout`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .._bounds import safe_repr
from .._client import unicode_error
from .._conversation import Prompt, messages_of
from .._seeds import check_id, row_seed
from .common import UsageError, loads, short

__all__ = ("Item", "is_parquet_input", "items", "pyarrow_module")


@dataclass(slots=True)
class Item:
    """One prompt of a batch: its id as written to OUT, its question, its line in the input,
    its seed, and the whole conversation when the row gave one (``messages``, the question
    last)."""

    id: Any
    prompt: str
    line: int
    seed: int | None = None
    messages: tuple[dict[str, str], ...] | None = None

    @property
    def asked(self) -> Prompt:
        """What the run is given: the conversation, else the prompt."""
        return self.prompt if self.messages is None else self.messages


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


def _json_line(raw: str, where: str) -> Any:
    try:
        return loads(raw)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else short(str(exc), 200)
        raise UsageError(f"{where}: not JSON ({reason}); each line must be {SHAPES}") from None


#: What an input line may be, for the messages that refuse one.
SHAPES = '{"prompt": "...", "id": ...}, {"messages": [...], "id": ...} or a JSON string'


def _item(value: Any, raw: str, where: str, position: int) -> Item:
    """The prompt one input row gives (its id defaulting to ``position``); UsageError for a
    row that is not one. ``raw`` is the row as written, for the message."""
    messages = None
    if isinstance(value, str):
        prompt, ident = value, position
    elif isinstance(value, dict) and ("prompt" in value or "messages" in value):
        if "prompt" in value and "messages" in value:
            raise UsageError(
                f"{where}: give a prompt or messages, not both (the messages' last is the prompt)"
            )
        ident = value.get("id", position)
        if "messages" in value:
            messages = _conversation(value["messages"], where)
            prompt = messages[-1]["content"]
        else:
            prompt = value["prompt"]
    else:
        raise UsageError(f"{where}: each line must be {SHAPES}, got {short(raw, 60)}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError(
            f"{where}: the prompt must be a non-empty string, got {short(repr(prompt), 60)}"
        )
    if (bad := unicode_error(prompt)) is not None:
        raise UsageError(f"{where}: the prompt is not valid Unicode: {bad}")
    try:
        check_id("moa batch", "id", ident)
    except (TypeError, ValueError):
        raise UsageError(
            f"{where}: the id must be a string or an integer of 64 bits, got "
            f"{short(safe_repr(ident), 60)}"
        ) from None
    if isinstance(ident, str) and (bad := unicode_error(ident)) is not None:
        raise UsageError(f"{where}: the id is not valid Unicode: {bad}")
    return Item(ident, prompt, 0, messages=messages)


def _conversation(value: Any, where: str) -> tuple[dict[str, str], ...]:
    """A row's ``messages``, checked as ``moa.run`` checks a conversation, as plain dicts (to
    write to OUT and to send to Ray)."""
    try:
        return tuple(dict(m) for m in messages_of(value))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {short(str(exc), 300)}") from None


def items(path: str, seed: int | None) -> Iterator[Item]:
    """The prompts of the input file (``-``: stdin), validated as they are read, each with
    the seed ``moa.run_many(prompts, ids=ids, seed=seed)`` gives it: from ``seed`` and its id,
    so a prompt keeps its seed however the batch is resumed, reordered or split."""
    seen: dict[str, int] = {}
    kind = "row" if is_parquet_input(path) else "line"
    for lineno, value, raw in _rows(path):
        item = _item(value, raw, f"{path} {kind} {lineno}", len(seen))
        key = json.dumps(item.id)
        if key in seen:
            raise UsageError(
                f"{path} {kind} {lineno}: id {item.id!r} is already used on {kind} "
                f"{seen[key]}; ids must be unique, as a resumed batch skips the ids done"
            )
        seen[key] = item.line = lineno
        if seed is not None:
            item.seed = row_seed(seed, item.id)
        yield item
    if not seen:
        raise UsageError(f"{path}: no prompts")


def is_parquet_input(path: str | Path) -> bool:
    """Whether an input is Parquet: a ``.parquet`` name, or a folder (of Parquet files)."""
    return str(path).endswith(".parquet") or (str(path) != "-" and os.path.isdir(path))


def _rows(path: str) -> Iterator[tuple[int, Any, str]]:
    """(line or row number, value, the row as written) of the input, as it is read."""
    if is_parquet_input(path):
        yield from _parquet_rows(path)
        return
    with _open(path) as stream:
        for lineno, raw in _lines(stream, path):
            if raw.strip():
                yield lineno, _json_line(raw, f"{path} line {lineno}"), raw


def _parquet_rows(path: str) -> Iterator[tuple[int, Any, str]]:
    pa_dataset = pyarrow_module("dataset")
    try:
        data = pa_dataset.dataset(path, format="parquet")
        names = set(data.schema.names)
        if not {"prompt", "messages"} & names:
            raise UsageError(f"{path}: no 'prompt' column, nor 'messages' (it has {sorted(names)})")
        batches = data.to_batches(columns=[c for c in ("prompt", "messages", "id") if c in names])
        both = {"prompt", "messages"} <= names  # then each row fills one, the other null
        row = 0
        for batch in batches:
            for value in batch.to_pylist():
                row += 1
                if both:
                    value = {k: v for k, v in value.items() if k == "id" or v is not None}
                if "id" in value and value["id"] is None:
                    # One null among ids would fall back to its position and could meet another
                    # row's id: every row of an id column names itself.
                    raise UsageError(
                        f"{path} row {row}: the id is null; give every row an id, or drop the "
                        "id column (then a row's id is its position)"
                    )
                yield row, value, short(repr(value), 60)
    except (OSError, ValueError) as exc:  # pyarrow's errors are OSError and ValueError kinds
        raise UsageError(f"{path}: not a Parquet input: {short(str(exc), 200)}") from None


def pyarrow_module(module: str) -> Any:
    """``pyarrow.<module>``, or the install command."""
    try:
        return importlib.import_module(f"pyarrow.{module}")
    except ImportError:
        raise UsageError(
            "Parquet files need pyarrow: pip install pyarrow (moa-dsl[ray] has it)"
        ) from None
