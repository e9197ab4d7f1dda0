"""Every step's messages, outputs and history, against the scripted client."""

import json
import random

import pytest
from scripted import ScriptedClient

import moa
from moa import (
    Aggregate,
    Dropout,
    Filter,
    Map,
    Propose,
    Rank,
    Refine,
    Sample,
    Shuffle,
    Synthesize,
    Take,
    Vote,
    run_sync,
)
from moa._llm_steps import (
    AGGREGATE_PROMPT,
    RANK_PROMPT,
    REFINE_PROMPT,
    SYNTHESIZE_PROMPT,
    VOTE_PROMPT,
)


def table(**replies):
    """A client whose model ``name`` always answers ``replies[name]``."""
    return ScriptedClient(lambda model, messages: replies[model])


def seeded(*texts):
    """A Propose step and client that put ``texts`` in as the current responses."""
    names = [f"m{i}" for i in range(len(texts))]
    return Propose(names), dict(zip(names, texts))


def test_propose_sends_the_prompt_alone_and_keeps_agent_order():
    client = ScriptedClient(
        lambda m, _: f"answer of {m}", delay=lambda m, _: {"a": 0.03, "b": 0.0, "c": 0.01}[m]
    )
    result, history = run_sync(Propose(["a", "b", "c"], temp=0.3, max_tokens=50), "Q?", client)
    assert result == "answer of a"
    assert history.outputs == ("answer of a", "answer of b", "answer of c")
    # calls finished b, c, a; history keeps agent order
    assert [c.model for c in history[0].calls] == ["a", "b", "c"]
    for call in client.calls:
        assert call["messages"] == [{"role": "user", "content": "Q?"}]
        assert (call["temp"], call["max_tokens"]) == (0.3, 50)


def test_synthesize_sends_instruction_as_system_and_numbered_responses_with_query():
    first, replies = seeded("one", "two")
    client = table(**replies, x="X", y="Y")
    result, history = run_sync(first | Synthesize(["x", "y"]), "What?", client)
    assert history.outputs == ("X", "Y")
    expected = [
        {"role": "system", "content": SYNTHESIZE_PROMPT},
        {"role": "user", "content": "Response 1:\none\n\nResponse 2:\ntwo\n\nQuestion:\nWhat?"},
    ]
    assert [c["messages"] for c in client.calls[2:]] == [expected, expected]
    assert [dict(m) for m in history[1].calls[0].messages] == expected
    assert history[1].inputs == ("one", "two")


def test_aggregate_combines_into_one_and_prompt_override_with_braces():
    first, replies = seeded("one", "two")
    client = table(**replies, agg="final")
    json_prompt = 'Reply as JSON: {"answer": "..."}'
    result, history = run_sync(first | Aggregate("agg", prompt=json_prompt), "Q", client)
    assert result == "final" and history.outputs == ("final",)
    assert client.calls[-1]["messages"][0] == {"role": "system", "content": json_prompt}
    run_sync(first | Aggregate("agg"), "Q", client)
    assert client.calls[-1]["messages"][0]["content"] == AGGREGATE_PROMPT


def test_prompt_with_braces_reaches_the_model_verbatim():
    client = ScriptedClient()
    prompt = '{"task": "sum", "values": [1, 2]} {0} {missing}'
    run_sync(Propose(["a"]) | Synthesize(["a"]), prompt, client)
    assert client.calls[0]["messages"][0]["content"] == prompt
    assert client.calls[1]["messages"][1]["content"].endswith(prompt)


def test_refine_improves_each_response_round_robin_in_order():
    first, replies = seeded("r1", "r2", "r3")
    client = ScriptedClient(
        lambda m, msgs: replies.get(m) or f"{m} refined {msgs[-1]['content'][-2:]}",
        delay=lambda m, msgs: 0.02 if msgs[-1]["content"].endswith("r1") else 0,
    )
    result, history = run_sync(first | Refine(["x", "y"]), "Q", client)
    assert history.outputs == ("x refined r1", "y refined r2", "x refined r3")
    call = history[1].calls[1]
    assert call.model == "y"
    assert [dict(m) for m in call.messages] == [
        {"role": "system", "content": REFINE_PROMPT},
        {"role": "user", "content": "Question:\nQ\n\nResponse to improve:\nr2"},
    ]


