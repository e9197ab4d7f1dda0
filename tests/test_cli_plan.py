"""``moa plan`` and ``moa run --plan``: a pipeline's bounds printed, no client made, no model
called."""

from __future__ import annotations

import json

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
