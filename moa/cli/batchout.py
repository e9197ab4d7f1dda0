"""Where ``moa batch`` writes: OUT, as JSON Lines or as a folder of Parquet parts, and what a
rerun reads back from it to resume.

OUT is moa's own and says which batch made it: each JSON line (each Parquet part's metadata)
carries ``batch``, the pipeline, the seed and the client that made it. A rerun resumes only
the same batch (another pipeline or seed is refused, saying what differs), and a file that is
not a moa batch output (the input itself, any other JSON Lines) is refused and never written.

OUT is only ever appended to: a failed prompt's line stays, and the rerun that answers it adds
a line after it (an id's last line is its result; a success is never followed by another). A
line cut off by a kill is the one thing removed. While a batch runs it holds an OS lock on OUT
(``flock``), so a second batch on the same OUT is refused instead of running the same prompts
twice. OUT must be a regular file or a new path: a FIFO, a device (``/dev/stdout``,
``/dev/full``) or a folder is refused before anything is read.

A Parquet OUT is a folder whose name ends in ``.parquet``, of parts written (to a temporary
name, then renamed) every 1,000 results or 10 seconds and at the end, so a kill loses at most
the results since the last part; they run again on resume. Text is stored as UTF-8: a lone
surrogate in a reply is U+FFFD in the ``result`` column (the ``history`` JSON keeps it).

A row given as a conversation keeps it under ``messages`` (a line's field, a Parquet column;
parts written before that column resume as they are); its ``prompt`` is the last turn.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from .._client import utf8_text
from .._conversation import messages_of
from .._cost import Prices, cost
from .._history import History
from .batchfile import Item, pyarrow_module
from .common import UsageError, dumps, loads, short
from .options import saved_prices

__all__ = ("BatchId", "Done", "Output", "digest", "open_output", "result_record")


@dataclass(frozen=True, slots=True)
class BatchId:
    """What makes a batch's results what they are: the pipeline's expression, the seed, and
    the client that answered (its provider or base URL)."""

    pipeline: str
    seed: int | None
    client: str

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "seed": self.seed, "client": self.client}

    def differences(self, held: object) -> list[str]:
        """How ``held`` (a ``batch`` read from OUT) differs from this batch; empty when the
        same. Anything that is not a batch's identity differs in every field."""
        mine = self.to_dict()
        theirs = held if isinstance(held, dict) else {}
        return [
            f"{k}: {short(repr(theirs.get(k)), 80)} there, {short(repr(v), 80)} here"
            for k, v in mine.items()
            if theirs.get(k) != v
        ]


def digest(prompt: str, messages: Sequence[Mapping[str, str]] | None = None) -> bytes:
    """What OUT's ids are checked against: a hash of what the run reads, not the text (flat
    memory). With ``messages`` (a conversation, ``prompt`` its last), the hash covers every
    turn; one of a single message is its prompt, as the run reads it so."""
    import hashlib

    if messages is None or len(messages) <= 1:
        return hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    # JSON keeps the turns apart; the personalisation keeps a conversation's hash from ever
    # being a prompt's.
    turns = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    data = turns.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16, person=b"moa.messages").digest()


@dataclass(slots=True)
class Done:
    """What OUT already holds: the ids with a success (each with its input's digest and its
    prompt, cut short, to name it), and how many failures it held (they run again)."""

    ids: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    failed: int = 0
    id_type: type | None = None  # the type of the ids OUT holds, when one is fixed

    def add(
        self, ident: Any, prompt: str, ok: bool, messages: Sequence[Mapping[str, str]] | None = None
    ) -> None:
        key = json.dumps(ident)
        if ok:
            self.ids[key] = (digest(prompt, messages), short(prompt, 40))
        elif key not in self.ids:
            self.failed += 1

    def check(self, item: Item, out: Path) -> bool:
        """Whether ``item`` is done; UsageError when OUT holds its id for another prompt (or
        another conversation: an earlier turn changed)."""
        held = self.ids.get(json.dumps(item.id))
        if held is None:
            return False
        if held[0] != digest(item.prompt, item.messages):
            mine = short(item.prompt, 40)
            which = (
                f"({held[1]!r}, not {mine!r})"
                if held[1] != mine
                else f"(not {mine!r} as it is now: its text or its earlier turns differ)"
            )
            raise UsageError(
                f"-o {out} holds id {item.id!r} for another prompt {which}; an id must keep "
                "its prompt across resumed runs: write to another file, or give each prompt "
                "its id"
            )
        return True


