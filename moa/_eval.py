"""``moa.eval``: pipelines answer a user's questions and are scored against the reference
answers, each with its own single agents beside it, so the report says whether the mixture
beats the best single model on this data (:class:`~moa.EvalReport`).

Every contender answers every task with the task's own seed (from the eval's seed and the
task's id), through one response cache: a single agent added as a baseline asks exactly what
the mixture's first step asks of that agent, so it costs nothing more, and a rerun on the same
cache file picks up where a stopped one ended.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Unpack

import anyio

from ._agent import Agent, AgentLike
from ._batch import RunResult, as_completed
from ._bounds import check_int, describe, error_text, safe_repr
from ._cache import Cache
from ._client import Client
from ._contract import OffLoop, reads
from ._cost import Prices, price_table
from ._history import CallRecord, History
from ._llm_steps import DEFAULT_MAX_TOKENS, Propose
from ._offload import run_off_loop, seconds_for
from ._options import RunKwargs, RunOptions
from ._parse import parse_runnable
from ._pipeline import Pipeline, Step, as_step, leaves
from ._report import ContenderResult, EvalReport, TaskResult
from ._run import check_client, confidence_needs, run
from ._scoring import Judge, ScorerLike, check_scorer, score_many
from ._seeds import row_seed
from ._tasks import Task, load_tasks
from ._tune_plan import first_layer, most_calls
from .errors import MoaError
from .recipes import NAMES, by_name

__all__ = ("Contender", "contenders_of", "evaluate", "member_baselines", "single_agent")

#: Progress of an eval: ``progress(done, total, contender)`` after each run.
EvalProgress = Callable[[int, int, str], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Contender:
    """A pipeline under evaluation and the name it is reported by. ``single``: it makes one
    call of one agent (a candidate for "the best single model"); ``baseline``: added by the
    eval as one member of a mixture, alone."""

    name: str
    pipeline: Step
    single: bool = False
    baseline: bool = False


def single_agent(step: Step) -> AgentLike | None:
    """The one agent of a pipeline that is a single ``Propose`` of one agent, else None."""
    while isinstance(step, Pipeline) and len(step.steps) == 1:
        step = step.steps[0]
    if isinstance(step, Propose) and len(step.agents) == 1:
        return step.agents[0]
    return None


def _identity(step: Propose) -> Any:
    return step.requests("", [])[0].identity


def _alone(agent: AgentLike, like: Propose, temp: float | None = None) -> Propose:
    """``agent`` asked alone as ``like`` asks it; with ``temp``, at that temperature."""
    if temp is not None and isinstance(agent, Agent) and agent.temp is not None:
        agent = dataclasses.replace(agent, temp=None)
        agent = agent.model if agent.plain else agent
    return Propose([agent], temp=like.temp if temp is None else temp, max_tokens=like.max_tokens)


def member_baselines(step: Step) -> list[Propose]:
    """The agents of ``step`` alone: each agent of its first ``Propose`` as the mixture asks
    it (so the cache serves it the mixture's own first answer), and every agent of every LLM
    step (proposers, aggregators, judges) greedy, at temperature 0, answering the question
    itself with the first ``Propose``'s ``max_tokens``. Requests that would be the same are
    given once."""
    first = first_layer(step)
    if single_agent(step) is not None:
        return []
    length = first.max_tokens if first is not None else DEFAULT_MAX_TOKENS
    out: dict[Any, Propose] = {}
    if first is not None:
        for agent in first.agents:
            for alone in (_alone(agent, first), _alone(agent, first, temp=0.0)):
                out.setdefault(_identity(alone), alone)
    for _, s in leaves(step):
        for agent in (*getattr(s, "agents", ()), getattr(s, "agent", None)):
            if isinstance(agent, (str, Agent)):
                greedy = _alone(agent, Propose([agent], max_tokens=length), temp=0.0)
                out.setdefault(_identity(greedy), greedy)
    return list(out.values())


def _label(step: Propose, personas: dict[str | None, int]) -> str:
    agent = step.agents[0]
    request = step.requests("", [])[0]
    if isinstance(agent, Agent) and agent.name is not None:
        who = agent.name
    else:
        who = request.model
        system = agent.system if isinstance(agent, Agent) else None
        if system is not None:
            who += f" persona {personas.setdefault(system, len(personas) + 1)}"
    return f"{who} t={request.temp:g}"


def _as_pipeline(value: object, where: str, model: AgentLike | None) -> Step:
    if isinstance(value, str):
        if value in NAMES:
            return by_name(value, model)
        return parse_runnable(value)
    return as_step(value, where=where)


def contenders_of(
    contenders: Mapping[str, object] | Sequence[object] | object,
    *,
    baselines: bool = True,
    model: AgentLike | None = None,
    where: str = "moa.eval(contenders)",
) -> list[Contender]:
    """The contenders of an eval, single agents first: each given one (a step or pipeline, a
    one-line expression, or a recipe name, built with ``model`` where given), named by its
    key in a mapping, else by the recipe name or expression; with ``baselines``, every agent
    of each mixture alone (see :func:`member_baselines`), unless a contender already asks
    exactly that. A pipeline that ends with more than one response (no step chooses one) is
    refused: its score would be its first response's."""
    given: list[tuple[str | None, object]]
    if isinstance(contenders, Mapping):
        given = [(str(k), v) for k, v in contenders.items()]
    elif isinstance(contenders, (list, tuple)):
        given = [(None, v) for v in contenders]
    else:
        given = [(None, contenders)]
    if not given:
        raise ValueError(f"{where}: name at least one pipeline, got none")
    built: list[Contender] = []
    for i, (name, value) in enumerate(given):
        at = f"{where}[{name!r}]" if name is not None else f"{where}[{i}]"
        step = _as_pipeline(value, at, model)
        _check_one_answer(step, at)
        if name is None:
            name = value if isinstance(value, str) else repr(step)
        built.append(Contender(name, step, single=single_agent(step) is not None))
    names = [c.name for c in built]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"{where}: two contenders are named {twice!r}; names are unique")
    singles = [c for c in built if c.single]
    if baselines:
        seen = {_identity(first) for c in singles if (first := first_layer(c.pipeline))}
        personas: dict[str | None, int] = {}
        for c in built:
            for alone in member_baselines(c.pipeline):
                if _identity(alone) not in seen:
                    seen.add(_identity(alone))
                    label = _label(alone, personas)
                    while label in names:
                        label += "'"
                    names.append(label)
                    singles.append(Contender(label, alone, single=True, baseline=True))
    return singles + [c for c in built if not c.single]


