"""The ``moa`` command line.

``moa demo`` runs a real Self-MoA offline on the embedded model. ``moa run`` runs a pipeline
expression or a recipe on one prompt: the answer alone on stdout, live progress and a summary
on stderr. ``moa batch`` runs a JSONL file of prompts, resumably. ``moa trace`` shows a saved
run as a tree. Exit status: 0 done, 1 a run failed, 2 a usage or expression error, 130 Ctrl-C.
Progress uses ``rich`` when it is installed (``pip install 'moa-dsl[cli]'``) and stderr is a
terminal, plain lines otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import random
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from . import (
    DEFAULT_PRICES,
    Agent,
    Aggregate,
    Cache,
    CallFinished,
    CallRecord,
    CallRetrying,
    Cost,
    History,
    LLMStep,
    MoaError,
    Parallel,
    Pipeline,
    PipelineSyntaxError,
    Prices,
    Propose,
    RunFinished,
    Step,
    StepFinished,
    StepRecord,
    StepStarted,
    TextChunk,
    cost,
    parse_pipeline,
    recipes,
    run,
)
from . import run_stream as moa_run_stream
from ._agent import AgentLike
from ._client import unicode_error
from ._parse import parse_agent
from .clients._errors import redact
from ._history import _sum_known, spent_tokens

__all__ = ("main",)

DEMO_PROMPT = "Why is the sky blue? Answer in two sentences."


@dataclass(frozen=True)
class Provider:
    """How ``--provider NAME`` reaches a model: the key it needs and the model it defaults to."""

    key_env: str | None
    model: str
    base_url: str | None = None
    kind: str = "openai"


PROVIDERS = {
    "local": Provider(None, "SmolLM2-135M-Instruct", kind="local"),
    "openai": Provider("OPENAI_API_KEY", "gpt-5-nano-2025-08-07"),
    "anthropic": Provider("ANTHROPIC_API_KEY", "claude-sonnet-4-5", kind="anthropic"),
    "openrouter": Provider("OPENROUTER_API_KEY", "qwen/qwen-2.5-72b-instruct",
                           "https://openrouter.ai/api/v1"),
    "groq": Provider("GROQ_API_KEY", "llama-3.3-70b-versatile", "https://api.groq.com/openai/v1"),
    "together": Provider("TOGETHER_API_KEY", "Qwen/Qwen2.5-72B-Instruct-Turbo",
                         "https://api.together.xyz/v1"),
}

#: The recipes ``--recipe`` can name, with how each takes "one model everywhere".
RECIPES = ("together_moa", "moa_lite", "self_moa", "self_moa_seq", "robust_moa", "persona_vote")

#: Steps whose one call is a judge's reply: ``moa trace`` shows it in full.
JUDGES = ("Aggregate", "Vote", "Rank")


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


def make_client(provider: str, base_url: str | None, model: str | None):  # type: ignore[no-untyped-def]
    """The client and model name that ``--provider``/``--base-url``/``--model`` ask for."""
    from . import clients

    if base_url and provider == "local":
        # --base-url alone: any OpenAI-compatible server (vLLM, Ollama, llama.cpp server).
        if not model:
            raise UsageError("--base-url needs --model: the name the server knows the model by")
        return clients.openai_client(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY")), model
    spec = PROVIDERS[provider]
    if spec.kind == "local":
        return _local_model(model, spec.model)
    key = os.environ.get(spec.key_env or "")
    if not key:
        raise UsageError(f"--provider {provider} needs {spec.key_env} set in the environment")
    if spec.kind == "anthropic":
        return clients.anthropic_client(api_key=key, base_url=base_url), model or spec.model
    return clients.openai_client(base_url=base_url or spec.base_url, api_key=key), model or spec.model


#: What ``--model`` may say on the embedded provider for the embedded model (any case).
EMBEDDED_NAMES = ("smollm2", "smollm2-135m-instruct", "smollm2-135m-instruct.q4_1")


def _local_model(model: str | None, default: str):  # type: ignore[no-untyped-def]
    """The embedded provider's client and model label: the embedded SmolLM2, or the GGUF
    file ``--model`` names. Any other name is a mistake (it would run SmolLM2 under that
    name), so it is refused with the options that reach other models."""
    if model is None or model.casefold() in EMBEDDED_NAMES:
        return _local_client(None), model or default
    if model.casefold().endswith(".gguf") or os.sep in model:
        path = Path(model).expanduser()
        if not path.is_file():
            raise UsageError(f"--model {model}: no such model file")
        return _local_client(path), path.stem
    raise UsageError(
        f"--model {model!r}: the embedded provider runs SmolLM2-135M-Instruct (--model "
        f"smollm2) or a GGUF file you name (--model path/to/model.gguf); for another model "
        f"use --provider {{{','.join(p for p in PROVIDERS if p != 'local')}}} or --base-url URL")


def _local_client(path: Path | None) -> Any:
    from . import clients

    try:
        return clients.local_client(path)
    except ValueError as exc:  # a bad MOA_THREADS
        raise UsageError(str(exc)) from None


def _print_history(history: History, result: str, out=None) -> None:  # type: ignore[no-untyped-def]
    out = sys.stdout if out is None else out  # looked up now, so a redirected stdout is used
    width = 88
    proposals = history.steps[0]
    print(f"\nProposals ({len(proposals.outputs)}):", file=out)
    for i, call in enumerate(proposals.calls, 1):
        body = call.text if call.ok else f"[failed: {call.error}]"
        print(textwrap.indent(textwrap.fill(f"{i}. {body}", width, subsequent_indent="   "), "  "),
              file=out)
    print("\nFinal answer:", file=out)
    print(textwrap.indent(textwrap.fill(result, width), "  "), file=out)
    tokens_in = "unknown" if history.input_tokens is None else history.input_tokens
    tokens_out = "unknown" if history.output_tokens is None else history.output_tokens
    print(f"\ncalls: {history.total_calls} ({len(history.failed_calls)} failed)   "
          f"tokens: {tokens_in} in, {tokens_out} out   wall time: {history.wall_time:.2f} s", file=out)
    latencies = ", ".join(f"{c.latency:.2f}" for c in history.calls)
    print(f"per-call latency (s, queueing included): {latencies}", file=out)


async def _close(client: Any) -> None:
    # The HTTP clients hold connections: close them so none is left open when the loop ends.
    aclose = getattr(client, "aclose", None)
    if aclose is not None:
        await aclose()


async def _run_and_close(pipeline, prompt, client, seed, timeout, **options):  # type: ignore[no-untyped-def]
    """``moa.run``, then close the client's connections."""
    try:
        return await run(pipeline, prompt, client, seed=seed, timeout=timeout, **options)
    finally:
        await _close(client)


