"""How a law is checked: the step run as ``moa.run`` runs it, the :class:`Case` a law body
reads (the step, the drawn inputs, seed, client and prompt), and :func:`law`, which makes a
law of a body and searches for its counterexample with Hypothesis. The laws themselves are in
:mod:`moa.testing.laws`.

Laws for steps, each a named function with a one-line docstring.

Calling a law on a step searches for a counterexample with Hypothesis and raises
:class:`LawViolation` naming the law and showing the smallest one found::

    permutation(Shuffle())                              # a fixed step
    never_empty(Dropout, params=st.floats(0, 1))        # a factory and its parameter
    identity_at(0)(Dropout)                             # laws that take a value are called first

Every law takes the same keyword arguments: ``params`` (a value or a strategy of the factory's
parameter), ``responses``, ``seeds``, ``clients`` and ``prompts`` (values or strategies of the
inputs, the seed, the scripted client and the prompt), ``settings`` (a ``hypothesis.settings``)
and ``max_examples``. A transform runs as ``step.apply(inputs, random.Random(seed))``, as the
executor runs it; anything with a model call runs through ``moa.run_sync`` with a drawn
scripted client, the inputs put in place by a first step.

``S ≡ T`` below means: the same outputs from the same inputs and seed, and the generator left
in the same state, so one can replace the other anywhere in a pipeline.
"""

from __future__ import annotations

import inspect
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import given, reject
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .._bounds import describe
from .._client import Reply
from .._llm_steps import Propose
from .._pipeline import Parallel, Pipeline, Step, as_step
from .._response import Confidence
from .._retry import Retry
from .._run import run_sync
from .._seeds import accepts
from .._transforms import Take, Transform
from ..errors import EmptyInputError, StepFailedError
from . import strategies as mst

__all__ = (
    "Case",
    "LawViolation",
    "Options",
    "Outcome",
    "describe_subject",
    "law",
    "search",
    "show",
)


class LawViolation(AssertionError):
    """A step broke a law. The message names the step and the law, and shows the inputs,
    the seed and what came out."""


# -- running a step the way moa.run does ---------------------------------------------------------
#: No waiting between retries, so scripted transient failures cost nothing.
_NO_WAIT = Retry(attempts=3, initial=0, max_wait=0, jitter=0)
#: The agents of the first step, which put the drawn inputs in place.
_FEED = "moa.testing/input-"


@dataclass(frozen=True, slots=True, repr=False)
class _Probe(Transform):
    """Appends one draw from the generator, so a comparison also sees how far the steps before
    it moved the generator."""

    def apply(self, responses: list[str], rng: random.Random) -> list[str]:
        return [*responses, f"{rng.getrandbits(64):016x}"]


def _feed(xs: list[str]) -> Step:
    """A first step whose outputs are ``xs``."""
    if not xs:
        return Propose([f"{_FEED}0"]) | Take(0)
    return Propose([f"{_FEED}{i}" for i in range(len(xs))])


class _Fed:
    """The drawn client, with the feed's agents answering the inputs (asked for confidence,
    the i-th input's is drawn from its text, as the scripted client draws one)."""

    def __init__(self, client: Any, xs: list[str]) -> None:
        self.client = client
        self.xs = xs

    async def __call__(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        logprobs: bool = False,
    ) -> Any:
        if model.startswith(_FEED):
            i = int(model[len(_FEED) :])
            text = self.xs[i] if i < len(self.xs) else ""
            if not logprobs:
                return text, 0, 0
            mean = -3 * (zlib.crc32(text.encode("utf-8", "surrogatepass")) / 2**32)
            return Reply(text, 0, 0, Confidence(mean, 1))
        extra = {"logprobs": True} if logprobs and accepts(self.client, "logprobs") else {}
        return await self.client(
            model=model, messages=messages, temp=temp, max_tokens=max_tokens, **extra
        )


def _transforms_only(step: Step) -> bool:
    if isinstance(step, Pipeline):
        return all(_transforms_only(s) for s in step.steps)
    if isinstance(step, Parallel):
        return all(_transforms_only(b) for b in step.branches)
    return isinstance(step, Transform)


