"""A pipeline over a Ray Dataset: ``run_dataset`` (``pip install 'moa-dsl[ray]'``).

Ray Data's ``map_batches`` over an actor pool: each worker builds its client once (clients hold
connections and keys, so they are made where they run, from ``client_factory``) and runs each
block of rows through :func:`moa.run_many` under its own cap, on one event loop that lives as
long as the worker (so a client's connection pool outlives a block). ``import moa`` never
imports Ray; this module does.

What is guaranteed: the same results and histories as ``moa.run_many(prompts, ids=ids,
seed=seed)`` on one machine, however Ray splits the rows (each row's seed comes from the run
seed and its id); every input row is in the output exactly once, a failed run (or a row
without a usable prompt, conversation or id) as a row with ``ok=False`` and its error;
when a worker dies mid-block, Ray starts another and runs the block again, so a call may be
made twice (at-least-once calls) but no row is lost or repeated. Ids should be unique: a
repeated id is not detected (that would take a pass over the whole dataset), its row runs on
its own with the id's seed, wherever Ray puts it.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.from_thread

from ._batch import RunResult, run_many
from ._bounds import check_int, check_number, describe, error_text, safe_repr
from ._cache import Cache
from ._client import Client, close_client, unicode_error, utf8_text
from ._conversation import Prompt, messages_of
from ._cost import DEFAULT_PRICES, Prices, cost
from ._limits import Limits, ModelLimit
from ._options import RunOptions
from ._pipeline import Step, StepLike, as_step
from ._trace import carried, continued, flush_spans, portable
from .clients._extras import require
from .errors import BatchStoppedError, BudgetExceededError

if TYPE_CHECKING:
    import ray.data

__all__ = ("OUTPUT_COLUMNS", "run_dataset", "split_limits")

#: The columns ``run_dataset`` adds to each row.
OUTPUT_COLUMNS = ("result", "ok", "error", "history", "input_tokens", "output_tokens", "cost")


def split_limits(limits: Limits | None, workers: int) -> Limits | None:
    """Each worker's share of ``limits``: a provider's RPM, TPM and calls in flight are one
    budget for the whole cluster, split evenly among ``workers``. Calls in flight are split
    whole (a remainder is left unused); rates are split exactly, so the workers' sustained
    rate together is the budget (each worker's bucket starts full, as one process's does,
    holding at least one request). A worker left without rows leaves its share unused.

    Raises ValueError when a model's ``max_concurrency`` is below ``workers``: some worker
    would get no call at all."""
    check_int("split_limits", "workers", workers, 1, sys.maxsize)
    if limits is None:
        return None

    def share(model: str, limit: ModelLimit | None) -> ModelLimit | None:
        if limit is None:
            return None
        calls = limit.max_concurrency
        if calls is not None and calls < workers:
            raise ValueError(
                f"split_limits: {model} allows {calls} calls in flight, fewer than "
                f"the {workers} workers sharing it; each worker needs at least one, so use at "
                f"most {calls} workers or raise the limit"
            )
        return ModelLimit(
            max_concurrency=None if calls is None else calls // workers,
            rpm=None if limit.rpm is None else limit.rpm / workers,
            tpm=None if limit.tpm is None else limit.tpm / workers,
        )

    per_model = {m: share(repr(m), lim) for m, lim in limits.per_model.items()}
    return Limits(
        {m: lim for m, lim in per_model.items() if lim is not None},
        default=share("the default limit", limits.default),
    )


class _Worker:
    """One Ray actor: an event loop in a thread of its own, the client made there once from
    the factory, and the run options; each call runs one block through ``run_many``."""

    def __init__(
        self, pipeline: Step, client_factory: Callable[[], Client], spec: _WorkerSpec
    ) -> None:
        self.pipeline = pipeline
        self.spec = spec
        cache = spec.cache
        self.options = spec.options.replace(
            cache=Cache(cache[0], mode=cache[1], namespace=cache[2]) if cache else None
        )
        self._loop: AbstractContextManager[anyio.from_thread.BlockingPortal] = (
            anyio.from_thread.start_blocking_portal()
        )
        self.portal = self._loop.__enter__()
        # Made on the loop's thread: a client may bind a connection pool to its loop.
        self.client = self.portal.call(_call, client_factory)
        self.spent: str | None = None  # why no row runs any more: the share was spent

    def __call__(self, batch: Any) -> Any:
        """One block (a ``pyarrow.Table``): its rows run, its columns and ours returned."""
        _refuse_taken(batch.column_names)  # when the schema was not known up front

        def column(name: str) -> list[Any]:  # a dataset may have a prompt column, messages or both
            names = batch.column_names
            return batch.column(name).to_pylist() if name in names else [None] * batch.num_rows

        rows = [
            _row(prompt, messages, ident)
            for prompt, messages, ident in zip(
                column(self.spec.prompt_column),
                column(self.spec.messages_column),
                batch.column(self.spec.id_column).to_pylist(),
                strict=True,
            )
        ]
        # A refused row keeps its reason; the others get their RunResult, in row order.
        outcome: list[RunResult | str] = [row if isinstance(row, str) else "" for row in rows]
        for part in _rounds(rows):
            prompts = [row[0] for _, row in part]
            results = self.portal.call(self._run, prompts, [row[1] for _, row in part])
            for (i, _), result in zip(part, results, strict=True):
                outcome[i] = result
        pa = require("pyarrow", "ray", "moa.ray.run_dataset")
        # Typed columns: a block whose every row failed must not type `result` as null.
        types = {
            "result": pa.string(),
            "ok": pa.bool_(),
            "error": pa.string(),
            "history": pa.string(),
            "input_tokens": pa.int64(),
            "output_tokens": pa.int64(),
            "cost": pa.float64(),
        }
        for name, values in self._columns(outcome).items():
            batch = batch.append_column(name, pa.array(values, type=types[name]))
        flush_spans()  # a worker is stopped with the cluster, its queued spans with it
        return batch

    async def _run(self, prompts: list[Prompt], ids: list[str | int]) -> list[RunResult | str]:
        if self.spent is not None:  # the blocks after the one that spent this worker's share
            return [self.spent] * len(prompts)
        try:
            with continued(self.spec.carrier):
                return list(
                    await run_many(self.pipeline, prompts, self.client, self.options, ids=ids)
                )
        except BatchStoppedError as exc:
            spent = exc.__cause__
            if not isinstance(spent, BudgetExceededError):
                raise
            # The rows not run are saved as not run (failed rows: a rerun with a new budget
            # runs them), never retried by Ray into the same spent budget.
            done = {r.index: r for r in exc.results}
            self.spent = f"not run: this worker's share of the budget was spent ({spent})"
            return [done.get(i, self.spent) for i in range(len(prompts))]

    def _columns(self, outcome: list[RunResult | str]) -> dict[str, list[Any]]:
        """The output columns: a RunResult's, or a refused row's (its reason, no run). Text
        is stored as UTF-8, so a lone surrogate in a reply is U+FFFD in ``result`` (the
        ``history`` JSON keeps it exactly, escaped)."""
        cols: dict[str, list[Any]] = {name: [] for name in OUTPUT_COLUMNS}
        for r in outcome:
            history = None if isinstance(r, str) else r.history
            if isinstance(r, str):
                error: str | None = r
            elif r.error is not None:
                error = error_text(r.error)
            else:
                error = None
            result = None if isinstance(r, str) or r.result is None else utf8_text(r.result)
            cols["result"].append(result)
            cols["ok"].append(error is None)
            cols["error"].append(None if error is None else utf8_text(error))
            cols["history"].append(None if history is None else json.dumps(history.to_dict()))
            cols["input_tokens"].append(None if history is None else history.input_tokens)
            cols["output_tokens"].append(None if history is None else history.output_tokens)
            cols["cost"].append(None if history is None else cost(history, self.spec.prices).total)
        return cols

    def __del__(self) -> None:
        # Called when Ray ends the actor, maybe after its loop has stopped: nothing here may
        # wait on the loop, or the worker outlives ray.shutdown().
        portal = getattr(self, "portal", None)
        loop = getattr(self, "_loop", None)
        if portal is None or loop is None:
            return
        try:  # the client's connections and the cache file, closed before the loop ends
            if hasattr(self, "client"):
                future = portal.start_task_soon(close_client, self.client)
                future.result(timeout=5)
        except Exception:  # a loop already gone: the process is ending anyway
            pass
        finally:
            if self.options.cache is not None:
                self.options.cache.close()
            try:
                loop.__exit__(None, None, None)
            except Exception:
                pass


def _call(factory: Callable[[], Client]) -> Client:
    client = factory()
    if not callable(client):
        raise TypeError(
            f"run_dataset(client_factory): the factory must return a client (an async "
            f"callable), got {safe_repr(client)}"
        )
    return client


def _row(prompt: Any, messages: Any, ident: Any) -> tuple[Prompt, str | int] | str:
    """A row's (prompt or conversation, id) as ``run_many`` takes them, or why it cannot run."""
    if hasattr(ident, "item") and not isinstance(ident, (str, bytes)):
        ident = ident.item()  # numpy's scalars are Python's ints and strs
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        return f"the id must be a str or an int, got {safe_repr(ident)}"
    if messages is not None:
        if prompt is not None:
            return "a row has a prompt or messages, not both (the messages' last is the prompt)"
        try:
            return messages_of(messages), ident
        except (TypeError, ValueError) as exc:
            return str(exc)
    if not isinstance(prompt, str) or not prompt.strip():
        return f"the prompt must be a non-empty str, got {safe_repr(prompt)}"
    if (bad := unicode_error(prompt)) is not None:
        return f"the prompt is not valid Unicode: {bad}"
    return str(prompt), ident