async def _stream_and_close(pipeline, prompt, client, seed, timeout, *, on_event=None,  # type: ignore[no-untyped-def]
                            out=None, **options):
    """``moa.run_stream``: the final answer's chunks written to ``out`` as they arrive, the
    other events to ``on_event``; then close the client's connections. Returns what ``run``
    returns and whether any chunk was written."""
    out = sys.stdout if out is None else out
    wrote = False
    try:
        async with moa_run_stream(pipeline, prompt, client, seed=seed, timeout=timeout,
                                  **options) as events:
            async for event in events:
                if isinstance(event, TextChunk):
                    out.write(event.text)
                    out.flush()
                    wrote = True
                elif isinstance(event, RunFinished):
                    return event.result, event.history, wrote
                elif on_event is not None:
                    on_event(event)
    finally:
        await _close(client)
    raise AssertionError("run_stream ended without RunFinished")  # pragma: no cover


def _model_option(args: argparse.Namespace) -> Agent | None:
    """``--model`` given as an agent expression (``"Agent('m', temp=0)"``): the agent, with
    ``args.model`` set to its model name for ``make_client``; None for a plain name."""
    text = args.model
    if text is None or not text.lstrip().startswith("Agent("):
        return None
    try:
        agent = parse_agent(text)
    except PipelineSyntaxError as exc:
        raise UsageError(f"--model: {exc}") from None
    args.model = agent.model
    return agent


def _as_agent(agent: Agent | None, model: str) -> AgentLike:
    """The agent the command runs: ``--model``'s agent on the model ``make_client`` chose (a
    GGUF path becomes its name), or the model name alone."""
    return model if agent is None else dataclasses.replace(agent, model=model)


def demo(args: argparse.Namespace) -> int:
    args.prompt = _checked_prompt(args.prompt)
    agent = _model_option(args)
    client, model = make_client(args.provider, args.base_url, args.model)
    who = _as_agent(agent, model)
    pipeline = Propose([who] * args.samples, temp=0.7, max_tokens=args.max_tokens) | Aggregate(
        who, temp=0.3, max_tokens=args.max_tokens
    )
    where = args.provider if not args.base_url else redact(args.base_url)  # no URL password
    print(f"moa demo: a Self-MoA on {model} ({where})")
    print(f"pipeline: {pipeline!r}")
    print(f"prompt:   {args.prompt}")
    result, history = anyio.run(_run_and_close, pipeline, args.prompt, client, args.seed,
                                args.timeout)
    _print_history(history, result)
    return 0


# -- shared pieces of run / batch / trace --------------------------------------------------------
def _load_rich():  # type: ignore[no-untyped-def]
    """The ``rich`` package, or None where it is not installed (the plain renderers are used).
    Tests replace this to force the plain output."""
    try:
        import rich
    except ImportError:
        return None
    return rich


def _fancy() -> bool:
    """Live progress with rich: installed, and stderr is a terminal a person watches."""
    isatty = getattr(sys.stderr, "isatty", None)
    return _load_rich() is not None and isatty is not None and isatty()


def _short(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with ``...``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:max(0, width - 3)] + "..."


def _tokens(n: int | None) -> str:
    return "unknown" if n is None else str(n)


def _parse_expression(text: str) -> Step:
    try:
        return parse_pipeline(text)
    except PipelineSyntaxError as exc:
        # str(exc) is the reason, the expression, and a caret under the offending token.
        raise UsageError(f"--pipeline: {exc}") from None


def _recipe(name: str, model: AgentLike | None) -> Step:
    """``moa.recipes.<name>()``; with ``model``, every model of the recipe is that one."""
    make = getattr(recipes, name)
    if model is None:
        return make()
    if name in ("self_moa", "self_moa_seq", "persona_vote"):
        return make(model=model)
    proposers = recipes.ROBUST_PROPOSERS if name == "robust_moa" else recipes.PROPOSERS
    return make(proposers=[model] * len(proposers), aggregator=model)


def with_max_tokens(step: Step, n: int) -> Step:
    """``step`` with every LLM step's ``max_tokens`` set to ``n``; other steps unchanged.

    LLM steps are frozen dataclasses, so each is rebuilt with :func:`dataclasses.replace`; a
    custom LLM step without a ``max_tokens`` field is left as it is.
    """
    if isinstance(step, Pipeline):
        return Pipeline(*(with_max_tokens(s, n) for s in step.steps))
    if isinstance(step, Parallel):
        return Parallel(*(with_max_tokens(b, n) for b in step.branches))
    if isinstance(step, LLMStep) and dataclasses.is_dataclass(step) and any(
            f.name == "max_tokens" for f in dataclasses.fields(step)):
        return dataclasses.replace(step, max_tokens=n)  # type: ignore[type-var]
    return step


