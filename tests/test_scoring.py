"""Whether a reply answers a task (moa._scoring): each named scorer on right and wrong replies,
``auto`` choosing per task, a function scorer, and check_scorer refusing before any call a
scorer that cannot fit the tasks, naming the task."""

from __future__ import annotations

import pytest

import moa
from moa import Judge, Task, TaskError
from moa._scoring import SCORERS, check_scorer, score_many, score_text


def task(answer: str, *aliases: str, match: str | None = None, id: str | int = "t") -> Task:
    return Task(id, "What is it?", answer, aliases, match)


# -- number ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply, answer",
    [
        ("1,500.0", "1500"),
        ("It costs 1,500 dollars", "1500"),
        ("1500", "1,500.00"),
        ("The answer is -2", "-2"),
        ("x = \u22123", "-3"),  # a Unicode minus sign
        ("3 + 4 = 7", "7"),  # the last number
        ("0.50", "0.5"),
        ("-0", "0"),
    ],
)
def test_number_compares_the_last_number_as_a_number(reply, answer):
    assert score_text("number", reply, task(answer))


@pytest.mark.parametrize(
    "reply, answer",
    [
        ("3, no: 7", "3"),  # only the last number counts
        ("15", "1500"),
        ("1,5", "15"),
        ("no number here", "4"),
        ("h2o", "2"),  # a digit inside a word is no number
        ("", "4"),
    ],
)
def test_number_refuses_another_number_or_none(reply, answer):
    assert not score_text("number", reply, task(answer))


def test_number_accepts_an_alias():
    assert score_text("number", "about 3.14", task("3.1416", "3.14"))


# -- contains ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    ["Rome", "rome.", "The capital of Italy is Rome!", "It's ROME, of course", "rome\n"],
)
def test_contains_finds_the_answer_among_the_words(reply):
    assert score_text("contains", reply, task("Rome"))


@pytest.mark.parametrize("reply", ["Romeo", "Romania", "Paris", "", "Ro me"])
def test_contains_needs_the_whole_words(reply):
    assert not score_text("contains", reply, task("Rome"))


def test_contains_matches_several_words_in_order_ignoring_articles_and_punctuation():
    answer = task("The United States")
    assert score_text("contains", "It is the United-States.", answer)
    assert score_text("contains", "an United States", answer)
    assert not score_text("contains", "States United", answer)


def test_contains_accepts_an_alias():
    assert score_text("contains", "Roma, surely", task("Rome", "Roma"))


# -- exact -------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply", ["Rome", "rome", "  ROME. ", "The Rome!", "rome\n"])
def test_exact_is_the_whole_reply_normalised(reply):
    assert score_text("exact", reply, task("Rome"))


@pytest.mark.parametrize("reply", ["Rome, of course", "It is Rome", "Romeo", ""])
def test_exact_refuses_anything_more(reply):
    assert not score_text("exact", reply, task("Rome"))


def test_exact_accepts_an_alias():
    assert score_text("exact", "Roma", task("Rome", "Roma"))


# -- regex -------------------------------------------------------------------------------------
def test_regex_searches_case_insensitively():
    pattern = task(r"\brome\b")
    assert score_text("regex", "I think ROME.", pattern)
    assert not score_text("regex", "Romeo", pattern)
    assert score_text("regex", "answer: 42", task(r"^answer:\s*4\d$"))


def test_regex_accepts_an_alias():
    assert score_text("regex", "roma", task(r"^rome$", r"^roma$"))


# -- auto --------------------------------------------------------------------------------------
def test_auto_compares_a_number_answer_as_a_number():
    assert score_text("auto", "that is 1,500.0", task("1500"))
    assert not score_text("auto", "1500 or 15", task("1500"))  # number: the last one


def test_auto_compares_any_other_answer_by_its_words():
    assert score_text("auto", "It is Rome.", task("Rome"))
    assert not score_text("auto", "Romeo", task("Rome"))
    # "4 apples" holds a number but is not one: contains, so "4" alone is not it.
    assert score_text("auto", "I have 4 apples", task("4 apples"))
    assert not score_text("auto", "4", task("4 apples"))


def test_auto_honours_the_tasks_match():
    # As a number, "7" is the last number of "7 or 8"? No: 8 is; as contains, 7 is there.
    assert not score_text("auto", "7 or 8", task("7"))
    assert score_text("auto", "7 or 8", task("7", match="contains"))
    assert not score_text("auto", "It is Rome", task("Rome", match="exact"))
    assert score_text("auto", "rome", task("Rome", match="exact"))
    assert score_text("auto", "it is 2,000", task("The year 2000", match="number"))


def test_auto_reads_a_unicode_minus_answer_as_a_negative_number():
    assert score_text("auto", "-3", task("\u22123"))
    assert not score_text("auto", "3", task("\u22123"))


def test_auto_scores_a_number_answer_with_a_word_alias():
    tasks = [task("4", "four")]
    assert check_scorer("auto", tasks) == "auto"
    assert score_text("auto", "four", tasks[0])


# -- functions ---------------------------------------------------------------------------------
def test_a_function_scorer_gets_the_reply_and_the_task():
    seen = []

    def starts(reply: str, t: Task) -> bool:
        seen.append((reply, t.id))
        return reply.startswith(t.answer)

    assert score_text(starts, "Rome, Italy", task("Rome", id=5))
    assert not score_text(starts, "It is Rome", task("Rome", id=6))
    assert seen == [("Rome, Italy", 5), ("It is Rome", 6)]


