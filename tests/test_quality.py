"""benchmarks/quality.py, a short script over moa.eval: its task files are valid and score
their own answers, its contenders share their candidates, and it runs end to end on a fake
client (the statistics and scorers are tested with the library: test_stats, test_scoring)."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from pathlib import Path

import pytest

import moa

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load():
    # quality.py imports its neighbour `_common`, and examples/ has a `_common` of its own:
    # import with benchmarks/ first on the path, then put sys.path and sys.modules back, so
    # the examples' tests still find theirs.
    saved = sys.modules.pop("_common", None)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("quality", BENCHMARKS / "quality.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["quality"] = module  # dataclasses look their module up while being built
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("_common", None)
        if saved is not None:
            sys.modules["_common"] = saved
    return module


q = _load()


@pytest.mark.parametrize("path", [q.DESIGN, q.HOLDOUT])
def test_shipped_tasks_are_valid_and_their_answers_score(path):
    from moa._scoring import check_scorer, score_text

    tasks = moa.load_tasks(path)
    assert 60 <= len(tasks) <= 100
    check_scorer("auto", tasks)
    for t in tasks:
        assert all(score_text("auto", a, t) for a in t.answers), t


def test_shipped_arithmetic_answers_are_right():
    for t in moa.load_tasks(q.DESIGN):
        m = re.fullmatch(
            r"What is ([\d.,]+) (\+|-|times) ([\d.,]+)\? Answer with a number\.", t.prompt
        )
        if m:
            a, b = (float(x.replace(",", "")) for x in (m[1], m[3]))
            want = {"+": a + b, "-": a - b, "times": a * b}[m[2]]
            assert float(t.answer) == pytest.approx(want), t


def test_the_selections_choose_among_the_same_candidates():
    built = q.contenders("m")
    heads = {repr(built[k].steps[0]) for k in ("vote", *q.SAME_CANDIDATES)}
    assert len(heads) == 1
    for step in built.values():
        assert moa.parse_pipeline(repr(step)) == step


def test_the_script_runs_end_to_end_on_a_fake_client(monkeypatch, tmp_path, capsys):
    import moa.clients

    async def client(*, model, messages, temp, max_tokens, seed=None, logprobs=False):
        asked = messages[-1]["content"]
        rng = random.Random(f"{asked}|{messages[0]['content']}|{temp}|{seed}")
        text = str(rng.randint(0, 12))
        sure = moa.Confidence(-rng.random() * 3, 2)
        return (text, 10, 2, sure) if logprobs else (text, 10, 2)

    monkeypatch.setattr(moa.clients, "local_client", lambda: client)
    out_json = tmp_path / "q.json"
    assert q.main(["--limit", "6", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "Best single agent:" in out and "gap closed" in out
    doc = json.loads(out_json.read_text())
    names = [c["name"] for c in doc["contenders"]]
    assert {"vote", "weighted", "deepconf", "confident", "consistent"} <= set(names)
    vote = next(c for c in doc["contenders"] if c["name"] == "weighted")
    assert vote["k"] == 6
