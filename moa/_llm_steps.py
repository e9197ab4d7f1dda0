"""LLM steps: Propose, Synthesize, Aggregate, Refine, Rank, Vote, Pick, AggregateSeq, and the
base for your own.

A step only describes its calls (:meth:`LLMStep.requests`) and how the replies become the new
responses (:meth:`LLMStep.combine`); the executor makes the calls, with concurrency, limits,
timeouts, retries and history. Message layout: the step's instruction is the system message,
the numbered responses and the user's question form the user message. What a step hands the
executor (:class:`~moa.steps.Request` and its messages) lives in :mod:`moa._request`; how a
judge's reply is read, in :mod:`moa._judging`.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ._agent import AgentLike, agent_of, plain_text
from ._bounds import (
    MAX_CALLS,
    MAX_COUNT,
    MAX_TEMP,
    check_int,
    check_number,
    check_seconds,
    describe,
    safe_repr,
)
from ._contract import (
    LLMStep,
    Message,
    Plan,
    Request,
    ask,
    messages,
    numbered,
    tie_broken,
    with_responses,
)
from ._judging import parse_pick, parse_ranking

__all__ = (
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMP",
    "Aggregate",
    "AggregateSeq",
    "Pick",
    "Propose",
    "Rank",
    "Refine",
    "Synthesize",
    "Vote",
)

DEFAULT_TEMP = 0.7
DEFAULT_MAX_TOKENS = 2048

SYNTHESIZE_PROMPT = (
    "You are given several responses to the user's question. Some may be wrong or biased. "
    "Write one new, better response: keep what is correct, fix what is wrong, add what is "
    "missing. Answer the question directly and do not mention the responses."
)
AGGREGATE_PROMPT = (
    "You are given several responses to the user's question. Some may be wrong or biased. "
    "Combine them into one final answer: keep what is correct, fix what is wrong. Answer the "
    "question directly and do not mention the responses."
)
REFINE_PROMPT = (
    "Improve the response to the user's question: correct its mistakes, fill its gaps and keep "
    "what is right. Reply with the improved response only."
)
RANK_PROMPT = (
    "Rank the numbered responses by how well they answer the user's question, best first. "
    "Reply with the numbers of the best {n} responses only, comma-separated, best first "
    "(for example: 3, 1, 2)."
)
PICK_PROMPT = (
    "Which numbered response answers the user's question best? Judge correctness first. "
    "Reply with the number of that one response only (for example: 2)."
)
VOTE_PROMPT = (
    "These responses answer the same question. Find the answer that most of them agree on; "
    "if there is no clear majority, pick the most accurate one. Reply with only that answer, "
    "restated clearly."
)


# -- validation, at construction ----------------------------------------------------------------
def _check_agent(step: str, agent: object) -> AgentLike:
    if isinstance(agent, (list, tuple)):
        raise TypeError(
            f"{step}(agent): takes one model name, not a list; for several models use "
            f"Propose/Synthesize/Refine, or pick one: {step}({safe_repr(agent[0])})"
            if agent
            else f"{step}(agent): takes one model name, not an empty list"
        )
    return agent_of(step, agent, "agent")


def _agents(step: str, agents: object) -> tuple[AgentLike, ...]:
    if isinstance(agents, str):
        raise TypeError(
            f"{step}(agents): agents must be a list of model names, not a bare string; "
            f"did you mean {step}([{safe_repr(agents)}])?"
        )
    if not isinstance(agents, (list, tuple)):
        raise TypeError(
            f"{step}(agents): agents must be a list of model names, not {describe(agents)}"
        )
    if not agents:
        raise ValueError(f"{step}(agents): agents must name at least one model, got []")
    if len(agents) > MAX_CALLS:
        raise ValueError(
            f"{step}(agents): a step calls at most {MAX_CALLS:,} agents, got {len(agents):,}"
        )
    return tuple(agent_of(step, a, "agents") for a in agents)


def _check_sampling(step: Any) -> None:
    """A step's ``temp``, ``max_tokens`` and (where it has one) ``prompt``, checked; the prompt
    kept as a plain str, so the step's repr shows what it holds."""
    name = type(step).__name__
    check_number(name, "temp", step.temp, high=MAX_TEMP)
    check_int(name, "max_tokens", step.max_tokens, 1, MAX_COUNT)
    prompt = getattr(step, "prompt", None)
    if prompt is not None:
        if not isinstance(prompt, str):
            raise TypeError(
                f"{name}(prompt=...): prompt must be a non-empty str or None for the "
                f"default, not {describe(prompt)}"
            )
        if not prompt.strip():
            raise ValueError(
                f"{name}(prompt=...): prompt must be a non-empty str or None for the "
                f"default, got {safe_repr(prompt)}"
            )
        object.__setattr__(step, "prompt", plain_text(prompt))