@pytest.mark.parametrize("verdict", [1, 0, None, "yes", 1.0])
def test_a_function_scorer_must_return_a_bool(verdict):
    with pytest.raises(TypeError, match=r"a scorer function returns a bool, returned"):
        score_text(lambda reply, t: verdict, "x", task("x"))


# -- check_scorer ------------------------------------------------------------------------------
def test_check_scorer_returns_the_scorer_that_fits():
    tasks = [task("4"), task("Rome", id="u")]
    assert check_scorer("auto", tasks) == "auto"
    assert check_scorer("contains", tasks) == "contains"

    def fn(reply: str, t: Task) -> bool:
        return True

    assert check_scorer(fn, tasks) is fn
    judge = Judge("judge-model")
    assert check_scorer(judge, tasks) is judge


def test_number_on_a_word_answer_is_refused_naming_the_task():
    tasks = [task("4", id="ok"), task("Paris", id="capital-of-france")]
    with pytest.raises(
        TaskError,
        match=r"task 'capital-of-france': the number scorer compares numbers, and the answer "
        r"'Paris' holds none; use scorer='contains'",
    ):
        check_scorer("number", tasks)


def test_number_on_a_word_alias_is_refused():
    with pytest.raises(TaskError, match=r"task 7: .*the answer 'four' holds none"):
        check_scorer("number", [task("4", "four", id=7)])


def test_a_task_asking_for_number_is_held_to_it_under_auto():
    with pytest.raises(TaskError, match=r"task 'p': the number scorer"):
        check_scorer("auto", [task("Paris", match="number", id="p")])


def test_a_bad_regex_is_refused_naming_the_task():
    with pytest.raises(TaskError, match=r"task 'r': '\(unclosed' is not a regex"):
        check_scorer("regex", [task("ok"), task("(unclosed", id="r")])


@pytest.mark.parametrize("scorer", ["contains", "exact"])
@pytest.mark.parametrize("answer", ["...", "!?", " - "])
def test_an_answer_empty_once_normalised_is_refused(scorer, answer):
    with pytest.raises(TaskError, match=r"task 'e': the answer .* is empty once punctuation"):
        check_scorer(scorer, [task(answer, id="e")])


def test_auto_refuses_an_answer_empty_once_normalised():
    with pytest.raises(TaskError, match=r"is empty once punctuation"):
        check_scorer("auto", [task("?!", id="e")])


@pytest.mark.parametrize("scorer", [3, None, b"number", ["number"]])
def test_a_scorer_of_another_type_is_a_type_error(scorer):
    with pytest.raises(TypeError, match=r"scorer must be one of auto, number, contains"):
        check_scorer(scorer, [task("4")])


@pytest.mark.parametrize("scorer", ["numbers", "Number", "judge", ""])
def test_an_unknown_scorer_name_is_a_value_error(scorer):
    with pytest.raises(ValueError, match=r"scorer must be one of auto, number, contains, exact"):
        check_scorer(scorer, [task("4")])


def test_the_scorer_names():
    assert SCORERS == ("auto", "number", "contains", "exact", "regex")


# -- score_many --------------------------------------------------------------------------------
def test_score_many_counts_no_reply_as_wrong():
    t = task("4")
    assert score_many("auto", ["4", None, "5", "it is 4"], t) == [True, False, False, True]
    assert score_many("auto", [], t) == []


def test_score_many_with_a_function_never_passes_it_a_missing_reply():
    seen = []

    def fn(reply: str, t: Task) -> bool:
        seen.append(reply)
        return True

    assert score_many(fn, [None, "a", None], task("4")) == [False, True, False]
    assert seen == ["a"]


# -- Judge -------------------------------------------------------------------------------------
def test_judge_is_a_frozen_value():
    assert Judge("m") == Judge("m")
    assert Judge("m", max_tokens=8) != Judge("m")
    assert moa.Judge is Judge
    with pytest.raises(AttributeError):
        Judge("m").max_tokens = 3  # type: ignore[misc]


def test_judge_refuses_an_agent_that_is_none():
    with pytest.raises(TypeError, match=r"Judge"):
        Judge(3)  # type: ignore[arg-type]


def test_auto_reads_the_replys_own_answer_not_a_word_it_mentions():
    q = "What is the capital of France? Answer in one word."
    paris = Task("p", q, "Paris")
    assert score_text("auto", "Paris.", paris)
    assert score_text("auto", "The capital of France is Paris.", paris)
    assert not score_text("auto", "Lyon, not Paris.", paris)
    dc = Task("dc", "Where is the White House?", "Washington, D.C.")
    assert score_text("auto", "It is in Washington, D.C., the capital.", dc)


def test_auto_scores_a_lettered_option_and_an_article_alone_is_an_answer():
    q = "Which is a fruit? (A) carrot (B) apple (C) potato"
    assert score_text("auto", "(B) apple", Task("m", q, "B"))
    assert score_text("auto", "The answer is B.", Task("m", q, "B"))
    assert not score_text("auto", "A", Task("m", q, "B"))
    assert score_text("auto", "A", Task("m", q, "A"))
    check_scorer("auto", [Task("m", q, "A")])  # "A" is not empty once normalised


def test_a_number_with_a_currency_sign_is_a_number():
    assert score_text("auto", "It costs 1500 dollars", task("$1,500"))
    assert not score_text("auto", "It costs $1,500.75", task("$1,500"))
