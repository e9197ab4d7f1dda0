"""The contract between an LLM step and the executor: :class:`LLMStep`, the :class:`Request`
it asks for, the messages a request carries, and how an agent's settings shape it.

A step only describes its calls; the executor makes them. Everything that must agree about
"the same request" (the sample index among identical requests, the sampling seed, the cache
key) reads one value, :attr:`Request.identity`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from ._agent import AgentLike
from ._pipeline import Step

__all__ = (
    "OFF_LOOP_SECONDS",
    "Identity",
    "LLMStep",
    "Message",
    "OffLoop",
    "Plan",
    "Reads",
    "Request",
    "ask",
    "messages",
    "numbered",
    "reads",
    "tie_broken",
    "with_responses",
)

Message = Mapping[str, str]
#: What makes two requests the same request: model, messages as (role, content) pairs,
#: temperature as a float (0 and -0.0 are 0.0) and max_tokens.
Identity = tuple[str, tuple[tuple[str, str], ...], float, int]


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
    _identity: Identity | None = field(default=None, init=False, repr=False, compare=False)

    def with_seed(self, seed: int) -> Request:
        """This request with the sampling seed ``seed`` (its identity kept: a seed does not
        change what is asked)."""
        out = Request(
            self.model, self.messages, self.temp, self.max_tokens, self.final, self.agent, seed
        )
        object.__setattr__(out, "_identity", self._identity)
        return out

    @property
    def identity(self) -> Identity:
        """What the request asks, whoever asks it: the one key the sample index, the
        sampling seed and the cache all use. Made once per request."""
        found = self._identity
        if found is None:
            found = (
                self.model,
                tuple((m["role"], m["content"]) for m in self.messages),
                float(self.temp) + 0.0,  # + 0.0 turns -0.0 into 0.0: equal temps, one key
                self.max_tokens,
            )
            object.__setattr__(self, "_identity", found)
        return found


#: How long off-loop work may take before it is stopped: far above what any honest
#: extraction needs (14 replies of a million characters each take about 6 s).
OFF_LOOP_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class OffLoop:
    """Work a step's plan hands the executor instead of a round of requests: ``fn(*args)``,
    run off the event loop, its result sent back into the plan. ``process``: run it in a
    worker process (for work that holds the GIL, such as ``re``); ``fn`` and ``args`` must then
    pickle. Past ``seconds`` (default :data:`OFF_LOOP_SECONDS`) the work is stopped (a
    process is killed) and the step fails."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    process: bool = False
    seconds: float | None = None  # None: OFF_LOOP_SECONDS


#: A step's calls as rounds (:meth:`moa.LLMStep.plan`): yields each round's requests, is sent
#: that round's replies, and returns the step's responses and notes. It may also yield an
#: :class:`~moa.steps.OffLoop` (work to do off the event loop) and is sent its result.
Plan = Generator["list[Request] | OffLoop", Any, tuple[list[str], list[str]]]


def messages(*pairs: tuple[str, str]) -> tuple[Message, ...]:
    """Read-only ``{"role", "content"}`` messages from ``(role, content)`` pairs."""
    return tuple(MappingProxyType({"role": role, "content": content}) for role, content in pairs)


def numbered(responses: Sequence[str]) -> str:
    """The responses as the user message shows them: ``Response 1:`` and its text, and so on."""
    return "\n\n".join(f"Response {i}:\n{text}" for i, text in enumerate(responses, 1))


def with_responses(instruction: str, prompt: str, responses: Sequence[str]) -> tuple[Message, ...]:
    """A step's instruction as the system message, then the numbered responses and the
    question as the user message (the question last: small models answer what they read last)."""
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
    ``reads_origin`` and ``needs_confidence``: see below (the selection steps set them).
    """

    __slots__ = ()
    needs_responses: ClassVar[bool] = True
    #: The step reads where its responses came from (each a :class:`~moa.Response`: agent,
    #: model, confidence): the run then hands every step's outputs on as Responses and asks
    #: a client that can give log-probabilities for them.
    reads_origin: ClassVar[bool] = False
    #: The step cannot work without confidence: a run whose client cannot give
    #: log-probabilities is refused at its start.
    needs_confidence: ClassVar[bool] = False
    #: How many rounds and requests :meth:`plan` makes depends only on how many responses it
    #: gets, never on what the replies say: :func:`moa.plan` may then bound the step by
    #: running its plan on stand-ins. A custom step that sets it to True promises that;
    #: otherwise its calls are "unbounded" in a plan.
    fixed_rounds: ClassVar[bool] = False

    def requests(self, prompt: str, responses: list[str]) -> list[Request]:
        """The calls to make, in the order their replies are passed to :meth:`combine`.
        Build each one with :func:`moa.steps.ask` and its messages with
        :func:`moa.steps.messages` (and :func:`moa.steps.numbered`)."""
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
        :meth:`required` and :meth:`enough` for its own number of requests. Work too heavy
        for the event loop (a user's regex over long replies) is yielded as an
        :class:`~moa.steps.OffLoop`; the executor runs it off the loop and sends its result.
        """
        replies = yield self.requests(prompt, responses)
        return self.combine(prompt, responses, replies)


@dataclass(frozen=True, slots=True)
class Reads:
    """What a pipeline's steps read of their responses: ``origin``, whether any step reads
    where they came from; ``confidence``, the steps that cannot work without confidence."""

    origin: bool
    confidence: tuple[LLMStep, ...]


def reads(step: Step) -> Reads:
    """What the steps of ``step`` (a pipeline, at any depth) read of their responses."""
    found: list[LLMStep] = []
    stack = [step]
    origin = False
    while stack:
        s = stack.pop()
        parts = getattr(s, "steps", None) or getattr(s, "branches", None)
        if parts is not None and not isinstance(s, LLMStep):
            stack.extend(parts)
        elif isinstance(s, LLMStep):
            origin = origin or s.reads_origin
            if s.needs_confidence:
                found.append(s)
    return Reads(origin, tuple(found))


_T = TypeVar("_T")


def tie_broken(tied: Sequence[_T], rng: random.Random) -> tuple[_T, str]:
    """The winner among ``tied`` (in a fixed order, never empty): the only one, else one drawn
    with ``rng`` (drawn from only on a tie, so a step's randomness is the same without one);
    and the words a note gives it ("" without a tie)."""
    if len(tied) == 1:
        return tied[0], ""
    return rng.choice(tied), " (a tie, broken at random)"
