"""Hypothesis strategies for moa: responses, prompts, seeds, steps, pipelines, scripted clients.

Every function returns a ``SearchStrategy``. Arguments are keyword-only, and each takes a value
or a strategy of values (a list of texts is sampled from), as ``hypothesis.extra.numpy`` does.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from functools import reduce
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .._agent import Agent
from .._bounds import MAX_TEMP
from .._llm_steps import Aggregate, AggregateSeq, Pick, Propose, Rank, Refine, Synthesize, Vote
from .._pipeline import Pipeline, Step
from .._select import Majority, MostConfident, MostConsistent, WeightedMajority
from .._transforms import Dropout, Filter, Map, Sample, Shuffle, Take
from ._scripted import HashedDelay, HashedReply, ScriptedClient

__all__ = (
    "llm_steps",
    "pipelines",
    "predicates",
    "prompts",
    "responses",
    "scripted_clients",
    "seeds",
    "text_functions",
    "transforms",
)

T = TypeVar("T")

#: The built-in transform step types, in the order ``transforms(kinds=...)`` takes them.
TRANSFORMS = (Shuffle, Dropout, Sample, Take, Filter, Map)
#: The built-in LLM step types (Majority calls no model, but runs as an LLM step: it has notes
#: and works off the event loop).
LLM_STEPS = (
    Propose,
    Synthesize,
    Refine,
    Aggregate,
    Rank,
    Vote,
    Pick,
    AggregateSeq,
    Majority,
    WeightedMajority,
    MostConsistent,
    MostConfident,
)
DEFAULT_MODELS = ("alpha", "beta", "gamma")
#: The answer extractors ``Majority(...)`` is drawn with: regexes (so reprs evaluate) that
#: find answers in the short drawn texts and in the scripted client's "<model> says <hex>",
#: often the same answer in several responses (majorities and ties), sometimes none; one can
#: match "" and one reads a group.
MAJORITY_EXTRACTS = (r"\w+", r"[ab]", r"\d*", r"says (\w)|(\w)$")


def _strategy(value: T | SearchStrategy[T]) -> SearchStrategy[T]:
    """A value as a strategy: strategies pass through, anything else is ``just`` it."""
    return value if isinstance(value, SearchStrategy) else st.just(value)


#: Short texts: often from a tiny alphabet, so that lists of them hold repeats, else any unicode.
TEXTS = st.text(alphabet="ab ", max_size=3) | st.text(max_size=6)


def _texts(value: str | Sequence[str] | SearchStrategy[str] | None) -> SearchStrategy[str]:
    """A strategy of texts: a strategy passes through, a list is sampled from, a str is fixed."""
    if value is None:
        return TEXTS
    if isinstance(value, SearchStrategy):
        return value
    if isinstance(value, str):
        return st.just(value)
    return st.sampled_from(list(value))


def responses(
    *,
    texts: str | Sequence[str] | SearchStrategy[str] | None = None,
    min_size: int = 0,
    max_size: int = 6,
) -> SearchStrategy[list[str]]:
    """Lists of responses: ``min_size`` to ``max_size`` texts (short texts by default, often
    repeated; a list of texts is sampled from)."""
    return st.lists(_texts(texts), min_size=min_size, max_size=max_size)


def prompts(*, max_size: int = 40) -> SearchStrategy[str]:
    """Prompts ``run`` accepts: text that is not blank."""
    return st.text(min_size=1, max_size=max_size).filter(str.strip)


def seeds() -> SearchStrategy[int]:
    """Seeds for ``run(..., seed=...)`` and ``random.Random``."""
    return st.integers(0, 2**63 - 1)


def text_functions(
    *, texts: str | Sequence[str] | SearchStrategy[str] | None = None
) -> SearchStrategy[Any]:
    """Pure functions from a str to a str, for ``Map``: the same text always maps the same."""
    return st.functions(like=lambda text: "", returns=_texts(texts), pure=True)


def predicates() -> SearchStrategy[Any]:
    """Pure functions from a str to a bool, for ``Filter``."""
    return st.functions(like=lambda text: True, returns=st.booleans(), pure=True)


_COUNTS = st.integers(0, 7)
_RATES = st.floats(0, 1)


def transforms(
    *,
    kinds: Sequence[type] | None = None,
    n: int | SearchStrategy[int] = _COUNTS,
    rate: float | SearchStrategy[float] = _RATES,
    functions: SearchStrategy[Any] | None = None,
    filters: SearchStrategy[Any] | None = None,
) -> SearchStrategy[Step]:
    """Built-in transform steps of the ``kinds`` given (default all six): ``Sample`` and
    ``Take`` of ``n``, ``Dropout`` of ``rate``, ``Map`` of drawn pure ``functions`` and
    ``Filter`` of drawn pure ``filters``."""
    kinds = TRANSFORMS if kinds is None else tuple(kinds)
    unknown = [k for k in kinds if k not in TRANSFORMS]
    if unknown or not kinds:
        raise ValueError(
            f"transforms(kinds=...): kinds must be some of "
            f"{[k.__name__ for k in TRANSFORMS]}, got {list(kinds)!r}"
        )
    made = {
        Shuffle: st.just(Shuffle()),
        Dropout: _strategy(rate).map(Dropout),
        Sample: _strategy(n).map(Sample),
        Take: _strategy(n).map(Take),
        Filter: (filters or predicates()).map(Filter),
        Map: (functions or text_functions()).map(Map),
    }
    return st.one_of([made[k] for k in kinds])


@st.composite
def _agent(draw: Any, models: SearchStrategy[str], options: bool) -> str | Agent:
    """A model name, or (with ``options``, half the time) an Agent over it with some of its
    own settings."""
    model: str = draw(models)
    if not options or draw(st.booleans()):
        return model
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["temp"] = draw(st.sampled_from([0, 0.3, 0.9]))
    if draw(st.booleans()):
        fields["max_tokens"] = draw(st.integers(1, 64))
    if draw(st.booleans()):
        fields["system"] = draw(st.sampled_from(["Be terse.", "Think step by step."]))
    if draw(st.booleans()):
        fields["name"] = draw(st.sampled_from(["a1", "b2"]))
    return Agent(model, **fields)


@st.composite
def _llm_step(
    draw: Any, kinds: tuple[type, ...], models: SearchStrategy[str], options: bool
) -> Step:
    kind = draw(st.sampled_from(kinds))
    agents = _agent(models, options)
    if kind in (Majority, WeightedMajority, MostConsistent):  # no model, no sampling
        extract = draw(st.sampled_from((None, *MAJORITY_EXTRACTS)))
        if kind is WeightedMajority and draw(st.booleans()):
            step: Step = WeightedMajority(extract, drop=draw(st.sampled_from([0.25, 0.5])))
        else:
            step = kind(extract)
        return step
    if kind is MostConfident:
        return MostConfident()
    kwargs: dict[str, Any] = {}
    if options:
        if draw(st.booleans()):
            kwargs["temp"] = draw(st.floats(min_value=0, max_value=MAX_TEMP))
        if draw(st.booleans()):
            kwargs["max_tokens"] = draw(st.integers(1, 4096))
        if kind is not Propose and draw(st.booleans()):
            kwargs["prompt"] = draw(st.text(min_size=1, max_size=20).filter(str.strip))
    if kind in (Propose, Synthesize, Refine):
        args = [draw(st.lists(agents, min_size=1, max_size=3))]
        if options and draw(st.booleans()):
            kwargs["min_success"] = draw(st.integers(1, len(args[0])))
    else:
        args = [draw(agents)]
        if kind is Rank and draw(st.booleans()):
            kwargs["n"] = draw(st.integers(1, 4))
        if kind is Pick and draw(st.booleans()):
            kwargs["times"] = draw(st.integers(1, 4))
            if options and draw(st.booleans()):
                kwargs["min_success"] = draw(st.integers(1, kwargs["times"]))
        if kind is AggregateSeq and draw(st.booleans()):
            # Small windows, so that a few responses already take several rounds.
            kwargs["window"] = draw(st.integers(2, 4))
            kwargs["reserved"] = draw(st.integers(1, kwargs["window"] - 1))
    made: Step = kind(*args, **kwargs)
    return made


def llm_steps(
    *,
    kinds: Sequence[type] | None = None,
    models: str | Sequence[str] | SearchStrategy[str] = DEFAULT_MODELS,
    options: bool = False,
) -> SearchStrategy[Step]:
    """Built-in LLM steps of the ``kinds`` given (default all twelve) over ``models`` (a list is
    sampled from): ``Rank`` with a drawn ``n``, ``Pick`` with drawn ``times``, ``AggregateSeq``
    with a drawn ``window`` and ``reserved``, and the selection steps (``Majority``,
    ``WeightedMajority``, ``MostConsistent``, ``MostConfident``: no model) with a drawn
    ``extract``. With ``options``, also with drawn ``temp``,
    ``max_tokens``, ``prompt`` and ``min_success``, and agents that are :class:`~moa.Agent`
    values with settings of their own."""
    kinds = LLM_STEPS if kinds is None else tuple(kinds)
    if not kinds or any(k not in LLM_STEPS for k in kinds):
        raise ValueError(
            f"llm_steps(kinds=...): kinds must be some of "
            f"{[k.__name__ for k in LLM_STEPS]}, got {list(kinds)!r}"
        )
    return _llm_step(kinds, _texts(models), options)


def pipelines(
    steps: Step | Sequence[Step] | SearchStrategy[Step], *, max_leaves: int = 6
) -> SearchStrategy[Step]:
    """Trees of the given ``steps`` (a list is sampled from) joined with ``|``, ``&`` and
    ``*``, up to ``max_leaves`` steps in all."""
    if isinstance(steps, Step):
        leaves: SearchStrategy[Step] = st.just(steps)
    elif isinstance(steps, SearchStrategy):
        leaves = steps
    else:
        leaves = st.sampled_from(list(steps))

    def extend(kids: SearchStrategy[Step]) -> SearchStrategy[Step]:
        return st.one_of(
            st.lists(kids, max_size=3).map(lambda s: reduce(operator.or_, s, Pipeline())),
            st.lists(kids, min_size=1, max_size=3).map(lambda s: reduce(operator.and_, s)),
            st.tuples(kids, st.integers(0, 2)).map(lambda t: t[0] * t[1]),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


@st.composite
def _scripted_client(
    draw: Any,
    texts: SearchStrategy[list[str]],
    transient: SearchStrategy[int],
    permanent: SearchStrategy[Any],
    delay: SearchStrategy[float],
) -> ScriptedClient:
    reply = HashedReply(draw(texts), draw(st.integers(0, 2**16)))
    most = draw(delay)
    return ScriptedClient(
        reply,
        delay=HashedDelay(most, draw(st.integers(0, 2**16))) if most else 0.0,
        transient=draw(transient),
        permanent=frozenset(draw(permanent)),
    )


def scripted_clients(
    *,
    texts: str | Sequence[str] | SearchStrategy[str] | None = None,
    transient: int | SearchStrategy[int] = 0,
    permanent: Sequence[str] | SearchStrategy[Sequence[str]] = (),
    delay: float | SearchStrategy[float] = 0.0,
) -> SearchStrategy[ScriptedClient]:
    """Scripted clients whose text is fixed per model and call (a hash of both picks it among
    drawn ``texts``; a list of texts is used as it is). Optionally every model fails its first
    ``transient`` calls retryably, the ``permanent`` models always fail, and each call sleeps
    up to ``delay`` seconds (fixed per call), so concurrent calls finish out of order."""
    if texts is not None and not isinstance(texts, (str, SearchStrategy)):
        choices: SearchStrategy[list[str]] = st.just(list(texts))
    else:
        choices = st.lists(_texts(texts), min_size=1, max_size=4)
    return _scripted_client(choices, _strategy(transient), _strategy(permanent), _strategy(delay))
