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
from types import MappingProxyType
from typing import Any, Unpack

import anyio

from ._agent import Agent, AgentLike, agent_of
from ._bounds import check_int, check_number, describe, safe_repr
from ._client import Client
from ._contract import Request
from ._conversation import with_turns
from ._cost import Prices, price_table
from ._eval import EvalProgress, contenders_of, eval_namespace, evaluate
from ._llm_steps import Aggregate, Propose
from ._options import RunKwargs, RunOptions
from ._pipeline import Step, leaves
from ._report import ContenderResult, Difference, EvalReport
from ._run import check_client, confidence_needs
from ._scoring import Judge, ScorerLike, check_scorer
from ._select import Majority, MostConfident, MostConsistent, WeightedMajority
from ._tasks import Task, load_tasks, split_tasks
from ._tune_plan import plan_calls
from .recipes import VOTE_PERSONAS

__all__ = ("SELECTIONS", "Space", "TuneReport", "tune", "tune_sync")

#: The selections a :class:`Space` may name, cheapest first.
SELECTIONS = ("majority", "weighted", "weighted-drop", "consistent", "confident", "aggregate")

#: The personas of the default space: the first four of ``recipes.VOTE_PERSONAS`` (written
#: before any was measured), None being the model's own default.
TUNE_PERSONAS: tuple[str | None, ...] = VOTE_PERSONAS[:4]


@dataclasses.dataclass(frozen=True, slots=True)
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
        check_int("Space", "max_tokens", self.max_tokens, 1, 1 << 20)
        # The same count or temperature twice would build the same mixtures twice.
        object.__setattr__(self, "samples", tuple(dict.fromkeys(self.samples)))
        object.__setattr__(self, "temps", tuple(dict.fromkeys(self.temps)))

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