@pytest.mark.parametrize(
    "judge, n, kept",
    [
        ("3, 1", 3, ("c", "a")),  # the judge may list fewer; only those are kept (noted)
        ("I compared 4 responses: 3, 1, 2", 2, ("c", "a")),
        ("Response 2 is best, then Response 4.", 2, ("b", "d")),
        ("4 > 2 > 1 > 3", 4, ("d", "b", "a", "c")),
    ],
)
def test_rank_keeps_the_judges_best_n_in_its_order(judge, n, kept):
    first, replies = seeded("a", "b", "c", "d")
    client = table(**replies, judge=judge)
    result, history = run_sync(first | Rank("judge", n=n), "Q", client)
    assert history.outputs == kept
    assert history[1].calls[0].text == judge
    system = client.calls[-1]["messages"][0]["content"]
    assert system == RANK_PROMPT.replace("{n}", str(n))


def test_rank_unparseable_reply_falls_back_to_first_n_and_says_so():
    first, replies = seeded("a", "b", "c", "d")
    client = table(**replies, judge="They are all great.")
    result, history = run_sync(first | Rank("judge", n=2), "Q", client)
    assert history.outputs == ("a", "b")
    assert history[1].calls[0].text == "They are all great."
    assert "could be read" in history[1].notes[0] and "first 2" in history[1].notes[0]


def test_rank_fewer_than_asked_is_noted():
    first, replies = seeded("a", "b", "c", "d")
    _, history = run_sync(first | Rank("judge", n=3), "Q", table(**replies, judge="2"))
    assert history.outputs == ("b",)
    assert "named 1 of the 3" in history[1].notes[0]


def test_vote_returns_the_judges_consensus_restated():
    first, replies = seeded("Paris", "Paris.", "Lyon")
    client = table(**replies, judge="Paris")
    result, history = run_sync(first | Vote("judge"), "Capital of France?", client)
    assert result == "Paris" and history.outputs == ("Paris",)
    assert client.calls[-1]["messages"][0]["content"] == VOTE_PROMPT


def test_transforms_in_a_run_and_their_records():
    first, replies = seeded("a", "bb", "ccc", "dddd")
    p = first | Filter(lambda s: len(s) > 1) | Map(str.upper) | Take(2)
    result, history = run_sync(p, "Q", table(**replies))
    assert result == "BB"
    assert [r.outputs for r in history] == [
        ("a", "bb", "ccc", "dddd"),
        ("bb", "ccc", "dddd"),
        ("BB", "CCC", "DDDD"),
        ("BB", "CCC"),
    ]
    assert [r.kind for r in history] == ["llm", "transform", "transform", "transform"]
    assert history[2].step == "Map(str.upper)"


def test_shuffle_sample_dropout_use_only_the_given_rng():
    xs = [str(i) for i in range(20)]
    state = random.getstate()
    for step in (Shuffle(), Sample(5), Dropout(0.5)):
        assert step.apply(xs, random.Random(7)) == step.apply(xs, random.Random(7))
    assert random.getstate() == state
    assert sorted(Shuffle().apply(xs, random.Random(1))) == sorted(xs)
    assert len(Sample(50).apply(xs, random.Random(1))) == 20
    assert Dropout(1).apply(xs, random.Random(1)) in [[x] for x in xs]
    assert Dropout(1).apply([], random.Random(1)) == []


def test_map_returning_non_str_is_an_error_naming_the_step():
    def count(s):
        return len(s)

    first, replies = seeded("a")
    with pytest.raises(
        TypeError, match=r"Map\(.*count\): fn must return a str, returned 1 \(int\)"
    ):
        run_sync(first | Map(count), "Q", table(**replies))