def _check_min_success(step: str, min_success: object, most: int | None) -> None:
    check_int(step, "min_success", min_success, 1, MAX_CALLS)
    assert isinstance(min_success, int)
    if most is not None and min_success > most:
        raise ValueError(
            f"{step}(min_success=...): min_success={min_success} exceeds the "
            f"{most} agents, so the step could never succeed"
        )


def _check_quorum(step: str, quorum: object, min_success: int, most: int | None) -> None:
    if quorum is None:
        return
    check_int(step, "quorum", quorum, 1, MAX_CALLS, none=True)
    assert isinstance(quorum, int)
    if most is not None and quorum > most:
        raise ValueError(f"{step}(quorum=...): quorum={quorum} exceeds the {most} agents")
    if quorum < min_success:
        raise ValueError(
            f"{step}(quorum=...): quorum={quorum} is below min_success="
            f"{min_success}, so the step would stop before it could succeed"
        )


class _MultiAgent(LLMStep):
    """Shared by the steps whose calls may partly fail: keep the successful replies in order.

    ``min_success`` calls must answer; with ``quorum``, the step goes on once that many have
    (the rest are cancelled); with ``deadline`` (seconds), it goes on when the deadline comes
    with the replies it has, if ``min_success`` of them arrived (the rest are cancelled and
    the step is marked degraded in history), and fails otherwise."""

    fixed_rounds: ClassVar[bool] = True

    __slots__ = ()
    # Fields of the dataclass subclasses, which read them here.
    min_success: int
    quorum: int | None

    def required(self, n_requests: int) -> int:
        return min(self.min_success, n_requests)

    def enough(self, n_requests: int) -> int | None:
        quorum = self.quorum
        return min(quorum, n_requests) if quorum is not None else None

    def combine(
        self, prompt: str, responses: list[str], replies: list[str | None]
    ) -> tuple[list[str], list[str]]:
        return [r for r in replies if r is not None], []


@dataclass(frozen=True, slots=True, repr=False)
class Propose(_MultiAgent):
    """Every agent answers the user's prompt alone, concurrently; the answers, in agent order,
    replace the current responses.

    ``agents``: model names or :class:`~moa.Agent` values; ``temp`` and ``max_tokens`` hold
    where an agent sets none. The step fails with :class:`~moa.StepFailedError` unless
    ``min_success`` calls answer. ``quorum=k`` goes on once k have answered, the rest cancelled;
    ``deadline`` (seconds) goes on at that time with the replies it has, if ``min_success`` of
    them arrived, and marks the step degraded in history."""

    agents: Sequence[AgentLike]  # stored as a tuple
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    min_success: int = 1
    quorum: int | None = None
    deadline: float | None = None
    _positional: ClassVar[int] = 1
    needs_responses: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", _agents("Propose", self.agents))
        _check_sampling(self)
        _check_min_success("Propose", self.min_success, len(self.agents))
        _check_quorum("Propose", self.quorum, self.min_success, len(self.agents))
        check_seconds("Propose", "deadline", self.deadline)

    def requests(self, prompt: str, responses: list[str]) -> list[Request]:
        msgs = messages(("user", prompt))
        return [ask(a, msgs, self.temp, self.max_tokens) for a in self.agents]