def _interpret(step: Step, xs: list[str], rng: random.Random) -> list[str]:
    """A tree of transforms applied as the executor applies it: one generator along a
    pipeline, one drawn from it per branch of a Parallel, in branch order."""
    if isinstance(step, Pipeline):
        for sub in step.steps:
            xs = _interpret(sub, xs, rng)
        return xs
    if isinstance(step, Parallel):
        rngs = [random.Random(rng.getrandbits(63)) for _ in step.branches]
        return [r for b, g in zip(step.branches, rngs, strict=False) for r in _interpret(b, xs, g)]
    assert isinstance(step, Transform)  # only transforms reach here (_transforms_only)
    out = step.apply(list(xs), rng)
    if type(out) is not list or not all(type(r) is str for r in out):
        raise TypeError(
            f"{step!r}.apply must return a list of str, returned {describe(out)} "
            f"for the responses {xs!r}"
        )
    return out


class _Traced:
    """A drawn function that remembers what it answered, so that a message can show it as a
    lambda to paste back: ``lambda x: {'a': 'b'}[x]``. Named after its label in the case, so
    a step built on it prints as ``Map(f)``."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self._fn = fn
        self.__name__ = self.__qualname__ = name
        self.calls: dict[Any, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._fn(*args, **kwargs)
        if len(args) == 1 and not kwargs:
            try:
                self.calls.setdefault(args[0], out)
            except TypeError:  # an unhashable argument: not shown
                pass
        return out

    def __repr__(self) -> str:
        return f"lambda x: {self.calls!r}[x]"


def _traced(value: Any, name: str) -> Any:
    """A drawn lambda (``st.functions`` draws those) traced; anything else as it is."""
    if inspect.isfunction(value) and value.__name__ == "<lambda>":
        return _Traced(value, name)
    return value


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a run gave: its outputs and a fingerprint of the generator after it, or the name
    of the error it raised (``StepFailedError`` or ``EmptyInputError``)."""

    outputs: tuple[str, ...] = ()
    generator: str = ""
    error: str | None = None

    def __repr__(self) -> str:
        return f"raised {self.error}" if self.error else repr(list(self.outputs))


# -- subjects and cases --------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    params: Any = None
    responses: Any = None
    seeds: Any = None
    clients: Any = None
    prompts: Any = None
    settings: Settings | None = None
    max_examples: int | None = None


def _strategy(value: Any, default: SearchStrategy[Any]) -> SearchStrategy[Any]:
    if value is None:
        return default
    return value if isinstance(value, SearchStrategy) else st.just(value)


def _is_factory(subject: object) -> bool:
    return callable(subject) and not isinstance(subject, (Step, SearchStrategy))


def describe_subject(subject: object) -> str:
    """How messages name a subject: a step by its repr, a factory by its name."""
    if isinstance(subject, Step):
        return repr(subject)
    name = getattr(subject, "__name__", None)
    return name if isinstance(name, str) else repr(subject)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0].strip()


def _sentence(doc: str) -> str:
    """A docstring's sentence to follow a colon: its first word in lower case."""
    return doc[0].lower() + doc[1:] if len(doc) > 1 and doc[1].islower() else doc


