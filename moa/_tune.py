"""``moa.tune``: search a space of mixtures on a dev split, then evaluate the one chosen,
once, on held-out tasks the search never saw, against the single agent the search would have
picked (:class:`TuneReport`). The dev figures choose; only the held-out figure is the result.

The search is cheap because its mixtures share one pool of proposals: every mixture's first
step is a ``Propose`` over part of the pool (greedy answers under personas, samples at a few
temperatures), and the cache keys an answer by what was asked and its place among identical
asks, so ``Propose([m] * 3, temp=0.3)`` is the first three of ``Propose([m] * 5, temp=0.3)``.
A selection step (a vote, a confidence-weighted vote, the most consistent agent, the most
confident answer) then costs no call; an ``Aggregate`` costs one per task.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Unpack

import anyio

from ._agent import Agent, AgentLike, agent_of
from ._bounds import check_number, describe, safe_repr
from ._client import Client
from ._cost import Prices
from ._eval import EvalProgress, contenders_of, evaluate, prices_of, single_agent
from ._llm_steps import Aggregate, Propose
from ._options import RunKwargs, RunOptions
from ._pipeline import Step, leaves
from ._report import ContenderResult, EvalReport
from ._run import check_client, confidence_needs
from ._scoring import ScorerLike
from ._select import Majority, MostConfident, MostConsistent, WeightedMajority
from ._tasks import Task, load_tasks, split_tasks
from .recipes import VOTE_PERSONAS

__all__ = ("SELECTIONS", "Space", "TuneReport", "plan_calls", "tune", "tune_sync")

#: The selections a :class:`Space` may name, cheapest first.
SELECTIONS = ("majority", "weighted", "weighted-drop", "consistent", "confident", "aggregate")

#: The personas of the default space: the first four of ``recipes.VOTE_PERSONAS`` (written
#: before any was measured), None being the model's own default.
TUNE_PERSONAS: tuple[str | None, ...] = VOTE_PERSONAS[:4]


@dataclasses.dataclass(frozen=True)
class Space:
    """The mixtures ``moa.tune`` searches, for each of ``models``:

    - ``greedy``: each persona's greedy answer (temperature 0);
    - ``samples``: the model's own ``k`` samples at ``t``, for each ``k`` in ``samples`` and
      ``t`` in ``temps``; and ``greedy`` with them;
    - ``persona samples``: every persona sampled ``min(samples)`` times at ``min(temps)``
      (what ``consistent`` chooses among); and ``greedy`` with them;

    each followed by every step of ``selections`` that fits it (``consistent`` only where
    every agent is sampled more than once; ``aggregate``, by the first model, only over five
    candidates or fewer). ``max_tokens`` is every proposal's (the aggregator's is twice it):
    256 by default, as a search makes many calls.
    """

    models: tuple[AgentLike, ...]
    personas: tuple[str | None, ...] = TUNE_PERSONAS
    samples: tuple[int, ...] = (3, 5)
    temps: tuple[float, ...] = (0.3, 0.7)
    selections: tuple[str, ...] = SELECTIONS
    max_tokens: int = 256

    def __post_init__(self) -> None:
        models = self.models
        if isinstance(models, (str, Agent)):
            models = (models,)
        if not isinstance(models, (list, tuple)) or not models:
            raise TypeError(f"Space(models=...): one or more models, not {describe(models)}")
        object.__setattr__(self, "models", tuple(agent_of("Space", m, "models") for m in models))
        for name in ("personas", "samples", "temps", "selections"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
                raise TypeError(f"Space({name}=...): a non-empty list, not {describe(value)}")
            object.__setattr__(self, name, tuple(value))
        for p in self.personas:
            if p is not None and (not isinstance(p, str) or not p.strip()):
                raise TypeError(f"Space(personas=...): each a system prompt or None, not {p!r}")
        for k in self.samples:
            if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 64:
                raise ValueError(f"Space(samples=...): each a count from 2 to 64, not {k!r}")
        for t in self.temps:
            check_number("Space", "temps", t, above=True, high=2)
        unknown = [s for s in self.selections if s not in SELECTIONS]
        if unknown:
            raise ValueError(
                f"Space(selections=...): {unknown[0]!r} is not one of {', '.join(SELECTIONS)}"
            )
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise TypeError(f"Space(max_tokens=...): an int, not {describe(self.max_tokens)}")

    def _agent(self, model: AgentLike, persona: str | None, temp: float) -> AgentLike:
        base = model if isinstance(model, Agent) else Agent(model)
        agent = dataclasses.replace(base, system=persona if persona else base.system)
        # Greedy is every Propose's own temperature here: the agent then needs none.
        agent = dataclasses.replace(agent, temp=temp or None)
        return agent_of("Space", agent, "models")

    def proposals(self) -> list[tuple[str, list[AgentLike]]]:
        """The proposal sets: a name and the agents of its ``Propose``, in pool order."""
        low_t, low_k = min(self.temps), min(self.samples)
        out: list[tuple[str, list[AgentLike]]] = []
        greedy = [self._agent(m, p, 0.0) for m in self.models for p in self.personas]
        if len(greedy) > 1:
            out.append(("greedy", greedy))
        for t in self.temps:
            for k in self.samples:
                own = [self._agent(m, None, t) for m in self.models for _ in range(k)]
                out.append((f"{k}x t={t:g}", own))
                if len(greedy) > 1 or len(self.models) > 1:
                    out.append((f"greedy + {k}x t={t:g}", greedy + own))
        if len(self.personas) > 1:
            each = [
                self._agent(m, p, low_t)
                for m in self.models
                for p in self.personas
                for _ in range(low_k)
            ]
            out.append((f"personas {low_k}x t={low_t:g}", each))
            out.append((f"greedy + personas {low_k}x t={low_t:g}", greedy + each))
        return out

    def mixtures(self) -> dict[str, Step]:
        """Every mixture of the space, by name (``"greedy | weighted"``)."""
        out: dict[str, Step] = {}
        for name, agents in self.proposals():
            propose = Propose(agents, temp=0.0, max_tokens=self.max_tokens)
            counts: dict[AgentLike, int] = {}
            for a in agents:
                counts[a] = counts.get(a, 0) + 1
            for selection in self.selections:
                if selection == "consistent" and (len(counts) < 2 or min(counts.values()) < 2):
                    continue
                if selection == "aggregate" and len(agents) > 5:
                    continue
                out[f"{name} | {selection}"] = propose | self._select(selection)
        return out

    def _select(self, selection: str) -> Step:
        steps: dict[str, Callable[[], Step]] = {
            "majority": Majority,
            "weighted": WeightedMajority,
            "weighted-drop": lambda: WeightedMajority(drop=0.5),
            "consistent": MostConsistent,
            "confident": MostConfident,
            "aggregate": lambda: Aggregate(
                self._agent(self.models[0], None, 0.0), temp=0.0, max_tokens=2 * self.max_tokens
            ),
        }
        return steps[selection]()

    @classmethod
    def of(cls, spec: Mapping[str, Any], models: Sequence[AgentLike] = ()) -> Space:
        """A space from a mapping (a JSON file's object: ``models``, ``personas``,
        ``samples``, ``temps``, ``selections``, ``max_tokens``); ``models`` where it names
        none. Unknown keys are refused."""
        if not isinstance(spec, Mapping):
            raise TypeError(f"a tune space is an object, not {describe(spec)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise ValueError(
                f"a tune space has no {unknown[0]!r}; it takes {', '.join(sorted(fields))}"
            )
        given = dict(spec)
        given.setdefault("models", tuple(models))
        return cls(**given)


def plan_calls(mixtures: Mapping[str, Step], singles: Iterable[Step] = ()) -> int:
    """Calls per task the mixtures make between them, when the cache shares what the same
    place asks: each distinct first-step request once per sample index, plus each later
    LLM step's calls (an aggregator's one), counted per mixture."""
    first: dict[Any, int] = {}
    later = 0
    for step in (*mixtures.values(), *singles):
        for i, (_, s) in enumerate(leaves(step)):
            if not isinstance(s, (Propose, Aggregate)):
                continue
            if i == 0 and isinstance(s, Propose):
                seen: dict[Any, int] = {}
                for req in s.requests("", []):
                    seen[req.identity] = seen.get(req.identity, 0) + 1
                for identity, n in seen.items():
                    first[identity] = max(first.get(identity, 0), n)
            else:
                later += 1
    return sum(first.values()) + later


@dataclasses.dataclass(frozen=True)
class TuneReport:
    """What ``moa.tune`` chose and what it is worth: ``search`` is the dev eval (every
    mixture of the space and the single agents of its pool; its figures chose, and are
    optimistic for the winner), ``holdout`` the eval of the winner and of ``single`` (the
    single agent with the best dev accuracy) on the held-out tasks, run once. ``delta`` is
    the winner's held-out accuracy minus the single's, with its paired bootstrap 95 %
    interval: the result."""

    winner: str
    expression: str
    single: str
    search: EvalReport
    holdout: EvalReport
    delta: tuple[float, float, float]
    objective: str
    planned_calls: int

    @property
    def significant(self) -> bool:
        """Whether the held-out interval excludes 0."""
        return self.delta[1] > 0 or self.delta[2] < 0

    def table(self) -> str:
        """The report as text: the held-out result first, then the search, then the
        winner's expression for ``moa run --pipeline``."""
        d, lo, hi = self.delta
        win, one = self.holdout[self.winner], self.holdout[self.single]
        lines = [
            f"Held-out result ({len(self.holdout.tasks)} tasks, run once after the search):",
            f"  winner  {self.winner}: {100 * win.accuracy:.1f} % "
            f"[{100 * win.interval[0]:.1f}, {100 * win.interval[1]:.1f}], "
            f"{win.calls / len(win.results):.1f} calls per task",
            f"  single  {self.single}: {100 * one.accuracy:.1f} % "
            f"[{100 * one.interval[0]:.1f}, {100 * one.interval[1]:.1f}]",
            f"  winner - single: {100 * d:+.1f} points, paired bootstrap 95 % interval "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
        ]
        if not self.significant:
            lines.append(
                "  WARNING: the interval includes 0: on these tasks the mixture is not shown "
                "to beat the single agent."
            )
        if win.oracle() is not None:
            lines.append(
                f"  the winner's candidates: oracle {100 * (win.oracle() or 0):.1f} % "
                f"(beta {100 * (win.beta or 0):.1f} %), error correlation "
                f"{'-' if win.candidate_phi is None else f'{win.candidate_phi:.2f}'}"
            )
        lines += [
            "",
            f"Search ({len(self.search.tasks)} dev tasks; chosen by {self.objective}; "
            "these figures are optimistic for the winner):",
            self.search.table(),
            "",
            "The winner, for moa run --pipeline:",
            self.expression,
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        d, lo, hi = self.delta
        return {
            "format": 1,
            "winner": self.winner,
            "expression": self.expression,
            "single": self.single,
            "objective": self.objective,
            "planned_calls": self.planned_calls,
            "holdout_delta": {"difference": d, "low": lo, "high": hi},
            "significant": self.significant,
            "holdout": self.holdout.to_dict(),
            "search": self.search.to_dict(),
        }


Objective = Callable[[ContenderResult], float]


def _objective(objective: object, penalty: float) -> tuple[Objective, str]:
    check_number("moa.tune", "penalty", penalty)
    if callable(objective):
        name = getattr(objective, "__qualname__", None) or safe_repr(objective)
        return objective, name
    if objective != "accuracy":
        raise ValueError(
            f"moa.tune(objective=...): 'accuracy' or a function of a moa.ContenderResult, "
            f"not {safe_repr(objective)}"
        )
    if penalty:

        def score(c: ContenderResult) -> float:
            return c.accuracy - penalty * c.calls / len(c.results)

        return score, f"dev accuracy - {penalty:g} per call per task"
    return (lambda c: c.accuracy), "dev accuracy (ties: fewer calls)"


def _split(
    tasks: Any, holdout_tasks: Any, holdout: float, seed: int
) -> tuple[list[Task], list[Task]]:
    task_list = load_tasks(tasks)
    if holdout_tasks is None:
        return split_tasks(task_list, holdout, seed)
    held = load_tasks(holdout_tasks)
    seen = {t.prompt for t in task_list} & {t.prompt for t in held}
    if seen:
        raise ValueError(
            f"moa.tune: {len(seen)} held-out prompts are among the dev tasks too (e.g. "
            f"{safe_repr(next(iter(seen)))}); held-out tasks must be unseen by the search"
        )
    return task_list, held


async def tune(
    tasks: str | os.PathLike[str] | Iterable[Task | dict[str, Any]],
    client: Client,
    options: RunOptions | None = None,
    *,
    model: AgentLike | None = None,
    space: Space | Mapping[str, object] | Sequence[object] | None = None,
    holdout_tasks: str | os.PathLike[str] | Iterable[Task | dict[str, Any]] | None = None,
    holdout: float = 0.5,
    budget_calls: int | None = None,
    budget_dollars: float | None = None,
    objective: str | Objective = "accuracy",
    penalty: float = 0.0,
    scorer: ScorerLike = "auto",
    prices: Prices | Mapping[str, Any] | None = None,
    max_runs: int | None = None,
    progress: EvalProgress | None = None,
    **kwargs: Unpack[RunKwargs],
) -> TuneReport:
    """Choose a mixture on dev tasks and measure it, once, on held-out tasks.

    ``tasks``: as for :func:`moa.eval`; the held-out part is ``holdout_tasks`` where given
    (none of its prompts may be among ``tasks``), else a seeded ``holdout`` share of
    ``tasks``. ``space``: a :class:`Space` (default: ``Space([model])``), a mapping for one,
    or a list (or mapping of names) of pipelines to choose among. ``objective``:
    ``"accuracy"`` (less ``penalty`` per call per task, where given) or a function of a
    :class:`~moa.ContenderResult` to maximise. ``budget_calls`` / ``budget_dollars``: the
    search and the held-out check together must fit, counted before any call (dollars from
    ``prices``, every output at its ``max_tokens``); otherwise ValueError saying what it
    needs. The other arguments are :func:`moa.eval`'s.
    """
    check_client("moa.tune", client)
    opts = RunOptions.of("moa.tune", options, dict(kwargs))
    if opts.seed is None:
        opts = dataclasses.replace(opts, seed=0)
    score, objective_name = _objective(objective, penalty)
    dev, held = _split(tasks, holdout_tasks, holdout, opts.seed or 0)
    mixtures = _mixtures(space, model)
    for name, step in mixtures.items():
        confidence_needs(f"moa.tune({name})", step, client)
    planned = _planned(mixtures, dev, held)
    _check_budget(planned, budget_calls, budget_dollars, mixtures, dev, held, prices)
    same = functools.partial(
        evaluate, scorer=scorer, prices=prices, max_runs=max_runs, progress=progress
    )
    search = await same(mixtures, dev, client, opts)
    ranked = [c for c in search if not c.single]
    best = max(ranked, key=lambda c: (score(c), -c.calls))
    single = search.best_single
    assert single is not None  # every mixture's pool has its agents alone
    pair = {best.name: mixtures[best.name], single.name: _single_step(single.name, mixtures)}
    held_out = await same(pair, held, client, opts, baselines=False)
    return TuneReport(
        winner=best.name,
        expression=repr(mixtures[best.name]),
        single=single.name,
        search=search,
        holdout=held_out,
        delta=held_out.versus(best.name, single.name),
        objective=objective_name,
        planned_calls=planned,
    )


def _planned(mixtures: Mapping[str, Step], dev: Sequence[Task], held: Sequence[Task]) -> int:
    """Calls the search may make: the pool and aggregators on every dev task, then the
    dearest mixture and one single agent on every held-out task."""
    singles = [c.pipeline for c in contenders_of(mixtures) if c.baseline]
    worst = max(plan_calls({n: s}) for n, s in mixtures.items())
    return len(dev) * plan_calls(mixtures, singles) + len(held) * (worst + 1)


def _single_step(name: str, mixtures: Mapping[str, Step]) -> Step:
    for c in contenders_of(mixtures):
        if c.name == name:
            return c.pipeline
    raise AssertionError(f"{name} is not a contender of the search")  # pragma: no cover


def _mixtures(space: object, model: AgentLike | None) -> dict[str, Step]:
    if space is None:
        if model is None:
            raise TypeError("moa.tune: give model= (the default space is built on it) or space=")
        return Space((model,)).mixtures()
    if isinstance(space, Space):
        return space.mixtures()
    if isinstance(space, Mapping) and set(space) <= {f.name for f in dataclasses.fields(Space)}:
        return Space.of(space, () if model is None else (model,)).mixtures()
    given = contenders_of(space, baselines=False, model=model)
    mixtures = {c.name: c.pipeline for c in given if single_agent(c.pipeline) is None}
    if not mixtures:
        raise ValueError("moa.tune(space=...): the space holds no mixture (only single agents)")
    return mixtures


def _check_budget(
    planned: int,
    calls: int | None,
    dollars: float | None,
    mixtures: Mapping[str, Step],
    dev: Sequence[Task],
    held: Sequence[Task],
    prices: object,
) -> None:
    if calls is not None:
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
            raise TypeError(f"moa.tune(budget_calls=...): a positive int, not {calls!r}")
        if planned > calls:
            raise ValueError(
                f"moa.tune: the search needs up to {planned:,} calls ({len(dev)} dev tasks, "
                f"{len(held)} held out, {len(mixtures)} mixtures) and budget_calls is "
                f"{calls:,}: give fewer personas, samples, temperatures or selections, or "
                "fewer dev tasks"
            )
    if dollars is not None:
        check_number("moa.tune", "budget_dollars", dollars, above=True)
        table = prices_of(prices)
        worst = _dollars_per_call(mixtures, dev, table)
        if worst is None:
            raise ValueError(
                "moa.tune(budget_dollars=...): a model of the space has no price; give "
                "prices= (or --prices) for it"
            )
        needed = planned * worst
        if needed > dollars:
            raise ValueError(
                f"moa.tune: the search may cost up to ${needed:.4g} ({planned:,} calls at "
                f"up to ${worst:.3g} each) and budget_dollars is ${dollars:g}: give a "
                "smaller space or fewer dev tasks"
            )


def _dollars_per_call(
    mixtures: Mapping[str, Step], tasks: Sequence[Task], prices: Prices
) -> float | None:
    """The dearest call of the space at its longest: the longest prompt (4 characters a
    token) plus every response an aggregator reads, every output at its max_tokens."""
    prompt = max(len(t.prompt) for t in tasks) // 4 + 64
    worst = 0.0
    for step in mixtures.values():
        shown = 0
        for _, s in leaves(step):
            if not isinstance(s, (Propose, Aggregate)):
                continue
            for req in s.requests("x", ["x"] * max(shown, 1)):
                extra = shown * req.max_tokens if isinstance(s, Aggregate) else 0
                system = sum(len(m["content"]) for m in req.messages) // 4
                cost = prices.call_cost(req.model, prompt + system + extra, req.max_tokens)
                if cost is None:
                    return None
                worst = max(worst, cost)
            shown = len(s.requests("x", []))
    return worst


def tune_sync(
    tasks: str | os.PathLike[str] | Iterable[Task | dict[str, Any]],
    client: Client,
    options: RunOptions | None = None,
    *,
    backend: str = "asyncio",
    **kwargs: Any,
) -> TuneReport:
    """``moa.tune`` for scripts: starts an event loop and tunes."""
    return anyio.run(functools.partial(tune, tasks, client, options, **kwargs), backend=backend)
