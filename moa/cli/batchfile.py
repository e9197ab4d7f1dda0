"""The ``moa batch`` file formats, read and written as they stream: no file is held whole.

Input, JSON Lines: each line a JSON string (the prompt) or ``{"prompt": ..., "id": ...}``; the
id defaults to the prompt's 0-based position among the prompts; ids are unique. Output, JSON
Lines: one object per prompt as it finishes, with the id, the prompt, the result or error, the
seed, calls, tokens, cost, the prices it was costed at and the whole history. Lines are split
at ``\\n`` only, so prompts and answers may hold U+2028 and friends.

Parquet (with pyarrow, which ``moa-dsl[ray]`` installs): an input ``.parquet`` file or folder
with a ``prompt`` column and an optional ``id`` column; an output ``OUT.parquet`` is a folder of
part files (``pandas.read_parquet`` and ``ray.data.read_parquet`` read it whole) with the
JSON Lines fields as columns, ``prices`` and ``history`` as JSON text. A part is written
(atomically) every 1,000 results or 10 seconds and when the batch ends, so a killed batch
loses at most the results since the last part; they run again on resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from .._client import unicode_error
from .._cost import Prices, cost
from .._history import History
from .._seeds import row_seed
from .common import UsageError, dumps, loads, short
from .options import saved_prices

__all__ = (
    "Done",
    "Item",
    "Sink",
    "error_text",
    "is_parquet",
    "items",
    "open_sink",
    "read_done",
    "result_line",
    "result_record",
)


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


def _json_line(raw: str, where: str) -> Any:
    try:
        return loads(raw)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else short(str(exc), 80)
        raise UsageError(
            f"{where}: not JSON ({reason}); each line must be "
            '{"prompt": "...", "id": ...} or a JSON string'
        ) from None


def _item(value: Any, raw: str, where: str, position: int) -> Item:
    """The prompt one input row gives (its id defaulting to ``position``); UsageError for a
    row that is not one. ``raw`` is the row as written, for the message."""
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
    kind = "row" if is_parquet(path) else "line"
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


def is_parquet(path: str | Path) -> bool:
    """Whether a batch file is Parquet: a ``.parquet`` name, or an input folder."""
    return str(path).endswith(".parquet") or (str(path) != "-" and os.path.isdir(path))


def _rows(path: str) -> Iterator[tuple[int, Any, str]]:
    """(line or row number, value, the row as written) of the input, as it is read."""
    if is_parquet(path):
        yield from _parquet_rows(path)
        return
    with _open(path) as stream:
        for lineno, raw in _lines(stream, path):
            if raw.strip():
                yield lineno, _json_line(raw, f"{path} line {lineno}"), raw


def _parquet_rows(path: str) -> Iterator[tuple[int, Any, str]]:
    pa_dataset = _pyarrow("dataset")
    try:
        data = pa_dataset.dataset(path, format="parquet")
        names = set(data.schema.names)
        if "prompt" not in names:
            raise UsageError(f"{path}: no 'prompt' column (it has {sorted(names)})")
        batches = data.to_batches(columns=[c for c in ("prompt", "id") if c in names])
        row = 0
        for batch in batches:
            for value in batch.to_pylist():
                row += 1
                if "id" in value and value["id"] is None:
                    del value["id"]  # a missing id is the row's position, as in JSON Lines
                yield row, value, short(repr(value), 60)
    except (OSError, ValueError) as exc:  # pyarrow's errors are OSError and ValueError kinds
        raise UsageError(f"{path}: not a Parquet input: {short(str(exc), 200)}") from None


def _pyarrow(module: str) -> Any:
    """``pyarrow.<module>``, or the install command."""
    try:
        return importlib.import_module(f"pyarrow.{module}")
    except ImportError:
        raise UsageError(
            "Parquet files need pyarrow: pip install pyarrow (moa-dsl[ray] has it)"
        ) from None


def digest(prompt: str) -> bytes:
    """What OUT's ids are checked against: a prompt's hash, not the prompt (flat memory)."""
    return hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(slots=True)
class Done:
    """What OUT already holds: the ids with a success (each with its prompt's digest), and
    how many failures it held (they run again)."""

    ids: dict[str, tuple[bytes, str]]  # the prompt's digest, and its start for messages
    failed: int = 0
    id_type: type | None = None  # a Parquet OUT's id column: int or str

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
    """What OUT holds (a Parquet OUT: see :func:`_read_done_parquet`), read line by line. OUT is rewritten (as it streams, into a file beside
    it) without its failed lines, without a last line cut off by a kill, and ending in a
    newline, so the next result starts a line of its own."""
    if is_parquet(path):
        return _read_done_parquet(path)
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


def result_record(
    item: Item,
    result: str | None,
    history: History | None,
    error: str | None,
    prices: Prices,
) -> dict[str, Any]:
    """The output record of one finished prompt; ``error`` is its text, None on success."""
    c = cost(history, prices) if history is not None else None
    return {
        "id": item.id,
        "prompt": item.prompt,
        "result": result,
        "error": error,
        "seed": history.seed if history is not None else item.seed,
        "calls": history.total_calls if history is not None else 0,
        "input_tokens": history.input_tokens if history is not None else None,
        "output_tokens": history.output_tokens if history is not None else None,
        "cost": None if c is None else c.total,
        "prices": None if history is None else saved_prices(prices, history),
        "history": None if history is None else history.to_dict(),
    }


def error_text(error: BaseException) -> str:
    """How a failed prompt's error is written: its message (its type when it has none)."""
    return str(error) or type(error).__name__


def result_line(
    item: Item,
    result: str | None,
    history: History | None,
    error: BaseException | None,
    prices: Prices,
) -> str:
    """The output line of one finished prompt (without its newline)."""
    text = None if error is None else error_text(error)
    return dumps(result_record(item, result, history, text, prices))


class Sink(Protocol):
    """Where a batch's records go as they finish."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """OUT as JSON Lines: a line per record, flushed, so a kill loses only what was running."""

    def __init__(self, path: Path) -> None:
        try:
            self.file = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"-o {path}: {exc}") from None

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


#: A Parquet OUT's columns, in order; ``prices`` and ``history`` hold JSON text.
PARQUET_COLUMNS = (
    "id", "prompt", "result", "error", "seed", "calls", "input_tokens", "output_tokens", "cost",
    "prices", "history",
)  # fmt: skip


class ParquetSink:
    """OUT as a folder of Parquet parts, each written whole (to a temporary name, then renamed)
    every ``rows`` records or ``seconds`` seconds and on close."""

    def __init__(self, path: Path, rows: int = 1000, seconds: float = 10.0) -> None:
        self.pa = _pyarrow("lib")
        self.pq = _pyarrow("parquet")
        self.path, self.rows, self.seconds = path, rows, seconds
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            raise UsageError(f"-o {path}: {exc}") from None
        parts = sorted(path.glob("part-*.parquet"), key=_part_number)
        self.part = 1 + (_part_number(parts[-1]) if parts else -1)
        # Every part has one schema (a part of failures alone would otherwise type its result
        # column as null); the id's type is the one OUT already holds, else the first id's.
        self.id_type = self.pq.read_schema(parts[-1]).field("id").type if parts else None
        self.buffer: list[dict[str, Any]] = []
        self.since = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        row = dict(record)
        for name in ("prices", "history"):
            row[name] = None if row[name] is None else dumps(row[name])
        self.buffer.append(row)
        if len(self.buffer) >= self.rows or time.monotonic() - self.since >= self.seconds:
            self.flush()

    def flush(self) -> None:
        self.since = time.monotonic()
        if not self.buffer:
            return
        pa = self.pa
        if self.id_type is None:
            self.id_type = pa.int64() if isinstance(self.buffer[0]["id"], int) else pa.string()
        text, whole = pa.string(), pa.int64()
        types = (self.id_type, text, text, text, whole, whole, whole, whole, pa.float64())
        schema = pa.schema(list(zip(PARQUET_COLUMNS, (*types, text, text), strict=True)))
        try:
            table = pa.Table.from_pylist(self.buffer, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise UsageError(
                f"-o {self.path}: Parquet needs every id of one type (all strings or all "
                f"integers): {short(str(exc), 120)}"
            ) from None
        final = self.path / f"part-{self.part:06d}.parquet"
        tmp = final.with_suffix(".tmp")
        self.pq.write_table(table, tmp)
        os.replace(tmp, final)
        self.part += 1
        self.buffer.clear()

    def close(self) -> None:
        self.flush()


def open_sink(path: Path) -> Sink:
    return ParquetSink(path) if is_parquet(path) else JsonlSink(path)


def _part_number(part: Path) -> int:
    digits = part.stem.removeprefix("part-")
    return int(digits) if digits.isdigit() else -1


def _read_done_parquet(path: Path) -> Done:
    """What a Parquet OUT holds; a part holding failures is rewritten without them, and
    temporary files a kill left are removed."""
    done = Done({})
    if not path.exists():
        return done
    if not path.is_dir():
        raise UsageError(f"-o {path}: a Parquet output is a folder of parts, and this is a file")
    pq = _pyarrow("parquet")
    compute = _pyarrow("compute")
    for tmp in path.glob("part-*.tmp"):
        tmp.unlink()
    for part in sorted(path.glob("part-*.parquet")):
        try:
            table = pq.read_table(part)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"-o {part} is not a moa batch part ({short(str(exc), 120)}); remove it, or "
                "write to another folder"
            ) from None
        missing = {"id", "prompt", "error"} - set(table.column_names)
        if missing:
            raise UsageError(f"-o {part} is not a moa batch part (no {sorted(missing)} column)")
        done.id_type = int if str(table.schema.field("id").type).startswith("int") else str
        failed = table.column("error").is_valid()
        n_failed = compute.sum(failed).as_py() or 0
        if n_failed:
            table = table.filter(compute.invert(failed))
            done.failed += n_failed
            tmp = part.with_suffix(".tmp")
            pq.write_table(table, tmp)
            os.replace(tmp, part)
        for ident, prompt in zip(
            table.column("id").to_pylist(), table.column("prompt").to_pylist(), strict=True
        ):
            done.ids[json.dumps(ident)] = (digest(prompt), short(prompt, 40))
    return done