def result_record(
    item: Item,
    result: str | None,
    history: History | None,
    error: str | None,
    prices: Prices,
    seed: int | None = None,
) -> dict[str, Any]:
    """The output record of one finished prompt; ``error`` is its text, None on success. A
    row given as a conversation keeps it under ``messages`` (``prompt`` is its last turn)."""
    c = cost(history, prices) if history is not None else None
    asked: dict[str, Any] = {"id": item.id, "prompt": item.prompt}
    if item.messages is not None:  # a conversation's row: its turns, the prompt last
        asked["messages"] = [dict(m) for m in item.messages]
    return asked | {
        "result": result,
        "error": error,
        "seed": history.seed if history is not None else seed if seed is not None else item.seed,
        "calls": history.total_calls if history is not None else 0,
        "input_tokens": history.input_tokens if history is not None else None,
        "output_tokens": history.output_tokens if history is not None else None,
        "cost": None if c is None else c.total,
        "prices": None if history is None else saved_prices(prices, history),
        "history": None if history is None else history.to_dict(),
    }


class Output(Protocol):
    """OUT, opened and locked: what it held, and where each new record goes."""

    done: Done

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _lock(fd: int, out: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"-o {out}: another moa batch is writing it now; wait for that one to finish, "
            "or write to another file"
        ) from None


def _full(out: Path, exc: OSError, saved: int, lost: int) -> UsageError:
    why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
    return UsageError(
        f"-o {out}: cannot write ({why}); the batch stopped: {saved} results are saved, "
        f"{lost} not, and a rerun resumes after the saved ones"
    )