def _check_one_answer(step: Step, where: str) -> None:
    bound = most_calls(step)
    if bound is not None and bound[1] > 1:
        raise ValueError(
            f"{where}: {safe_repr(step)} ends with up to {bound[1]} responses and is scored "
            "on one; end it with a step that chooses one (Majority(), WeightedMajority(), "
            "Aggregate(...))"
        )


def _candidates(history: History | None) -> list[CallRecord]:
    """The proposal layer: the calls of the first step that made two or more."""
    if history is None:
        return []
    return next((list(s.calls) for s in history.steps if len(s.calls) >= 2), [])


@dataclasses.dataclass(slots=True)
class _Spend:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    dollars: float = 0.0
    unpriced: set[str] = dataclasses.field(default_factory=set)
    cached: int = 0

    def add(self, history: History | None, prices: Prices) -> None:
        """Every request of the run, counted as if it ran alone: a cached answer counts
        the tokens it cost when it was made."""
        if history is None:
            return
        for call in history.calls:
            self.calls += 1
            self.cached += call.cached
            for attempt in (call, *call.hedges):
                if not attempt.ok:
                    continue
                self.input_tokens += attempt.input_tokens or 0
                self.output_tokens += attempt.output_tokens or 0
                dollars = prices.call_cost(
                    attempt.model, attempt.input_tokens, attempt.output_tokens
                )
                if dollars is None:
                    self.unpriced.add(attempt.model)
                else:
                    self.dollars += dollars


class _Scorer:
    """Scores a run's reply and candidates off the event loop; a Judge through ``run``,
    every text at once. A reply that cannot be scored (a regex or function past its time
    bound, a judge that fails) is wrong, and says why."""

    def __init__(
        self, scorer: ScorerLike, client: Client, options: RunOptions, prices: Prices
    ) -> None:
        self.scorer = scorer
        self.client = client
        self.options = dataclasses.replace(options, on_event=None)
        self.prices = prices
        self.spend = _Spend()

    async def __call__(self, texts: list[str | None], task: Task) -> tuple[list[bool], str | None]:
        if isinstance(self.scorer, Judge):
            return await self._judged(texts, task)
        regex = self.scorer == "regex"
        work = OffLoop(score_many, (self.scorer, texts, task), process=regex)
        try:
            return list(await run_off_loop(work)), None
        except TimeoutError:
            seconds = seconds_for(work)
            return [False] * len(texts), f"scoring took longer than {seconds:g} s; scored wrong"

    async def _judged(self, texts: list[str | None], task: Task) -> tuple[list[bool], str | None]:
        verdicts = [False] * len(texts)
        failures: list[str] = []

        async def judge(i: int, text: str) -> None:
            assert isinstance(self.scorer, Judge)
            seed = row_seed(self.options.seed or 0, task.id)
            try:
                verdict, history = await run(
                    self.scorer.step(task, text),
                    task.asked,
                    self.client,
                    dataclasses.replace(self.options, seed=seed),
                )
            except MoaError as exc:
                self.spend.add(exc.history, self.prices)
                failures.append(error_text(exc))
                return
            self.spend.add(history, self.prices)
            verdicts[i] = verdict == "YES"

        async with anyio.create_task_group() as tg:
            for i, text in enumerate(texts):
                if text is not None:
                    tg.start_soon(judge, i, text)
        note = f"the judge failed {len(failures)} times ({failures[0]})" if failures else None
        return verdicts, note


