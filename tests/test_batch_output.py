"""What ``moa batch`` writes and reads back: OUT is moa's own and says which batch made it, is
locked while a batch writes it, only ever appended to, and a regular file or a new path; every
result is saved (or saved as a failed row), never a whole part lost. Each test here reproduces
a defect a hostile-input pass found, and failed before its fix."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

import pytest
from conftest import _need
from scripted import ScriptedClient

import moa.cli as cli
from moa.cli import main

PIPE = "Propose(['m', 'n']) | Aggregate('m')"


@pytest.fixture
def client(monkeypatch):
    c = ScriptedClient()
    monkeypatch.setattr(cli.providers, "make_client", lambda *args: (c, "m"))
    return c


def _prompts(tmp_path: Path, n: int = 3) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}?", "id": i}) + "\n" for i in range(n)))
    return str(path)


def _batch(inp: str, out: Path | str, *more: str) -> int:
    return main(["batch", inp, "-o", str(out), "--pipeline", PIPE, "-q", *more])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- OUT is moa's own --------------------------------------------------------------------------
def test_out_pointing_at_the_input_is_refused_and_the_input_left_as_it_was(
    tmp_path, client, capsys
):
    inp = _prompts(tmp_path)
    before = Path(inp).read_bytes()
    assert _batch(inp, inp) == 2
    assert "is not a moa batch output" in capsys.readouterr().err
    assert Path(inp).read_bytes() == before and client.calls == []


def test_any_json_lines_with_ids_is_not_taken_for_results(tmp_path, client, capsys):
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_text('{"id": 0, "prompt": "q0?", "error": null}\n{"id": 1, "error": "x"}\n')
    before = theirs.read_bytes()
    assert _batch(_prompts(tmp_path), theirs) == 2
    assert "not a moa batch result" in capsys.readouterr().err
    assert theirs.read_bytes() == before and client.calls == []  # the error line is kept


def test_resuming_with_another_pipeline_or_seed_is_refused_saying_what_differs(
    tmp_path, client, capsys
):
    inp, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    assert _batch(inp, out, "--seed", "1") == 0
    calls = len(client.calls)
    assert _batch(inp, out, "--seed", "2") == 2
    assert "seed: 1 there, 2 here" in capsys.readouterr().err
    other = "Propose(['m']) | Aggregate('m')"
    assert main(["batch", inp, "-o", str(out), "--pipeline", other, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "holds the results of another batch" in err and "pipeline:" in err
    assert len(client.calls) == calls


def test_a_resume_with_nothing_to_run_leaves_out_untouched(tmp_path, client):
    inp, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    assert _batch(inp, out) == 0
    before, inode = out.read_bytes(), out.stat().st_ino
    assert _batch(inp, out) == 0
    assert out.read_bytes() == before and out.stat().st_ino == inode  # not a rewritten copy


def test_a_resume_appends_and_keeps_the_lines_before(tmp_path, monkeypatch):
    inp, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    failing = ScriptedClient(permanent={"m", "n"})
    monkeypatch.setattr(cli.providers, "make_client", lambda *args: (failing, "m"))
    assert _batch(inp, out) == 1
    before = out.read_bytes()
    monkeypatch.setattr(cli.providers, "make_client", lambda *args: (ScriptedClient(), "m"))
    assert _batch(inp, out) == 0
    assert out.read_bytes().startswith(before)
    last = {e["id"]: e for e in _lines(out)}
    assert sorted(last) == [0, 1, 2] and all(e["error"] is None for e in last.values())


def test_a_line_cut_off_by_a_kill_is_cut_away_and_its_prompt_runs_again(tmp_path, client):
    inp, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    assert _batch(inp, out) == 0
    whole = out.read_bytes()
    out.write_bytes(whole[: len(whole) - 40])  # the last line cut mid-way
    assert _batch(inp, out) == 0
    assert sorted(e["id"] for e in _lines(out)) == [0, 1, 2]


# -- one writer ----------------------------------------------------------------------------------
def test_a_second_batch_on_an_out_being_written_is_refused(tmp_path, client, capsys):
    inp, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    out.touch()
    with open(out, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running batch holds
        assert _batch(inp, out) == 2
    assert "another moa batch is writing it now" in capsys.readouterr().err
    assert client.calls == [] and out.read_bytes() == b""


def test_a_second_batch_on_a_parquet_out_being_written_is_refused(tmp_path, client, capsys):
    _need("pyarrow", "pip install pyarrow")
    out = tmp_path / "out.parquet"
    out.mkdir()
    with open(out / "_moa.lock", "wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert _batch(_prompts(tmp_path), out) == 2
    assert "another moa batch is writing it now" in capsys.readouterr().err


# -- what OUT can be -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "/dev/full", "a pipe, as /dev/stdout | ...", "folder"])
def test_out_must_be_a_regular_file_or_a_new_path(tmp_path, client, capsys, kind):
    read_end = write_end = None
    if kind == "fifo":
        out = tmp_path / "pipe"
        os.mkfifo(out)
    elif kind == "folder":
        out = tmp_path / "results"
        out.mkdir()
    elif kind.startswith("a pipe"):
        read_end, write_end = os.pipe()
        out = Path(f"/proc/self/fd/{write_end}")  # what /dev/stdout is, piped into a command
    else:
        out = Path(kind)
    try:
        assert _batch(_prompts(tmp_path), out) == 2  # at once: nothing read from it, no hang
    finally:
        for fd in (read_end, write_end):
            if fd is not None:
                os.close(fd)
    err = capsys.readouterr().err
    assert "not a regular file" in err or "is a folder" in err
    assert client.calls == []


def test_a_folder_becomes_parquet_output_only_by_its_name(tmp_path, client, capsys):
    folder = tmp_path / "existing"
    folder.mkdir()
    assert _batch(_prompts(tmp_path), folder) == 2
    assert "name ends in .parquet" in capsys.readouterr().err
    assert list(folder.iterdir()) == []


# -- every result saved ---------------------------------------------------------------------------
def test_a_reply_with_a_lone_surrogate_is_saved_in_parquet(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    odd = ScriptedClient(lambda model, msgs: "half \ud800 a character")
    monkeypatch.setattr(cli.providers, "make_client", lambda *args: (odd, "m"))
    out = tmp_path / "out.parquet"
    assert _batch(_prompts(tmp_path, 20), out) == 0
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 20 and all(r["result"] == "half \ufffd a character" for r in rows)
    history = json.loads(rows[0]["history"])
    assert history["outputs"] == ["half \ud800 a character"]  # kept exactly, escaped
    assert _batch(_prompts(tmp_path, 20), out) == 0  # and it resumes
    assert pa is not None


def test_a_token_count_past_64_bits_is_a_failed_row_not_a_lost_part(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    async def huge(*, model, messages, temp, max_tokens):
        return "ok", 2**64, 1

    monkeypatch.setattr(cli.providers, "make_client", lambda *args: (huge, "m"))
    out = tmp_path / "out.parquet"
    assert _batch(_prompts(tmp_path, 20), out) == 1
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 20 and all("in 64 bits" in r["error"] for r in rows)


def test_a_full_disk_stops_the_batch_with_one_line_and_keeps_what_was_written(
    tmp_path, client, capsys, monkeypatch
):
    from moa.cli import batchout

    written = []
    real = batchout.JsonlOutput._append

    def append(self, data):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(data)
        real(self, data)

    monkeypatch.setattr(batchout.JsonlOutput, "_append", append)
    out = tmp_path / "out.jsonl"
    assert _batch(_prompts(tmp_path), out, "--max-runs", "1") == 2
    err = capsys.readouterr().err
    assert "cannot write (the disk is full)" in err and "1 results are saved" in err
    assert "Traceback" not in err and len(_lines(out)) == 1


def test_a_full_disk_under_parquet_says_how_many_results_were_not_saved(
    tmp_path, client, capsys, monkeypatch
):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    assert _batch(_prompts(tmp_path), tmp_path / "out.parquet") == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and "3 not" in err and "Traceback" not in err


def test_a_null_parquet_id_is_named_as_null_not_as_a_duplicate(tmp_path, client, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"prompt": "a?", "id": None}, {"prompt": "b?", "id": 0}]), src
    )
    assert _batch(str(src), tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err
    assert "row 1: the id is null" in err and "already used" not in err
