"""``moa eval`` and ``moa tune`` in-process, the client injected: the table on stdout, the
report files, and every bad input refused with exit 2 and one line, before any call."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET

import pytest

import moa
import moa.cli as cli
from moa.cli import main


def _client():
    calls: list[dict] = []

    async def client(*, model, messages, temp, max_tokens, seed=None, logprobs=False):
        calls.append({"model": model, "temp": temp})
        asked = messages[-1]["content"]
        answer = asked.rsplit(" ", 1)[-1]
        rng = random.Random(f"{asked}|{messages[0]['content']}|{temp}|{seed}")
        right = rng.random() < 0.6
        text = answer if right else "9"
        sure = moa.Confidence(-rng.random() * (1 if right else 3), 2)
        return (text, 10, 2, sure) if logprobs else (text, 10, 2)

    client.calls = calls
    return client


@pytest.fixture
def client(monkeypatch):
    c = _client()
    monkeypatch.setattr(cli.providers, "make_client", lambda provider, base_url, model: (c, "m"))
    return c


@pytest.fixture
def tasks(tmp_path):
    path = tmp_path / "tasks.jsonl"
    rows = [{"id": f"q{i}", "question": f"Say the number {i}", "answer": str(i)} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


VOTE = "Propose(['m'] * 3, temp=0.5) | WeightedMajority()"


def test_moa_eval_prints_the_table_and_saves_the_report(client, tasks, tmp_path, capsys):
    out_json, out_csv, chart = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.svg"
    code = main(
        [
            "eval",
            str(tasks),
            "--pipeline",
            VOTE,
            "--recipe",
            "self_moa",
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
            "--chart",
            str(chart),
            "-q",
        ]
    )
    assert code == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert VOTE in out and "self_moa" in out and "m t=0.5" in out and "m t=0" in out
    assert "Best single agent:" in out
    doc = json.loads(out_json.read_text())
    assert [c["name"] for c in doc["contenders"]][-2:] == [VOTE, "self_moa"]
    assert len(doc["contenders"][0]["results"]) == 12
    assert out_csv.read_text().splitlines()[0].startswith("name,expression,")
    assert ET.parse(chart).getroot().tag.endswith("svg")


def test_moa_eval_progress_goes_to_stderr(client, tasks, capsys):
    assert main(["eval", str(tasks), "--pipeline", VOTE, "--limit", "4"]) == 0
    out, err = capsys.readouterr()
    assert "eval: 12/12 runs" in err  # 3 contenders x 4 tasks
    assert "12/12" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pipeline", "Propose(['m']) |"], "--pipeline"),
        (["--scorer", "number", "--pipeline", VOTE], "holds none"),
        (["--pipeline", VOTE, "--chart", "x.txt"], "must end in .svg or .png"),
        (["--pipeline", VOTE, "--judge", "j"], "--judge names the judge"),
        ([], "give the pipelines to evaluate"),
    ],
)
def test_moa_eval_refuses_bad_input_before_any_call(client, tmp_path, args, message, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "Capital of France?", "answer": "Paris"}\n')
    assert main(["eval", str(path), *args]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("moa: ") and message in err
    assert client.calls == []


def test_moa_eval_names_the_bad_line_of_a_task_file(client, tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "a?", "answer": "1"}\n{"prompt": "b?"}\n')
    assert main(["eval", str(path), "--pipeline", VOTE]) == 2
    assert "line 2: no 'answer'" in capsys.readouterr().err


def test_moa_eval_on_a_client_without_confidence_exits_2_before_any_call(
    monkeypatch, tasks, capsys
):
    async def plain(*, model, messages, temp, max_tokens):
        raise AssertionError("no call may be made")

    monkeypatch.setattr(cli.providers, "make_client", lambda p, b, m: (plain, "m"))
    assert main(["eval", str(tasks), "--pipeline", VOTE, "-q"]) == 2
    assert "reads each response's confidence" in capsys.readouterr().err


def test_moa_tune_prints_the_held_out_result_first_and_the_winner_last(
    client, tasks, tmp_path, capsys
):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"personas": [None], "samples": [3], "temps": [0.5]}))
    out_json = tmp_path / "tune.json"
    code = main(
        ["tune", str(tasks), "--space", str(space), "--json", str(out_json), "-q", "--seed", "1"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("Held-out result (6 tasks")
    winner = out.rstrip().splitlines()[-1]
    assert moa.parse_pipeline(winner)  # pasteable into moa run --pipeline
    doc = json.loads(out_json.read_text())
    assert doc["expression"] == winner and doc["holdout"]["contenders"]


def test_moa_tune_refuses_a_space_over_budget_before_any_call(client, tasks, capsys):
    assert main(["tune", str(tasks), "--budget-calls", "10"]) == 2
    assert "budget_calls is 10" in capsys.readouterr().err
    assert client.calls == []


def test_moa_tune_refuses_a_bad_space_file(client, tasks, tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"temperature": [0.3]}))
    assert main(["tune", str(tasks), "--space", str(space)]) == 2
    assert "has no 'temperature'" in capsys.readouterr().err


def test_a_pipeline_may_be_named(client, tasks, capsys):
    assert main(["eval", str(tasks), "--pipeline", f"weighted={VOTE}", "-q", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "\nweighted " in out and VOTE not in out
    assert main(["eval", str(tasks), "--pipeline", f"a={VOTE}", "--pipeline", f"a={VOTE}"]) == 2
    assert "two contenders are named 'a'" in capsys.readouterr().err


def test_moa_eval_judge_needs_a_judge_model(client, tasks, capsys):
    assert main(["eval", str(tasks), "--pipeline", VOTE, "--scorer", "judge"]) == 2
    assert "--scorer judge needs --judge MODEL" in capsys.readouterr().err
    assert client.calls == []