def _leaves(step: Step) -> list[tuple[tuple[int, ...], Step]]:
    """Every step that is not a Pipeline or Parallel, in pipeline order, with its path as the
    executor numbers it (history's ``StepRecord.path``)."""
    out: list[tuple[tuple[int, ...], Step]] = []

    def walk(s: Step, path: tuple[int, ...]) -> None:
        if isinstance(s, Pipeline):
            for i, sub in enumerate(s.steps):
                walk(sub, path + (i,))
        elif isinstance(s, Parallel):
            for i, sub in enumerate(s.branches):
                walk(sub, path + (i,))
        else:
            out.append((path, s))

    walk(step, () if isinstance(step, Pipeline) else (0,))
    return out


def _build_pipeline(args: argparse.Namespace, parsed: Step | None, model: AgentLike) -> Step:
    if parsed is not None:
        step = parsed
    else:
        # One model everywhere when the user named one, or on the embedded model (the only
        # model it has); otherwise the recipe's own models, through the chosen provider.
        local = args.provider == "local" and not args.base_url
        step = _recipe(args.recipe, model if args.model or local else None)
    if args.max_tokens is not None:
        step = with_max_tokens(step, args.max_tokens)
    return step


def _prices_for(args: argparse.Namespace, pipeline: Step) -> Prices:
    """The default table, then (on the embedded model) every model name of the pipeline at $0,
    since each is a label for the same local model, then the user's ``--prices`` file."""
    base = DEFAULT_PRICES
    if args.provider == "local" and not args.base_url:
        names = {m if isinstance(m, str) else m.model for _, s in _leaves(pipeline)
                 for m in (*getattr(s, "agents", ()), getattr(s, "agent", None)) if m}
        base = base | {m: (0.0, 0.0) for m in names}
    return _load_prices(args.prices, base)


def _saved_prices(prices: Prices, history: History) -> dict[str, list[float]]:
    """The prices of the run's models, saved beside it so `moa trace` costs it the same."""
    return {m: [p.input, p.output] for m in sorted({c.model for c in history.calls})
            if (p := prices.price(m)) is not None}


def _cache_namespace(args: argparse.Namespace) -> str:
    """Which client answers: a cache entry from one never serves another (the embedded model
    answers to any model name, so its entries must not pass for a provider's)."""
    return f"base_url={args.base_url}" if args.base_url else f"provider={args.provider}"


