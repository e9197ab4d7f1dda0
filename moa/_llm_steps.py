"""LLM steps: Propose, Synthesize, Aggregate, Refine, Rank, Vote, and the base for your own.

A step only describes its calls (:meth:`LLMStep.requests`) and how the replies become the new
responses (:meth:`LLMStep.combine`); the executor makes the calls, with concurrency, limits,
timeouts, retries and history. Message layout: the step's instruction is the system message,
the numbered responses and the user's question form the user message.
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from ._agent import AgentLike, agent_of
from ._bounds import MAX_CALLS, MAX_COUNT, check_int, safe_repr
from ._pipeline import Step, _describe

__all__ = (
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMP",
    "Aggregate",
    "AggregateSeq",
    "LLMStep",
    "Pick",
    "Propose",
    "Rank",
    "Refine",
    "Request",
    "Synthesize",
    "Vote",
    "messages",
    "numbered",
    "parse_pick",
    "parse_ranking",
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

Message = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Request:
    """One call an LLM step asks for. ``messages`` are read-only mappings of role and content.
    ``final``: this call's reply is the step's output as written (an aggregator's answer, not
    a judge's verdict), so :func:`moa.run_stream` may stream it when the step ends the
    pipeline. ``agent``: the label of the :class:`~moa.Agent` that asked (None for a bare
    model name), shown in history. ``seed``: the sampling seed the executor gives the call (a
    step leaves it None)."""

    model: str
    messages: tuple[Message, ...]
    temp: float
    max_tokens: int
    final: bool = False
    agent: str | None = None
    seed: int | None = None


#: A step's calls as rounds (:meth:`LLMStep.plan`): yields each round's requests, is sent that
#: round's replies, and returns the step's responses and notes.
Plan = Generator[list[Request], list[str | None], tuple[list[str], list[str]]]


def messages(*pairs: tuple[str, str]) -> tuple[Message, ...]:
    """Read-only ``{"role", "content"}`` messages from ``(role, content)`` pairs."""
    return tuple(MappingProxyType({"role": role, "content": content}) for role, content in pairs)


def numbered(responses: Sequence[str]) -> str:
    """The responses as the user message shows them: ``Response 1:`` and its text, and so on."""
    return "\n\n".join(f"Response {i}:\n{text}" for i, text in enumerate(responses, 1))


def _with_responses(instruction: str, prompt: str, responses: Sequence[str]) -> tuple[Message, ...]:
    # Responses first and the question last: small models answer what they read last.
    return messages(
        ("system", instruction),
        ("user", f"{numbered(responses)}\n\nQuestion:\n{prompt}"),
    )


def ask(
    agent: AgentLike, msgs: tuple[Message, ...], temp: float, max_tokens: int, final: bool = False
) -> Request:
    """The request ``agent`` makes with the step's messages and settings: an :class:`Agent`'s
    own ``temp`` and ``max_tokens`` replace the step's, and its ``system`` persona goes first
    in the system message (a system message of its own when the step has none)."""
    if isinstance(agent, str):
        return Request(agent, msgs, temp, max_tokens, final)
    if agent.system is not None:
        if msgs and msgs[0]["role"] == "system":
            msgs = messages(
                ("system", f"{agent.system}\n\n{msgs[0]['content']}"),
                *((m["role"], m["content"]) for m in msgs[1:]),
            )
        else:
            msgs = messages(("system", agent.system), *((m["role"], m["content"]) for m in msgs))
    return Request(
        agent.model,
        msgs,
        temp if agent.temp is None else agent.temp,
        max_tokens if agent.max_tokens is None else agent.max_tokens,
        final,
        agent.label,
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
            f"{step}(agents): agents must be a list of model names, not {_describe(agents)}"
        )
    if not agents:
        raise ValueError(f"{step}(agents): agents must name at least one model, got []")
    if len(agents) > MAX_CALLS:
        raise ValueError(
            f"{step}(agents): a step calls at most {MAX_CALLS:,} agents, got {len(agents):,}"
        )
    return tuple(agent_of(step, a, "agents") for a in agents)


def _check_sampling(step: str, temp: object, max_tokens: object, prompt: object) -> None:
    # Compared with the largest float, an int too large to be a float (whose repr Python
    # may refuse) is out of range too.
    if (
        isinstance(temp, bool)
        or not isinstance(temp, (int, float))
        or not 0 <= temp <= sys.float_info.max
    ):
        raise ValueError(
            f"{step}(temp=...): temp must be a finite number >= 0, got {safe_repr(temp)}"
        )
    check_int(step, "max_tokens", max_tokens, 1, MAX_COUNT)
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise ValueError(
            f"{step}(prompt=...): prompt must be a non-empty str or None for the "
            f"default, got {safe_repr(prompt)}"
        )


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


class LLMStep(Step):
    """A step that calls models; the base of the built-in LLM steps and of your own.

    A subclass only describes: :meth:`requests` says which calls to make from the user's prompt
    and the current responses, :meth:`combine` turns the replies into the new responses. The
    executor makes the calls (concurrently, under ``max_concurrency``, with ``timeout`` and the
    retry policy) and writes them to history. Write a subclass as a
    ``@dataclass(frozen=True, slots=True, repr=False)`` whose fields are its arguments; set
    ``_positional`` to how many of them its repr shows positionally. Both methods must be pure
    functions of their arguments (no model calls, no randomness), so runs replay from a seed.

    ``needs_responses``: the step has nothing to work on without current responses, and the
    executor raises :class:`~moa.errors.EmptyInputError` rather than call with none. Set it
    to False for a step that starts from the prompt alone, as ``Propose`` does.
    """

    __slots__ = ()
    needs_responses: ClassVar[bool] = True

    def requests(self, prompt: str, responses: list[str]) -> list[Request]:
        """The calls to make, in the order their replies are passed to :meth:`combine`.
        Build each one's messages with :func:`moa.messages` (and :func:`moa.numbered`)."""
        raise NotImplementedError

    def required(self, n_requests: int) -> int:
        """How many of the calls must succeed for the step to succeed (default: all). When
        fewer do, the executor raises :class:`~moa.errors.StepFailedError`."""
        return n_requests

    def enough(self, n_requests: int) -> int | None:
        """After this many successful calls the step stops waiting: the calls still running are
        cancelled and recorded as cancelled (default: None, wait for all)."""
        return None

    def combine(
        self, prompt: str, responses: list[str], replies: list[str | None]
    ) -> tuple[list[str], list[str]]:
        """The new responses (a list of str) and notes for history (a list of str), from the
        replies in request order; a reply is None where its call failed."""
        raise NotImplementedError

    def plan(self, prompt: str, responses: list[str], rng: random.Random) -> Plan:
        """The step's calls as rounds: a generator that yields each round's requests, is sent
        that round's replies (None where a call failed or was cancelled), and returns
        ``(responses, notes)``. The default is one round, :meth:`requests` then :meth:`combine`.

        Override it for a step whose later calls depend on earlier replies (Self-MoA-Seq), that
        needs randomness (``rng`` is the run's seeded generator: use it and nothing else, so a
        seed replays the run), or that makes no call at all. Each round is checked against
        :meth:`required` and :meth:`enough` for its own number of requests.
        """
        replies = yield self.requests(prompt, responses)
        return self.combine(prompt, responses, replies)


class _MultiAgent(LLMStep):
    """Shared by the steps whose calls may partly fail: keep the successful replies in order."""

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
    replace the current responses."""

    agents: Sequence[AgentLike]  # stored as a tuple
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    min_success: int = 1
    quorum: int | None = None
    _positional: ClassVar[int] = 1
    needs_responses: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", _agents("Propose", self.agents))
        _check_sampling("Propose", self.temp, self.max_tokens, None)
        _check_min_success("Propose", self.min_success, len(self.agents))
        _check_quorum("Propose", self.quorum, self.min_success, len(self.agents))

    def requests(self, prompt: str, responses: list[str]) -> list[Request]:
        msgs = messages(("user", prompt))
        return [ask(a, msgs, self.temp, self.max_tokens) for a in self.agents]


@dataclass(frozen=True, slots=True, repr=False)
class Synthesize(_MultiAgent):
    """Every agent reads the prompt and all current responses and writes a new response; the
    new responses, in agent order, replace the old."""

    agents: Sequence[AgentLike]  # stored as a tuple
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    min_success: int = 1
    quorum: int | None = None
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", _agents("Synthesize", self.agents))
        _check_sampling("Synthesize", self.temp, self.max_tokens, self.prompt)
        _check_min_success("Synthesize", self.min_success, len(self.agents))
        _check_quorum("Synthesize", self.quorum, self.min_success, len(self.agents))

    def requests(self, prompt: str, responses: list[str]) -> list[Request]:
        msgs = _with_responses(self.prompt or SYNTHESIZE_PROMPT, prompt, responses)
        return [ask(a, msgs, self.temp, self.max_tokens) for a in self.agents]


@dataclass(frozen=True, slots=True, repr=False)
class Refine(_MultiAgent):
    """Each response is improved on its own; agents take the responses round-robin. The
    refined responses keep the order of the originals."""

    agents: Sequence[AgentLike]  # stored as a tuple
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    min_success: int = 1
    quorum: int | None = None
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", _agents("Refine", self.agents))
        _check_sampling("Refine", self.temp, self.max_tokens, self.prompt)
        _check_min_success("Refine", self.min_success, None)
        _check_quorum("Refine", self.quorum, self.min_success, None)

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
        msgs = _with_responses(self._instruction(), prompt, responses)
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
        _check_sampling("Aggregate", self.temp, self.max_tokens, self.prompt)

    def _instruction(self) -> str:
        return self.prompt or AGGREGATE_PROMPT

    def combine(
        self, prompt: str, responses: list[str], replies: list[str | None]
    ) -> tuple[list[str], list[str]]:
        return [_answered(replies[0])], []


@dataclass(frozen=True, slots=True, repr=False)
class Vote(_Judge):
    """The consensus among the responses, as the single output.

    ``Vote(agent)``: a judge model finds the answer most responses agree on and restates it;
    its reply is the output. ``Vote(extract=...)``: no model call; each response's answer is
    extracted (``extract`` is a regex: the last non-empty match is the answer, or with groups
    the first group that took part; or a function ``str -> str | None``; "" counts as no
    answer), the most common answer wins (a tie is broken with
    the run's seeded RNG) and the first response giving it is the output, verbatim. Responses
    with no answer do not vote; when none has one, the first response is kept and a note
    says so.
    """

    agent: AgentLike | None = None
    prompt: str | None = None
    temp: float = DEFAULT_TEMP
    max_tokens: int = DEFAULT_MAX_TOKENS
    extract: str | Callable[[str], str | None] | None = None
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.extract is None:
            if self.agent is None:
                raise TypeError(
                    "Vote(...) needs a judge model, Vote('judge'), or an answer "
                    "extractor, Vote(extract=r'\\d+') (a regex or a function)"
                )
            object.__setattr__(self, "agent", _check_agent("Vote", self.agent))
        else:
            if self.agent is not None:
                raise TypeError(
                    "Vote(agent, extract=...): give a judge model or an extractor, "
                    "not both; Vote(extract=...) makes no model call"
                )
            if self.prompt is not None:
                raise TypeError(
                    "Vote(extract=..., prompt=...): prompt is the judge's "
                    "instruction, and Vote(extract=...) has no judge"
                )
            if isinstance(self.extract, str):
                try:
                    re.compile(self.extract)
                except (re.error, OverflowError, RecursionError) as exc:
                    # a{4294967296} overflows the compiler; 2,000 nested groups recurse
                    raise ValueError(
                        f"Vote(extract=...): {safe_repr(self.extract)} is not a valid regex: {exc}"
                    ) from None
            elif not callable(self.extract):
                raise TypeError(
                    f"Vote(extract=...): extract must be a regex str or a function "
                    f"str -> str | None, not {_describe(self.extract)}"
                )
        _check_sampling("Vote", self.temp, self.max_tokens, self.prompt)

    def __repr__(self) -> str:
        shown = Step.__repr__(self)
        return shown.replace("Vote(None, ", "Vote(", 1) if self.agent is None else shown

    def _instruction(self) -> str:
        return self.prompt or VOTE_PROMPT

    def _answer(self, text: str) -> str | None:
        if callable(self.extract):
            answer = self.extract(text)
            if answer is not None and not isinstance(answer, str):
                raise TypeError(
                    f"{self!r}: extract must return a str or None, returned {_describe(answer)}"
                )
            return answer or None  # "" is no answer
        # The last match that found something: a pattern that can match "" (r"\d*") matches
        # emptily everywhere, and an empty answer is no answer. With groups, the answer is the
        # first group that took part (r"answer: (\d+)|(\d+)$" reads either).
        assert isinstance(self.extract, str)
        for match in reversed(list(re.finditer(self.extract, text))):
            answer = (
                next((g for g in match.groups() if g), None) if match.re.groups else match.group()
            )
            if answer:
                return answer
        return None

    def plan(self, prompt: str, responses: list[str], rng: random.Random) -> Plan:
        if self.extract is None:
            return (yield from LLMStep.plan(self, prompt, responses, rng))
        answers = [self._answer(r) for r in responses]
        counts = Counter(a for a in answers if a is not None)
        if not counts:
            return [responses[0]], [
                f"Vote: no answer could be extracted from any of the "
                f"{len(responses)} responses; kept the first"
            ]
        top = max(counts.values())
        tied = sorted(a for a, c in counts.items() if c == top)
        winner = tied[0] if len(tied) == 1 else rng.choice(tied)
        note = (
            f"Vote: {winner!r} from {top} of {len(responses)} responses"
            + (
                f" (a tie with {', '.join(repr(t) for t in tied if t != winner)}, broken at random)"
                if len(tied) > 1
                else ""
            )
            + (f"; {answers.count(None)} had no answer" if None in answers else "")
        )
        return [responses[answers.index(winner)]], [note]

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
        _check_sampling("Pick", self.temp, self.max_tokens, self.prompt)
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
        winner = tied[0] if len(tied) == 1 else rng.choice(tied)
        return [responses[winner]], [
            f"Pick: picks {shown} (response numbers in the current order) over {self.times} "
            f"orders; kept response {winner + 1} with {top} of {len(picks)}"
            + (" (a tie, broken at random)" if len(tied) > 1 else "")
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
        _check_sampling("AggregateSeq", self.temp, self.max_tokens, self.prompt)

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
                    _with_responses(instruction, prompt, kept + batch),
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
        _check_sampling("Rank", self.temp, self.max_tokens, self.prompt)

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


# A number counts only standing alone: not inside a name such as "llama-3.3-70b" or "gpt4".
_ALONE = r"(?<![\w.\-])\d+(?![\w\-]|\.\d)"
_REFERENCE = re.compile(r"(?:\bresponses?\s*#?\s*|#|\[)\s*(\d+)(?![\w\-]|\.\d)", re.IGNORECASE)
_NUMBER_RUN = re.compile(
    rf"{_ALONE}(?:\s*(?:[,;>/]|\band\b|\bthen\b|\s)\s*{_ALONE})*", re.IGNORECASE
)


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


_BARE_NUMBER = re.compile(r"\W*(?:response\s*)?#?\s*\(?(\d+)\)?\W*", re.IGNORECASE)


def parse_pick(text: str, count: int) -> int | None:
    """The 0-based index of the response a judge's reply picks among ``count``, or None.

    Only an explicit pick counts: a reply that is just a number ("2", "2.", "(2)", "#2",
    "Response 2"), or the first explicit reference in a longer reply ("Response 3 is best",
    "[3]"). A bare number inside prose is not a pick: "1 + 6 = 7" names no response.
    """
    bare = _BARE_NUMBER.fullmatch(text.strip())
    found = [bare.group(1)] if bare else _REFERENCE.findall(text)
    valid = _valid(found, count)
    return valid[0] if valid else None


def parse_ranking(text: str, count: int) -> list[int]:
    """The 0-based indices, best first, that a judge's reply ranks among ``count`` responses.

    Two readings compete: the explicit references ("Response 3", "#3", "[3]") in order, and
    the longest run of numbers joined by commas, ``>``, "and" or spaces; the one naming more
    responses wins, the references on a tie. So "I compared 5 responses: 3, 1" reads as 3
    then 1, and "2 > 1 > 3. Response 2 wins" as 2, 1, 3. Numbers outside 1..count and
    repeats are ignored. An empty list means nothing could be read.
    """
    refs = _valid(_REFERENCE.findall(text), count)
    runs = [_valid(re.findall(_ALONE, m.group()), count) for m in _NUMBER_RUN.finditer(text)]
    longest = max(runs, key=len, default=[])
    return refs if len(refs) >= len(longest) else longest


def _valid(digits: list[str], count: int) -> list[int]:
    """1-based numbers to 0-based indices, dropping those out of range and repeats."""
    seen: list[int] = []
    for d in digits:
        # int() of a huge digit string is slow or refused; no index is that long anyway.
        i = int(d) if len(d) <= 9 else 0
        if 1 <= i <= count and i - 1 not in seen:
            seen.append(i - 1)
    return seen
