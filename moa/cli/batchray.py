"""``moa batch --ray``: the same batch on a Ray cluster, through :func:`moa.ray.run_dataset`.

This machine (the driver) reads and checks the input, skips what OUT already holds, and writes
each result to OUT as Ray hands it back, in the same format as a batch run here, so a batch
resumes the same way and a seeded one gives the same results. The driver holds the prompts
left to run (not their results); the workers make their own clients."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

from .._cache import Cache
from .._history import History
from .._pipeline import Step
from ..clients._extras import MissingExtraError
from .batchfile import Item
from .common import UsageError, short
from .options import run_options
from .otel import checked, install
from .report import Report

__all__ = ("run_on_ray",)

#: ``--workers``' default, and ``--max-concurrency``'s with ``--ray``: calls in flight a worker.
DEFAULT_WORKERS = 2
DEFAULT_WORKER_CALLS = 64


def run_on_ray(
    args: argparse.Namespace,
    pipeline: Step,
    cache: Cache | None,
    todo: Iterable[Item],
    report: Report,
) -> None:
    """Runs ``todo`` on Ray, each result handed to ``report`` (written to OUT) as it comes
    back."""
    try:
        import ray
        import ray.data

        from ..ray import run_dataset
    except ImportError:
        raise MissingExtraError(
            "moa batch --ray needs Ray, which is not installed: pip install 'moa-dsl[ray]'"
        ) from None
    if args.otlp is not None:
        checked(args.otlp)  # a bad URL or a missing SDK, before a cluster starts
    workers = args.workers or DEFAULT_WORKERS
    by_id = {json.dumps(item.id): item for item in todo}
    if report.bar.total is None:
        report.bar.total = len(by_id)
    if not by_id:
        with report:
            return
    started = _connect(ray, args.ray, args.quiet)
    try:
        # moa prints its own progress: Ray Data's bars and INFO lines would interleave with it.
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        rows = [_row(item) for item in by_id.values()]
        results = run_dataset(
            pipeline,
            ray.data.from_items(rows),
            partial(worker_client, args.provider, args.base_url, args.model, workers, args.otlp),
            run_options(args, prices=report.prices),
            workers=workers,
            cache=cache,
            prices=report.prices,
            max_concurrency=args.max_concurrency or DEFAULT_WORKER_CALLS,
        )
        _collect(ray, results, report, by_id, args.output)
    finally:
        if started:
            ray.shutdown()


def _row(item: Item) -> dict[str, Any]:
    """An item as ``run_dataset`` reads it: a ``prompt``, or a conversation's ``messages``."""
    if item.messages is None:
        return {"id": item.id, "prompt": item.prompt}
    return {"id": item.id, "messages": list(item.messages)}


def _collect(ray: Any, results: Any, report: Report, by_id: dict[str, Item], output: str) -> None:
    """Each row Ray hands back, written as it comes; a worker's failure as one line."""
    with report, _console_quiet("ray.data"):
        try:
            for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
                for row in cast("Any", batch).to_pylist():
                    _write(report, by_id, row)
        except ray.exceptions.RayError as exc:
            raise UsageError(
                f"--ray: a worker failed, and the batch stopped ({_cause(exc)}); the "
                f"{report.bar.done} results that came back are in {output}, and a "
                "rerun resumes after them"
            ) from None
        # Ray hands back every row it was given; should one not come back, it is written
        # as failed (it runs again on the next run), never dropped without a word.
        for item in by_id.values():
            report(item, None, None, "no result came back from Ray for this prompt")


@contextmanager
def _console_quiet(name: str) -> Iterator[None]:
    """The console handlers of the logger ``name`` silent within; its file handlers untouched.

    Ray Data logs a worker's failure with its full stack trace to the console, then raises it;
    moa says it in one line, and the trace stays in Ray Data's log file."""
    handlers = [
        handler
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
    ]
    levels = [handler.level for handler in handlers]
    for handler in handlers:
        handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


def _connect(ray: Any, address: str, quiet: bool) -> bool:
    """Joins the cluster at ``address`` or starts a local one; whether it started one (then
    it is shut down after the batch). A Ray already initialised in this process is used. An
    address nothing answers at is refused at once (Ray itself would retry for minutes)."""
    if ray.is_initialized():
        return False
    if address and address != "auto":
        _reachable(address)
    level = logging.ERROR if quiet else logging.WARNING
    options: dict[str, Any] = {"logging_level": level, "log_to_driver": False}
    if quiet:
        logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        raise UsageError(f"--ray: cannot reach {where}: {exc}") from None
    return True


def _reachable(address: str, seconds: float = 5.0) -> None:
    """UsageError unless something accepts a TCP connection at ``address`` (host:port, maybe
    after ``ray://``) within ``seconds``."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address}: give the cluster's address as HOST:PORT (or 'auto')")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as exc:
        raise UsageError(
            f"--ray: cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}); is it "
            "running? (ray start --head prints its address)"
        ) from None


def _cause(exc: BaseException) -> str:
    """The worker's own error, from Ray's report of it (Ray keeps the original only as text,
    a traceback followed by its own advice): the last line that names an exception, else the
    last line, cut to one line."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return type(exc).__name__
    named = [line for line in lines if _RAISED.match(line)]
    return short((named or lines)[-1], 300)


#: A traceback's last line: ``SomeError: message`` (maybe a dotted name).
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b(?::|$)")


def _write(report: Report, by_id: dict[str, Item], row: dict[str, Any]) -> None:
    item = by_id.pop(json.dumps(row["id"]), None)
    if item is None:  # a row Ray handed back twice (a rerun block): written once already
        return
    text = row["history"]
    history = None if text is None else History.from_dict(json.loads(text))
    report(item, row["result"], history, None if row["ok"] else row["error"])


def worker_client(
    provider: str,
    base_url: str | None,
    model: str | None,
    workers: int,
    otlp: str | None = None,
) -> Any:
    """A Ray worker's client, made in the worker from the command's options (an API key is
    read from the worker's environment). The embedded model gets an equal share of this
    machine's cores per worker (``$MOA_THREADS`` overrides), as every worker of a local
    cluster loads its own copy and llama.cpp threads that outnumber the cores spin. With
    ``otlp``, the worker's runs are traced there (``--otlp``)."""
    from .providers import make_client

    if otlp is not None:
        install(otlp, "moa batch")

    if provider == "local" and not base_url and "MOA_THREADS" not in os.environ:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        os.environ["MOA_THREADS"] = str(max(1, cores // workers))
    return make_client(provider, base_url, model)[0]