@dataclass(frozen=True, slots=True, repr=False)
class Synthesize(_MultiAgent):
    """Every agent reads the prompt and all current responses and writes a new response; the
    new responses, in agent order, replace the old.

    ``agents``: model names or :class:`~moa.Agent` values; ``temp`` and ``max_tokens`` hold
    where an agent sets none. ``prompt`` replaces the step's instruction (never ``str.format``-ted). The step fails with :class:`~moa.StepFailedError` unless
    ``min_success`` calls answer. ``quorum=k`` goes on once k have answered, the rest cancelled;
    ``deadline`` (seconds) goes on at that time with the replies it has, if ``min_success`` of
    them arrived, and marks the step degraded in history."""

    agents: Sequence[AgentLike]  # stored as a tuple
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    min_success: int = 1
    quorum: int | None = None
    deadline: float | None = None
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", _agents("Synthesize", self.agents))
        _check_sampling(self)
        _check_min_success("Synthesize", self.min_success, len(self.agents))
        _check_quorum("Synthesize", self.quorum, self.min_success, len(self.agents))
        check_seconds("Synthesize", "deadline", self.deadline)

    def requests(self, prompt: str, responses: list[str]) -> list[Request]:
        msgs = with_responses(self.prompt or SYNTHESIZE_PROMPT, prompt, responses)
        return [ask(a, msgs, self.temp, self.max_tokens) for a in self.agents]


@dataclass(frozen=True, slots=True, repr=False)
class Refine(_MultiAgent):
    """Each response is improved on its own; agents take the responses round-robin. The
    refined responses keep the order of the originals.

    ``agents``: model names or :class:`~moa.Agent` values; ``temp`` and ``max_tokens`` hold
    where an agent sets none. ``prompt`` replaces the step's instruction (never ``str.format``-ted). The step fails with :class:`~moa.StepFailedError` unless
    ``min_success`` calls answer. ``quorum=k`` goes on once k have answered, the rest cancelled;
    ``deadline`` (seconds) goes on at that time with the replies it has, if ``min_success`` of
    them arrived, and marks the step degraded in history."""

    agents: Sequence[AgentLike]  # stored as a tuple
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    min_success: int = 1
    quorum: int | None = None
    deadline: float | None = None
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", _agents("Refine", self.agents))
        _check_sampling(self)
        _check_min_success("Refine", self.min_success, None)
        _check_quorum("Refine", self.quorum, self.min_success, None)
        check_seconds("Refine", "deadline", self.deadline)

    def requests(self, prompt: str, responses: list[str]) -> list[Request]:
        instruction = self.prompt or REFINE_PROMPT
        agents = self.agents
        return [
            ask(
                agents[i % len(agents)],
                messages(
                    ("system", instruction),
                    ("user", f"Question:\n{prompt}\n\nResponse to improve:\n{text}"),
                ),
                self.temp,
                self.max_tokens,
            )
            for i, text in enumerate(responses)
        ]


def _answered(reply: str | None) -> str:
    # A one-call round must succeed in full (``required`` is all of it) before its reply is
    # read, so a judge's or an aggregator's reply is never None here.
    assert reply is not None
    return reply


class _Judge(LLMStep):
    """One call over all current responses; its failure fails the step."""

    fixed_rounds: ClassVar[bool] = True

    __slots__ = ()
    # Fields of the dataclass subclasses, which read them here (Vote's agent may be None).
    agent: AgentLike | None
    temp: float
    max_tokens: int

    def _instruction(self) -> str:
        raise NotImplementedError

    #: The judge's reply is the step's output (Aggregate, Vote), not a verdict read by it.
    _reply_is_output: ClassVar[bool] = True

    def requests(self, prompt: str, responses: list[str]) -> list[Request]:
        msgs = with_responses(self._instruction(), prompt, responses)
        assert self.agent is not None  # a step without a judge never asks for its call
        return [ask(self.agent, msgs, self.temp, self.max_tokens, self._reply_is_output)]


@dataclass(frozen=True, slots=True, repr=False)
class Aggregate(_Judge):
    """One agent combines all current responses into the single final response."""

    agent: AgentLike
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", _check_agent("Aggregate", self.agent))
        _check_sampling(self)

    def _instruction(self) -> str:
        return self.prompt or AGGREGATE_PROMPT

    def combine(
        self, prompt: str, responses: list[str], replies: list[str | None]
    ) -> tuple[list[str], list[str]]:
        return [_answered(replies[0])], []