async def _evaluate_one(
    contender: Contender,
    tasks: Sequence[Task],
    client: Client,
    options: RunOptions,
    scorer: _Scorer,
    max_runs: int | None,
    tick: Callable[[str], None],
) -> ContenderResult:
    results: dict[int, TaskResult] = {}
    spend = _Spend()
    started = time.perf_counter()

    async def score(r: RunResult) -> None:
        task = tasks[r.index]
        calls = _candidates(r.history)
        texts = [r.result, *(c.text for c in calls)]
        verdicts, note = await scorer(texts, task)
        results[r.index] = TaskResult(
            task.id,
            r.result,
            verdicts[0],
            None if r.error is None else error_text(r.error),
            tuple(verdicts[1:]),
            note,
        )
        tick(contender.name)

    try:
        await _drive(contender, tasks, client, options, max_runs, score, spend, scorer.prices)
    except BaseExceptionGroup as group:
        # A scorer function that fails, fails on every task scored at once: the first error
        # leaves as itself (an interrupt before any), not in a group.
        leaves = _leaves(group)
        error = next((e for e in leaves if not isinstance(e, Exception)), leaves[0])
        raise error from error.__cause__
    return ContenderResult(
        name=contender.name,
        expression=repr(contender.pipeline),
        single=contender.single,
        baseline=contender.baseline,
        results=tuple(results[i] for i in range(len(tasks))),
        calls=spend.calls,
        input_tokens=spend.input_tokens,
        output_tokens=spend.output_tokens,
        cost=None if spend.unpriced else spend.dollars,
        unpriced=tuple(sorted(spend.unpriced)),
        cached_calls=spend.cached,
        wall=time.perf_counter() - started,
    )


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


async def _drive(
    contender: Contender,
    tasks: Sequence[Task],
    client: Client,
    options: RunOptions,
    max_runs: int | None,
    score: Callable[[RunResult], Any],
    spend: _Spend,
    prices: Prices,
) -> None:
    async with (
        anyio.create_task_group() as tg,
        as_completed(
            contender.pipeline,
            [t.asked for t in tasks],
            client,
            options,
            ids=[t.id for t in tasks],
            max_runs=max_runs,
        ) as stream,
    ):
        async for r in stream:
            spend.add(r.history, prices)
            tg.start_soon(score, r)


def _tasks_of(tasks: object) -> list[Task]:
    if isinstance(tasks, (str, os.PathLike)) or isinstance(tasks, Iterable):
        return load_tasks(tasks)
    raise TypeError(
        "moa.eval(tasks=...): tasks must be a JSON Lines or Parquet path, or a list of "
        f"moa.Task or dicts, not {describe(tasks)}"
    )