class Case:
    """One drawn example of a law: the step and its parameter, the inputs and the seed, drawn
    when first read. :meth:`outputs` and :meth:`outcome` run steps on them; :meth:`expect`
    raises :class:`LawViolation` showing everything drawn so far."""

    def __init__(
        self,
        law: str,
        doc: str,
        subject: Any,
        options: Options,
        data: st.DataObject,
        header: str | None = None,
    ) -> None:
        self.law = law
        self.doc = doc
        self.subject = subject
        self.options = options
        self._data = data
        self._header = header
        self._shown: dict[str, Any] = {}
        self._client: Any = None
        self.inputs: list[str] = self.draw(_strategy(options.responses, mst.responses()), "inputs")
        self.seed: int = self.draw(_strategy(options.seeds, mst.seeds()), "seed")

    # -- drawing -----------------------------------------------------------------------------
    def draw(self, strategy: SearchStrategy[Any], label: str) -> Any:
        """A value drawn from ``strategy``, shown as ``label`` if the law fails. A drawn
        function is shown by what it answered."""
        value = _traced(self._data.draw(strategy, label=label), label)
        self._shown[label] = value
        return value

    @property
    def is_factory(self) -> bool:
        """Whether the subject is a factory (``Take``, a ``@transform`` with parameters)
        rather than a step or a strategy of steps."""
        return _is_factory(self.subject)

    def draw_param(self, label: str = "param") -> Any:
        """A parameter for the factory, drawn from ``params``."""
        if not self.is_factory:
            raise TypeError(
                f"the law {self.law} needs a factory and its parameter, e.g. "
                f"check_laws(Take, [...], params=st.integers(0, 7)); "
                f"{describe_subject(self.subject)} is not one"
            )
        if self.options.params is None:
            raise TypeError(
                f"the law {self.law} draws parameters for "
                f"{describe_subject(self.subject)}: pass params=, a value or a "
                f"strategy of its argument"
            )
        return self.draw(_strategy(self.options.params, st.nothing()), label)

    def build(self, param: Any) -> Step:
        """The factory's step at ``param``."""
        if not self.is_factory:
            raise TypeError(
                f"the law {self.law} needs a factory, e.g. "
                f"check_laws(Dropout, [identity_at(0)]); "
                f"{describe_subject(self.subject)} is not one"
            )
        return as_step(self.subject(param), where=f"{describe_subject(self.subject)}({param!r})")

    @property
    def step(self) -> Step:
        """The step under test: the subject itself, drawn from it, or built from a drawn
        parameter."""
        if "step" not in self._shown:
            if isinstance(self.subject, Step):
                self._shown["step"] = self.subject
            elif isinstance(self.subject, SearchStrategy):
                self.draw(self.subject, "step")
            else:
                self._shown["step"] = self.build(self.draw_param())
            # The step (and its parameter) first, whenever drawn: they read best at the top.
            top: dict[str, Any] = {
                k: self._shown.pop(k) for k in ("step", "param") if k in self._shown
            }
            self._shown = {**top, **self._shown}
        step: Step = self._shown["step"]
        return step

    @property
    def param(self) -> Any:
        """The factory's parameter of :attr:`step`."""
        _ = self.step  # drawn on first use
        return self._shown["param"]

    def with_param(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args, param)`` for a factory, ``fn(*args)`` for a step."""
        return fn(*args, self.param) if self.is_factory else fn(*args)

    # -- running -----------------------------------------------------------------------------
    def outcome(self, step: Step | None = None, inputs: list[str] | None = None) -> Outcome:
        """What ``step`` (default: the step under test) gives from the inputs and seed, with
        the generator's state after it; a step that fails is an outcome too."""
        step = self.step if step is None else step
        xs = self.inputs if inputs is None else inputs
        target = step | _Probe()
        if _transforms_only(target):
            out = _interpret(target, list(xs), random.Random(self.seed))
        else:
            try:
                _, history = run_sync(
                    _feed(xs) | target,
                    self._prompt(),
                    _Fed(self._fresh_client(), xs),
                    seed=self.seed,
                    retry=_NO_WAIT,
                )
            except (StepFailedError, EmptyInputError) as exc:
                return Outcome(error=type(exc).__name__)
            out = list(history.outputs)
        return Outcome(tuple(out[:-1]), out[-1])

    def outputs(self, step: Step | None = None, inputs: list[str] | None = None) -> list[str]:
        """The outputs of ``step`` (default: the step under test); an example where it
        fails (``StepFailedError``, ``EmptyInputError``) is skipped, since it gave none."""
        got = self.outcome(step, inputs)
        if got.error:
            reject()
        return list(got.outputs)

    def _prompt(self) -> str:
        if "prompt" not in self._shown:
            self.draw(_strategy(self.options.prompts, mst.prompts()), "prompt")
        prompt: str = self._shown["prompt"]
        return prompt

    def _fresh_client(self) -> Any:
        if self._client is None:
            self._client = self.draw(
                _strategy(self.options.clients, mst.scripted_clients()), "client"
            )
        fresh = getattr(self._client, "fresh", None)
        return fresh() if fresh else self._client

    # -- judging -----------------------------------------------------------------------------
    def expect(self, condition: object, why: str | None = None, **shown: Any) -> None:
        """Raise :class:`LawViolation` unless ``condition``, showing ``shown`` beside what
        was drawn."""
        if not condition:
            self.fail(why, **shown)

    def expect_same(
        self,
        first: tuple[str, Outcome],
        second: tuple[str, Outcome],
        why: str | None = None,
        **shown: Any,
    ) -> None:
        """Raise :class:`LawViolation` unless two ``(label, outcome)`` pairs agree."""
        (label_a, a), (label_b, b) = first, second
        if a == b:
            return
        if why is None and a.error is None and b.error is None and a.outputs == b.outputs:
            why = (
                "the outputs agree, but the generator is left in another state, so a "
                "random step after it would give other results"
            )
        if label_a == label_b:
            label_a, label_b = f"{label_a} (first)", f"{label_b} (second)"
        self.fail(why, **shown, **{label_a: a, label_b: b})

    def fail(self, why: str | None = None, **shown: Any) -> None:
        """Raise :class:`LawViolation` for this example."""
        if isinstance(self.subject, SearchStrategy):
            who = repr(self._shown["step"]) if "step" in self._shown else "a drawn step"
        else:
            who = describe_subject(self.subject)
        header = self._header or f"{who} breaks the law {self.law}: {_sentence(self.doc)}"
        items = {k: show(v) for k, v in {**self._shown, **shown}.items()}
        if why:
            items["why"] = why
        width = max(len(k) for k in items) + 2
        lines = [header] + [f"  {k + ':':<{width}}{v}" for k, v in items.items()]
        raise LawViolation("\n".join(lines))