def _rounds(
    rows: list[tuple[Prompt, str | int] | str],
) -> list[list[tuple[int, tuple[Prompt, str | int]]]]:
    """The runnable rows (with their places) in rounds of distinct ids, as ``run_many`` names
    each prompt by its id once: a repeated id runs in a later round with the id's seed, as it
    would in another block, so the output does not depend on how Ray splits the rows."""
    rounds: list[list[tuple[int, tuple[Prompt, str | int]]]] = []
    seen: dict[str | int, int] = {}
    for i, row in enumerate(rows):
        if isinstance(row, tuple):
            k = seen[row[1]] = seen.get(row[1], -1) + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append((i, row))
    return rounds


def run_dataset(
    pipeline: StepLike,
    dataset: ray.data.Dataset,
    client_factory: Callable[[], Client],
    options: RunOptions | None = None,
    *,
    prompt_column: str = "prompt",
    messages_column: str = "messages",
    id_column: str = "id",
    workers: int = 2,
    cache: Cache | str | os.PathLike[str] | None = None,
    prices: Mapping[str, Any] | None = None,
    batch_size: int = 256,
    num_cpus: float = 0.25,
    concurrency: int | None = None,
    **kwargs: Any,
) -> ray.data.Dataset:
    """``pipeline`` on every row of ``dataset``, lazily: a Dataset with the input columns and
    :data:`OUTPUT_COLUMNS` (``error`` is the error's text, as ``moa batch`` writes it, None
    when ``ok``; ``history`` is the JSON of ``History.to_dict()``; ``cost`` in US dollars at
    ``prices`` over moa's defaults).

    A row's prompt is its ``prompt_column`` (a str) or its ``messages_column`` (a
    conversation: a list of ``{"role", "content"}`` messages whose last is the user's, as
    ``run`` takes one); the dataset has either column or both, and each row fills one of
    them (the other null or absent).

    The run options (a :class:`~moa.RunOptions`, keywords, or both) are ``run``'s, for each
    worker: ``max_concurrency`` caps the calls in flight in one worker (default 64);
    ``limits`` are the cluster's budget, split evenly among the workers
    (:func:`split_limits`), and so is a ``budget`` (:meth:`moa.Budget.split`: each worker
    keeps its share; the rows a worker could not run within it are saved as failed rows,
    "not run", for a later run with a new budget); ``on_event`` is refused (the runs happen in other processes: read
    the output's ``history``). ``workers`` Ray actors (of ``num_cpus`` CPUs each: a
    fraction, as they mostly wait on the network and Ray Data's own tasks need CPUs too)
    each run blocks of ``batch_size`` rows; ``client_factory()`` makes each worker's client,
    in the worker. ``cache`` is a :class:`~moa.Cache` or its path, opened by every worker
    (one SQLite file: the workers must share a filesystem). Ids are str or 64-bit int values
    and should be unique (a repeat is not detected: see the module's docstring); with
    ``seed``, each row's seed comes from it and the row's id, so the results equal
    ``moa.run_many`` over the same prompts and ids. The options and, when known without
    running the dataset, the columns are checked here; nothing runs until the output is
    read. ``concurrency`` is the old name of ``workers`` (deprecated). A worker's runs trace
    to its own global tracer provider (``client_factory`` may set one up), as children of
    the span current where ``run_dataset`` was called.
    """
    data = require("ray.data", "ray", "moa.ray.run_dataset")
    step = as_step(pipeline, where="run_dataset(pipeline)")
    if concurrency is not None:
        warnings.warn(
            "run_dataset(concurrency=...) is workers=... now; the old name goes in the next "
            "release",
            DeprecationWarning,
            stacklevel=2,
        )
        workers = concurrency
    kwargs.setdefault("max_concurrency", DEFAULT_WORKER_CALLS)
    if "cache" in kwargs or (options is not None and options.cache is not None):
        raise TypeError("run_dataset(cache=...): give the cache as run_dataset's own cache=")
    opts = RunOptions.of("run_dataset", options, kwargs)
    if opts.on_event is not None:
        raise TypeError(
            "run_dataset(on_event=...): the runs happen in Ray's worker processes, where "
            "events cannot reach you; read each row's history in the output instead"
        )
    _check_arguments(client_factory, workers, batch_size, num_cpus)
    _check_columns(dataset, prompt_column, messages_column, id_column)
    worker = _WorkerSpec(
        options=_worker_options(opts, workers),
        cache=_cache_spec(cache),
        prompt_column=prompt_column,
        messages_column=messages_column,
        id_column=id_column,
        prices=DEFAULT_PRICES if prices is None else DEFAULT_PRICES | Prices(prices),
        carrier=carried(),
    )
    # A worker that dies is restarted and its block run again: Ray Data's actor pools default
    # to max_restarts=-1 and max_task_retries=-1, which the worker-kill test relies on.
    return dataset.map_batches(
        _Worker,
        fn_constructor_args=(step, client_factory, worker),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=data.ActorPoolStrategy(size=workers),
        num_cpus=num_cpus,
        udf_modifying_row_count=False,
    )


