"""A pipeline over a Ray Dataset: ``run_dataset`` (``pip install 'moa-dsl[ray]'``).

Ray Data's ``map_batches`` over an actor pool: each worker builds its client once (clients hold
connections and keys, so they are made where they run, from ``client_factory``) and runs each
block of rows through :func:`moa.run_many` under its own cap. ``import moa`` never imports Ray;
this module does.

What is guaranteed: the same results and histories as ``moa.run_many(prompts, ids=ids,
seed=seed)`` on one machine, however Ray splits the rows (each row's seed comes from the run
seed and its id); every input row is in the output exactly once, a failed run as a row with
``ok=False`` and its error; when a worker dies mid-block, Ray runs the block again on another
worker, so a call may be made twice (at-least-once calls) but no row is lost or repeated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ._bounds import safe_repr
from ._cache import Cache
from ._client import Client
from ._cost import DEFAULT_PRICES, Prices, cost
from ._batch import run_many
from ._limits import Limits, ModelLimit
from ._pipeline import Step, StepLike, as_step
from ._retry import Retry
from .clients._extras import require

if TYPE_CHECKING:
    import ray.data

__all__ = ("run_dataset", "split_limits", "OUTPUT_COLUMNS")

#: The columns ``run_dataset`` adds to each row.
OUTPUT_COLUMNS = ("result", "ok", "error", "history", "input_tokens", "output_tokens", "cost")


def split_limits(limits: Limits | None, workers: int) -> Limits | None:
    """Each worker's share of ``limits``: a provider's RPM, TPM and calls in flight are one
    budget for the whole cluster, split evenly among ``workers`` (rounded down, at least 1 a
    minute and one call in flight)."""
    if limits is None:
        return None

    def share(limit: ModelLimit | None) -> ModelLimit | None:
        if limit is None:
            return None
        return ModelLimit(
            concurrency=None if limit.concurrency is None else max(1, limit.concurrency // workers),
            rpm=None if limit.rpm is None else max(1.0, limit.rpm / workers),
            tpm=None if limit.tpm is None else max(1.0, limit.tpm / workers),
        )

    per_model = {m: share(lim) for m, lim in limits.per_model.items()}
    return Limits({m: lim for m, lim in per_model.items() if lim is not None},
                  default=share(limits.default))


class _Worker:
    """One Ray actor: its client, made once from the factory, and the pipeline's options;
    each call runs one block of rows through ``run_many``."""

    def __init__(self, pipeline: Step, client_factory: Callable[[], Client],
                 options: dict[str, Any]) -> None:
        self.pipeline = pipeline
        self.client = client_factory()
        self.options = dict(options)
        cache = self.options.pop("cache_spec")
        self.prompt_column = self.options.pop("prompt_column")
        self.id_column = self.options.pop("id_column")
        self.prices: Prices = self.options.pop("prices")
        self.cache = Cache(cache[0], mode=cache[1], namespace=cache[2]) if cache else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        prompts = [str(p) for p in batch[self.prompt_column]]
        ids = [_plain(i) for i in batch[self.id_column]]
        results = anyio.run(self._run, prompts, ids)
        out = {name: list(values) for name, values in batch.items()}
        out["result"] = [r.result for r in results]
        out["ok"] = [r.ok for r in results]
        out["error"] = [None if r.ok else f"{type(r.error).__name__}: {r.error}" for r in results]
        out["history"] = [None if r.history is None else json.dumps(r.history.to_dict())
                          for r in results]
        out["input_tokens"] = [r.history.input_tokens if r.history else None for r in results]
        out["output_tokens"] = [r.history.output_tokens if r.history else None for r in results]
        out["cost"] = [cost(r.history, self.prices).total if r.history else None
                       for r in results]
        return out

    async def _run(self, prompts: list[str], ids: list[str | int]) -> list[Any]:
        return await run_many(self.pipeline, prompts, self.client, ids=ids, cache=self.cache,
                              **self.options)


def _plain(value: Any) -> str | int:
    """A row's id as moa takes it: numpy's integers are ints."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"run_dataset: an id must be a str or an int, got {safe_repr(value)}")
    return value


def run_dataset(
    pipeline: StepLike,
    dataset: ray.data.Dataset,
    client_factory: Callable[[], Client],
    *,
    prompt_column: str = "prompt",
    id_column: str = "id",
    seed: int | None = None,
    max_concurrency: int = 64,
    concurrency: int = 2,
    limits: Limits | None = None,
    cache: Cache | str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    prices: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    num_cpus: float = 0.5,
) -> ray.data.Dataset:
    """``pipeline`` on every row of ``dataset``, lazily: a Dataset with the input columns and
    :data:`OUTPUT_COLUMNS` (``history`` is the JSON of ``History.to_dict()``; ``cost`` in US
    dollars, None where unknown).

    ``concurrency`` workers (Ray actors of ``num_cpus`` each: fractional, so Ray Data's own
    tasks are not starved) each run blocks of ``batch_size`` rows with at most
    ``max_concurrency`` calls in flight; ``client_factory()`` makes each worker's client.
    ``limits`` are the cluster's budget, split evenly among the workers
    (:func:`split_limits`). ``cache`` is a :class:`~moa.Cache` or its path, opened by every
    worker (an SQLite file: the workers must share a filesystem). With ``seed``, each row's
    seed comes from it and the row's id, so the results equal ``moa.run_many`` over the same
    prompts and ids.
    """
    require("ray", "ray", "moa.ray.run_dataset")
    step = as_step(pipeline, where="run_dataset(pipeline)")
    if not callable(client_factory):
        raise TypeError("run_dataset(client_factory): a function that makes a client, called "
                        f"once in each worker; got {safe_repr(client_factory)}")
    for name, value in (("concurrency", concurrency), ("batch_size", batch_size),
                        ("max_concurrency", max_concurrency)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"run_dataset({name}=...): {name} must be an int >= 1, got "
                             f"{safe_repr(value)}")
    missing = {prompt_column, id_column} - set(dataset.schema().names)
    if missing:
        raise ValueError(f"run_dataset: the dataset has no column {sorted(missing)!r}; name "
                         f"the prompt and id columns with prompt_column= and id_column=")
    options = {
        "seed": seed, "max_concurrency": max_concurrency, "timeout": timeout, "retry": retry,
        "limits": split_limits(limits, concurrency), "cache_spec": _cache_spec(cache),
        "prompt_column": prompt_column, "id_column": id_column,
        "prices": DEFAULT_PRICES if prices is None else DEFAULT_PRICES | Prices(prices),
    }
    return dataset.map_batches(
        _Worker,
        fn_constructor_args=(step, client_factory, options),
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=concurrency,
        num_cpus=num_cpus,
        # A worker that dies (a killed process) is replaced, and its block runs again.
        max_restarts=-1,
        max_task_retries=-1,
    )


def _cache_spec(cache: Cache | str | os.PathLike[str] | None) -> tuple[str, str, str] | None:
    if cache is None:
        return None
    if isinstance(cache, Cache):
        return cache.path, cache.mode, cache.namespace
    if isinstance(cache, (str, os.PathLike)):
        return os.path.abspath(os.fspath(cache)), "rw", ""
    raise TypeError(f"run_dataset(cache=...): a moa.Cache or a path, not {safe_repr(cache)}")

