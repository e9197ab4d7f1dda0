"""A response cache in one SQLite file, for replaying and resuming runs.

An entry is keyed by the sha256 of a canonical JSON array: the key format version, the cache's
namespace, the model, the messages as ``[role, content]`` pairs, ``repr(float(temp))``,
``max_tokens`` and the sample index. The executor's sample index is the step's path in the
pipeline followed by the request's position among identical requests in that step (0, 1, ...):
Self-MoA sends the same prompt to the same model six times to get six different samples, and
without the position all six would be one entry, replayed as six copies of the first answer;
without the path, two steps (or two parallel branches) sending the same request would share
their samples. The namespace keeps clients apart: the same model name served by two
providers (or by the embedded model, where a name is only a label) is two sets of entries.

The file holds the key hash, the model, the answer, its token counts, the model's confidence
in it (its tokens' log-probabilities, summed, and how many) and when it was stored; never the
messages, so no prompt or secret in one reaches the disk through the cache. A file of the
first format (without confidence) is upgraded in place when opened to write, its answers kept.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from ._client import Reply
from ._response import Confidence
from .errors import CacheError

if TYPE_CHECKING:
    from ._contract import Identity

__all__ = ("Cache",)

MODES = ("rw", "replay", "record")
_KEY_FORMAT = 2  # bump when the key's inputs change, so old entries stop matching
_APPLICATION_ID = 0x6D6F6163  # b"moac" in the SQLite header: this file is a moa cache
_SCHEMA_VERSION = 2  # 2: the confidence columns; a file of version 1 is upgraded in place
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_S = 30.0
_SCHEMA = (
    "CREATE TABLE entries (key BLOB PRIMARY KEY, model TEXT NOT NULL, text TEXT NOT NULL,"
    " input_tokens INTEGER, output_tokens INTEGER, created_at REAL NOT NULL,"
    " logprob_sum REAL, logprob_tokens INTEGER) WITHOUT ROWID"
)
_UPGRADE = (  # version 1 -> 2
    "ALTER TABLE entries ADD COLUMN logprob_sum REAL",
    "ALTER TABLE entries ADD COLUMN logprob_tokens INTEGER",
)


def _key(namespace: str, identity: Identity, index: int | Sequence[int]) -> bytes:
    """The sha256 digest that names one request (its :attr:`~moa.steps.Request.identity`)
    and sample; equal inputs give equal keys in any process."""
    model, pairs, temp, max_tokens = identity
    sample = [int(index)] if isinstance(index, int) else [int(i) for i in index]
    canonical = json.dumps(
        [_KEY_FORMAT, namespace, model, pairs, repr(temp), int(max_tokens), sample],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("ascii")).digest()


def _identity(
    model: str, messages: Sequence[Mapping[str, str]], temp: float, max_tokens: int
) -> Identity:
    # As Request.identity makes it; for the get/put spelled out field by field.
    pairs = tuple((m["role"], m["content"]) for m in messages)
    return (model, pairs, float(temp) + 0.0, max_tokens)


class Cache:
    """A response cache in one SQLite file, shared safely by concurrent runs, threads and processes.

    ``mode`` is ``"rw"`` (serve hits, store new answers), ``"replay"`` (serve hits; the executor
    treats a miss as an error) or ``"record"`` (``get`` always misses, ``put`` overwrites).
    ``namespace`` is part of every key: give each client its own (``moa run --cache`` uses the
    provider and base URL), so one provider's answers are never served as another's.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, mode: str = "rw", namespace: str = ""
    ) -> None:
        if mode not in MODES:
            allowed = ", ".join(map(repr, MODES))
            raise ValueError(f"Cache mode must be one of {allowed}, not {mode!r}")
        if not isinstance(namespace, str):
            raise TypeError(f"Cache namespace must be a str, not {type(namespace).__name__}")
        self.namespace = namespace
        raw = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if not isinstance(raw, str):
            kind = type(path).__name__
            raise TypeError(f"Cache path must be a str or os.PathLike[str], not {kind}")
        self.path = os.path.abspath(raw)
        self.mode = mode
        self._lock = threading.Lock()  # one connection, shared by every thread that uses us
        self._conn: sqlite3.Connection | None = None
        self._owns = True  # a view (with_namespace) shares this one's connection
        self._version = _SCHEMA_VERSION  # a version-1 file replayed read-only stays one
        self._check_file()
        conn = self._connect()
        try:
            if mode == "replay":
                conn = self._open_recording(conn)
            else:
                self._open_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _connect(self, immutable: bool = False) -> sqlite3.Connection:
        if self.mode != "replay":
            return sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        # Replay only reads: a recording shipped read-only (a 0444 file in a 0555 folder, a
        # CI artefact) opens as one.
        uri = f"file:{urllib.parse.quote(self.path)}?mode=ro" + (
            "&immutable=1" if immutable else ""
        )
        return sqlite3.connect(
            uri, uri=True, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )

    def _open_recording(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """The read-only connection to replay from: ``conn``, or an immutable one where
        ``conn`` cannot read the file."""
        try:
            empty = self._inspect(conn)
        except sqlite3.OperationalError:
            # A WAL-mode file read where its -shm cannot be made (a read-only folder): read
            # it as immutable, which needs neither the -shm nor the -wal file.
            conn.close()
            conn = self._connect(immutable=True)
            try:
                empty = self._inspect(conn)
            except sqlite3.DatabaseError as exc:
                conn.close()
                self._raise_from(exc)
        except sqlite3.DatabaseError as exc:
            self._raise_from(exc)
        if empty:
            conn.close()
            self._unusable(
                "it is empty, so there is nothing to replay; record it first with "
                "mode='rw' or 'record'"
            )
        return conn

    def _check_file(self) -> None:
        # Creating the file ourselves sets its mode (SQLite copies it to -wal and -shm); an
        # existing file keeps its own. SQLite would treat a short non-SQLite file as empty and
        # write over it, so the header is checked here first. Replay never creates or writes.
        replay = self.mode == "replay"
        try:
            fd = os.open(self.path, os.O_RDONLY if replay else os.O_CREAT | os.O_RDWR, 0o600)
        except FileNotFoundError:
            parent = os.path.dirname(self.path)
            rule = (
                f"replay: there is no recording at {self.path!r}"
                if replay
                else f"cannot create the cache file: directory {parent!r} does not exist; create it"
            )
            raise FileNotFoundError(errno.ENOENT, rule, self.path) from None
        try:
            size = os.fstat(fd).st_size
            header = os.pread(fd, len(_SQLITE_MAGIC), 0)
        finally:
            os.close(fd)
        if size and header != _SQLITE_MAGIC:
            self._unusable("it is not an SQLite database")

    def _open_schema(self, conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                return self._open_schema_once(conn)
            except sqlite3.OperationalError as exc:
                # Processes opening a new, empty file at once race to write its first page, and
                # SQLite answers some losers with SQLITE_BUSY at once instead of waiting out the
                # busy timeout; opening is idempotent, so it is tried again until the deadline.
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    self._raise_from(exc)
                time.sleep(0.005)
            except sqlite3.DatabaseError as exc:
                self._raise_from(exc)

    def _open_schema_once(self, conn: sqlite3.Connection) -> None:
        # Inspect before switching to WAL, so a foreign SQLite file is left as it was; in one
        # transaction, so a concurrent opener's half-created schema is never seen.
        with _transaction(conn, "BEGIN"):
            empty = self._inspect(conn)
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            self._unusable("SQLite cannot use write-ahead logging on it")
        if empty or self._version < _SCHEMA_VERSION:
            with _transaction(conn, "BEGIN IMMEDIATE"):
                if self._inspect(conn):  # still empty now that we hold the write lock
                    conn.execute(_SCHEMA)
                    conn.execute(f"PRAGMA application_id={_APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                elif self._version < _SCHEMA_VERSION:  # an older file: its answers kept
                    for statement in _UPGRADE:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            self._version = _SCHEMA_VERSION
        conn.execute("PRAGMA synchronous=NORMAL")

    def _inspect(self, conn: sqlite3.Connection) -> bool:
        """True for an empty database, False for a moa cache of this format; else CacheError."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
        if app_id == 0 and version == 0 and not objects:
            return True
        if app_id != _APPLICATION_ID or objects != [("table", "entries")]:
            self._unusable("it is an SQLite database but not a moa cache")
        if version not in (1, _SCHEMA_VERSION):
            self._unusable(
                f"it is a moa cache of format {version}; this moa reads formats 1 and "
                f"{_SCHEMA_VERSION}"
            )
        self._version = version
        return False

    def _unusable(self, what: str) -> NoReturn:
        raise CacheError(
            f"cannot use {self.path!r} as a response cache: {what}; delete or move the file, "
            "or pass another path"
        )

    def _raise_from(self, exc: sqlite3.DatabaseError) -> NoReturn:
        if isinstance(exc, sqlite3.OperationalError):  # locked, disk full: not the file's fault
            raise CacheError(f"response cache {self.path!r}: {exc}") from exc
        self._unusable(f"SQLite reports {exc}")

    def _check_open(self) -> None:
        if self._conn is None:
            raise ValueError(f"Cache of {self.path!r} is closed; open a new Cache to use it")

    def _execute(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            self._check_open()
            assert self._conn is not None
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                self._raise_from(exc)

    def get(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        temp: float,
        max_tokens: int,
        index: int | Sequence[int],
    ) -> tuple[str, int | None, int | None] | None:
        """The stored ``(text, input_tokens, output_tokens)`` for this request, or None on a miss
        (always None in record mode). ``index`` names the sample: an int, or a sequence of
        ints (the executor passes the step's path and the position among identical requests).
        :meth:`lookup` gives the stored confidence too."""
        hit = self.lookup(_identity(model, messages, temp, max_tokens), index)
        return None if hit is None else (hit.text, hit.input_tokens, hit.output_tokens)

    def put(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        temp: float,
        max_tokens: int,
        index: int | Sequence[int],
        text: str,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        """Store the answer to this request, replacing any earlier one."""
        identity = _identity(model, messages, temp, max_tokens)
        self.store(identity, index, Reply(text, input_tokens, output_tokens))

    def lookup(self, identity: Identity, index: int | Sequence[int]) -> Reply | None:
        """:meth:`get` for a request's identity (``Request.identity``)."""
        if self.mode == "record":  # never serve: no need to look
            self._check_open()
            return None
        key = _key(self.namespace, identity, index)
        columns = "text, input_tokens, output_tokens" + (
            ", logprob_sum, logprob_tokens" if self._version >= 2 else ""
        )
        rows = self._execute(f"SELECT {columns} FROM entries WHERE key = ?", (key,))
        if not rows:
            return None
        text, input_tokens, output_tokens, *confidence = rows[0]
        known = confidence and confidence[1] is not None
        return Reply(text, input_tokens, output_tokens, Confidence(*confidence) if known else None)

    def store(self, identity: Identity, index: int | Sequence[int], reply: Reply) -> None:
        """:meth:`put` for a request's identity (``Request.identity``), its confidence too."""
        key = _key(self.namespace, identity, index)
        c = reply.confidence
        self._execute(
            "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                identity[0],
                reply.text,
                reply.input_tokens,
                reply.output_tokens,
                time.time(),
                None if c is None else c.logprob_sum,
                None if c is None else c.tokens,
            ),
        )

    def __len__(self) -> int:
        return int(self._execute("SELECT count(*) FROM entries")[0][0])

    def clear(self) -> None:
        """Delete every entry; the file stays a moa cache."""
        self._execute("DELETE FROM entries")

    def close(self) -> None:
        """Close the connection (a view's: let go of it, its cache's stays open); closing
        twice is harmless."""
        with self._lock:
            if self._conn is not None:
                if self._owns:
                    self._conn.close()
                self._conn = None

    def with_namespace(self, namespace: str) -> Cache:
        """This cache's file under another ``namespace``, through the same connection (no
        second connection to the file); closing the view leaves this cache open."""
        if not isinstance(namespace, str):
            raise TypeError(f"Cache namespace must be a str, not {type(namespace).__name__}")
        self._check_open()
        view = copy.copy(self)
        view.namespace = namespace
        view._owns = False
        return view

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        shown = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"Cache({self.path!r}, mode={self.mode!r}{shown})"


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    conn.execute(begin)
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