def _worker_options(opts: RunOptions, workers: int) -> RunOptions:
    """A worker's options: its share of the limits and the budget, and tracing without the
    caller's tracer provider (a worker traces to its own)."""
    return opts.replace(
        limits=split_limits(opts.limits, workers),
        budget=None if opts.budget is None else opts.budget.split(workers)[0],
        tracing=portable(opts.tracing),
    )


#: Calls in flight in one worker, unless ``max_concurrency`` says otherwise.
DEFAULT_WORKER_CALLS = 64


@dataclass(frozen=True, slots=True)
class _WorkerSpec:
    """What each worker is handed: the run options (limits already split), how to open the
    cache, the columns (the prompt's, the conversation's, the id's), the prices."""

    options: RunOptions
    cache: tuple[str, str, str] | None
    prompt_column: str
    messages_column: str
    id_column: str
    prices: Prices
    carrier: dict[str, str]  # the caller's trace, which the workers' runs continue


def _check_arguments(
    client_factory: object, workers: object, batch_size: object, num_cpus: object
) -> None:
    """run_dataset's own numbers and factory, refused where they enter."""
    if not callable(client_factory):
        raise TypeError(
            "run_dataset(client_factory): a function that makes a client, called once in "
            f"each worker; got {describe(client_factory)}"
        )
    check_int("run_dataset", "workers", workers, 1, sys.maxsize)
    check_int("run_dataset", "batch_size", batch_size, 1, sys.maxsize)
    check_number("run_dataset", "num_cpus", num_cpus, unit="a number of CPUs")


