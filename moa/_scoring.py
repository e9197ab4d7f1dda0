"""Whether a reply answers a task: the scorers an evaluation compares replies with.

``number`` (the reply's last number equals an answer's, as numbers: "1,500.0" is 1500),
``contains`` (an answer's words appear in the reply's, in order, punctuation and articles
ignored), ``exact`` (the whole reply is an answer, so normalised), ``regex`` (the task's answer
is a regular expression the reply must match, run off the event loop with a time bound),
``auto`` (each task's own ``match``, else per answer: ``number`` for a number, the option's
letter for a lettered multiple-choice question, and otherwise the answer's words in the reply
with the reply's own answer, its first content word or name, among them: "Lyon, not Paris."
does not answer "Paris"), a function ``(reply, task) -> bool``, or :class:`Judge`, a model asked whether
the reply gives the reference answer, in both orders (position-debiased: right only when both
say so). A scorer that cannot fit the tasks (``number`` on "Paris") is refused before any call,
naming the task.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._agent import AgentLike, agent_of
from ._answers import (
    first_clause,
    is_number,
    last_number,
    normalise,
    numbers,
    option_letter,
    same_number,
)
from ._bounds import check_int, describe
from ._contract import LLMStep, Plan, ask, messages
from ._tasks import Task, TaskError

__all__ = ("SCORERS", "Judge", "ScorerLike", "check_scorer", "score_many", "score_text")

_CLAUSE_BREAK = re.compile(r"[.!?;:,()\"]")

#: The scorers named by a string.
SCORERS = ("auto", "number", "contains", "exact", "regex")


def _number(reply: str, answer: str, question: str) -> bool:
    got = last_number(reply)
    return got is not None and same_number(got, numbers(answer)[-1])


def _contains(reply: str, answer: str, question: str) -> bool:
    return f" {normalise(answer)} " in f" {normalise(reply)} "


def _exact(reply: str, answer: str, question: str) -> bool:
    return normalise(reply) == normalise(answer)


def _regex(reply: str, answer: str, question: str) -> bool:
    return re.search(answer, reply, re.IGNORECASE) is not None


def _text(reply: str, answer: str, question: str) -> bool:
    # The answer's words in the reply's first clause that says something: "Lyon, not Paris."
    # does not answer "Paris", though it holds it. (An answer with a clause break of its own,
    # "Washington, D.C.", is looked for in the whole reply.)
    clause = None if _CLAUSE_BREAK.search(answer) else first_clause(reply, question)
    return _contains(reply if clause is None else clause, answer, question)


def _option(reply: str, answer: str, question: str) -> bool:
    return option_letter(reply, question) == normalise(answer)


_BY_NAME: dict[str, Callable[[str, str, str], bool]] = {
    "number": _number,
    "contains": _contains,
    "exact": _exact,
    "regex": _regex,
    "text": _text,
    "option": _option,
}


def _kinds(scorer: str, task: Task) -> list[tuple[str, str]]:
    """Each answer of ``task`` with how ``scorer`` compares a reply with it. ``auto`` takes
    the task's ``match``, else, for each answer: ``number`` for a number ("4", "$1,500"),
    ``option`` for a letter when the question lists lettered options, and ``text`` otherwise
    (the answer's words in the reply, and the reply's own answer among them); so "4" with the
    alias "four" accepts both."""
    if scorer != "auto":
        return [(scorer, a) for a in task.answers]
    if task.match is not None:
        return [(task.match, a) for a in task.answers]
    return [(_auto(a, task.prompt), a) for a in task.answers]


def _auto(answer: str, question: str) -> str:
    if is_number(answer):
        return "number"
    if len(answer.strip("() .")) == 1 and option_letter(answer, question) is not None:
        return "option"
    return "text"


def score_text(scorer: str | Callable[[str, Task], bool], reply: str, task: Task) -> bool:
    """Whether ``reply`` answers ``task`` by a named scorer or a function (not a Judge)."""
    if callable(scorer):
        verdict = scorer(reply, task)
        if not isinstance(verdict, bool):
            raise TypeError(f"a scorer function returns a bool, returned {describe(verdict)}")
        return verdict
    return any(_BY_NAME[kind](reply, answer, task.prompt) for kind, answer in _kinds(scorer, task))


def check_scorer(scorer: object, tasks: Sequence[Task]) -> ScorerLike:
    """``scorer`` checked against every task before any call: a name of :data:`SCORERS`, a
    function or a Judge; TaskError naming the task a named scorer cannot score."""
    if isinstance(scorer, Judge) or (callable(scorer) and not isinstance(scorer, str)):
        return scorer
    if not isinstance(scorer, str):
        raise TypeError(
            f"scorer must be one of {', '.join(SCORERS)}, a function (reply, task) -> bool or "
            f"a moa.Judge, not {describe(scorer)}"
        )
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, not {scorer!r}")
    for task in tasks:
        for kind, answer in _kinds(scorer, task):
            if kind == "number" and not numbers(answer):
                fix = (
                    "give the task match 'contains'"
                    if scorer == "auto"
                    else ("use scorer='contains' (or 'auto')")
                )
                raise TaskError(
                    f"task {task.id!r}: the number scorer compares numbers, and the answer "
                    f"{answer!r} holds none; {fix}"
                )
            if kind == "regex":
                try:
                    re.compile(answer)
                except (re.error, OverflowError, RecursionError) as exc:
                    raise TaskError(
                        f"task {task.id!r}: {answer!r} is not a regex ({exc})"
                    ) from None
            if kind in ("contains", "exact", "text") and not normalise(answer):
                raise TaskError(
                    f"task {task.id!r}: the answer {answer!r} is empty once punctuation and "
                    "articles are left out, so no reply could contain it"
                )
    return scorer


JUDGE_PROMPT = (
    "You grade an answer to a question against the reference answer. Reply YES if the "
    "candidate answer gives the reference answer (other words for the same thing count), "
    "NO if it does not. Reply with YES or NO only."
)


@dataclass(frozen=True, slots=True)
class Judge:
    """A model that scores open-ended replies: asked whether the reply gives the reference
    answer, once with the reference first and once with the reply first; the reply is right
    only when both say YES (a judge that favours a position cannot decide by it)."""

    agent: AgentLike
    max_tokens: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", agent_of("Judge", self.agent, "agent"))
        check_int("Judge", "max_tokens", self.max_tokens, 1, 1 << 20)

    def step(self, task: Task, reply: str) -> LLMStep:
        """The two asks as a step of their own, run like any other (cached, retried). The
        reference is the answer and, where the task has them, its aliases."""
        reference = task.answer
        if task.aliases:
            reference += f" (also right: {'; '.join(task.aliases)})"
        return _JudgeStep(self.agent, task.prompt, reference, reply, self.max_tokens)


@dataclass(frozen=True, slots=True, repr=False)
class _JudgeStep(LLMStep):
    agent: AgentLike
    question: str
    reference: str
    reply: str
    max_tokens: int = 4
    needs_responses = False
    fixed_rounds = True

    def plan(self, prompt: str, responses: list[str], rng: Any) -> Plan:
        first = f"Reference answer:\n{self.reference}\n\nCandidate answer:\n{self.reply}"
        second = f"Candidate answer:\n{self.reply}\n\nReference answer:\n{self.reference}"
        asks = [
            ask(
                self.agent,
                messages(
                    ("system", JUDGE_PROMPT), ("user", f"Question:\n{self.question}\n\n{body}")
                ),
                0.0,
                self.max_tokens,
            )
            for body in (first, second)
        ]
        replies = yield asks
        verdicts = [(r or "").strip().upper().startswith("YES") for r in replies]
        return ["YES" if all(verdicts) else "NO"], [f"judge: {', '.join(map(str, verdicts))}"]


#: What scores a reply: a name of :data:`SCORERS`, a function ``(reply, task) -> bool``, or a
#: :class:`Judge`.
ScorerLike = str | Callable[[str, Task], bool] | Judge


def score_many(
    scorer: str | Callable[[str, Task], bool], replies: Sequence[str | None], task: Task
) -> list[bool]:
    """Each reply scored (None: no reply, wrong): what an evaluation hands off the loop."""
    return [r is not None and score_text(scorer, r, task) for r in replies]
