"""``moa batch``: a JSON Lines file of prompts through a pipeline, each result appended to OUT
as it finishes, resumable: a rerun skips the ids OUT holds a success for.

The file format: each input line is a JSON string (the prompt) or ``{"prompt": ..., "id":
...}``; each output line is a JSON object with the id, the prompt, the result or error, the
seed, calls, tokens, cost, the prices it was costed at and the whole history."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import anyio

from .._cache import Cache
from .._cost import Cost, Prices, cost
from .._history import History
from .._pipeline import Step
from .._run import run
from ..errors import MoaError
from . import progress, providers
from .batchfile import Done, Item, items, read_done, result_line
from .common import (
    UsageError,
    check_writable,
    close_client,
    tokens,
)
from .options import (
    build_pipeline,
    cache_namespace,
    load_prices,
    open_cache,
    parse_expression,
    prices_for,
)
from .providers import as_agent, model_option

__all__ = ("batch_command",)


class _BatchBar:
    """Prompts done / total on stderr: a rich bar on a terminal, else a line every few seconds."""

    def __init__(self, total: int | None, quiet: bool) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.quiet = quiet
        self.start = self.last = time.monotonic()
        self.progress: Any = None
        if not quiet and progress.fancy():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("prompts"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.task = self.progress.add_task("prompts", total=total, failed="0 failed")

    def __enter__(self) -> _BatchBar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def finished(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self.progress is not None:
            failed = f"[red]{self.failed} failed[/red]" if self.failed else "0 failed"
            self.progress.update(self.task, completed=self.done, failed=failed)
            return
        now = time.monotonic()
        if not self.quiet and now - self.last >= 2.0 and self.done != self.total:
            self.last = now
            print(
                f"batch: {self.done}/{self.total or '?'} prompts, {self.failed} failed, "
                f"{now - self.start:.1f} s",
                file=sys.stderr,
                flush=True,
            )


async def _drive_batch(
    pipeline: Step,
    todo: Iterable[Item],
    client: Any,
    concurrency: int,
    run_options: dict[str, Any],
    report: Callable[[Item, str | None, History | None, BaseException | None], None],
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
                report(item, None, hist, exc)
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
    check_writable("-o", args.output)
    out = Path(args.output)
    done = read_done(out)
    # A file is read twice: once to check every line and count what is left before any call
    # is made, then again as the prompts run. Standard input is read once, checked as it goes.
    total = _count_todo(args.input, args.seed, done, out) if args.input != "-" else None
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
    try:
        sink = out.open("a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"-o {out}: {exc}") from None
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
    todo = (item for item in items(args.input, args.seed) if not done.check(item, out))
    try:
        with sink:
            failed = _run_batch(args, pipeline, client, cache, todo, total, sink, len(done.ids))
    finally:
        if cache is not None:
            cache.close()
    return 1 if failed else 0


def _count_todo(path: str, seed: int | None, done: Done, out: Path) -> int:
    """How many prompts of ``path`` OUT does not hold a success for; every line is checked
    (and an id whose prompt changed refused) before anything runs."""
    return sum(not done.check(item, out) for item in items(path, seed))


def _run_batch(
    args: argparse.Namespace,
    pipeline: Step,
    client: Any,
    cache: Cache | None,
    todo: Iterable[Item],
    total: int | None,
    sink: TextIO,
    skipped: int,
) -> int:
    """Runs ``todo``, each result a line of ``sink`` as it finishes; how many failed."""
    prices = prices_for(args, pipeline)
    run_options = {"max_concurrency": args.max_concurrency, "timeout": args.timeout, "cache": cache}
    spent = _Spent()
    bar = _BatchBar(total, args.quiet)
    start = time.monotonic()

    def report(
        item: Item, result: str | None, history: History | None, error: BaseException | None
    ) -> None:
        # One write per line, flushed: an interruption loses only the prompts in flight.
        sink.write(result_line(item, result, history, error, prices) + "\n")
        sink.flush()
        if history is not None:
            spent.add(history, prices)
        bar.finished(error is None)

    with bar:
        anyio.run(_drive_batch, pipeline, todo, client, args.concurrency, run_options, report)
    if not args.quiet:
        print(
            f"batch: {bar.done - bar.failed} done, {bar.failed} failed, {skipped} skipped "
            f"(already in {args.output})   tokens: {tokens(spent.input)} in, "
            f"{tokens(spent.output)} out   cost: {spent.cost}   wall time: "
            f"{time.monotonic() - start:.2f} s",
            file=sys.stderr,
        )
    return bar.failed


class _Spent:
    """The batch's running totals (its histories are written out, not kept)."""

    __slots__ = ("cost", "input", "output")

    def __init__(self) -> None:
        self.input: int | None = 0
        self.output: int | None = 0
        self.cost = Cost.ZERO

    def add(self, history: History, prices: Prices) -> None:
        tin, tout = history.input_tokens, history.output_tokens
        self.input = None if self.input is None or tin is None else self.input + tin
        self.output = None if self.output is None or tout is None else self.output + tout
        self.cost = self.cost + cost(history, prices)
