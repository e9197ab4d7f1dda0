"""The quality harness's own arithmetic (benchmarks/quality.py): scoring, the answer extractor,
the statistics and the task files. No model runs here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

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


def num(answer: str, *aliases: str):
    return q.Task("t", "What is it? Answer with a number.", answer, "number", aliases)


def word(answer: str, *aliases: str, question: str = "What is the capital of Italy?"):
    return q.Task("t", question, answer, "contains", aliases)


# -- normalise and score -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Capital of ITALY is  Rome!", "capital of italy is rome"),
        ("An apple, a day.", "apple day"),
        ("  rock-n-roll's\tbest  ", "rock n roll s best"),
        ("H₂O", "h2o"),  # NFKC: the subscript is a plain digit
        ("...", ""),
    ],
)
def test_normalise(text, expected):
    assert q.normalise(text) == expected


@pytest.mark.parametrize(
    "reply, answer, ok",
    [
        ("7 + 5 = 12", "12", True),
        ("The answer is 12.", "12", True),
        ("12 is the sum of 7 and 5", "12", False),  # the last number decides
        ("It is 1,500 in all.", "1500", True),
        ("It is 1500 in all.", "1,500", True),
        ("12,345,678.90", "12345678.9", True),
        ("3 - 5 = -2", "-2", True),
        ("3 - 5 = −2", "-2", True),  # a typographic minus
        ("9-3=6", "6", True),
        ("9-3", "-3", False),  # a minus right after a number is subtraction, not a sign
        ("0.5 + 0.5 = 1.0", "1", True),
        ("The answer is 3.", "3.0", True),
        ("I think 2.5", "2", False),
        ("H2O has 3 atoms", "3", True),
        ("H2O", "2", False),  # a digit inside a word is not a number
        ("no number here", "0", False),
        ("", "0", False),
    ],
)
def test_number_score(reply, answer, ok):
    assert q.score(reply, num(answer)) is ok


def test_number_alias_and_none():
    assert q.score("it is 24", num("24"))
    assert q.score("it is 0", num("24", "0"))
    assert not q.score(None, num("1"))


@pytest.mark.parametrize(
    "reply, ok",
    [
        ("The capital of Italy is Rome.", True),
        ("ROME", True),
        ("Rome, of course", True),
        ("Romeo and Juliet", False),  # whole words only
        ("Romes", False),
        ("The capital is Milan.", False),
    ],
)
def test_contains_score(reply, ok):
    assert q.score(reply, word("Rome")) is ok


def test_contains_aliases_and_multi_word_answers():
    china = word("Beijing", "Peking", question="What is the capital of China?")
    assert q.score("It used to be called Peking.", china)
    assert not q.score("Pekingese dogs", china)
    whale = word("blue whale", "whale", question="What is the largest animal?")
    assert q.score("The Blue Whale.", whale)
    assert q.score("a whale", whale)
    assert not q.score("whales", whale)


def test_exact_score():
    yes = q.Task("t", "Is the Sun hot? Reply with only yes or no.", "yes", "exact")
    assert q.score("Yes.", yes)
    assert q.score("  yes ", yes)
    assert not q.score("Yes, it is.", yes)
    assert not q.score("no", yes)


# -- the answer extractor for Majority(...) ------------------------------------------------
def test_extractor_numbers_are_canonical():
    get = q.extractor(num("12"))
    assert get("7 + 5 = 12") == get("The answer is 12.0") == get("12") == "12"
    assert get("It is 1,500.50") == "1500.5"
    assert get("-0") == "0"
    assert get("a lot") is None


def test_extractor_text_skips_the_question_and_filler():
    get = q.extractor(word("Rome", question="What is the capital of Italy? Answer in one word."))
    replies = [
        "Rome.",
        "The capital of Italy is Rome.",
        "Rome, of course.",
        "The answer is: Rome",
        "It is typically Rome",
    ]
    assert {get(r) for r in replies} == {"rome"}
    assert get("The capital of Italy is Italy.") is None  # nothing beyond the question's words
    assert get("Paris is the capital of Italy.") == "paris"


def test_extractor_exact_is_the_first_word():
    get = q.extractor(q.Task("t", "Is it? Reply with only yes or no.", "yes", "exact"))
    assert get("Yes, it is.") == "yes"
    assert get("...") is None


# -- statistics ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        (8, 10, 0.4902, 0.9433),  # the textbook example
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (40, 80, 0.3930, 0.6070),
    ],
)
def test_wilson_known_values(k, n, lo, hi):
    got = q.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)


def test_wilson_no_trials_is_uninformative():
    assert q.wilson(0, 0) == (0.0, 1.0)


def test_paired_bootstrap_is_seeded_and_signed():
    better = [True, True, True, False] * 10
    worse = [True, False, False, False] * 10
    one = q.paired_bootstrap(better, worse, seed=3)
    assert one == q.paired_bootstrap(better, worse, seed=3)
    d, lo, hi = one
    assert d == pytest.approx(0.5) and 0 < lo <= d <= hi
    d2, lo2, hi2 = q.paired_bootstrap(worse, better, seed=3)
    assert d2 == pytest.approx(-0.5) and lo2 <= d2 <= hi2 < 0


def test_paired_bootstrap_of_identical_results_is_zero():
    same = [True, False, True] * 5
    assert q.paired_bootstrap(same, same) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_rejects_unpaired_lists():
    with pytest.raises(ValueError, match="equally long"):
        q.paired_bootstrap([True], [True, False])


def test_question_seeds_depend_on_the_seed_and_the_id_only():
    assert q.question_seed(0, "a") == q.question_seed(0, "a")
    assert len({q.question_seed(0, "a"), q.question_seed(1, "a"), q.question_seed(0, "b")}) == 3


# -- task files ----------------------------------------------------------------------------------
def write(tmp_path, *lines):
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_load_defaults_and_blank_lines(tmp_path):
    path = write(
        tmp_path,
        json.dumps({"question": "2 + 2?", "answer": 4}),
        "",
        json.dumps(
            {"id": "c", "question": "Capital of Italy?", "answer": "Rome", "aliases": ["Roma"]}
        ),
    )
    a, b = q.load_tasks(path)
    assert (a.id, a.answer, a.match) == ("line-1", "4", "number")
    assert (b.id, b.match, b.aliases) == ("c", "contains", ("Roma",))


def test_bad_json_names_the_line(tmp_path):
    path = write(tmp_path, json.dumps({"question": "q", "answer": "x"}), "{not json")
    with pytest.raises(q.TaskFileError, match=r"line 2: not valid JSON"):
        q.load_tasks(path)


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"question": "q"}, "line 1: missing field 'answer'"),
        ({"answer": "a"}, "line 1: missing field 'question'"),
        ({"question": "q", "answer": ""}, "'answer' must be a non-empty"),
        ({"question": "q", "answer": "a", "match": "fuzzy"}, "'match' must be one of"),
        ({"question": "q", "answer": "ten", "match": "number"}, "needs a numeric answer"),
        ({"question": "q", "answer": "a", "aliases": "b"}, "'aliases' must be a list"),
        ({"question": "q", "answer": "the"}, "empty once normalised"),
        (["q", "a"], "must be a JSON object"),
    ],
)
def test_bad_tasks_are_refused(tmp_path, obj, message):
    with pytest.raises(q.TaskFileError, match=message):
        q.load_tasks(write(tmp_path, json.dumps(obj)))


def test_duplicate_ids_and_empty_files_are_refused(tmp_path):
    dup = write(tmp_path, *[json.dumps({"id": "x", "question": "q", "answer": "y"})] * 2)
    with pytest.raises(q.TaskFileError, match="line 2: id 'x' is already used on line 1"):
        q.load_tasks(dup)
    with pytest.raises(q.TaskFileError, match="holds no tasks"):
        q.load_tasks(write(tmp_path, ""))


def test_shipped_tasks_are_valid_and_their_answers_score():
    tasks = q.load_tasks(q.DEFAULT_TASKS)
    assert 60 <= len(tasks) <= 100
    assert len({t.id for t in tasks}) == len(tasks)
    kinds = {t.match for t in tasks}
    assert kinds <= set(q.MATCH_KINDS) and {"number", "contains"} <= kinds
    for t in tasks:
        assert q.score(t.answer, t), t
        assert all(q.score(a, t) for a in t.aliases), t
        assert q.extractor(t)(t.answer) is not None, t


def test_shipped_arithmetic_answers_are_right():
    import re

    for t in q.load_tasks(q.DEFAULT_TASKS):
        m = re.fullmatch(
            r"What is ([\d.,]+) (\+|-|times) ([\d.,]+)\? Answer with a number\.", t.question
        )
        if m:
            a, b = (float(x.replace(",", "")) for x in (m[1], m[3]))
            want = {"+": a + b, "-": a - b, "times": a * b}[m[2]]
            assert float(t.answer) == pytest.approx(want), t


# -- contenders ----------------------------------------------------------------------------------
def test_contenders_share_their_proposals():
    s = q.Settings(("smollm2",))
    built = {c.key: c for c in q.contenders(s)}
    assert list(built) == list(q.CONTENDER_KEYS)
    task = num("1")
    # The same Propose step heads every 3-sample contender, so the cache serves them the
    # same samples; "single sample" is its first request.
    heads = {repr(built[k].build(task).steps[0]) for k in ("self-moa", "shuffle")}
    assert heads == {"Propose(['smollm2', 'smollm2', 'smollm2'], max_tokens=48)"}
    assert repr(built["sample"].build(task)) == "Propose(['smollm2'], max_tokens=48)"
    assert repr(built["greedy"].build(task)) == "Propose(['smollm2'], temp=0.0, max_tokens=48)"


def test_contenders_run_on_a_scripted_client(tmp_path):
    """End to end without a model: every contender this moa can build runs, shares its
    samples through the cache, and the table, diagnostics and JSON come out."""
    import anyio

    import moa

    drawn = []

    async def client(*, model, messages, temp, max_tokens):
        if messages[0]["role"] == "system":  # an aggregator or a judge
            return "Response 1", 50, 3
        if temp == 0:
            return "The answer is 12.", 10, 5
        drawn.append(1)  # every sample differs, so shared samples can only come from the cache
        return f"It is {10 + len(drawn) % 3}.", 10, 5

    tasks = [num("12"), q.Task("u", "What is 6 + 6? Answer with a number.", "12", "number")]
    chosen = [c for c in q.contenders(q.Settings(("m",))) if q.missing_step(c.key) is None]
    summaries = []
    with moa.Cache(str(tmp_path / "c.sqlite")) as cache:
        for c in chosen:
            answers = anyio.run(
                lambda: q.run_contender(
                    c, tasks, client, seed=0, cache=cache, concurrency=2, limits=None, timeout=None
                )
            )
            summaries.append(q.Summary(c, answers, 0.0, moa.DEFAULT_PRICES | {"m": (0, 0)}))
    by_key = {s.contender.key: s for s in summaries}
    assert by_key["greedy"].correct == [True, True]
    proposals = [a.proposals for a in by_key["self-moa"].answers]
    for s in summaries:
        if s.contender.k == 3:
            assert [a.proposals for a in s.answers] == proposals
    assert by_key["self-moa"].cached() == 2  # the first sample, drawn by "single sample"
    assert str(by_key["self-moa"].cost()) == "$0"
    text = "\n".join(q.table(summaries, 0) + q.diagnostics(summaries))
    for s in summaries:
        assert s.contender.label in text
    json.dumps(q.to_json(summaries, {}))


def test_the_persona_vote_and_its_singles_share_their_greedy_answers(tmp_path):
    """Each persona's single greedy call is the same request as that persona's voter in the
    recipe: the vote reads the answers the singles were scored on (the cache serves them)."""
    import anyio

    import moa

    async def client(*, model, messages, temp, max_tokens):
        # The plain greedy call is wrong; any persona, or a sample, is right.
        persona = messages[0]["role"] == "system"
        return ("It is 12." if persona or temp > 0 else "It is 11."), 10, 5

    tasks = [num("12")]
    chosen = {
        c.key + c.label: c
        for c in q.contenders(q.Settings(("m",)))
        if c.key in ("greedy", "personas", "persona-vote")
    }
    with moa.Cache(str(tmp_path / "c.sqlite")) as cache:
        summaries = [
            q.Summary(
                c,
                anyio.run(
                    lambda c=c: q.run_contender(
                        c,
                        tasks,
                        client,
                        seed=0,
                        cache=cache,
                        concurrency=1,
                        limits=None,
                        timeout=None,
                    )
                ),
                0.0,
                moa.DEFAULT_PRICES | {"m": (0, 0)},
            )
            for c in chosen.values()
        ]
    vote = next(s for s in summaries if s.contender.key == "persona-vote")
    singles = [s for s in summaries if s.contender.single]
    assert len(singles) == len(moa.recipes.VOTE_PERSONAS)
    assert vote.contender.k == len(singles) + 3
    assert vote.cached() == len(singles)  # every greedy voter came from a single's call
    assert vote.correct == [True]  # 13 voters against the plain greedy call
    assert next(s for s in singles if s.contender.key == "greedy").correct == [False]
    lines = q.table(summaries, 0)
    assert "Δ vs single greedy" in lines[0] and "(greedy)" in "\n".join(lines)
