"""What ``run`` and ``batch`` share: the pipeline they run (an expression or a recipe, with
``--max-tokens``), the run options, the prices it is costed at, and the response cache."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .. import recipes
from .._agent import AgentLike
from .._budget import Budget
from .._cache import Cache
from .._contract import LLMStep
from .._cost import DEFAULT_PRICES, Cost, Prices
from .._events import EventHandler
from .._history import History
from .._options import RunOptions
from .._parse import PipelineSyntaxError, parse_runnable
from .._pipeline import Parallel, Pipeline, Step, leaves
from .._retry import DEFAULT_RETRY, Retry
from .._trace import Tracing
from ..errors import MoaError
from .common import UsageError

__all__ = (
    "BUDGET_FLAGS",
    "RECIPES",
    "budget_line",
    "budget_of",
    "build_pipeline",
    "cache_namespace",
    "cost_dict",
    "load_prices",
    "open_cache",
    "parse_expression",
    "prices_for",
    "recipe",
    "run_options",
    "saved_prices",
    "with_max_tokens",
)

#: The retry policy of every command (a module attribute, so tests can make it wait for
#: nothing).
RETRY: Retry = DEFAULT_RETRY


def run_options(
    args: argparse.Namespace,
    *,
    cache: Cache | None = None,
    on_event: EventHandler | None = None,
    prices: Prices | None = None,
    tracer_provider: Any = None,
) -> RunOptions:
    """The run options a command's flags give (``--seed``, ``--max-concurrency``,
    ``--timeout``, ``--budget-*``), with the cache, the progress display's handler, the
    prices a budget in dollars is kept at and the spans are priced at, and the tracer
    provider ``--otlp`` made (None: the global one's, if the application set one)."""
    tracing = None
    if prices is not None or tracer_provider is not None:
        tracing = Tracing(prices=prices, tracer_provider=tracer_provider)
    return RunOptions(
        seed=args.seed,
        max_concurrency=getattr(args, "max_concurrency", None),
        timeout=args.timeout,
        retry=RETRY,
        cache=cache,
        on_event=on_event,
        budget=budget_of(args, prices),
        deadline=getattr(args, "deadline", None),
        tracing=tracing,
    )


#: The --budget-* flags, by the Budget limit they set.
BUDGET_FLAGS = {
    "usd": "budget_usd",
    "calls": "budget_calls",
    "input_tokens": "budget_input_tokens",
    "output_tokens": "budget_output_tokens",
    "seconds": "budget_seconds",
}


def budget_of(args: argparse.Namespace, prices: Prices | None = None) -> Budget | None:
    """The Budget the ``--budget-*`` flags ask for (None without any)."""
    given = {k: getattr(args, flag, None) for k, flag in BUDGET_FLAGS.items()}
    if all(v is None for v in given.values()):
        return None
    return Budget(**given, prices=prices)


def _amount(name: str, x: float) -> str:
    return f"${x:.4g}" if name == "usd" else f"{x:,.4g}"


def budget_line(budget: Budget) -> str:
    """Where a budget stands, for a command's summary: each limit's use and what is left."""
    used, left = budget.used(), budget.left()
    shown = []
    for name, limit in budget.limits.items():
        if limit is None:
            continue
        unit = "" if name == "usd" else f" {name.replace('_', ' ')}"
        rest = max(0.0, left[name] or 0.0)
        shown.append(
            f"{_amount(name, used[name])} of {_amount(name, limit)}{unit} "
            f"(left {_amount(name, rest)})"
        )
    return "budget: " + ", ".join(shown)


#: The recipes ``--recipe`` can name.
RECIPES = recipes.NAMES
recipe = recipes.by_name


def parse_expression(text: str) -> Step:
    try:
        return parse_runnable(text)
    except PipelineSyntaxError as exc:
        # str(exc) is the reason, the expression, and a caret under the offending token.
        raise UsageError(f"--pipeline: {exc}") from None


def with_max_tokens(step: Step, n: int) -> Step:
    """``step`` with every LLM step's ``max_tokens`` set to ``n``; other steps unchanged.

    LLM steps are frozen dataclasses, so each is rebuilt with :func:`dataclasses.replace`; a
    custom LLM step without a ``max_tokens`` field is left as it is.
    """
    if isinstance(step, Pipeline):
        return Pipeline(*(with_max_tokens(s, n) for s in step.steps))
    if isinstance(step, Parallel):
        return Parallel(*(with_max_tokens(b, n) for b in step.branches))
    if (
        isinstance(step, LLMStep)
        and dataclasses.is_dataclass(step)
        and any(f.name == "max_tokens" for f in dataclasses.fields(step))
    ):
        return dataclasses.replace(step, max_tokens=n)
    return step


def build_pipeline(args: argparse.Namespace, parsed: Step | None, model: AgentLike) -> Step:
    if parsed is not None:
        step = parsed
    else:
        # One model everywhere when the user named one, or on the embedded model (the only
        # model it has); otherwise the recipe's own models, through the chosen provider.
        local = args.provider == "local" and not args.base_url
        step = recipe(args.recipe, model if args.model or local else None)
    if args.max_tokens is not None:
        step = with_max_tokens(step, args.max_tokens)
    return step


def prices_for(args: argparse.Namespace, pipeline: Step) -> Prices:
    """The default table (on a named provider, looked up in genai-prices for that provider,
    when installed), then (on the embedded model) every model name of the pipeline at $0,
    since each is a label for the same local model, then the user's ``--prices`` file."""
    base = DEFAULT_PRICES
    if args.provider != "local" and not args.base_url:
        base = Prices(DEFAULT_PRICES, genai_prices=args.provider)
    if args.provider == "local" and not args.base_url:
        names = {
            m if isinstance(m, str) else m.model
            for _, s in leaves(pipeline)
            for m in (*getattr(s, "agents", ()), getattr(s, "agent", None))
            if m
        }
        base = base | {m: (0.0, 0.0) for m in names}
    return load_prices(args.prices, base)


def saved_prices(prices: Prices, history: History) -> dict[str, list[float]]:
    """The prices of the run's models, saved beside it so `moa trace` costs it the same."""
    return {
        m: [p.input, p.output]
        for m in sorted({c.model for c in history.calls})
        if (p := prices.price(m)) is not None
    }


def cache_namespace(args: argparse.Namespace) -> str:
    """Which client answers: a cache entry from one never serves another (the embedded model
    answers to any model name, so its entries must not pass for a provider's)."""
    return f"base_url={args.base_url}" if args.base_url else f"provider={args.provider}"


def load_prices(path: str | None, base: Prices = DEFAULT_PRICES) -> Prices:
    if path is None:
        return base
    try:
        return base | Prices.from_json(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--prices {path}: {exc}") from None


def open_cache(path: str | None, namespace: str) -> Cache | None:
    if path is None:
        return None
    try:
        return Cache(path, namespace=namespace)
    except (OSError, MoaError) as exc:
        raise UsageError(f"--cache {path}: {exc}") from None


def cost_dict(c: Cost) -> dict[str, Any]:
    return {**c.to_dict(), "text": str(c)}
