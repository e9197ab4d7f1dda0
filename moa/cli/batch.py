"""``moa batch``: a file of prompts through a pipeline, each result appended to OUT as it
finishes, resumable: a rerun skips the ids OUT holds a success for.

The prompts run through the library's own batch path, :func:`moa.as_completed`: one call
stack for the whole batch, ``--max-concurrency`` calls in flight across every prompt,
``--max-runs`` prompts at once, and each prompt's seed from ``--seed`` and its id. The file
formats are :mod:`moa.cli.batchfile` (input) and :mod:`moa.cli.batchout` (OUT)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio

from .._batch import as_completed
from .._bounds import error_text
from .._conversation import Prompt
from .._options import RunOptions
from .._pipeline import Step
from ..errors import BatchStoppedError, BudgetExceededError
from . import providers
from .batchfile import Item, is_parquet_input, items
from .batchout import BatchId, Done, Output, open_output
from .common import UsageError, close_client
from .options import (
    build_pipeline,
    cache_namespace,
    load_prices,
    open_cache,
    parse_expression,
    run_options,
)
from .otel import checked, exporting
from .providers import as_agent, model_option
from .report import Report

__all__ = ("DEFAULT_MAX_RUNS", "batch_command")

#: ``--max-runs``' default: prompts run at once.
DEFAULT_MAX_RUNS = 4


async def _drive_batch(
    pipeline: Step,
    todo: Iterable[Item],
    client: Any,
    options: RunOptions,
    max_runs: int,
    report: Report,
    on_budget: str = "finish",
) -> None:
    """Every item through ``as_completed``, each reported as it finishes. The items are
    read as runs start (a bad line of stdin stops the batch once the runs in flight are
    reported); ``running`` holds only the items in flight."""
    running: dict[str, Item] = {}
    last: list[Item] = []
    ended = False

    def prompts() -> Iterator[Prompt]:
        nonlocal ended
        for item in todo:
            running[json.dumps(item.id)] = item
            last[:] = [item]
            yield item.asked  # a conversation whole, its earlier turns with it
        ended = True

    def ids() -> Iterator[str | int]:
        # The batch takes an id right after each prompt: the id of the item just read; it
        # ends where the prompts end.
        while not ended:
            yield last[0].id

    try:
        async with as_completed(
            pipeline, prompts(), client, options, ids=ids(), max_runs=max_runs, on_budget=on_budget
        ) as results:
            async for r in results:
                item = running.pop(json.dumps(r.id))
                error = None if r.error is None else error_text(r.error)
                report(item, r.result, r.history, error, r.seed)
    except BatchStoppedError as exc:
        cause = exc.__cause__
        if isinstance(cause, UsageError):  # a bad line of stdin: finished what started first
            raise cause from None
        if isinstance(cause, BudgetExceededError):
            raise BatchStoppedError(
                f"{exc}; the prompts not run (and those that failed) are run by the same "
                "command with a new budget"
            ) from cause
        raise
    finally:
        await close_client(client)


def batch_command(args: argparse.Namespace) -> int:
    parsed = parse_expression(args.pipeline) if args.pipeline is not None else None
    agent = model_option(args)
    load_prices(args.prices)  # a bad price file is a usage error before anything runs
    _check_flags(args)
    if args.otlp is not None:
        checked(args.otlp)  # and a bad --otlp, before a model loads
    client, model = providers.make_client(args.provider, args.base_url, args.model)
    pipeline = build_pipeline(args, parsed, as_agent(agent, model))
    batch = BatchId(repr(pipeline), args.seed, cache_namespace(args))
    try:
        out = open_output(Path(args.output), batch)
    except BaseException:
        anyio.run(close_client, client)
        raise
    try:
        return _batch(args, pipeline, client, out)
    finally:
        out.close()


def _check_flags(args: argparse.Namespace) -> None:
    if args.ray is None and args.workers is not None:
        raise UsageError("--workers is the number of Ray workers: it needs --ray")
    if args.ray is not None and args.max_runs is not None:
        raise UsageError(
            "--max-runs is prompts at once on this machine; with --ray, use --workers "
            "and --max-concurrency (calls in flight in each worker)"
        )


def _batch(args: argparse.Namespace, pipeline: Step, client: Any, out: Output) -> int:
    done, path = out.done, Path(args.output)
    typed = "Parquet" if args.output.endswith(".parquet") or is_parquet_input(args.input) else None
    typed = "--ray" if args.ray is not None else typed
    # A file is read twice: once to check every line and count what is left before any call
    # is made, then again as the prompts run. Standard input is read once, checked as it goes.
    total = _count_todo(args.input, args.seed, done, path, typed) if args.input != "-" else None
    if not args.quiet and (done.ids or done.failed):
        print(
            f"moa: resuming {path}: {len(done.ids)} prompts already done"
            + (f", {done.failed} failed before and run again" if done.failed else ""),
            file=sys.stderr,
        )
    if total == 0:
        anyio.run(close_client, client)
        if not args.quiet:
            print(f"batch: nothing to run, all prompts are done in {path}", file=sys.stderr)
        return 0
    todo: Iterator[Item] = (
        item for item in items(args.input, args.seed) if not done.check(item, path)
    )
    if typed is not None:
        todo = _one_id_type(todo, path, done.id_type, typed)
    cache = open_cache(args.cache, cache_namespace(args))
    try:
        report = Report(args, pipeline, out, total, len(done.ids))
        if args.ray is not None:
            from .batchray import run_on_ray

            report.budget = run_options(args, prices=report.prices).budget
            anyio.run(close_client, client)  # it only checked the options: workers make theirs
            run_on_ray(args, pipeline, cache, todo, report)
            return 1 if report.bar.failed else 0
        # A Ray worker makes its own tracer provider; here the command's is the runs'.
        with exporting(args.otlp, "moa batch") as tracer_provider:
            options = run_options(
                args, cache=cache, prices=report.prices, tracer_provider=tracer_provider
            )
            report.budget = options.budget
            with report:
                anyio.run(
                    _drive_batch,
                    pipeline,
                    todo,
                    client,
                    options,
                    args.max_runs or DEFAULT_MAX_RUNS,
                    report,
                    args.on_budget,
                )
    finally:
        if cache is not None:
            cache.close()
    return 1 if report.bar.failed else 0


def _count_todo(path: str, seed: int | None, done: Done, out: Path, typed: str | None) -> int:
    """How many prompts of ``path`` OUT does not hold a success for; every line is checked
    (and an id whose prompt changed refused, and with ``typed``, ids of two types) before
    anything runs."""
    todo = (item for item in items(path, seed) if not done.check(item, out))
    return sum(1 for _ in (_one_id_type(todo, out, done.id_type, typed) if typed else todo))


def _one_id_type(todo: Iterable[Item], out: Path, first: type | None, need: str) -> Iterator[Item]:
    """``todo``, refusing an id whose type differs from the first's (or from the ids OUT
    already holds): a Parquet or Ray column holds one type (and a moa batch's ids are all
    positions unless the input names them)."""
    held = f" like the ids already in -o {out}" if first is not None else ""
    for item in todo:
        first = first or type(item.id)
        if type(item.id) is not first:
            raise UsageError(
                f"{need} needs every id of one type, and id {item.id!r} (line {item.line}) "
                f"is not a{'n' if first is int else ''} {first.__name__}{held}; give every "
                "prompt an id of one type, or write JSON Lines without --ray"
            )
        yield item