@dataclasses.dataclass(frozen=True, slots=True)
class TuneReport:
    """What ``moa.tune`` chose and what it is worth. ``search`` is the dev eval (every
    mixture of the space and the single agents of its pool; its figures chose, and are
    optimistic for the winner); ``holdout`` the eval, run once, of the winner, of ``single``
    (the single agent with the best dev accuracy) and of ``greedy`` (the first model alone
    at temperature 0) on the held-out tasks. ``delta`` is the winner's held-out accuracy
    minus the single's, a :class:`~moa.Difference`: the result; ``versus_greedy`` the same
    against the plain greedy model."""

    winner: str
    expression: str
    single: str
    greedy: str
    search: EvalReport
    holdout: EvalReport
    delta: Difference
    versus_greedy: Difference | None
    objective: str
    planned_calls: int | None
    #: Held-out tasks whose single agent's answer the cache held before the held-out eval:
    #: the set was evaluated before (a set used to decide more than once is no longer held out).
    reused: int = 0

    @property
    def beats_single(self) -> bool:
        """The held-out difference is significant and positive (interval above 0, p < .05)."""
        return self.delta.better

    def _verdict(self) -> list[str]:
        d = self.delta
        if d.better:
            return []
        if d.significant:
            return ["  WARNING: on these tasks the mixture is significantly WORSE than the single."]
        return [
            "  WARNING: the interval includes 0 (or p >= .05): on these tasks the mixture is "
            "not shown to beat the single agent."
        ]

    def table(self) -> str:
        """The report as text: the held-out result first, then the search, then the
        winner's expression for ``moa run --pipeline``."""
        held = self.holdout
        win = held[self.winner]
        lines = [f"Held-out result ({len(held.tasks)} tasks, run once after the search):"]
        for role, name in (("winner", self.winner), ("single", self.single)):
            c = held[name]
            lines.append(
                f"  {role}  {name}: {100 * c.accuracy:.1f} % "
                f"[{100 * c.interval[0]:.1f}, {100 * c.interval[1]:.1f}], "
                f"{c.calls / len(c.results):.1f} calls per task"
            )
        d = self.delta
        lines.append(
            f"  winner - single: {d} points (paired bootstrap 95 %), won {d.won} lost "
            f"{d.lost}, McNemar p = {d.p:.3g}"
        )
        if self.versus_greedy is not None:
            g = self.versus_greedy
            lines.append(
                f"  winner - {self.greedy} (greedy): {g} points, won {g.won} lost {g.lost}, "
                f"p = {g.p:.3g}"
            )
        lines += self._verdict()
        if win.oracle() is not None:
            phi = win.candidate_phi
            lines.append(
                f"  the winner's candidates: oracle {100 * (win.oracle() or 0):.1f} % "
                f"(beta {100 * (win.beta or 0):.1f} %), error correlation "
                f"{'-' if phi is None else f'{phi:.2f}'}"
            )
        if self.reused:
            lines.append(
                f"  NOTE: the cache held answers for {self.reused} held-out tasks before this "
                "check: the held-out set was evaluated before. A set used to decide more than "
                "once is no longer held out."
            )
        failed = sum(c.errors for c in held)
        if failed:
            lines.append(f"  WARNING: {failed} held-out runs failed and are scored wrong.")
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
        greedy = self.versus_greedy
        return {
            "format": 1,
            "winner": self.winner,
            "expression": self.expression,
            "single": self.single,
            "greedy": self.greedy,
            "objective": self.objective,
            "planned_calls": self.planned_calls,
            "holdout_delta": self.delta._asdict(),
            "holdout_versus_greedy": None if greedy is None else greedy._asdict(),
            "beats_single": self.beats_single,
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
    seen = {(t.prompt, t.earlier) for t in task_list} & {(t.prompt, t.earlier) for t in held}
    if seen:
        raise ValueError(
            f"moa.tune: {len(seen)} held-out prompts are among the dev tasks too (e.g. "
            f"{safe_repr(next(iter(seen))[0])}); held-out tasks must be unseen by the search"
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
    budget_usd: float | None = None,
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
    :class:`~moa.ContenderResult` to maximise. ``budget_calls`` / ``budget_usd``: the
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
    check_scorer(scorer, [*dev, *held])  # a held-out task it cannot score: before the search
    mixtures, singles = _space_of(space, model)
    for name, step in {**mixtures, **singles}.items():
        confidence_needs(f"moa.tune({name})", step, client)
    planned = _planned(mixtures, singles, dev, held, isinstance(scorer, Judge))
    _check_budget(planned, budget_calls, budget_usd, mixtures, dev, prices)
    phase = _phases(progress)
    same = functools.partial(evaluate, scorer=scorer, prices=prices, max_runs=max_runs)
    search = await same({**singles, **mixtures}, dev, client, opts, progress=phase("search"))
    best = max((c for c in search if not c.single), key=lambda c: (score(c), -c.calls))
    single = search.best_single
    if single is None:  # pragma: no cover - every mixture has its agents alone
        raise ValueError("moa.tune: the search has no single agent to compare the winner with")
    steps = {c.name: c.pipeline for c in contenders_of({**singles, **mixtures})}
    greedy_name, greedy = _greedy(mixtures[best.name], steps)
    pair = {best.name: mixtures[best.name], single.name: steps[single.name]}
    if greedy_name not in pair:
        pair[greedy_name] = greedy
    reused = _reused(opts, held, steps[single.name])
    held_out = await same(pair, held, client, opts, baselines=False, progress=phase("held-out"))
    return TuneReport(
        winner=best.name,
        expression=repr(mixtures[best.name]),
        single=single.name,
        greedy=greedy_name,
        search=search,
        holdout=held_out,
        delta=held_out.versus(best.name, single.name),
        versus_greedy=None
        if greedy_name == single.name
        else held_out.versus(best.name, greedy_name),
        objective=objective_name,
        planned_calls=planned,
        reused=reused,
    )


def _reused(options: RunOptions, held: Sequence[Task], single: Step) -> int:
    """Held-out tasks whose single agent's answer the eval's cache already holds."""
    if options.cache is None:
        return 0
    view = options.cache.with_namespace(eval_namespace(options.cache, options.seed))
    first = next(s for _, s in leaves(single) if isinstance(s, Propose))
    found = sum(view.lookup(_asked(first, t).identity, (0, 0)) is not None for t in held)
    view.close()
    return found


def _asked(first: Propose, task: Task) -> Request:
    """The single agent's first request for ``task``, as a run sends it (its earlier turns
    in), so the cache is looked up under the key the run stores it at."""
    req = first.requests(task.prompt, [])[0]
    if not task.earlier:
        return req
    return with_turns(
        req, tuple(MappingProxyType({"role": r, "content": c}) for r, c in task.earlier)
    )


def _phases(progress: EvalProgress | None) -> Callable[[str], EvalProgress | None]:
    """Progress for each phase: ``progress(done, total, "search: name")``."""

    def phase(label: str) -> EvalProgress | None:
        if progress is None:
            return None
        return lambda done, total, name: progress(done, total, f"{label}: {name}")

    return phase


def _greedy(winner: Step, steps: Mapping[str, Step]) -> tuple[str, Step]:
    """The winner's first model alone at temperature 0, and its name in the search."""
    first: Any = next(s for _, s in leaves(winner) if getattr(s, "agents", None))
    agent = first.agents[0]
    model = agent.model if isinstance(agent, Agent) else agent
    alone = Propose([model], temp=0.0, max_tokens=first.max_tokens)
    for name, step in steps.items():
        if step == alone:
            return name, step
    return f"{model} t=0", alone


def _planned(
    mixtures: Mapping[str, Step],
    singles: Mapping[str, Step],
    dev: Sequence[Task],
    held: Sequence[Task],
    judged: bool,
) -> int | None:
    """Calls the search may make, retries aside: the pool, aggregators and judge on every
    dev task, then the dearest mixture and two single agents on every held-out task; None
    when a step cannot be bounded."""
    alone = [c.pipeline for c in contenders_of(mixtures) if c.baseline]
    search = plan_calls({**singles, **mixtures}, alone, judged)
    each = [plan_calls({n: s}, (), judged) for n, s in mixtures.items()]
    if search is None or any(e is None for e in each):
        return None
    check = max(e for e in each if e is not None) + 2 * (3 if judged else 1)
    return len(dev) * search + len(held) * check


def _single_step(name: str, mixtures: Mapping[str, Step]) -> Step:
    for c in contenders_of(mixtures):
        if c.name == name:
            return c.pipeline
    raise AssertionError(f"{name} is not a contender of the search")  # pragma: no cover


def _space_of(space: object, model: AgentLike | None) -> tuple[dict[str, Step], dict[str, Step]]:
    """The mixtures to choose among and the user's own single agents (kept as baselines)."""
    if space is None:
        if model is None:
            raise TypeError("moa.tune: give model= (the default space is built on it) or space=")
        return Space((model,)).mixtures(), {}
    if isinstance(space, Space):
        return space.mixtures(), {}
    fields = {f.name for f in dataclasses.fields(Space)}
    if isinstance(space, Mapping) and space and set(space) <= fields:
        return Space.of(space, () if model is None else (model,)).mixtures(), {}
    if isinstance(space, (Mapping, list, tuple)) and not space:
        raise ValueError("moa.tune(space=...): the space is empty; give pipelines, or None")
    given = contenders_of(space, baselines=False, model=model, where="moa.tune(space)")
    mixtures = {c.name: c.pipeline for c in given if not c.single}
    if not mixtures:
        raise ValueError("moa.tune(space=...): the space holds no mixture (only single agents)")
    return mixtures, {c.name: c.pipeline for c in given if c.single}


def _check_budget(
    planned: int | None,
    calls: int | None,
    dollars: float | None,
    mixtures: Mapping[str, Step],
    dev: Sequence[Task],
    prices: object,
) -> None:
    if (calls is not None or dollars is not None) and planned is None:
        raise ValueError(
            "moa.tune: a step of the space has no bound on its calls (a custom LLM step), so "
            "no budget can be checked; run without budget_calls / budget_usd"
        )
    if calls is not None:
        check_int("moa.tune", "budget_calls", calls, 1, 1 << 62)
        assert planned is not None
        if planned > calls:
            raise ValueError(
                f"moa.tune: the search needs up to {planned:,} calls before retries "
                f"({len(dev)} dev tasks, {len(mixtures)} mixtures) and budget_calls is "
                f"{calls:,}: give fewer personas, samples, temperatures or selections, or "
                "fewer dev tasks"
            )
    if dollars is not None:
        check_number("moa.tune", "budget_usd", dollars, above=True)
        table = price_table("moa.tune", prices)
        worst = _dollars_per_call(mixtures, dev, table)
        if worst is None:
            raise ValueError(
                "moa.tune(budget_usd=...): a model of the space has no price; give "
                "prices= (or --prices) for it"
            )
        assert planned is not None
        needed = planned * worst
        if needed > dollars:
            raise ValueError(
                f"moa.tune: the search may cost up to ${needed:.4g} ({planned:,} calls at "
                f"up to ${worst:.3g} each) and budget_usd is ${dollars:g}: give a "
                "smaller space or fewer dev tasks"
            )


def _dollars_per_call(
    mixtures: Mapping[str, Step], tasks: Sequence[Task], prices: Prices
) -> float | None:
    """The dearest call of the space at its longest: the longest prompt (4 characters a
    token) plus every response an aggregator reads, every output at its max_tokens."""
    prompt = max(len(t.prompt) + sum(len(c) for _, c in t.earlier) for t in tasks) // 4 + 64
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