def test_history_totals_seed_names_and_json():
    client = ScriptedClient(lambda m, _: "two words")
    result, history = run_sync(
        Propose(["a", "b"]) | Aggregate("a"), "one two three", client, seed=5
    )
    assert history.total_calls == 3
    assert history.output_tokens == 6
    assert history.input_tokens == 3 + 3 + sum(
        len(m["content"].split()) for m in client.calls[2]["messages"]
    )
    step = history[0]
    assert step["step"] == step.step == "Propose(['a', 'b'])"
    assert step["outputs"] == step.outputs == ("two words", "two words")
    assert step["llm_calls"] == step.llm_calls == step.calls
    assert step.step_time == step.duration >= 0
    call = step.calls[0]
    assert call["in_tokens"] == 3 and call["out_tokens"] == 2 and call.attempts == 1 and call.ok
    data = json.loads(json.dumps(history.to_dict()))
    assert data["totals"] == {
        "calls": 3,
        "failed_calls": 0,
        "cancelled_calls": 0,
        "cached_calls": 0,
        "input_tokens": history.input_tokens,
        "output_tokens": 6,
    }
    assert data["seed"] == 5 and data["steps"][1]["calls"][0]["messages"][0]["role"] == "system"
    assert history.seed == 5


def test_unknown_token_counts_make_totals_unknown_not_zero():
    async def client(*, model, messages, temp, max_tokens):
        return "x", None, 3

    _, history = run_sync(Propose(["a", "b"]), "Q", client)
    assert history.input_tokens is None
    assert history.output_tokens == 6


def test_history_records_are_immutable():
    _, history = run_sync(Propose(["a"]), "Q", ScriptedClient())
    with pytest.raises(AttributeError):
        history.steps = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        history[0].calls[0].messages[0]["content"] = "changed"  # type: ignore[index]


def test_client_editing_its_messages_cannot_edit_history():
    async def client(*, model, messages, temp, max_tokens):
        messages[0]["content"] = "tampered"
        return "ok", 1, 1

    _, history = run_sync(Propose(["a"]), "Q", client)
    assert history[0].calls[0].messages[0]["content"] == "Q"


def test_a_nested_pipeline_is_reused_as_a_step():
    layer = Synthesize(["a", "b"]) | Shuffle()
    p = Propose(["a", "b"]) | layer * 2 | Aggregate("a")
    _, history = run_sync(p, "Q", ScriptedClient(), seed=3)
    assert [r.step for r in history] == [
        "Propose(['a', 'b'])",
        "Synthesize(['a', 'b'])",
        "Shuffle()",
        "Synthesize(['a', 'b'])",
        "Shuffle()",
        "Aggregate('a')",
    ]
    assert [r.path for r in history] == [(i,) for i in range(6)]


def test_parallel_branches_concatenate_in_branch_order():
    client = ScriptedClient(
        lambda m, _: m, delay=lambda m, _: {"a": 0.03, "b": 0.0, "c": 0.01}.get(m, 0)
    )
    p = (Propose(["a"]) | Map(str.upper)) & Propose(["b", "c"])
    result, history = run_sync(p, "Q", client)
    assert history.outputs == ("A", "b", "c")
    assert [(r.step, r.path) for r in history] == [
        ("Propose(['a'])", (0, 0, 0)),
        ("Map(str.upper)", (0, 0, 1)),
        ("Propose(['b', 'c'])", (0, 1)),
        ("(Propose(['a']) | Map(str.upper)) & Propose(['b', 'c'])", (0,)),
    ]


def test_seed_style_lookups_on_records():
    client = ScriptedClient(permanent={"bad"})
    _, history = run_sync(Propose(["ok", "bad"]), "Q", client, retry=moa.Retry(attempts=1))
    good, bad = history[0].calls
    assert "error" not in good and "error" in bad
    assert "in_tokens" in good and "nonsense" not in good and 0 not in good
    assert bad["error"].startswith("Permanent") and good.get("error") is None
    with pytest.raises(KeyError):
        good["error"]
    with pytest.raises(KeyError):
        history[0][0]
    assert "llm_calls" in history[0] and 0 not in history[0]


@pytest.mark.parametrize(
    "reply, count, order",
    [
        ("I compared 5 responses: 3, 1", 5, [2, 0]),
        ("The ranking is 2 > 1 > 3. Response 2 wins", 3, [1, 0, 2]),
        ("1. Response 3\n2. Response 1", 3, [2, 0]),
        ("llama-3.3-70b-versatile says 2 is best", 4, [1]),
        ("Response 9 and response 2", 3, [1]),
        ("nothing to see", 3, []),
        ("9" * 5000, 3, []),
    ],
)
def test_parse_ranking(reply, count, order):
    assert moa.steps.parse_ranking(reply, count) == order