async def evaluate(
    contenders: Mapping[str, object] | Sequence[object] | object,
    tasks: str | os.PathLike[str] | Iterable[Task | dict[str, Any]],
    client: Client,
    options: RunOptions | None = None,
    *,
    scorer: ScorerLike = "auto",
    baselines: bool = True,
    model: AgentLike | None = None,
    prices: Prices | Mapping[str, Any] | None = None,
    max_runs: int | None = None,
    progress: EvalProgress | None = None,
    **kwargs: Unpack[RunKwargs],
) -> EvalReport:
    """Every contender's answer to every task, scored, with the statistics that say whether a
    mixture beats the best single model (an :class:`~moa.EvalReport`).

    ``contenders``: one pipeline, a list, or a mapping of name to pipeline; each a step, a
    one-line expression, or a recipe name (built with ``model`` where given). ``tasks``: a
    JSON Lines or Parquet file, or a list of :class:`~moa.Task` or dicts (``prompt`` or
    ``question``, ``answer``, optional ``id``, ``aliases``, ``match``). ``scorer``: ``"auto"``,
    ``"number"``, ``"contains"``, ``"exact"``, ``"regex"``, a function ``(reply, task) ->
    bool``, or a :class:`~moa.Judge`; checked against every task before any call.

    The run options are ``moa.run``'s (a :class:`~moa.RunOptions`, keywords, or both) and
    hold for every run; ``seed`` defaults to 0 (each task's seed comes from it and the task's
    id, the same for every contender). Without a ``cache`` the eval keeps one in a temporary
    file, so contenders still share answers; give a cache file to resume a stopped eval or to
    add a contender later at the cost of its new calls only. ``prices`` (a
    :class:`~moa.Prices` or a mapping; default ``moa.DEFAULT_PRICES``) cost every call as if
    it ran alone. ``max_runs`` caps the tasks in flight per contender; ``progress(done,
    total, contender)`` is called after each run. A run that fails is scored wrong and its
    error kept in the report; an error that stops the batch (a client's interrupt) is raised.
    """
    check_client("moa.eval", client)
    check_int("moa.eval", "max_runs", max_runs, 1, 1 << 20, none=True)
    if progress is not None and not callable(progress):
        raise TypeError(
            f"moa.eval(progress=...): progress must be a callable or None, not {describe(progress)}"
        )
    if not isinstance(baselines, bool):
        raise TypeError(f"moa.eval(baselines=...): a bool, not {describe(baselines)}")
    opts = RunOptions.of("moa.eval", options, dict(kwargs))
    if opts.seed is None:
        opts = dataclasses.replace(opts, seed=0)
    table = price_table("moa.eval", prices)
    task_list = _tasks_of(tasks)
    checked = check_scorer(scorer, task_list)
    entries = contenders_of(contenders, baselines=baselines, model=model)
    for c in entries:
        confidence_needs(f"moa.eval({c.name})", c.pipeline, client)
    total = len(entries) * len(task_list)
    done = 0

    def tick(name: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, name)

    with _EvalCache(opts) as opts:
        judge = _Scorer(checked, client, opts, table)
        # A contender that reads confidence runs first: its answers, cached with their
        # log-probabilities, then serve the others too (one cached without them is asked
        # again by a run that needs them).
        order = sorted(entries, key=lambda c: not reads(c.pipeline).confidence)
        done_by = {
            c.name: await _evaluate_one(c, task_list, client, opts, judge, max_runs, tick)
            for c in order
        }
        results = [done_by[c.name] for c in entries]
    return EvalReport(
        tasks=tuple(task_list),
        contenders=tuple(results),
        scorer=_scorer_name(checked),
        seed=opts.seed or 0,
        judge_calls=judge.spend.calls,
        judge_cost=None if judge.spend.unpriced else judge.spend.dollars,
        judge_cached=judge.spend.cached,
    )


def _scorer_name(scorer: ScorerLike) -> str:
    if isinstance(scorer, str):
        return scorer
    if isinstance(scorer, Judge):
        return f"judge {safe_repr(scorer.agent)}"
    return getattr(scorer, "__qualname__", None) or safe_repr(scorer)


def eval_namespace(cache: Cache, seed: int | None) -> str:
    """The namespace an eval keeps its answers under in ``cache``: the cache's and the seed
    (\x1f cannot be in a namespace a person types: no clash with the user's own)."""
    return f"{cache.namespace}\x1fmoa.eval seed={seed}"


class _EvalCache:
    """The options with a cache keyed by the eval's seed too: the user's file under its
    namespace and the seed (a rerun with another seed draws new samples, not the old ones),
    else one in a temporary folder, removed after."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.folder: tempfile.TemporaryDirectory[str] | None = None
        self.cache: Cache | None = None

    def __enter__(self) -> RunOptions:
        given = self.options.cache
        if given is not None:
            self.cache = given.with_namespace(eval_namespace(given, self.options.seed))
        else:
            self.folder = tempfile.TemporaryDirectory(prefix="moa-eval-")
            self.cache = Cache(os.path.join(self.folder.name, "cache.sqlite"))
        return dataclasses.replace(self.options, cache=self.cache)

    def __exit__(self, *exc: object) -> None:
        if self.cache is not None:
            self.cache.close()
        if self.folder is not None:
            self.folder.cleanup()


def evaluate_sync(
    contenders: Mapping[str, object] | Sequence[object] | object,
    tasks: str | os.PathLike[str] | Iterable[Task | dict[str, Any]],
    client: Client,
    options: RunOptions | None = None,
    *,
    backend: str = "asyncio",
    **kwargs: Any,
) -> EvalReport:
    """``moa.eval`` for scripts: starts an event loop and evaluates."""
    return anyio.run(
        functools.partial(evaluate, contenders, tasks, client, options, **kwargs),
        backend=backend,
    )