@dataclass(frozen=True, slots=True, repr=False)
class Vote(_Judge):
    """A judge model finds the answer most responses agree on and restates it; its reply is
    the single output.

    The model-free vote, each response's answer extracted and counted, is
    :class:`~moa.Majority`: ``Majority(r"-?\\d+")``. ``Vote(extract=...)``, its old spelling,
    still builds one (with a DeprecationWarning) until the next release.
    """

    agent: AgentLike
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    _positional: ClassVar[int] = 1

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if "extract" not in kwargs:
            return object.__new__(cls)
        extra = sorted(set(kwargs) - {"extract"})
        if args or extra:
            raise TypeError(
                "Vote(extract=...) is the model-free vote, Majority(extract=...): it takes no "
                f"judge and no {', '.join(extra) or 'agent'}; for a judge use Vote('judge')"
            )
        warnings.warn(
            "Vote(extract=...) is now Majority(extract=...); the old spelling goes in the "
            "next release",
            DeprecationWarning,
            stacklevel=2,
        )
        from ._select import Majority

        return Majority(kwargs["extract"])

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", _check_agent("Vote", self.agent))
        _check_sampling(self)

    def _instruction(self) -> str:
        return self.prompt or VOTE_PROMPT

    def combine(
        self, prompt: str, responses: list[str], replies: list[str | None]
    ) -> tuple[list[str], list[str]]:
        return [_answered(replies[0])], []


