"""The response cache: keying, persistence, file safety, sharing across threads and processes."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from moa._cache import Cache
from moa.errors import CacheError, CacheMissError, MoaError

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
REQ = ("gpt-x", MSGS, 0.7, 256, 0)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cache.sqlite"


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_round_trip(db: Path) -> None:
    with Cache(db) as cache:
        assert cache.get(*REQ) is None
        cache.put(*REQ, "hello", 12, 3)
        assert cache.get(*REQ) == ("hello", 12, 3)
        assert len(cache) == 1


def test_none_token_counts_round_trip(db: Path) -> None:
    with Cache(db) as cache:
        cache.put(*REQ, "", None, None)
        assert cache.get(*REQ) == ("", None, None)


def test_put_overwrites(db: Path) -> None:
    with Cache(db) as cache:
        cache.put(*REQ, "old", 1, 1)
        cache.put(*REQ, "new", 2, 2)
        assert cache.get(*REQ) == ("new", 2, 2)
        assert len(cache) == 1


@pytest.mark.parametrize(
    "other",
    [
        ("gpt-x", MSGS, 0.7, 256, 1),
        ("gpt-y", MSGS, 0.7, 256, 0),
        ("gpt-x", MSGS, 0.0, 256, 0),
        ("gpt-x", MSGS, 0.7, 255, 0),
        ("gpt-x", [*MSGS[:1], {"role": "user", "content": "hi!"}], 0.7, 256, 0),
        ("gpt-x", [{"role": "user", "content": "be brief"}, MSGS[1]], 0.7, 256, 0),
        ("gpt-x", MSGS[1:], 0.7, 256, 0),
    ],
    ids=["index", "model", "temp", "max_tokens", "content", "role", "messages"],
)
def test_each_key_input_makes_a_different_entry(db: Path, other: tuple) -> None:
    with Cache(db) as cache:
        cache.put(*REQ, "first", 1, 1)
        assert cache.get(*other) is None
        cache.put(*other, "second", 2, 2)
        assert cache.get(*REQ) == ("first", 1, 1)
        assert cache.get(*other) == ("second", 2, 2)
        assert len(cache) == 2


def test_int_and_float_temperature_are_one_key(db: Path) -> None:
    with Cache(db) as cache:
        cache.put("m", MSGS, 1, 10, 0, "t", 1, 1)
        assert cache.get("m", MSGS, 1.0, 10, 0) == ("t", 1, 1)


def test_a_new_cache_on_the_same_file_hits(db: Path) -> None:
    with Cache(db) as cache:
        cache.put(*REQ, "kept", 5, 6)
    with Cache(str(db)) as again:
        assert again.get(*REQ) == ("kept", 5, 6)


def test_modes(db: Path) -> None:
    with Cache(db, mode="record") as record:
        record.put(*REQ, "recorded", 1, 1)
        assert record.get(*REQ) is None, "record mode never serves"
    with Cache(db, mode="replay") as replay:
        assert replay.get(*REQ) == ("recorded", 1, 1)
        assert replay.get("other", MSGS, 0.7, 256, 0) is None


def test_clear(db: Path) -> None:
    with Cache(db) as cache:
        cache.put(*REQ, "x", 1, 1)
        cache.clear()
        assert len(cache) == 0
        assert cache.get(*REQ) is None
    with Cache(db) as again:  # still a moa cache
        assert len(again) == 0


def test_new_file_and_its_wal_and_shm_are_private(db: Path) -> None:
    with Cache(db) as cache:
        cache.put(*REQ, "x", 1, 1)
        for suffix in ("", "-wal", "-shm"):
            assert mode_of(f"{db}{suffix}") == 0o600, suffix


def test_an_existing_file_keeps_its_mode(db: Path) -> None:
    db.touch(mode=0o640)
    os.chmod(db, 0o640)
    with Cache(db) as cache:
        cache.put(*REQ, "x", 1, 1)
    assert mode_of(db) == 0o640


def test_wal_mode_is_in_effect(db: Path) -> None:
    with Cache(db) as cache:
        assert cache._execute("PRAGMA synchronous") == [(1,)]  # NORMAL
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_the_file_never_holds_message_content(db: Path) -> None:
    secret = "sk-live-SECRET123"
    msgs = [{"role": "system", "content": f"be brief; key={secret}"}, MSGS[1]]
    with Cache(db) as cache:
        cache.put("gpt-x", msgs, 0.7, 256, 0, "an answer", 1, 1)
        assert cache.get("gpt-x", msgs, 0.7, 256, 0) == ("an answer", 1, 1)
        on_disk = [db.read_bytes(), Path(f"{db}-wal").read_bytes()]
    on_disk += [p.read_bytes() for p in db.parent.iterdir()]  # after close: checkpointed
    assert any(b"an answer" in b for b in on_disk), "the check must see the stored text"
    assert not any(secret.encode() in b or b"be brief" in b for b in on_disk)


@pytest.mark.parametrize(
    "garbage", [b"hello", b"this is not a database, not at all\n" * 200], ids=["short", "long"]
)
def test_a_non_sqlite_file_is_refused_and_left_alone(db: Path, garbage: bytes) -> None:
    db.write_bytes(garbage)
    with pytest.raises(CacheError, match=r"cache\.sqlite.*not an SQLite database.*delete or move"):
        Cache(db)
    assert db.read_bytes() == garbage
    assert sorted(p.name for p in db.parent.iterdir()) == ["cache.sqlite"]


def test_a_truncated_cache_is_refused(db: Path) -> None:
    with Cache(db) as cache:
        for i in range(300):
            cache.put("m", MSGS, 0.7, 256, i, "answer " * 20, 1, 1)
    whole = db.read_bytes()
    assert len(whole) > 3 * 4096
    for size in (1000, 4096 + 100, 2 * 4096):
        db.write_bytes(whole[:size])
        with pytest.raises(CacheError, match=r"cache\.sqlite.*malformed.*delete or move"):
            Cache(db)


def test_corruption_found_later_is_a_cache_error(db: Path) -> None:
    with Cache(db) as cache:
        for i in range(300):
            cache.put("m", MSGS, 0.7, 256, i, "answer " * 20, 1, 1)
    data = bytearray(db.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)  # every page but the schema page
    db.write_bytes(bytes(data))
    with Cache(db) as cache:
        with pytest.raises(CacheError, match=r"cache\.sqlite.*delete or move"):
            cache.get("m", MSGS, 0.7, 256, 5)


def test_another_sqlite_database_is_refused_and_left_alone(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(CacheError, match=r"cache\.sqlite.*not a moa cache.*delete or move"):
        Cache(db)
    assert db.read_bytes() == before  # not even switched to WAL


def test_a_cache_of_another_format_is_refused(db: Path) -> None:
    Cache(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(CacheError, match="format 99"):
        Cache(db)


def test_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "cache.sqlite"
    with pytest.raises(FileNotFoundError, match=r"nope.*does not exist.*nope/cache\.sqlite"):
        Cache(path)


def test_bad_arguments() -> None:
    rule = r"mode must be one of 'rw', 'replay', 'record', not 'read'"
    with pytest.raises(ValueError, match=rule):
        Cache("x.sqlite", mode="read")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        Cache(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not bytes"):
        Cache(b"x.sqlite")  # type: ignore[arg-type]


def test_a_closed_cache_refuses_use(db: Path) -> None:
    cache = Cache(db)
    cache.close()
    cache.close()
    for use in (lambda: cache.get(*REQ), lambda: cache.put(*REQ, "x", 1, 1), lambda: len(cache)):
        with pytest.raises(ValueError, match="is closed"):
            use()


def test_repr(db: Path) -> None:
    Cache(db).close()  # replay reads a recording; it never creates one
    with Cache(db, mode="replay") as cache:
        assert repr(cache) == f"Cache({str(db)!r}, mode='replay')"


def test_errors() -> None:
    assert issubclass(CacheError, MoaError)
    assert issubclass(CacheMissError, MoaError)
    assert CacheMissError.retryable is False


def test_threads_share_one_cache(db: Path) -> None:
    failures: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(100):
                cache.put("m", MSGS, 0.5, 64, t * 1000 + i, f"{t}:{i}", t, i)
                assert cache.get("m", MSGS, 0.5, 64, t * 1000 + i) == (f"{t}:{i}", t, i)
        except BaseException as exc:
            failures.append(exc)

    with Cache(db) as cache:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert len(cache) == 800


WRITER = """
import sys, time
from moa._cache import Cache
path, proc, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
msgs = [{"role": "user", "content": "q"}]
with Cache(path) as cache:
    for i in range(200):
        cache.put("m", msgs, 0.5, 64, proc * 1000 + i, f"{i}", proc, i)
"""


def test_processes_share_one_file(db: Path) -> None:
    # All four start on a file that does not exist yet, so creating the schema races too.
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(p), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    with Cache(db, mode="replay") as cache:
        assert len(cache) == 800
        for p in range(4):
            for i in range(200):
                got = cache.get("m", [{"role": "user", "content": "q"}], 0.5, 64, p * 1000 + i)
                assert got == (f"{i}", p, i)


OPENER = """
import random, sys, time
from moa._cache import Cache
folder, start = sys.argv[1], float(sys.argv[2])
for k in range(30):
    time.sleep(max(0.0, start + k * 0.03 + random.random() * 0.001 - time.time()))
    Cache(f"{folder}/{k}.sqlite").close()
"""


def test_processes_race_to_create_files(tmp_path: Path) -> None:
    # Six processes open each of thirty new files within a millisecond of each other. SQLite
    # answers some of the losers of the race to write a new file's first page with an immediate
    # SQLITE_BUSY; without Cache's retry, most runs of this test see one.
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    for k in range(30):
        with Cache(tmp_path / f"{k}.sqlite") as cache:
            assert len(cache) == 0