class JsonlOutput:
    """OUT as JSON Lines: a line per record, flushed, so a kill loses only what was running."""

    def __init__(self, path: Path, batch: BatchId) -> None:
        self.path, self.batch, self.saved = path, batch, 0
        self.created = not os.path.lexists(path)
        try:
            # Non-blocking, so a FIFO does not hang the open; then only a regular file is used.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise UsageError(f"-o {path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UsageError(
                f"-o {path}: not a regular file (a FIFO, a device or a terminal); moa batch "
                "reads OUT back to resume, so it must be a file or a new path"
            )
        os.set_blocking(fd, True)
        _lock(fd, path)
        self.file: IO[bytes] = os.fdopen(fd, "r+b")
        try:
            self.done = self._read()
        except BaseException:
            self.file.close()
            raise

    def _read(self) -> Done:
        """What OUT holds; a last line cut off by a kill is cut away (the one change)."""
        done, good = Done(), 0
        self.file.seek(0)
        for lineno, raw in enumerate(self.file, 1):
            if not raw.endswith(b"\n"):  # the last line, cut off or never ended
                try:
                    entry = self._entry(raw, lineno)
                except UsageError:
                    print(
                        f"moa: {self.path}: dropped a truncated last line (a run interrupted "
                        "mid-write); that prompt runs again",
                        file=sys.stderr,
                    )
                    self.file.truncate(good)
                    break
                self.file.write(b"\n")
                raw += b"\n"
            else:
                entry = self._entry(raw, lineno)
            if entry is not None:
                done.add(
                    entry["id"], str(entry["prompt"]), entry["error"] is None, entry.get("messages")
                )
            good += len(raw)
        self.file.seek(0, os.SEEK_END)
        return done

    def _entry(self, raw: bytes, lineno: int) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        try:
            entry = loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _not_ours(
                self.path, f"line {lineno} is not JSON ({short(str(exc), 60)})"
            ) from None
        if not isinstance(entry, dict) or not {"id", "prompt", "error", "batch"} <= entry.keys():
            raise _not_ours(self.path, f"line {lineno} is not a moa batch result")
        if entry.get("messages") is not None:
            try:
                messages_of(entry["messages"])
            except (TypeError, ValueError) as exc:
                raise _not_ours(self.path, f"line {lineno}: {short(str(exc), 80)}") from None
        differ = self.batch.differences(entry["batch"])
        if differ:
            raise UsageError(
                f"-o {self.path} holds the results of another batch (line {lineno}): "
                f"{'; '.join(differ)}; resume with the same pipeline, --seed and provider, "
                "or write to another file"
            )
        return entry

    def write(self, record: dict[str, Any]) -> None:
        line = dumps({**record, "batch": self.batch.to_dict()}) + "\n"
        try:
            self._append(line.encode("utf-8"))
        except OSError as exc:
            raise _full(self.path, exc, self.saved, 1) from None
        self.saved += 1

    def _append(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()

    def close(self) -> None:
        # A batch that stopped before its first result leaves no empty file it made.
        if self.created and self.saved == 0 and self.file.seek(0, os.SEEK_END) == 0:
            self.path.unlink(missing_ok=True)
        self.file.close()  # the lock goes with the descriptor


def _not_ours(path: Path, why: str) -> UsageError:
    return UsageError(
        f"-o {path} is not a moa batch output ({why}); moa batch never writes over such a "
        "file: write to another file"
    )


#: A Parquet OUT's columns, in order; ``prices`` and ``history`` hold JSON text, ``messages`` a
#: conversation's turns (null for a row given a prompt; absent from parts older than it).
PARQUET_COLUMNS = (
    "id", "prompt", "messages", "result", "error", "seed", "calls", "input_tokens",
    "output_tokens", "cost", "prices", "history",
)  # fmt: skip
_BATCH_KEY = b"moa.batch"


class ParquetOutput:
    """OUT as a folder of Parquet parts, each written whole (to a temporary name, then
    renamed) every ``rows`` records or ``seconds`` seconds and on close; the batch's identity
    in each part's metadata; ``_moa.lock`` in the folder holds the lock."""

    def __init__(self, path: Path, batch: BatchId, rows: int = 1000, seconds: float = 10.0) -> None:
        self.pa = pyarrow_module("lib")
        self.pq = pyarrow_module("parquet")
        self.path, self.batch, self.rows, self.seconds = path, batch, rows, seconds
        self.saved = 0
        if path.exists() and not path.is_dir():
            raise UsageError(
                f"-o {path}: a Parquet output is a folder of parts, and this is a file"
            )
        self.created = not path.exists()
        try:
            path.mkdir(exist_ok=True)
            self.lock = os.open(path / "_moa.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"-o {path}: {exc.strerror or exc}") from None
        _lock(self.lock, path)
        self.part, self.id_type, self.done = self._read()
        self.buffer: list[dict[str, Any]] = []
        self.since = time.monotonic()

    def _read(self) -> tuple[int, Any, Done]:
        """What the parts hold (in part order: a later row of an id is its result), the next
        part's number and the id column's type; temporary files a kill left are removed."""
        for tmp in self.path.glob("part-*.tmp"):
            tmp.unlink()
        parts = sorted(self.path.glob("part-*.parquet"), key=_part_number)
        others = [p.name for p in self.path.iterdir() if p.name != "_moa.lock" and p not in parts]
        if others:
            raise _not_ours(self.path, f"it holds {short(', '.join(sorted(others)), 80)}")
        done, id_type = Done(), None
        for part in parts:
            try:
                table = self.pq.read_table(part)
            except (OSError, ValueError) as exc:
                raise _not_ours(part, f"not Parquet: {short(str(exc), 80)}") from None
            held = json.loads((table.schema.metadata or {}).get(_BATCH_KEY, b"null"))
            if held is None:
                raise _not_ours(part, "no moa batch metadata")
            differ = self.batch.differences(held)
            if differ:
                raise UsageError(
                    f"-o {part} holds the results of another batch: {'; '.join(differ)}; "
                    "resume with the same pipeline, --seed and provider, or write elsewhere"
                )
            id_type = table.schema.field("id").type
            done.id_type = int if str(id_type).startswith("int") else str
            turns = (
                table.column("messages").to_pylist()
                if "messages" in table.column_names
                else [None] * table.num_rows
            )
            for ident, prompt, error, messages in zip(
                table.column("id").to_pylist(),
                table.column("prompt").to_pylist(),
                table.column("error").to_pylist(),
                turns,
                strict=True,
            ):
                done.add(ident, prompt, error is None, messages)
        return 1 + (_part_number(parts[-1]) if parts else -1), id_type, done

    def write(self, record: dict[str, Any]) -> None:
        row = dict(record)
        for name in ("prices", "history"):
            row[name] = None if row[name] is None else dumps(row[name])
        for name in ("result", "error"):
            row[name] = None if row[name] is None else utf8_text(row[name])
        self.buffer.append(row)
        if len(self.buffer) >= self.rows or time.monotonic() - self.since >= self.seconds:
            self.flush()

    def _schema(self) -> Any:
        pa = self.pa
        if self.id_type is None:
            self.id_type = pa.int64() if isinstance(self.buffer[0]["id"], int) else pa.string()
        text, whole = pa.string(), pa.int64()
        turns = pa.list_(pa.struct([("role", text), ("content", text)]))
        types = (
            self.id_type,
            text,
            turns,
            text,
            text,
            whole,
            whole,
            whole,
            whole,
            pa.float64(),
            text,
            text,
        )
        schema = pa.schema(list(zip(PARQUET_COLUMNS, types, strict=True)))
        return schema.with_metadata({_BATCH_KEY: json.dumps(self.batch.to_dict()).encode()})

    def _table(self, schema: Any) -> Any:
        """The buffer as a table; a row Arrow cannot hold is kept as a failed row saying why."""
        try:
            return self.pa.Table.from_pylist(self.buffer, schema=schema)
        except (self.pa.ArrowInvalid, self.pa.ArrowTypeError, OverflowError):
            pass
        rows = []
        for row in self.buffer:
            try:
                self.pa.Table.from_pylist([row], schema=schema)
                rows.append(row)
            except (self.pa.ArrowInvalid, self.pa.ArrowTypeError, OverflowError) as exc:
                failed = {name: None for name in PARQUET_COLUMNS} | {
                    "id": row["id"],
                    "prompt": row["prompt"],
                    "messages": row.get("messages"),
                }
                failed["error"] = f"the result cannot be stored in Parquet: {short(str(exc), 200)}"
                rows.append(failed)
        return self.pa.Table.from_pylist(rows, schema=schema)

    def flush(self) -> None:
        self.since = time.monotonic()
        if not self.buffer:
            return
        table = self._table(self._schema())
        final = self.path / f"part-{self.part:06d}.parquet"
        tmp = final.with_suffix(".tmp")
        try:
            self.pq.write_table(table, tmp)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _full(self.path, exc, self.saved, len(self.buffer)) from None
        self.saved += len(self.buffer)
        self.part += 1
        self.buffer.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.created and self.part == 0:  # nothing written: no folder left behind
                (self.path / "_moa.lock").unlink(missing_ok=True)
                self.path.rmdir()
            os.close(self.lock)


def _part_number(part: Path) -> int:
    digits = part.stem.removeprefix("part-")
    return int(digits) if digits.isdigit() else -1


def is_parquet_output(path: Path) -> bool:
    """Whether OUT is Parquet: its name ends in ``.parquet``. A folder without that name is
    refused (it would otherwise become one without a word)."""
    if str(path).endswith(".parquet"):
        return True
    if path.is_dir():
        raise UsageError(
            f"-o {path}: is a folder; a JSON Lines OUT is a file, and a Parquet OUT a folder "
            "whose name ends in .parquet"
        )
    return False


def open_output(path: Path, batch: BatchId) -> Output:
    """OUT opened and locked, with what it already holds read."""
    if not path.parent.resolve().is_dir():
        raise UsageError(f"-o {path}: folder {str(path.parent)!r} does not exist")
    if is_parquet_output(path):
        return ParquetOutput(path, batch)
    return JsonlOutput(path, batch)