@dataclass(frozen=True, slots=True, repr=False)
class Pick(LLMStep):
    """A judge picks the best response by its number, and that response is the single output,
    verbatim (the judge's words never replace it).

    The judge is asked ``times`` times, concurrently, each time over a different order: a
    random order and its rotations, so every response is shown in different positions. The
    picks are counted and the most picked response wins (a tie is broken with the run's
    seeded RNG): a judge that favours a position, first or last, no longer decides by it.
    ``min_success`` judge calls must answer. The ask comes after the question, and a reply is
    read by :func:`parse_pick`: only an explicit pick counts (a bare number, "Response 2",
    "#2"), never a number in the judge's own working. A reply that picks nothing does not
    vote; when none picks, the first response is kept and a note says so.
    """

    fixed_rounds: ClassVar[bool] = True

    agent: AgentLike
    times: int = 3
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    min_success: int = 1
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", _check_agent("Pick", self.agent))
        check_int("Pick", "times", self.times, 1, MAX_CALLS)
        _check_sampling(self)
        _check_min_success("Pick", self.min_success, self.times)

    def required(self, n_requests: int) -> int:
        return min(self.min_success, n_requests)

    def plan(self, prompt: str, responses: list[str], rng: random.Random) -> Plan:
        n = len(responses)
        if n == 1:
            return list(responses), ["Pick: one response, nothing to pick from"]
        base = rng.sample(range(n), n)
        # Rotations of one random order: over n asks each response takes every position once.
        orders = [
            base[k * n // self.times % n :] + base[: k * n // self.times % n]
            for k in range(self.times)
        ]
        instruction = self.prompt or PICK_PROMPT
        replies = yield [
            ask(
                self.agent,
                _pick_messages(instruction, prompt, [responses[i] for i in o]),
                self.temp,
                self.max_tokens,
            )
            for o in orders
        ]
        picks = []
        for order, reply in zip(orders, replies, strict=False):
            named = parse_pick(reply, n) if reply is not None else None
            picks.append(None if named is None else order[named])
        counts = Counter(p for p in picks if p is not None)
        shown = ", ".join("-" if p is None else str(p + 1) for p in picks)
        if not counts:
            return [responses[0]], [
                f"Pick: no response number could be read from the judge's "
                f"replies ({shown}); kept the first response"
            ]
        top = max(counts.values())
        tied = sorted(i for i, c in counts.items() if c == top)
        winner, tie = tie_broken(tied, rng)
        return [responses[winner]], [
            f"Pick: picks {shown} (response numbers in the current order) over {self.times} "
            f"orders; kept response {winner + 1} with {top} of {len(picks)}{tie}"
        ]


@dataclass(frozen=True, slots=True, repr=False)
class AggregateSeq(LLMStep):
    """Self-MoA-Seq (Li et al. 2025, arXiv:2502.00674): one agent aggregates more responses
    than fit in one context, in rounds over a sliding window.

    Round 1 aggregates the first ``window`` responses. Each later round shows the last
    ``reserved`` syntheses (the best so far) and the next ``window - reserved`` new responses,
    until every response has been read; the last synthesis is the single output. With no more
    than ``window`` responses it is one round, as :class:`Aggregate`. Every round's call is in
    history, in order, and a note per round says what it read.
    """

    fixed_rounds: ClassVar[bool] = True

    agent: AgentLike
    window: int = 6
    reserved: int = 1
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", _check_agent("AggregateSeq", self.agent))
        check_int("AggregateSeq", "window", self.window, 2, MAX_CALLS)
        check_int("AggregateSeq", "reserved", self.reserved, 1, MAX_CALLS)
        if self.reserved >= self.window:
            raise ValueError(
                f"AggregateSeq(window={self.window}, reserved={self.reserved}): "
                f"reserved must be below window, so each round reads a new response"
            )
        _check_sampling(self)

    def plan(self, prompt: str, responses: list[str], rng: random.Random) -> Plan:
        instruction = self.prompt or AGGREGATE_PROMPT
        syntheses: list[str] = []
        notes: list[str] = []
        start = 0
        while start < len(responses):
            kept = syntheses[-self.reserved :] if syntheses else []
            take = self.window - len(kept)
            batch = responses[start : start + take]
            notes.append(
                f"round {len(notes) + 1}: "
                + (f"{len(kept)} synthesis(es) + " if kept else "")
                + f"responses {start + 1}-{start + len(batch)}"
            )
            last = start + len(batch) >= len(responses)
            replies = yield [
                ask(
                    self.agent,
                    with_responses(instruction, prompt, kept + batch),
                    self.temp,
                    self.max_tokens,
                    last,
                )
            ]
            syntheses.append(_answered(replies[0]))
            start += len(batch)
        return [syntheses[-1]], notes


@dataclass(frozen=True, slots=True, repr=False)
class Rank(_Judge):
    """A judge orders the responses; the best ``n`` are kept verbatim, in the judge's order.

    The judge may list only its top ``n``. Its reply is read by :func:`parse_ranking`. When no
    response number can be read from it, the first ``n`` responses are kept in their current
    order; when it names fewer than ``n``, only those are kept. Either way a note in history
    says so, beside the judge's raw reply.
    """

    agent: AgentLike
    n: int = 3
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", _check_agent("Rank", self.agent))
        check_int("Rank", "n", self.n, 1, MAX_COUNT)
        _check_sampling(self)

    _reply_is_output: ClassVar[bool] = False

    def _instruction(self) -> str:
        # replace, not format: a user's prompt may hold JSON braces.
        return (self.prompt or RANK_PROMPT).replace("{n}", str(self.n))

    def combine(
        self, prompt: str, responses: list[str], replies: list[str | None]
    ) -> tuple[list[str], list[str]]:
        want = min(self.n, len(responses))
        order = parse_ranking(_answered(replies[0]), len(responses))[:want]
        if not order:
            return responses[:want], [
                f"Rank: no response number (1-{len(responses)}) could be read from the judge's "
                f"reply; kept the first {want} responses in their current order"
            ]
        notes = []
        if len(order) < want:
            notes.append(
                f"Rank: the judge named {len(order)} of the {want} responses asked "
                f"for; kept only those"
            )
        return [responses[i] for i in order], notes


def _pick_messages(instruction: str, prompt: str, responses: Sequence[str]) -> tuple[Message, ...]:
    # The ask comes last, after the question: a small judge answers whatever it read last, and
    # with the question last it answers the question instead of naming a response.
    return messages(
        ("system", instruction),
        (
            "user",
            f"{numbered(responses)}\n\nQuestion:\n{prompt}\n\nWhich response answers the "
            f"question best? Reply with its number (1-{len(responses)}) only.",
        ),
    )
