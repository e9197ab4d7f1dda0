"""``moa eval`` and ``moa tune``: :func:`moa.eval` and :func:`moa.tune` on a task file, with
the provider, seed, cache and price options of ``moa run``. The report's table goes to
stdout, progress to stderr; ``--json``, ``--csv`` and ``--chart`` save it."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .._agent import AgentLike
from .._cache import Cache
from .._cost import Prices
from .._eval import evaluate
from .._pipeline import Step
from .._report import EvalReport
from .._scoring import Judge, ScorerLike
from .._tasks import TaskError, load_tasks
from .._tune import Space, TuneReport, tune
from . import providers
from .common import UsageError, check_writable, close_client
from .options import (
    cache_namespace,
    open_cache,
    parse_expression,
    prices_for,
    recipe,
    run_options,
    with_max_tokens,
)
from .providers import as_agent, model_option

__all__ = ("eval_command", "tune_command")

#: ``--max-runs``' default: tasks in flight at once.
DEFAULT_MAX_RUNS = 4


class _Progress:
    """``done/total`` on stderr: redrawn in place on a terminal, every tenth otherwise."""

    def __init__(self, quiet: bool, label: str) -> None:
        self.quiet = quiet
        self.label = label
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.shown = -1

    def __call__(self, done: int, total: int, name: str) -> None:
        if self.quiet:
            return
        tenth = 10 * done // total
        if not self.tty and tenth == self.shown and done != total:
            return
        self.shown = tenth
        line = (
            f"{self.label}: {done}/{total} runs, {time.monotonic() - self.started:.0f} s "
            f"({name[:48]})"
        )
        print(
            ("\r\x1b[K" if self.tty else "") + line,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.tty and not self.quiet and self.shown >= 0:
            print(file=sys.stderr)


def _tasks(path: str, limit: int | None = None) -> list[Any]:
    try:
        return load_tasks(path)[:limit]
    except TaskError as exc:
        raise UsageError(str(exc)) from None


def _scorer(args: argparse.Namespace, model: AgentLike) -> ScorerLike:
    if args.scorer == "judge":
        if not args.judge:
            # The model under test grading itself would favour its own answers.
            raise UsageError(
                "--scorer judge needs --judge MODEL: a model other than the one tested"
            )
        return Judge(args.judge)
    if args.judge:
        raise UsageError("--judge names the judge model of --scorer judge")
    return str(args.scorer)


_NAME = re.compile(r"\s*([\w][\w .+-]*?)\s*=(?!=)\s*")


def _named(text: str) -> tuple[str, str]:
    """``NAME=EXPR`` as (NAME, EXPR); an expression alone is named by itself. (An expression's
    own ``=`` comes after a parenthesis, which a name never holds.)"""
    m = _NAME.match(text)
    return (m[1], text[m.end() :]) if m else (text, text)


def _contenders(args: argparse.Namespace, model: AgentLike) -> dict[str, Step]:
    local = args.provider == "local" and not args.base_url
    out: dict[str, Step] = {}
    for text in args.pipeline or ():
        name, expression = _named(text)
        if name in out:
            raise UsageError(f"--pipeline: two contenders are named {name!r}")
        out[name] = parse_expression(expression)
    for name in args.recipe or ():
        if name in out:
            raise UsageError(f"--recipe {name}: a contender is named {name!r} already")
        out[name] = recipe(name, model if args.model or local else None)
    if not out:
        raise UsageError("give the pipelines to evaluate: --pipeline EXPR or --recipe NAME")
    if args.max_tokens is not None:
        out = {k: with_max_tokens(v, args.max_tokens) for k, v in out.items()}
    return out


def _save(report: EvalReport | TuneReport, args: argparse.Namespace) -> None:
    chart_of = report.holdout if isinstance(report, TuneReport) else report
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=1, ensure_ascii=False)
    if getattr(args, "csv", None):
        chart_of.save(args.csv)
    if args.chart:
        if isinstance(report, TuneReport):
            report.search.save(args.chart, note=": the search on dev tasks, optimistic")
        else:
            report.save(args.chart)


def _check_outputs(args: argparse.Namespace) -> None:
    for option in ("json", "csv", "chart"):
        path = getattr(args, option, None)
        check_writable(f"--{option}", path)
    if getattr(args, "csv", None) and not args.csv.endswith(".csv"):
        raise UsageError(f"--csv {args.csv}: the file name must end in .csv")
    if args.chart and not args.chart.lower().endswith((".svg", ".png")):
        raise UsageError(f"--chart {args.chart}: the file name must end in .svg or .png")


async def _run_closing(client: Any, work: Any) -> Any:
    try:
        return await work()
    finally:
        await close_client(client)


def _reported(
    args: argparse.Namespace,
    client: Any,
    cache: Cache | None,
    progress: _Progress,
    work: Callable[[], Awaitable[EvalReport | TuneReport]],
) -> int:
    """``work()`` on ``client`` (closed after), then its report printed and saved; a bad task
    or option found on the way is a usage error."""
    try:
        report = anyio.run(_run_closing, client, work)
    except (TaskError, ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    finally:
        progress.close()
        if cache is not None:
            cache.close()
    print(report.table())
    _save(report, args)
    return 0


def eval_command(args: argparse.Namespace) -> int:
    agent = model_option(args)
    tasks = _tasks(args.tasks, args.limit)
    _check_outputs(args)
    client, model_name = providers.make_client(args.provider, args.base_url, args.model)
    model = as_agent(agent, model_name)
    try:
        contenders = _contenders(args, model)
        scorer = _scorer(args, model)
    except BaseException:
        anyio.run(close_client, client)
        raise
    prices = _prices(args, contenders)
    cache = open_cache(args.cache, cache_namespace(args))
    progress = _Progress(args.quiet, "eval")
    return _reported(
        args,
        client,
        cache,
        progress,
        lambda: evaluate(
            contenders,
            tasks,
            client,
            run_options(args, cache=cache),
            scorer=scorer,
            baselines=not args.no_baselines,
            prices=prices,
            max_runs=args.max_runs or DEFAULT_MAX_RUNS,
            progress=progress,
        ),
    )


def _prices(args: argparse.Namespace, contenders: dict[str, Step]) -> Prices:
    from .._pipeline import Pipeline

    steps = list(contenders.values())
    return prices_for(args, Pipeline(*steps) if len(steps) > 1 else steps[0])


def _space(args: argparse.Namespace, model: AgentLike) -> Space | dict[str, Step]:
    if args.pipeline or args.recipe:
        if args.space:
            raise UsageError("--space is a space to build; --pipeline/--recipe list one: not both")
        return _contenders(args, model)
    spec: dict[str, Any] = {}
    if args.space:
        try:
            with open(args.space, encoding="utf-8") as f:
                spec = json.load(f)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--space {args.space}: {exc}") from None
    if args.max_tokens is not None:
        spec["max_tokens"] = args.max_tokens
    try:
        return Space.of(spec, (model,))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--space: {exc}") from None


def tune_command(args: argparse.Namespace) -> int:
    agent = model_option(args)
    tasks = _tasks(args.tasks, args.limit)
    held = _tasks(args.holdout_tasks) if args.holdout_tasks else None
    _check_outputs(args)
    client, model_name = providers.make_client(args.provider, args.base_url, args.model)
    model = as_agent(agent, model_name)
    try:
        space = _space(args, model)
        scorer = _scorer(args, model)
        steps = list(space.mixtures().values()) if isinstance(space, Space) else [*space.values()]
    except BaseException:
        anyio.run(close_client, client)
        raise
    prices = _prices(args, {str(i): s for i, s in enumerate(steps)})
    cache = open_cache(args.cache, cache_namespace(args))
    progress = _Progress(args.quiet, "tune")  # names carry the phase: "search: ..."
    return _reported(
        args,
        client,
        cache,
        progress,
        lambda: tune(
            tasks,
            client,
            run_options(args, cache=cache),
            space=space,
            holdout_tasks=held,
            holdout=args.holdout,
            budget_calls=args.budget_calls,
            budget_usd=args.budget_usd,
            penalty=args.penalty,
            scorer=scorer,
            prices=prices,
            max_runs=args.max_runs or DEFAULT_MAX_RUNS,
            progress=progress,
        ),
    )
