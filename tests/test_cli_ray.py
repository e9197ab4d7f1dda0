"""``moa batch`` with Parquet files (in and out, resumable) and ``--ray`` (the same batch on a
local Ray cluster, with the same results as on this machine, on the real model)."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest
from conftest import _need
from scripted import ScriptedClient

import moa.cli as cli
from moa import History
from moa.cli import main

PIPE = "Propose(['m', 'n']) | Shuffle() | Aggregate('m')"


@pytest.fixture
def pyarrow():
    _need("pyarrow", "pip install pyarrow (moa-dsl[ray] has it)")
    import pyarrow
    import pyarrow.parquet

    return pyarrow


@pytest.fixture
def client(monkeypatch):
    c = ScriptedClient(permanent={"bad"})
    monkeypatch.setattr(cli.providers, "make_client", lambda provider, base_url, model: (c, "m"))
    return c


def _write_parquet(pa, path: Path, rows: list[dict]) -> None:
    pa.parquet.write_table(pa.Table.from_pylist(rows), path)


def _read_parquet(pa, path: Path) -> dict:
    """Each id's last row (OUT is only appended to: a failure, then its answer), checking that
    no success is ever followed by another row of its id."""
    table = pa.parquet.read_table(path)
    out = {}
    for row in table.to_pylist():
        earlier = out.get(row["id"])
        assert earlier is None or earlier["error"] is not None, "an id answered twice"
        out[row["id"]] = row
    return out


def _read_jsonl(path: Path) -> dict:
    return {json.loads(line)["id"]: json.loads(line) for line in path.read_text().splitlines()}


def test_parquet_in_and_out_gives_the_json_lines_results(pyarrow, client, tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"question {i}?"} for i in range(30)]
    _write_parquet(pyarrow, tmp_path / "in.parquet", rows)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--pipeline", PIPE, "--seed", "3", "-q"]
    assert (
        main(["batch", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.parquet"), *common])
        == 0
    )
    assert (
        main(["batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), *common]) == 0
    )
    parquet = _read_parquet(pyarrow, tmp_path / "out.parquet")
    jsonl = _read_jsonl(tmp_path / "out.jsonl")
    assert set(parquet) == set(jsonl) == {r["id"] for r in rows}
    for ident, line in jsonl.items():
        row = parquet[ident]
        assert (row["result"], row["seed"], row["calls"]) == (
            line["result"],
            line["seed"],
            line["calls"],
        )
        assert History.from_dict(json.loads(row["history"])) == History.from_dict(line["history"])
        assert json.loads(row["prices"]) == line["prices"]


def test_a_parquet_output_resumes_running_only_what_failed_or_is_missing(
    pyarrow, client, monkeypatch, tmp_path
):
    rows = [{"prompt": f"question {i}?"} for i in range(6)]  # ids: positions, as in JSON Lines
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    _write_parquet(pyarrow, src, rows)
    everything_fails = ScriptedClient(permanent={"m", "n"})
    monkeypatch.setattr(cli.providers, "make_client", lambda *args: (everything_fails, "m"))
    assert main(["batch", str(src), "-o", str(out), "--pipeline", PIPE, "-q"]) == 1
    assert sorted(_read_parquet(pyarrow, out)) == list(range(6))
    assert all(r["error"] for r in _read_parquet(pyarrow, out).values())
    monkeypatch.setattr(cli.providers, "make_client", lambda *args: (client, "m"))
    # A part left half-written by a kill is a temporary file: ignored and removed.
    (out / "part-000099.tmp").write_bytes(b"PAR1 cut off")
    assert main(["batch", str(src), "-o", str(out), "--pipeline", PIPE, "-q"]) == 0
    done = _read_parquet(pyarrow, out)
    assert sorted(done) == list(range(6)) and not any(r["error"] for r in done.values())
    assert not list(out.glob("*.tmp"))
    calls = len(client.calls)
    assert main(["batch", str(src), "-o", str(out), "--pipeline", PIPE]) == 0
    assert len(client.calls) == calls  # nothing left to run


CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Name a planet."},
    {"role": "assistant", "content": "Mars."},
    {"role": "user", "content": "Its moons?"},
]


def test_a_parquet_messages_column_runs_conversations_and_resumes(
    pyarrow, client, capsys, tmp_path
):
    # Both columns: each row fills one, the other null.
    rows = [
        {"id": 0, "prompt": "Name a colour.", "messages": None},
        {"id": 1, "prompt": None, "messages": CHAT},
        {"id": 2, "prompt": None, "messages": CHAT[1:2]},
    ]
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    _write_parquet(pyarrow, src, rows)
    lines = tmp_path / "in.jsonl"
    lines.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows)
    )
    common = ["--pipeline", PIPE, "--seed", "3", "-q"]
    assert main(["batch", str(src), "-o", str(out), *common]) == 0
    assert main(["batch", str(lines), "-o", str(tmp_path / "out.jsonl"), *common]) == 0
    done, jsonl = _read_parquet(pyarrow, out), _read_jsonl(tmp_path / "out.jsonl")
    assert [done[i]["messages"] for i in range(3)] == [None, CHAT, CHAT[1:2]]
    assert [done[i]["prompt"] for i in range(3)] == [
        "Name a colour.",
        "Its moons?",
        "Name a planet.",
    ]
    for i in range(3):
        assert done[i]["result"] == jsonl[i]["result"] and done[i]["error"] is None
    assert History.from_dict(json.loads(done[1]["history"])).conversation == tuple(CHAT[:3])
    calls = len(client.calls)
    assert main(["batch", str(src), "-o", str(out), *common]) == 0
    assert len(client.calls) == calls  # each conversation's digest read back from the column
    edited = [*rows[:1], {"id": 1, "prompt": None, "messages": [*CHAT[:2], CHAT[1], CHAT[3]]}]
    _write_parquet(pyarrow, src, edited)
    assert main(["batch", str(src), "-o", str(out), *common]) == 2
    assert "holds id 1 for another prompt" in capsys.readouterr().err
    assert len(client.calls) == calls


def test_a_parquet_output_older_than_the_messages_column_still_resumes(pyarrow, client, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    src.write_text('"a?"\n"b?"\n')
    common = ["--pipeline", PIPE, "--seed", "3", "-q"]
    assert main(["batch", str(src), "-o", str(out), *common]) == 0
    (part,) = out.glob("part-*.parquet")  # as an older moa wrote it: no messages column
    pq = pyarrow.parquet
    pq.write_table(pq.read_table(part).drop_columns(["messages"]), part)
    assert "messages" not in pq.read_schema(part).names
    calls = len(client.calls)
    assert main(["batch", str(src), "-o", str(out), *common]) == 0
    assert len(client.calls) == calls
    # A conversation added to the input runs, and its part holds the column.
    with src.open("a") as f:
        f.write(json.dumps({"messages": CHAT}) + "\n")
    assert main(["batch", str(src), "-o", str(out), *common]) == 0
    assert len(client.calls) == calls + 3
    newest = sorted(out.glob("part-*.parquet"))[-1]
    assert pq.read_table(newest).column("messages").to_pylist() == [CHAT]
    assert main(["batch", str(src), "-o", str(out), *common]) == 0
    assert len(client.calls) == calls + 3


def test_parquet_mistakes_are_usage_errors_before_any_call(pyarrow, client, capsys, tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"prompt": "a?", "id": 1}\n{"prompt": "b?", "id": "two"}\n')
    assert main(["batch", str(mixed), "-o", str(tmp_path / "o.parquet"), "--pipeline", PIPE]) == 2
    assert "Parquet needs every id of one type" in capsys.readouterr().err
    _write_parquet(pyarrow, tmp_path / "noprompt.parquet", [{"text": "a?"}])
    assert (
        main(
            [
                "batch",
                str(tmp_path / "noprompt.parquet"),
                "-o",
                str(tmp_path / "o.jsonl"),
                "--pipeline",
                PIPE,
            ]
        )
        == 2
    )
    assert "no 'prompt' column" in capsys.readouterr().err
    (tmp_path / "file.parquet").write_text("not a folder")
    assert (
        main(["batch", str(mixed), "-o", str(tmp_path / "file.parquet"), "--pipeline", PIPE]) == 2
    )
    assert "folder of parts" in capsys.readouterr().err
    assert client.calls == []


def test_ids_a_column_cannot_hold_are_refused_before_any_call(pyarrow, client, capsys, tmp_path):
    mixed = tmp_path / "mixed.jsonl"  # a bare string's id is its position: an int
    mixed.write_text('"a?"\n{"prompt": "b?", "id": "two"}\n')
    out = str(tmp_path / "o.jsonl")
    assert main(["batch", str(mixed), "-o", out, "--pipeline", PIPE, "--ray"]) == 2
    assert "--ray needs every id of one type" in capsys.readouterr().err
    # A Parquet OUT that holds int ids, resumed with str ids.
    out_pq = str(tmp_path / "o.parquet")
    ints = tmp_path / "ints.jsonl"
    ints.write_text('"a?"\n')
    assert main(["batch", str(ints), "-o", out_pq, "--pipeline", PIPE, "-q"]) == 0
    calls = len(client.calls)
    named = tmp_path / "named.jsonl"
    named.write_text('{"prompt": "b?", "id": "b"}\n')
    assert main(["batch", str(named), "-o", out_pq, "--pipeline", PIPE]) == 2
    assert f"like the ids already in -o {out_pq}" in capsys.readouterr().err
    huge = tmp_path / "huge.jsonl"
    huge.write_text(f'{{"prompt": "c?", "id": {2**63}}}\n')
    assert main(["batch", str(huge), "-o", out_pq, "--pipeline", PIPE]) == 2
    assert "the id must be a string or an integer of 64 bits" in capsys.readouterr().err
    assert len(client.calls) == calls


@pytest.mark.ray
def test_a_worker_that_cannot_start_is_one_line_not_a_ray_traceback(
    ray_cluster, monkeypatch, capsys, tmp_path
):
    # The cluster's workers were started without the key this process is given now, as on
    # a cluster whose nodes lack it.
    if "OPENAI_API_KEY" in os.environ:
        pytest.skip("the Ray workers have OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-driver-only")
    src = tmp_path / "in.jsonl"
    src.write_text('"a?"\n')
    out = tmp_path / "o.jsonl"
    argv = ["batch", str(src), "-o", str(out), "--pipeline", PIPE, "--ray", "--provider", "openai"]
    # Ray Data's console handler holds the stream it was made with, not this test's captured
    # one: what it would print to a user's terminal is read from a stream of the test's own.
    console = io.StringIO()
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler) is not logging.FileHandler and isinstance(handler, logging.StreamHandler):
            monkeypatch.setattr(handler, "stream", console)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--ray: a worker failed" in err and "needs OPENAI_API_KEY" in err
    assert len(err.strip().splitlines()) <= 2, err
    assert console.getvalue() == ""
    assert "sk-driver-only" not in err


@pytest.mark.ray
def test_a_batch_of_conversations_on_ray_equals_the_same_batch_here(
    ray_cluster, client, monkeypatch, tmp_path
):
    import moa.ray

    real = moa.ray.run_dataset
    # The workers' client: a scripted one (made in each worker), not the command's provider.
    monkeypatch.setattr(
        moa.ray,
        "run_dataset",
        lambda pipe, data, factory, *a, **k: real(pipe, data, ScriptedClient, *a, **k),
    )
    chat = [
        {"role": "user", "content": "Largest planet?"},
        {"role": "assistant", "content": "Jupiter."},
        {"role": "user", "content": "Its moons?"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(
            json.dumps(r) + "\n" for r in ({"prompt": "a?", "id": 1}, {"messages": chat, "id": 2})
        )
    )
    here, on_ray = tmp_path / "here.jsonl", tmp_path / "ray.jsonl"
    args = ["--pipeline", PIPE, "--seed", "1", "-q"]
    assert main(["batch", str(src), "-o", str(here), *args]) == 0
    assert main(["batch", str(src), "-o", str(on_ray), "--ray", "--workers", "1", *args]) == 0
    mine, theirs = _read_jsonl(here), _read_jsonl(on_ray)
    for ident in (1, 2):
        assert theirs[ident]["result"] == mine[ident]["result"] and theirs[ident]["error"] is None
        assert History.from_dict(theirs[ident]["history"]) == History.from_dict(
            mine[ident]["history"]
        )
    assert theirs[2]["messages"] == chat and "messages" not in theirs[1]
    assert History.from_dict(theirs[2]["history"]).conversation == tuple(chat[:2])


def test_ray_options_are_checked_before_any_call(client, capsys, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('"a?"\n')
    out = str(tmp_path / "o.jsonl")
    assert main(["batch", str(src), "-o", out, "--pipeline", PIPE, "--workers", "2"]) == 2
    assert "--workers is the number of Ray workers: it needs --ray" in capsys.readouterr().err
    assert (
        main(["batch", str(src), "-o", out, "--pipeline", PIPE, "--ray", "--concurrency", "2"]) == 2
    )
    assert "with --ray, use --workers" in capsys.readouterr().err
    assert client.calls == []


@pytest.mark.ray
@pytest.mark.local
def test_a_seeded_batch_on_ray_equals_the_same_batch_here_and_resumes(
    ray_cluster, model_path, tmp_path
):
    src = tmp_path / "in.jsonl"
    questions = ["Name a color.", "Name an animal.", "Name a planet."]
    src.write_text("".join(json.dumps(q) + "\n" for q in questions))
    args = [
        "--pipeline",
        "Propose(['m'] * 2, max_tokens=12) | Aggregate('m', max_tokens=12)",
        "--seed",
        "1",
        "-q",
    ]
    here, on_ray = tmp_path / "here.jsonl", tmp_path / "ray.jsonl"
    assert main(["batch", str(src), "-o", str(here), *args]) == 0
    assert main(["batch", str(src), "-o", str(on_ray), "--ray", "--workers", "2", *args]) == 0

    def results(path):
        return {
            ident: (doc["result"], doc["seed"], History.from_dict(doc["history"]))
            for ident, doc in _read_jsonl(path).items()
        }

    assert results(on_ray) == results(here) and len(results(here)) == 3
    # As if killed after its first result: keep one line, then resume on Ray.
    on_ray.write_text(on_ray.read_text().splitlines()[0] + "\n")
    assert main(["batch", str(src), "-o", str(on_ray), "--ray", *args]) == 0
    assert results(on_ray) == results(here)