def show(value: Any, lambda_as: str = "<lambda>") -> str:
    """A value as a message shows it: a named function by its name, a lambda as
    ``lambda_as``, a traced function by what it answered, anything else by its repr."""
    if isinstance(value, _Traced):
        return repr(value)
    if callable(value) and not isinstance(value, (Step, type)):
        name = getattr(value, "__name__", None)
        if isinstance(name, str):
            return lambda_as if name == "<lambda>" else name
    return repr(value)


# -- making laws ---------------------------------------------------------------------------------
LawBody = Callable[[Case], None]
_NEEDS = ("step", "factory", "params")


def _check_subject(name: str, needs: str, subject: Any, options: Options) -> None:
    """Refuse, before any search, a subject the law cannot run on."""
    label = describe_subject(subject)
    if not _is_factory(subject):
        if options.params is not None:
            raise TypeError(
                f"{name}(params=...): params are the arguments of a factory, and {label} is not one"
            )
        if needs == "factory":
            raise TypeError(
                f"the law {name} needs a factory, e.g. "
                f"check_laws(Dropout, [identity_at(0)]); {label} is not one"
            )
        if needs == "params":
            raise TypeError(
                f"the law {name} needs a factory and its parameters, e.g. "
                f"check_laws(Take, [fuses(min)], params=st.integers(0, 7)); "
                f"{label} is not one"
            )
    elif options.params is None and needs != "factory":
        raise TypeError(
            f"the law {name} draws parameters for {label}: pass params=, a value "
            f"or a strategy of its argument"
        )


def search(
    body: LawBody,
    name: str,
    doc: str,
    subject: Any,
    options: Options,
    header: str | None = None,
    needs: str = "step",
) -> None:
    if isinstance(subject, (list, tuple)):
        subject = as_step(subject)
    _check_subject(name, needs, subject, options)

    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        body(Case(name, doc, subject, options, data, header))

    prop.__name__ = prop.__qualname__ = name
    # Hypothesis keys its example database by the test function; one key per law and subject.
    prop._hypothesis_internal_add_digest = (  # type: ignore[attr-defined]
        f"moa.testing {name} {describe_subject(subject)}".encode()
    )
    parent = options.settings or Settings()
    overrides: dict[str, Any] = {"deadline": None}
    if options.max_examples is not None:
        overrides["max_examples"] = options.max_examples
    Settings(parent, **overrides)(prop)()


def law(
    body: LawBody | None = None,
    *,
    name: str | None = None,
    doc: str | None = None,
    needs: str = "step",
) -> Any:
    """Make a law from ``body(case)``, which draws what it needs from the :class:`Case` and
    calls ``case.expect``. The law is named after the function and stated by the first line
    of its docstring; calling it on a subject searches for a counterexample.

    ``needs`` says what the subject must be: ``"step"`` (a step, a strategy of steps, or a
    factory with ``params``), ``"factory"`` (its parameters are the law's own) or
    ``"params"`` (a factory with ``params``, drawn by the law).
    """
    if body is None:
        return lambda fn: law(fn, name=name, doc=doc, needs=needs)
    if needs not in _NEEDS:
        raise ValueError(f"law(needs=...): needs must be one of {_NEEDS}, got {needs!r}")
    law_name = name or body.__name__
    statement = doc or _first_line(body.__doc__)
    if not statement:
        raise TypeError(f"law {law_name}: state the law in a one-line docstring")

    def check(
        subject: Any,
        *,
        params: Any = None,
        responses: Any = None,
        seeds: Any = None,
        clients: Any = None,
        prompts: Any = None,
        settings: Settings | None = None,
        max_examples: int | None = None,
    ) -> None:
        search(
            body,
            law_name,
            statement,
            subject,
            Options(params, responses, seeds, clients, prompts, settings, max_examples),
            needs=needs,
        )

    check.__name__ = check.__qualname__ = law_name
    check.__doc__ = statement
    check.__module__ = body.__module__
    check.is_law = True  # type: ignore[attr-defined]
    return check
