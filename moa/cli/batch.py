"""``moa batch``: a JSON Lines file of prompts through a pipeline, each result appended to OUT
as it finishes, resumable: a rerun skips the ids OUT holds a success for.

The file format: each input line is a JSON string (the prompt) or ``{"prompt": ..., "id":
...}``; each output line is a JSON object with the id, the prompt, the result or error, the
seed, calls, tokens, cost, the prices it was costed at and the whole history."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio

from .._cache import Cache
from .._history import History
from .._pipeline import Step
from .._run import run
from ..errors import MoaError
from . import providers
from .batchfile import (
    Done,
    Item,
    Sink,
    error_text,
    is_parquet,
    items,
    open_sink,
    read_done,
)
from .common import (
    UsageError,
    check_writable,
    close_client,
)
from .options import (
    build_pipeline,
    cache_namespace,
    load_prices,
    open_cache,
    parse_expression,
)
from .providers import as_agent, model_option
from .report import Report

__all__ = ("batch_command",)


async def _drive_batch(
    pipeline: Step,
    todo: Iterable[Item],
    client: Any,
    concurrency: int,
    run_options: dict[str, Any],
    report: Callable[[Item, str | None, History | None, str | None], None],
) -> None:
    """Run every item, at most ``concurrency`` at a time, reporting each as it finishes; the
    items are taken one at a time, as slots free."""
    slots = anyio.Semaphore(concurrency)

    async def one(item: Item) -> None:
        try:
            try:
                result, history = await run(
                    pipeline, item.prompt, client, seed=item.seed, **run_options
                )
            except Exception as exc:  # the batch goes on; the error is that prompt's result
                hist = exc.history if isinstance(exc, MoaError) else None
                report(item, None, hist, error_text(exc))
            else:
                report(item, result, history, None)
        finally:
            slots.release()

    bad_input: UsageError | None = None
    prompts = iter(todo)
    try:
        async with anyio.create_task_group() as tg:
            while True:
                await slots.acquire()
                try:
                    item = next(prompts)
                except StopIteration:
                    break
                except UsageError as exc:  # a bad line of stdin: finish what started, then say so
                    bad_input = exc
                    break
                tg.start_soon(one, item)
    finally:
        await close_client(client)
    if bad_input is not None:
        raise bad_input


def batch_command(args: argparse.Namespace) -> int:
    parsed = parse_expression(args.pipeline) if args.pipeline is not None else None
    agent = model_option(args)
    load_prices(args.prices)  # a bad price file is a usage error before anything runs
    out = Path(args.output)
    parquet = is_parquet(out)
    check_writable("-o", None if parquet else args.output)
    if parquet and not out.parent.resolve().is_dir():
        raise UsageError(f"-o {out}: folder {str(out.parent)!r} does not exist")
    if args.ray is None and args.workers is not None:
        raise UsageError("--workers is the number of Ray workers: it needs --ray")
    if args.ray is not None and args.concurrency is not None:
        raise UsageError(
            "--concurrency is prompts in flight on this machine; with --ray, use --workers "
            "and --max-concurrency (calls in flight in each worker)"
        )
    done = read_done(out)
    # A file is read twice: once to check every line and count what is left before any call
    # is made, then again as the prompts run. Standard input is read once, checked as it goes.
    typed = "Parquet" if parquet else "--ray" if args.ray is not None else None
    total = _count_todo(args.input, args.seed, done, out, typed) if args.input != "-" else None
    if not args.quiet and (done.ids or done.failed):
        print(
            f"moa: resuming {out}: {len(done.ids)} prompts already done"
            + (f", {done.failed} failed before and run again" if done.failed else ""),
            file=sys.stderr,
        )
    if total == 0:
        if not args.quiet:
            print(f"batch: nothing to run, all prompts are done in {out}", file=sys.stderr)
        return 0
    sink = open_sink(out)
    cache = None
    try:
        cache = open_cache(args.cache, cache_namespace(args))
        client, model = providers.make_client(args.provider, args.base_url, args.model)
    except BaseException:
        sink.close()
        if cache is not None:
            cache.close()
        raise
    pipeline = build_pipeline(args, parsed, as_agent(agent, model))
    todo: Iterator[Item] = (
        item for item in items(args.input, args.seed) if not done.check(item, out)
    )
    if parquet or args.ray is not None:
        todo = _one_id_type(todo, out, done.id_type, "Parquet" if parquet else "--ray")
    try:
        if args.ray is not None:
            from .batchray import run_on_ray

            anyio.run(close_client, client)  # it only checked the options: workers make theirs
            failed = run_on_ray(args, pipeline, cache, todo, total, sink, len(done.ids))
        else:
            failed = _run_batch(args, pipeline, client, cache, todo, total, sink, len(done.ids))
    finally:
        sink.close()
        if cache is not None:
            cache.close()
    return 1 if failed else 0


def _count_todo(path: str, seed: int | None, done: Done, out: Path, typed: str | None) -> int:
    """How many prompts of ``path`` OUT does not hold a success for; every line is checked
    (and an id whose prompt changed refused, and with ``typed``, ids of two types) before
    anything runs."""
    todo = (item for item in items(path, seed) if not done.check(item, out))
    return sum(1 for _ in (_one_id_type(todo, out, done.id_type, typed) if typed else todo))


#: An Arrow int64 column's range (Parquet and Ray hold ids in one).
_INT64 = range(-(2**63), 2**63)


def _one_id_type(todo: Iterable[Item], out: Path, first: type | None, need: str) -> Iterator[Item]:
    """``todo``, refusing an id whose type differs from the first's (or from the ids OUT
    already holds) and an int past int64: a Parquet or Ray column holds one type (and a moa
    batch's ids are all positions unless the input names them)."""
    held = f" like the ids already in -o {out}" if first is not None else ""
    for item in todo:
        first = first or type(item.id)
        if type(item.id) is not first:
            raise UsageError(
                f"{need} needs every id of one type, and id {item.id!r} (line {item.line}) "
                f"is not a{'n' if first is int else ''} {first.__name__}{held}; give every "
                "prompt an id of one type, or write JSON Lines without --ray"
            )
        if isinstance(item.id, int) and item.id not in _INT64:
            raise UsageError(
                f"{need} holds integer ids in 64 bits, and id {item.id} (line {item.line}) is "
                "past that; use a string id"
            )
        yield item


def _run_batch(
    args: argparse.Namespace,
    pipeline: Step,
    client: Any,
    cache: Cache | None,
    todo: Iterable[Item],
    total: int | None,
    sink: Sink,
    skipped: int,
) -> int:
    """Runs ``todo``, each result written to ``sink`` as it finishes; how many failed."""
    run_options = {"max_concurrency": args.max_concurrency, "timeout": args.timeout, "cache": cache}
    with Report(args, pipeline, sink, total, skipped) as report:
        concurrency = args.concurrency or DEFAULT_CONCURRENCY
        anyio.run(_drive_batch, pipeline, todo, client, concurrency, run_options, report)
    return report.bar.failed


#: ``--concurrency``'s default: prompts run at once.
DEFAULT_CONCURRENCY = 4