def _load_prices(path: str | None, base: Prices = DEFAULT_PRICES) -> Prices:
    if path is None:
        return base
    try:
        return base | Prices.from_json(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--prices {path}: {exc}") from None


def _open_cache(path: str | None, namespace: str) -> Cache | None:
    if path is None:
        return None
    try:
        return Cache(path, namespace=namespace)
    except (OSError, MoaError) as exc:
        raise UsageError(f"--cache {path}: {exc}") from None


def _cost_dict(c: Cost) -> dict[str, Any]:
    return {**c.to_dict(), "text": str(c)}


# -- progress while a run goes -------------------------------------------------------------------
class _NoProgress:
    """No progress at all (``--quiet``)."""

    handler: Callable[[Any], None] | None = None

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _StepLines(_NoProgress):
    """Progress as plain lines on stderr: one line as each LLM step finishes."""

    def __init__(self, step: Step) -> None:
        self.numbers = {path: i for i, (path, _) in enumerate(_leaves(step), 1)}
        self.total = len(self.numbers)
        self.handler = self.on_event

    def on_event(self, event: Any) -> None:
        if isinstance(event, StepFinished) and event.record.kind == "llm":
            print(self.line(event.record), file=sys.stderr, flush=True)

    def line(self, record: StepRecord) -> str:
        calls = record.calls
        ok = sum(c.ok for c in calls)
        failed = sum(c.error is not None for c in calls)
        retried = sum(max(c.attempts - 1, 0) for c in calls)
        cached = sum(c.cached for c in calls)
        tin, tout = spent_tokens(calls)
        n = self.numbers.get(record.path, "?")
        extra = f", {cached} cached" if cached else ""
        return (f"step {n}/{self.total} {_short(record.step, 60)}: {ok}/{len(calls)} calls, "
                f"{failed} failed, {retried} retried{extra}, {_tokens(tin)} in / {_tokens(tout)} "
                f"out tokens, {record.duration:.1f} s")


@dataclass
class _Row:
    """One LLM step's live counts."""

    label: str
    calls: int
    start: float
    done: int = 0
    failed: int = 0
    retried: int = 0
    cached: int = 0
    tokens_in: int | None = 0
    tokens_out: int | None = 0
    duration: float | None = None

    def add(self, record: CallRecord) -> None:
        self.done += 1
        self.failed += record.error is not None
        self.cached += record.cached
        tin, tout = spent_tokens([record])
        self.tokens_in = None if self.tokens_in is None or tin is None else self.tokens_in + tin
        self.tokens_out = None if self.tokens_out is None or tout is None else self.tokens_out + tout


class _StepTable(_NoProgress):
    """Live progress with rich on stderr: a table with a row per LLM step, updated from the
    run's events. Events arrive on the event loop's thread and only bump counters; rich's
    refresh thread renders the table from them."""

    def __init__(self, step: Step) -> None:
        from rich.console import Console
        from rich.live import Live

        self.numbers = {path: i for i, (path, _) in enumerate(_leaves(step), 1)}
        self.total = len(self.numbers)
        self.rows: dict[tuple[int, ...], _Row] = {}
        self.live = Live(self, console=Console(stderr=True), refresh_per_second=8)
        self.handler = self.on_event

    def __enter__(self) -> _StepTable:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
        if not self.live.console.is_terminal:  # rich ends its last frame with no newline there
            self.live.console.line()

    def on_event(self, event: Any) -> None:
        if isinstance(event, StepStarted):
            row = self.rows.get(event.path)
            if event.round > 1 and row is not None:
                row.calls += event.calls  # a later round of the same step (AggregateSeq)
            else:
                n = self.numbers.get(event.path, "?")
                self.rows[event.path] = _Row(f"{n}/{self.total} {_short(event.step, 80)}",
                                             event.calls, time.monotonic())
        elif isinstance(event, StepFinished):
            row = self.rows.get(event.record.path)
            if row is not None:
                row.duration = event.record.duration
        elif isinstance(event, CallRetrying):
            row = self.rows.get(event.path)
            if row is not None:
                row.retried += 1
        elif isinstance(event, CallFinished):
            row = self.rows.get(event.path)
            if row is not None:
                row.add(event.record)

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.table import Table
        from rich.text import Text

        numbers = ("calls", "failed", "retried", "cached", "tokens in/out", "time")
        # The counts keep their width; the step's expression gets what is left of the line.
        rest = sum(max(len(n), 6) + 2 for n in numbers)
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("step", no_wrap=True, overflow="ellipsis",
                         max_width=max(16, min(48, options.max_width - rest)))
        for name in numbers:
            table.add_column(name, justify="right", no_wrap=True, min_width=max(len(name), 6))
        now = time.monotonic()
        for row in list(self.rows.values()):
            running = row.duration is None
            mark = Text("… " if running else ("✗ " if row.failed else "✓ "),
                        style="yellow" if running else ("red" if row.failed else "green"))
            table.add_row(
                # Text, not markup: a step's repr is shown as it is
                mark + Text(row.label),
                f"{row.done}/{row.calls}",
                Text(str(row.failed), style="red" if row.failed else ""),
                str(row.retried), str(row.cached),
                f"{_tokens(row.tokens_in)}/{_tokens(row.tokens_out)}",
                f"{(now - row.start) if running else row.duration:.1f} s")
        yield table


def _progress_for(args: argparse.Namespace, step: Step) -> _NoProgress:
    if args.quiet:
        return _NoProgress()
    # A live table redraws the terminal: streamed text beside it would be drawn over.
    streaming = getattr(args, "stream", False)
    return _StepTable(step) if _fancy() and not streaming else _StepLines(step)


# -- moa run -------------------------------------------------------------------------------------
def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None and args.prompt_file is not None:
        raise UsageError("give the prompt as an argument or with --prompt-file, not both")
    if args.prompt_file == "-":
        text = sys.stdin.read()
    elif args.prompt_file is not None:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--prompt-file {args.prompt_file}: {exc}") from None
    elif args.prompt is not None:
        text = args.prompt
    elif sys.stdin is not None and not sys.stdin.isatty():
        text = sys.stdin.read()
    else:
        raise UsageError("no prompt: give it as an argument, with --prompt-file FILE, "
                         "or on stdin (echo 'question' | moa run ...)")
    return _checked_prompt(text)


def _checked_prompt(text: str) -> str:
    """The prompt without surrounding whitespace (a file's last newline is not part of the
    question); an empty one, or one holding invalid UTF-8, is a usage error."""
    if not text.strip():
        raise UsageError("the prompt is empty")
    bad = unicode_error(text)
    if bad is not None:
        raise UsageError(f"the prompt is not valid Unicode: {bad}")
    return text.strip()


def _write_json(path: str, doc: dict[str, Any]) -> None:
    try:
        Path(path).write_text(dumps(doc, indent=2) + "\n",
                              encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--json {path}: {exc}") from None


def _run_document(history: History, result: str | None, pipeline: Step, prices: Prices,
                  error: str | None = None) -> dict[str, Any]:
    """What ``--json`` writes: the history, the result, the pipeline's expression, the cost."""
    doc = history.to_dict()
    doc["result"] = result
    doc["pipeline"] = repr(pipeline)
    doc["cost"] = _cost_dict(cost(history, prices))
    doc["prices"] = _saved_prices(prices, history)
    if error is not None:
        doc["error"] = error
    return doc


def _summary(history: History, prices: Prices) -> str:
    cached = sum(c.cached for c in history.calls)
    return (f"calls: {history.total_calls} ({len(history.failed_calls)} failed, {cached} cached)"
            f"   tokens: {_tokens(history.input_tokens)} in, {_tokens(history.output_tokens)} out"
            f"   cost: {cost(history, prices)}   wall time: {history.wall_time:.2f} s"
            f"   seed: {history.seed}")


def _check_writable(option: str, path: str | None) -> None:
    """A file the command will write after the run: a missing folder is found before any
    call is paid for, not after."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder, not a file")


def run_command(args: argparse.Namespace) -> int:
    parsed = _parse_expression(args.pipeline) if args.pipeline is not None else None
    _check_writable("--json", args.json)
    prompt = _read_prompt(args)
    _load_prices(args.prices)  # a bad price file is a usage error before anything runs
    agent = _model_option(args)
    cache = _open_cache(args.cache, _cache_namespace(args))
    try:
        client, model = make_client(args.provider, args.base_url, args.model)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    pipeline = _build_pipeline(args, parsed, _as_agent(agent, model))
    prices = _prices_for(args, pipeline)
    progress = _progress_for(args, pipeline)
    options: dict[str, Any] = {"max_concurrency": args.max_concurrency, "cache": cache}
    if progress.handler is not None:
        options["on_event"] = progress.handler
    streamed = False  # whether any of the answer went out as it was generated
    try:
        with progress:
            if args.stream:
                result, history, streamed = anyio.run(functools.partial(
                    _stream_and_close, pipeline, prompt, client, args.seed, args.timeout,
                    **options))
            else:
                result, history = anyio.run(functools.partial(
                    _run_and_close, pipeline, prompt, client, args.seed, args.timeout,
                    **options))
    except MoaError as exc:
        if args.stream:
            print(flush=True)  # end a partly streamed answer's line before the error
        if args.json is not None and exc.history is not None:
            _write_json(args.json, _run_document(exc.history, None, pipeline, prices, str(exc)))
        raise
    finally:
        if cache is not None:
            cache.close()
    # Streamed, the answer is already out (a pipeline whose last step does not write the
    # answer, such as a transform, streams nothing: it is printed whole, as without --stream).
    print("" if streamed else result, flush=True)
    if args.json is not None:
        _write_json(args.json, _run_document(history, result, pipeline, prices))
    if not args.quiet:
        print(_summary(history, prices), file=sys.stderr)
    return 0


# -- moa batch -----------------------------------------------------------------------------------
@dataclass
class _Item:
    """One prompt of a batch: its id as written to OUT, where it came from, its seed."""

    id: Any
    prompt: str
    line: int
    seed: int | None = None


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text: split at ``\n`` only (``\r\n`` too), never at the
    other characters ``str.splitlines`` takes for line ends (U+2028, U+0085, ...), which JSON
    writes raw inside strings."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def dumps(doc: Any, indent: int | None = None) -> str:
    """JSON that is always valid UTF-8: text as it is, but a model's reply holding a lone
    surrogate (which UTF-8 cannot encode) is written as ``\\ud800`` escapes, which read back
    the same, rather than fail the write and lose the line."""
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    return text if unicode_error(text) is None else json.dumps(doc, indent=indent)


def _loads(raw: str) -> Any:
    """``json.loads``, with the errors Python's own limits raise (an integer of over 4,300
    digits, nesting deeper than the recursion limit) reported as JSON errors."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _read_batch_input(path: str) -> list[_Item]:
    try:
        if path == "-":
            lines = jsonl_lines(sys.stdin.read())
        else:
            lines = jsonl_lines(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    items: list[_Item] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            value = _loads(raw)
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else _short(str(exc), 80)
            raise UsageError(f"{where}: not JSON ({reason}); each line must be "
                             '{"prompt": "...", "id": ...} or a JSON string') from None
        if isinstance(value, str):
            prompt, ident = value, len(items)
        elif isinstance(value, dict) and "prompt" in value:
            prompt = value["prompt"]
            ident = value.get("id", len(items))
        else:
            raise UsageError(f'{where}: each line must be {{"prompt": "...", "id": ...}} or a '
                             f"JSON string, got {_short(raw, 60)}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError(f"{where}: the prompt must be a non-empty string, got "
                             f"{_short(repr(prompt), 60)}")
        bad = unicode_error(prompt)
        if bad is not None:
            raise UsageError(f"{where}: the prompt is not valid Unicode: {bad}")
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise UsageError(f"{where}: the id must be a string or an integer, got "
                             f"{_short(repr(ident), 60)}")
        if isinstance(ident, str) and unicode_error(ident) is not None:
            raise UsageError(f"{where}: the id is not valid Unicode: {unicode_error(ident)}")
        key = json.dumps(ident)
        if key in seen:
            raise UsageError(f"{where}: id {ident!r} is already used on line {seen[key]}; ids "
                             "must be unique, as a resumed batch skips the ids already done")
        seen[key] = lineno
        items.append(_Item(ident, prompt, lineno))
    if not items:
        raise UsageError(f"{path}: no prompts")
    return items


def _read_batch_output(path: Path) -> tuple[dict[str, str], int]:
    """The ids OUT already holds a success for (with their prompts), and how many failures it
    held; OUT is rewritten without its failed lines (they run again), without a truncated last
    line, and ending in a newline, so the next result starts a line of its own."""
    if not path.exists():
        return {}, 0
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"-o {path}: {exc}") from None
    lines = jsonl_lines(text)
    keep: list[str] = []
    done: dict[str, str] = {}
    failed = 0
    truncated = False
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            entry = _loads(raw)
            if not isinstance(entry, dict) or "id" not in entry:
                raise ValueError("not a result object")
        except ValueError as exc:
            if lineno == len(lines):  # cut off by a kill mid-write
                truncated = True
                continue
            raise UsageError(f"-o {path} line {lineno} is not a moa batch result ({exc}); fix "
                             "or remove that line, or write to another file") from None
        if entry.get("error") is None:
            done[json.dumps(entry["id"])] = entry.get("prompt")
            keep.append(raw)
        else:
            failed += 1
    if truncated:
        print(f"moa: {path}: dropped a truncated last line (a run interrupted mid-write); "
              "that prompt runs again", file=sys.stderr)
    if truncated or failed or (text and not text.endswith("\n")):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        os.replace(tmp, path)
    return done, failed


class _BatchBar:
    """Prompts done / total on stderr: a rich bar on a terminal, else a line every few seconds."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.quiet = quiet
        self.start = self.last = time.monotonic()
        self.progress: Any = None
        if not quiet and _fancy():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self.progress = Progress(
                TextColumn("prompts"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[failed]}"), TimeElapsedColumn(),
                console=Console(stderr=True))
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
        if not self.quiet and now - self.last >= 2.0 and self.done < self.total:
            self.last = now
            print(f"batch: {self.done}/{self.total} prompts, {self.failed} failed, "
                  f"{now - self.start:.1f} s", file=sys.stderr, flush=True)


def _outcome_line(item: _Item, result: str | None, history: History | None,
                  error: BaseException | None, prices: Prices) -> dict[str, Any]:
    c = cost(history, prices) if history is not None else None
    return {
        "id": item.id,
        "prompt": item.prompt,
        "result": result,
        "error": None if error is None else (str(error) or type(error).__name__),
        "seed": history.seed if history is not None else item.seed,
        "calls": history.total_calls if history is not None else 0,
        "input_tokens": history.input_tokens if history is not None else None,
        "output_tokens": history.output_tokens if history is not None else None,
        "cost": None if c is None else c.total,
        "prices": None if history is None else _saved_prices(prices, history),
        "history": None if history is None else history.to_dict(),
    }


async def _drive_batch(pipeline: Step, items: list[_Item], client: Any, concurrency: int,
                       options: dict[str, Any],
                       report: Callable[[_Item, str | None, History | None, BaseException | None],
                                        None]) -> None:
    """Run every item, at most ``concurrency`` at a time, reporting each as it finishes."""
    slots = anyio.Semaphore(concurrency)

    async def one(item: _Item) -> None:
        try:
            try:
                result, history = await run(pipeline, item.prompt, client, seed=item.seed,
                                            **options)
            except Exception as exc:  # the batch goes on; the error is that prompt's result
                hist = exc.history if isinstance(exc, MoaError) else None
                report(item, None, hist, exc)
            else:
                report(item, result, history, None)
        finally:
            slots.release()

    try:
        async with anyio.create_task_group() as tg:
            for item in items:
                await slots.acquire()
                tg.start_soon(one, item)
    finally:
        await _close(client)


def batch_command(args: argparse.Namespace) -> int:
    parsed = _parse_expression(args.pipeline) if args.pipeline is not None else None
    agent = _model_option(args)
    items = _read_batch_input(args.input)
    _load_prices(args.prices)  # a bad price file is a usage error before anything runs
    if args.seed is not None:
        # The seeds moa.run_many(prompts, seed=S) gives: drawn from S in input order, so a
        # prompt keeps its seed when a resumed batch skips the ones before it.
        draw = random.Random(args.seed)
        for item in items:
            item.seed = draw.getrandbits(63)
    _check_writable("-o", args.output)
    out = Path(args.output)
    done_ids, failed_before = _read_batch_output(out)
    for item in items:
        key = json.dumps(item.id)
        if key in done_ids and done_ids[key] != item.prompt:
            raise UsageError(f"-o {out} holds id {item.id!r} for another prompt "
                             f"({_short(str(done_ids[key]), 40)!r}, not "
                             f"{_short(item.prompt, 40)!r}); an id must keep its prompt across "
                             "resumed runs: write to another file, or give each prompt its id")
    todo = [item for item in items if json.dumps(item.id) not in done_ids]
    skipped = len(items) - len(todo)
    if not args.quiet and (skipped or failed_before):
        print(f"moa: resuming {out}: {skipped} of {len(items)} prompts already done"
              + (f", {failed_before} failed before and run again" if failed_before else ""),
              file=sys.stderr)
    if not todo:
        if not args.quiet:
            print(f"batch: nothing to run, all {len(items)} prompts are done in {out}",
                  file=sys.stderr)
        return 0
    try:
        sink = out.open("a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"-o {out}: {exc}") from None
    cache = None
    try:
        cache = _open_cache(args.cache, _cache_namespace(args))
        client, model = make_client(args.provider, args.base_url, args.model)
    except BaseException:
        sink.close()
        if cache is not None:
            cache.close()
        raise
    pipeline = _build_pipeline(args, parsed, _as_agent(agent, model))
    prices = _prices_for(args, pipeline)
    options = {"max_concurrency": args.max_concurrency, "timeout": args.timeout, "cache": cache}
    histories: list[History] = []
    bar = _BatchBar(len(todo), args.quiet)
    start = time.monotonic()

    def report(item: _Item, result: str | None, history: History | None,
               error: BaseException | None) -> None:
        # One write per line, flushed: an interruption loses only the prompts in flight.
        sink.write(dumps(_outcome_line(item, result, history, error, prices)) + "\n")
        sink.flush()
        if history is not None:
            histories.append(history)
        bar.finished(error is None)

    try:
        with sink, bar:
            anyio.run(_drive_batch, pipeline, todo, client, args.concurrency, options, report)
    finally:
        if cache is not None:
            cache.close()
    if not args.quiet:
        tin = _sum_known(h.input_tokens for h in histories)
        tout = _sum_known(h.output_tokens for h in histories)
        total = sum((cost(h, prices) for h in histories), Cost.ZERO)
        print(f"batch: {bar.done - bar.failed} done, {bar.failed} failed, {skipped} skipped "
              f"(already in {out})   tokens: {_tokens(tin)} in, {_tokens(tout)} out   "
              f"cost: {total}   wall time: {time.monotonic() - start:.2f} s", file=sys.stderr)
    return 1 if bar.failed else 0


# -- moa trace -----------------------------------------------------------------------------------
@dataclass
class _Node:
    """A line of the trace tree: (text, rich style) parts and the lines under it."""

    parts: list[tuple[str, str]]
    children: list[_Node] = field(default_factory=list)

    def add(self, *parts: tuple[str, str] | str) -> _Node:
        node = _Node([p if isinstance(p, tuple) else (p, "") for p in parts])
        self.children.append(node)
        return node


def _load_trace(path: str, line: int | None) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    if line is not None:
        lines = jsonl_lines(text)
        if not 1 <= line <= len(lines):
            raise UsageError(f"--line {line}: {path} has {len(lines)} lines (the first is "
                             f"--line 1)")
        text = lines[line - 1]
    try:
        doc = _loads(text)
    except ValueError as exc:
        where = f"{path} line {line}" if line is not None else path
        hint = "; for a batch output (JSONL) give --line N" if line is None else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else _short(str(exc), 80)
        raise UsageError(f"{where}: not JSON ({reason}){hint}") from None
    if isinstance(doc, dict) and "steps" not in doc and "history" in doc:
        # a batch line: the run is under "history", its outcome beside it
        if not isinstance(doc["history"], dict):
            raise UsageError(f"{path} line {line}: no history (prompt {doc.get('id')!r} failed "
                             f"before any step ran: {doc.get('error')})")
        doc = {**doc["history"], "result": doc.get("result"), "error": doc.get("error"),
               "prices": doc.get("prices")}
    if not isinstance(doc, dict) or "steps" not in doc:
        raise UsageError(f"{path}: not a run record: expected what `moa run --json` writes "
                         "(or a `moa batch` output line, with --line N)")
    return doc


def _money(dollars: float) -> str:
    return str(Cost(known=dollars, unknown=(), by_model={}))


def _call_node(parent: _Node, i: int, call: CallRecord, prices: Prices, judge: bool,
               full: bool, label: str = "call") -> None:
    parts: list[tuple[str, str] | str] = [(f"{label} {i}", "bold"), " ", (call.model, "cyan")]
    if call.agent is not None:
        parts.append((f" ({_short(call.agent, 60)})", "magenta"))
    parts.append(f"  {call.latency:.2f} s")
    if call.ok or call.cached:
        parts.append(f"  {_tokens(call.input_tokens)} in / {_tokens(call.output_tokens)} out")
    if call.cached:
        parts.append(("  cached, $0", "green"))
    elif call.ok:
        dollars = prices.call_cost(call.model, call.input_tokens, call.output_tokens)
        parts.append("  cost unknown" if dollars is None else f"  {_money(dollars)}")
    if call.attempts > 1:
        parts.append((f"  {call.attempts} attempts", "yellow"))
    if call.cancelled:
        parts.append(("  cancelled", "yellow"))
    if call.error is not None:
        parts.append((f"  error: {call.error}", "red"))
    node = parent.add(*parts)
    if call.text is not None:
        node.add((call.text if judge or full else _short(call.text, 100), "dim" if not judge else ""))
    for j, hedge in enumerate(call.hedges, 1):
        _call_node(node, j, hedge, prices, judge, full, label="hedge")


def _trace_tree(doc: dict[str, Any], prices: Prices, full: bool) -> _Node:
    try:
        history = History.from_dict(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"not a run record: {type(exc).__name__} {exc}") from None
    c = cost(history, prices)
    root = _Node([(_short(history.prompt, 60), "bold"),
                  (f"  seed {history.seed}  {history.total_calls} calls "
                   f"({len(history.failed_calls)} failed)  tokens "
                   f"{_tokens(history.input_tokens)} in / {_tokens(history.output_tokens)} out"
                   f"  cost {c}  {history.wall_time:.2f} s", "")])
    if doc.get("pipeline"):
        root.add(("pipeline: ", "bold"), doc["pipeline"])
    for record in history.steps:
        where = ".".join(str(p + 1) for p in record.path)
        node = root.add((f"{where} ", "dim"), (record.step, "bold"),
                        f"  {record.kind}, {record.duration:.2f} s, {len(record.outputs)} "
                        f"output{'' if len(record.outputs) == 1 else 's'}")
        for note in record.notes:
            node.add(("note: ", "yellow"), note)
        judge = record.step.startswith(JUDGES)
        for i, call in enumerate(record.calls, 1):
            _call_node(node, i, call, prices, judge, full)
    if doc.get("error"):
        root.add(("failed: ", "bold red"), (str(doc["error"]), "red"))
    elif isinstance(doc.get("result"), str):
        result = doc["result"]
        root.add(("result: ", "bold"), result if full else _short(result, 200))
    return root


def _plain_tree(node: _Node, indent: str = "", out: list[str] | None = None) -> list[str]:
    out = [] if out is None else out
    text = "".join(t for t, _ in node.parts)
    first, *rest = text.split("\n") or [""]
    out.append(indent + first)
    out.extend(indent + "  " + line for line in rest)
    for child in node.children:
        _plain_tree(child, indent + "  ", out)
    return out


def _rich_tree(node: _Node, tree: Any = None) -> Any:
    from rich.text import Text
    from rich.tree import Tree

    # Text objects, never markup: model output is shown as it is.
    label = Text.assemble(*node.parts)
    branch = Tree(label) if tree is None else tree.add(label)
    for child in node.children:
        _rich_tree(child, branch)
    return branch


def trace_command(args: argparse.Namespace) -> int:
    doc = _load_trace(args.file, args.line)
    saved = doc.get("prices")  # the table the run was costed at; --prices overrides it
    prices = DEFAULT_PRICES
    if isinstance(saved, dict):
        try:
            prices = prices | Prices({m: tuple(p) for m, p in saved.items()})
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{args.file}: bad saved prices: {exc}") from None
    prices = _load_prices(args.prices, prices)
    root = _trace_tree(doc, prices, args.full)
    if _load_rich() is None:
        print("\n".join(_plain_tree(root)))
    else:
        from rich.console import Console

        # Into a file or a pipe, lines are not wrapped at 80 columns (as the plain text is not).
        wide = None if sys.stdout.isatty() else 10_000
        Console(file=sys.stdout, width=wide).print(_rich_tree(root))
    return 0


# -- the parser ----------------------------------------------------------------------------------
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def _run_options(p: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``batch`` share."""
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--pipeline", metavar="EXPR",
                       help="a pipeline expression, e.g. \"Propose(['m', 'm']) | Aggregate('m')\"")
    which.add_argument("--recipe", choices=RECIPES,
                       help="a ready-made pipeline from moa.recipes; with --model, or on the "
                            "local model, every model in it is that one")
    p.add_argument("--provider", choices=sorted(PROVIDERS), default="local",
                   help="where the models run (default: local, the embedded SmolLM2-135M)")
    p.add_argument("--base-url", help="an OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server)")
    p.add_argument("--model", help="the model name (default: the provider's)")
    p.add_argument("--max-tokens", type=_positive, default=None,
                   help="set max_tokens of every LLM step of the pipeline")
    p.add_argument("--seed", type=int, default=None, help="seed for the random steps (replays a run)")
    p.add_argument("--max-concurrency", type=_positive, default=None,
                   help="calls in flight at once (in batch: per prompt)")
    p.add_argument("--timeout", type=_seconds, default=None, help="seconds per call attempt")
    p.add_argument("--cache", metavar="FILE",
                   help="a response cache (SQLite): answers it holds are not asked again")
    p.add_argument("--prices", metavar="FILE",
                   help='a JSON price table {"model": [input, output]} in $ per million tokens, '
                        "over the defaults")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moa", description="Mixture-of-Agents pipelines.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run a Self-MoA (samples + aggregation) on a real model",
                       description="Runs a Self-MoA: N samples of one model, then an aggregation "
                                   "by the same model. Offline on the embedded SmolLM2 by default.")
    d.add_argument("prompt", nargs="?", default=DEMO_PROMPT, help="the question (default: %(default)r)")
    d.add_argument("--provider", choices=sorted(PROVIDERS), default="local",
                   help="where the model runs (default: local, the embedded SmolLM2-135M)")
    d.add_argument("--base-url", help="an OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server)")
    d.add_argument("--model", help="the model name (default: the provider's)")
    d.add_argument("--samples", type=_positive, default=3, help="proposals to sample (default: 3)")
    d.add_argument("--max-tokens", type=_positive, default=160, help="per call (default: 160)")
    d.add_argument("--seed", type=int, default=None, help="seed for the run's random steps")
    d.add_argument("--timeout", type=float, default=None, help="seconds per call attempt")
    d.set_defaults(handler=demo)

    r = sub.add_parser(
        "run", help="run a pipeline on one prompt; the answer alone goes to stdout",
        description="Runs a pipeline expression or a recipe on one prompt. The answer goes to "
                    "stdout; progress and a summary go to stderr. Exit status: 0 done, 1 the "
                    "run failed, 2 a usage or expression error, 130 interrupted.")
    r.add_argument("prompt", nargs="?", help="the question (default: --prompt-file, or stdin)")
    r.add_argument("--prompt-file", metavar="FILE", help="read the prompt from FILE ('-': stdin)")
    _run_options(r)
    r.add_argument("--stream", action="store_true",
                   help="print the final answer as it is generated (when the last step writes "
                        "it: Aggregate, Vote with a judge, AggregateSeq)")
    r.add_argument("--json", metavar="FILE",
                   help="write the run's history, result, pipeline and cost to FILE (also when "
                        "the run fails, for `moa trace`)")
    r.set_defaults(handler=run_command)

    b = sub.add_parser(
        "batch", help="run a pipeline on every prompt of a JSONL file, resumably",
        description="Runs a pipeline on every prompt of INPUT (one JSON string, or "
                    '{"prompt": ..., "id": ...}, a line; the id defaults to the 0-based index '
                    "among the prompts) and appends one result line per prompt to OUT as it "
                    "finishes. Rerun the same command to resume: ids OUT holds a success for "
                    "are skipped, failed ones run again. With --seed S prompt i gets the i-th "
                    "seed drawn from S, as moa.run_many(prompts, seed=S). Exit status 1 when "
                    "any prompt failed.")
    b.add_argument("input", metavar="INPUT.jsonl", help="the prompts ('-': stdin)")
    b.add_argument("-o", "--output", metavar="OUT.jsonl", required=True,
                   help="where the results go (appended; read first to resume)")
    b.add_argument("--concurrency", type=_positive, default=4,
                   help="prompts run at once (default: 4)")
    _run_options(b)
    b.set_defaults(handler=batch_command)

    t = sub.add_parser(
        "trace", help="show a saved run (moa run --json, or a moa batch line) as a tree",
        description="Shows a run saved by `moa run --json FILE` (or line N of a `moa batch` "
                    "output with --line N) as a tree: steps, calls, tokens, cost, errors and "
                    "the judges' raw replies.")
    t.add_argument("file", metavar="FILE")
    t.add_argument("--line", type=_positive, default=None,
                   help="the line of a batch output (JSONL) to show, counting from 1")
    t.add_argument("--full", action="store_true", help="show every call's text in full")
    t.add_argument("--prices", metavar="FILE", help="a JSON price table over the defaults")
    t.set_defaults(handler=trace_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # A reply or a saved file holding text the terminal cannot encode is shown escaped,
        # never a UnicodeEncodeError halfway through the output.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"moa: {exc}", file=sys.stderr)
        return 2
    except MoaError as exc:
        print(f"moa: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("moa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