def _check_columns(
    dataset: ray.data.Dataset, prompt_column: str, messages_column: str, id_column: str
) -> None:
    """The id column and the prompt or messages column there, no output column there already
    (when the schema is known without running the dataset)."""
    schema = dataset.schema(fetch_if_missing=False)  # never run the upstream to find out
    if schema is not None:
        names = set(schema.names)
        missing = [] if {prompt_column, messages_column} & names else [prompt_column]
        missing += [] if id_column in names else [id_column]
        if missing:
            raise ValueError(
                f"run_dataset: the dataset has no column {', '.join(map(repr, missing))}; "
                "name the prompt (or messages) and id columns with prompt_column= (or "
                "messages_column=) and id_column="
            )
        _refuse_taken(schema.names)


def _refuse_taken(names: list[str]) -> None:
    taken = [name for name in OUTPUT_COLUMNS if name in names]
    if taken:
        raise ValueError(
            f"run_dataset: the dataset already has column {', '.join(map(repr, taken))}, "
            f"which run_dataset adds; rename or drop it first"
        )


def _cache_spec(cache: Cache | str | os.PathLike[str] | None) -> tuple[str, str, str] | None:
    """What a worker needs to open ``cache`` itself (an open SQLite file is not shipped)."""
    if cache is None:
        return None
    if isinstance(cache, Cache):
        return cache.path, cache.mode, cache.namespace
    if isinstance(cache, (str, os.PathLike)):
        return os.path.abspath(os.fspath(cache)), "rw", ""
    raise TypeError(f"run_dataset(cache=...): a moa.Cache or a path, not {safe_repr(cache)}")
