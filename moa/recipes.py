"""Ready-made pipelines from the Mixture-of-Agents papers, as functions returning plain values.

Each recipe returns an ordinary :class:`~moa.Pipeline`, so it prints as the expression that
builds it, compares by ``==`` and composes with ``|`` like any hand-written pipeline. With its
defaults every recipe equals mixture-llm's pipeline of the same name:

>>> from moa import Aggregate, Propose
>>> from moa.recipes import self_moa
>>> nano = "gpt-5-nano-2025-08-07"
>>> self_moa() == Propose([nano] * 6, temp=0.7) | Aggregate(nano)
True

Papers: Wang et al. (2024), "Mixture-of-Agents Enhances Large Language Model Capabilities",
arXiv:2406.04692; Li et al. (2025), "Rethinking Mixture-of-Agents: Is Mixing Different Large
Language Models Beneficial?", arXiv:2502.00674.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from ._agent import Agent, AgentLike, agent_of
from ._bounds import MAX_CALLS, check_int, describe, safe_repr
from ._llm_steps import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMP,
    Aggregate,
    AggregateSeq,
    Propose,
    Synthesize,
)
from ._pipeline import Step
from ._select import Majority
from ._transforms import Dropout, Shuffle

__all__ = (
    "NAMES",
    "PROPOSERS",
    "ROBUST_PROPOSERS",
    "VOTE_PERSONAS",
    "by_name",
    "moa_lite",
    "persona_vote",
    "robust_moa",
    "self_moa",
    "self_moa_seq",
    "together_moa",
)

#: The six open models of Wang et al. (2024)'s benchmark-winning Together MoA configuration.
PROPOSERS: tuple[str, ...] = (
    "wizardlm-2-8x22b",
    "qwen1.5-110b-chat",
    "qwen1.5-72b-chat",
    "llama-3-70b-instruct",
    "mixtral-8x22b-instruct",
    "dbrx-instruct",
)

#: mixture-llm's robust_moa proposers: four models from different providers.
ROBUST_PROPOSERS: tuple[str, ...] = (
    "gpt-5-nano-2025-08-07",
    "claude-sonnet-4-5",
    "llama-70b",
    "gemini-2.5-flash",
)


# -- argument checks, named after the recipe so the error points at the call the user wrote ----
def _models(recipe: str, arg: str, value: object) -> tuple[AgentLike, ...]:
    if isinstance(value, (str, Agent)):
        one = "a bare string" if isinstance(value, str) else "one Agent"
        raise TypeError(
            f"{recipe}({arg}=...): {arg} must be a list of model names or agents, "
            f"not {one}; did you mean {arg}=[{safe_repr(value)}]?"
        )
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            f"{recipe}({arg}=...): {arg} must be a list of model names or agents, "
            f"not {describe(value)}"
        )
    if not value:
        raise ValueError(f"{recipe}({arg}=...): {arg} must name at least one model, got []")
    for m in value:
        if not isinstance(m, Agent) and (not isinstance(m, str) or not m):
            raise TypeError(
                f"{recipe}({arg}=...): every model must be a non-empty name or a "
                f"moa.Agent, not {describe(m)}"
            )
    return tuple(agent_of(recipe, m, f"{arg}=...") for m in value)


def _model(recipe: str, arg: str, value: object) -> AgentLike:
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"{recipe}({arg}=...): {arg} is one model name or agent, not a list ({describe(value)})"
        )
    if not isinstance(value, Agent) and (not isinstance(value, str) or not value):
        raise TypeError(
            f"{recipe}({arg}=...): {arg} must be a non-empty model name or a "
            f"moa.Agent, not {describe(value)}"
        )
    return agent_of(recipe, value, f"{arg}=...")


def _build(recipe: str, make: Callable[[], Step]) -> Step:
    """``make()``, with a step's own argument errors prefixed by the recipe's name."""
    try:
        return make()
    except (TypeError, ValueError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"{recipe}: {exc}") from exc


# -- the recipes ----------------------------------------------------------------------------------
def together_moa(
    proposers: Sequence[AgentLike] = PROPOSERS,
    aggregator: AgentLike = "qwen1.5-110b-chat",
    *,
    temp: float = 0.7,
    max_tokens: int = 512,
) -> Step:
    """Together MoA, Wang et al. (2024, arXiv:2406.04692): 3 layers of 6 open proposers and a
    Qwen aggregator; 65.1% on AlpacaEval 2.0. ``temp``/``max_tokens`` set the proposer layers."""
    p = _models("together_moa", "proposers", proposers)
    agg = _model("together_moa", "aggregator", aggregator)
    return _build(
        "together_moa",
        lambda: (
            Propose(p, temp=temp, max_tokens=max_tokens)
            | Synthesize(p, temp=temp, max_tokens=max_tokens)
            | Synthesize(p, temp=temp, max_tokens=max_tokens)
            | Aggregate(agg)
        ),
    )


def moa_lite(
    proposers: Sequence[AgentLike] = PROPOSERS,
    aggregator: AgentLike = "qwen1.5-72b-chat",
    *,
    temp: float = 0.7,
    max_tokens: int = 512,
) -> Step:
    """MoA-Lite, Wang et al. (2024, arXiv:2406.04692): the cost-optimised 2-layer variant
    (one Synthesize layer, Qwen1.5-72B aggregator), which still beats GPT-4o."""
    p = _models("moa_lite", "proposers", proposers)
    agg = _model("moa_lite", "aggregator", aggregator)
    return _build(
        "moa_lite",
        lambda: (
            Propose(p, temp=temp, max_tokens=max_tokens)
            | Synthesize(p, temp=temp, max_tokens=max_tokens)
            | Aggregate(agg)
        ),
    )


def self_moa(
    model: AgentLike = "gpt-5-nano-2025-08-07",
    n: int = 6,
    *,
    temp: float = DEFAULT_TEMP,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Step:
    """Self-MoA, Li et al. (2025, arXiv:2502.00674): one strong model sampled ``n`` times at
    ``temp``, then aggregated by itself; it can beat mixtures of different models."""
    m = _model("self_moa", "model", model)
    check_int("self_moa", "n", n, 1, MAX_CALLS)  # before [m] * n is built
    return _build(
        "self_moa", lambda: Propose([m] * n, temp=temp, max_tokens=max_tokens) | Aggregate(m)
    )


def self_moa_seq(
    model: AgentLike = "gpt-5-nano-2025-08-07",
    n: int = 12,
    window: int = 6,
    reserved: int = 1,
    *,
    temp: float = DEFAULT_TEMP,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Step:
    """Self-MoA-Seq, Li et al. (2025, arXiv:2502.00674): ``n`` samples of one model aggregated
    by itself in rounds over a sliding ``window`` that keeps ``reserved`` syntheses, for more
    samples than fit in one context."""
    m = _model("self_moa_seq", "model", model)
    check_int("self_moa_seq", "n", n, 1, MAX_CALLS)  # before [m] * n is built
    return _build(
        "self_moa_seq",
        lambda: (
            Propose([m] * n, temp=temp, max_tokens=max_tokens)
            | AggregateSeq(m, window=window, reserved=reserved)
        ),
    )


def robust_moa(
    proposers: Sequence[AgentLike] = ROBUST_PROPOSERS,
    aggregator: AgentLike = "gpt-5-nano-2025-08-07",
    dropout: float = 0.2,
    *,
    temp: float = DEFAULT_TEMP,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Step:
    """Robust MoA, a variant of Wang et al. (2024, arXiv:2406.04692): proposals are shuffled
    (against position bias) and dropped at rate ``dropout`` before one model aggregates."""
    p = _models("robust_moa", "proposers", proposers)
    agg = _model("robust_moa", "aggregator", aggregator)
    return _build(
        "robust_moa",
        lambda: (
            Propose(p, temp=temp, max_tokens=max_tokens)
            | Shuffle()
            | Dropout(dropout)
            | Aggregate(agg)
        ),
    )


#: The personas of :func:`persona_vote`, written before any was measured: None is the model's
#: own default (no system message); the rest are general instructions, none about a topic.
VOTE_PERSONAS: tuple[str | None, ...] = (
    None,
    "Answer with only the final answer, no explanation.",
    "You are a knowledgeable, careful teacher. Answer correctly and briefly.",
    "Reply with one word or one number only.",
    "Think step by step in one or two short sentences, then give the final answer.",
    "You are an expert. Give the correct answer directly.",
    "You are answering a quiz question. Give just the answer.",
    "Be precise and factual.",
    "If the question involves numbers, calculate carefully. State the answer clearly.",
    "Be concise.",
    "You are a helpful assistant.",
)


def persona_vote(
    model: AgentLike = "gpt-5-nano-2025-08-07",
    extract: str | Callable[[str], str | None] = r"-?\d+(?:\.\d+)?",
    *,
    personas: Sequence[str | None] = VOTE_PERSONAS,
    samples: int = 3,
    sample_temp: float = 0.3,
    max_tokens: int = 48,
) -> Step:
    """Prompt ensembling with one model: a greedy answer (temperature 0) under each of
    ``personas``, plus ``samples`` answers at ``sample_temp``, and the most common extracted
    answer wins (``Majority(extract)``; the default reads the last number, so pass an
    extractor for answers that are not numbers). Diversity comes from the prompts, not from
    sampling noise, so each voter is about as good as a greedy call and their errors differ.

    Measured with SmolLM2-135M-Instruct (the embedded model) through
    ``benchmarks/quality.py`` (seed 0): it was chosen on ``benchmarks/quality_tasks.jsonl``
    (80 short arithmetic and fact questions), where it scored 60.0 % against one greedy
    call's 51.2 % (+8.8 points, paired-bootstrap 95 % interval [+1.2, +16.2]). On a second
    set of 88 questions kept out of the design (``quality_tasks_holdout.jsonl``), measured
    once after the pipeline was fixed, the gain did not hold: 43.2 % against 42.0 % (+1.1,
    [-3.4, +5.7]). Read it as a vote that is never worse than greedy there, not as a proven
    gain; ``benchmarks/README.md`` has both tables.
    """
    who = _model("persona_vote", "model", model)
    check_int("persona_vote", "samples", samples, 0, MAX_CALLS)  # before [...] * samples
    if isinstance(personas, str) or not isinstance(personas, (list, tuple)):
        raise TypeError(
            "persona_vote(personas=...): personas must be a list of system prompts (str, or "
            f"None for none), not {describe(personas)}"
        )
    if not personas:
        raise ValueError("persona_vote(personas=...): personas must name at least one, got []")
    base = who if isinstance(who, Agent) else Agent(who)

    def voter(temp: float, system: str | None) -> Agent:
        return dataclasses.replace(base, temp=temp, system=system)

    return _build(
        "persona_vote",
        lambda: (
            Propose(
                [voter(0, p) for p in personas] + [voter(sample_temp, base.system)] * samples,
                max_tokens=max_tokens,
            )
            | Majority(extract)
        ),
    )


#: The recipes :func:`by_name` (and ``moa run --recipe``) can name.
NAMES = ("together_moa", "moa_lite", "self_moa", "self_moa_seq", "robust_moa", "persona_vote")


def by_name(name: str, model: AgentLike | None = None) -> Step:
    """The recipe called ``name`` (one of :data:`NAMES`) with its defaults; with ``model``,
    every model of the recipe is that one."""
    if name not in NAMES:
        raise ValueError(
            f"no recipe is called {safe_repr(name)}; the recipes are {', '.join(NAMES)}"
        )
    make: Callable[..., Step] = globals()[name]
    if model is None:
        return make()
    if name in ("self_moa", "self_moa_seq", "persona_vote"):
        return make(model=model)
    proposers = ROBUST_PROPOSERS if name == "robust_moa" else PROPOSERS
    return make(proposers=[model] * len(proposers), aggregator=model)
