"""``moa plan`` and ``moa run --plan``: a pipeline's bounds printed, no client made, no model
called."""

from __future__ import annotations

import json

import pytest

import moa.cli as cli
from moa.cli import main

PIPE = "Propose(['m'] * 3, max_tokens=48) | Aggregate('m', max_tokens=64)"


def _no_client(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a plan makes no client")

    monkeypatch.setattr(cli.providers, "make_client", refuse)


def test_moa_plan_prints_the_bounds_and_makes_no_client(monkeypatch, tmp_path, capsys):
    _no_client(monkeypatch)
    out_json = tmp_path / "plan.json"
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"m": [1.0, 2.0]}))
    code = main(
        [
            "plan",
            "What is 2+2?",
            "--pipeline",
            PIPE,
            "--provider",
            "openai",
            "--prices",
            str(prices),
            "--latency",
            "2",
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "total" in out and "time: about 4 s (2 calls in a row)" in out
    doc = json.loads(out_json.read_text())
    assert doc["calls"] == [4, 4] and doc["depth"] == [2, 2] and doc["dollars"] > 0


def test_moa_run_plan_asks_nothing(monkeypatch, capsys):
    _no_client(monkeypatch)
    assert main(["run", "--plan", "--pipeline", PIPE, "hi"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("step") and "4" in out


def test_moa_plan_without_a_prompt_counts_the_prompt_apart(monkeypatch, capsys):
    _no_client(monkeypatch)
    assert main(["plan", "--pipeline", PIPE]) == 0
    out = capsys.readouterr().out
    assert "+ 4P" in out and "give the prompt" in out


# -- --budget-* -------------------------------------------------------------------------------
def _scripted(monkeypatch):
    from scripted import ScriptedClient

    client = ScriptedClient()
    monkeypatch.setattr(cli.providers, "make_client", lambda p, b, m: (client, m or "m"))
    return client


def test_moa_run_under_a_budget_reports_it_and_stops_at_it(monkeypatch, capsys):
    client = _scripted(monkeypatch)
    assert main(["run", "hi", "--pipeline", PIPE, "--budget-calls", "10"]) == 0
    err = capsys.readouterr().err
    assert "budget: 4 of 10 calls (left 6)" in err
    assert main(["run", "hi", "--pipeline", PIPE, "--budget-calls", "3"]) == 1
    err = capsys.readouterr().err
    assert "calls would pass 3" in err
    assert len(client.calls) == 4 + 3


def test_moa_batch_stops_at_its_budget_and_the_same_command_resumes(monkeypatch, tmp_path, capsys):
    _scripted(monkeypatch)
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(f'"question {i}"\n' for i in range(10)))
    out = tmp_path / "out.jsonl"
    base = ["batch", str(prompts), "-o", str(out), "--pipeline", PIPE, "--max-runs", "1"]
    assert main([*base, "--budget-calls", "18"]) == 1
    err = capsys.readouterr().err
    assert "run by the same command with a new budget" in err
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert 0 < sum(r["error"] is None for r in first) < 10
    assert main([*base, "--budget-calls", "100"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    done = {r["id"] for r in rows if r["error"] is None}
    assert done == set(range(10))


def test_a_bad_budget_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["run", "hi", "--pipeline", PIPE, "--budget-usd", "-1"])
    assert caught.value.code == 2
    assert "--budget-usd" in capsys.readouterr().err


def test_moa_run_deadline_is_the_default_of_the_steps_that_take_one(monkeypatch, tmp_path):
    import anyio

    async def slow_b(*, model, messages, temp, max_tokens):
        await anyio.sleep(30 if model == "b" else 0)
        return f"{model} says", 1, 1

    monkeypatch.setattr(cli.providers, "make_client", lambda p, b, m: (slow_b, "m"))
    out = tmp_path / "run.json"
    pipe = "Propose(['a', 'b']) | Aggregate('a')"
    assert main(["run", "hi", "--pipeline", pipe, "--deadline", "0.2", "--json", str(out)]) == 0
    steps = json.loads(out.read_text())["steps"]
    assert steps[0]["degraded"].startswith("deadline of 0.2 s: 1 of 2 calls answered")
