"""``moa demo`` and ``moa run``: one prompt through a pipeline, the answer alone on stdout,
progress and a summary on stderr, the whole run in ``--json`` for ``moa trace``."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any, TextIO, cast

import anyio

from .._cache import Cache
from .._client import unicode_error
from .._conversation import Prompt, prompt_of
from .._cost import Prices, cost
from .._events import RunFinished, TextChunk
from .._history import History
from .._llm_steps import Aggregate, Propose
from .._options import RunOptions
from .._pipeline import Step
from .._plan import plan
from .._run import run
from .._run import run_stream as moa_run_stream
from ..clients._errors import redact
from ..errors import BudgetExceededError, MoaError
from . import providers
from .common import UsageError, check_writable, close_client, dumps, loads, tokens
from .options import (
    budget_line,
    build_pipeline,
    cache_namespace,
    cost_dict,
    load_prices,
    open_cache,
    parse_expression,
    prices_for,
    run_options,
    saved_prices,
)
from .otel import checked, exporting
from .progress import progress_for
from .providers import as_agent, model_option

__all__ = ("DEMO_PROMPT", "demo", "run_command")


DEMO_PROMPT = "Why is the sky blue? Answer in two sentences."


def _print_history(history: History, result: str, out: TextIO | None = None) -> None:
    out = sys.stdout if out is None else out  # looked up now, so a redirected stdout is used
    width = 88
    proposals = history.steps[0]
    print(f"\nProposals ({len(proposals.outputs)}):", file=out)
    for i, call in enumerate(proposals.calls, 1):
        body = call.text if call.ok else f"[failed: {call.error}]"
        print(
            textwrap.indent(textwrap.fill(f"{i}. {body}", width, subsequent_indent="   "), "  "),
            file=out,
        )
    print("\nFinal answer:", file=out)
    print(textwrap.indent(textwrap.fill(result, width), "  "), file=out)
    tokens_in = "unknown" if history.input_tokens is None else history.input_tokens
    tokens_out = "unknown" if history.output_tokens is None else history.output_tokens
    print(
        f"\ncalls: {history.total_calls} ({len(history.failed_calls)} failed)   "
        f"tokens: {tokens_in} in, {tokens_out} out   wall time: {history.wall_time:.2f} s",
        file=out,
    )
    latencies = ", ".join(f"{c.latency:.2f}" for c in history.calls)
    print(f"per-call latency (s, queueing included): {latencies}", file=out)


async def _run_and_close(
    pipeline: Step, prompt: Prompt, client: Any, options: RunOptions
) -> tuple[str, History, bool]:
    """``moa.run``, then close the client's connections; what ``run`` returns, and False (no
    chunk of the answer was written as it came)."""
    try:
        result, history = await run(pipeline, prompt, client, options)
        return result, history, False
    finally:
        await close_client(client)


async def _stream_and_close(
    pipeline: Step, prompt: Prompt, client: Any, options: RunOptions, out: TextIO | None = None
) -> tuple[str, History, bool]:
    """``moa.run_stream``: the final answer's chunks written to ``out`` as they arrive (the
    other events go to the options' ``on_event``); then close the client's connections.
    Returns what ``run`` returns and whether any chunk was written."""
    out = sys.stdout if out is None else out
    wrote = False
    try:
        async with moa_run_stream(pipeline, prompt, client, options) as events:
            async for event in events:
                if isinstance(event, TextChunk):
                    out.write(event.text)
                    out.flush()
                    wrote = True
                elif isinstance(event, RunFinished):
                    return event.result, event.history, wrote
    finally:
        await close_client(client)
    raise AssertionError("run_stream ended without RunFinished")  # pragma: no cover


def demo(args: argparse.Namespace) -> int:
    args.prompt = checked_prompt(args.prompt)
    agent = model_option(args)
    client, model = providers.make_client(args.provider, args.base_url, args.model)
    who = as_agent(agent, model)
    pipeline = Propose([who] * args.samples, temp=0.7, max_tokens=args.max_tokens) | Aggregate(
        who, temp=0.3, max_tokens=args.max_tokens
    )
    where = args.provider if not args.base_url else redact(args.base_url)  # no URL password
    print(f"moa demo: a Self-MoA on {model} ({where})")
    print(f"pipeline: {pipeline!r}")
    print(f"prompt:   {args.prompt}")
    result, history, _ = anyio.run(_run_and_close, pipeline, args.prompt, client, run_options(args))
    _print_history(history, result)
    return 0


def _read_prompt(args: argparse.Namespace) -> str | list[dict[str, str]]:
    messages = getattr(args, "messages", None)
    if messages is not None:
        if args.prompt is not None or args.prompt_file is not None:
            raise UsageError("give a prompt or --messages, not both")
        return _read_messages(messages)
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
        raise UsageError(
            "no prompt: give it as an argument, with --prompt-file FILE, "
            "or on stdin (echo 'question' | moa run ...)"
        )
    return checked_prompt(text)


def _read_messages(path: str) -> list[dict[str, str]]:
    """A conversation from ``path`` ('-': stdin): a JSON list of {"role", "content"} messages
    (or an object with such a list under "messages", as a chat request has it), the last the
    user's question; checked as ``run`` checks one."""
    where = f"--messages {path}"
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    try:
        doc = loads(raw)
    except ValueError as exc:
        raise UsageError(f"{where}: not JSON: {exc}") from None
    if isinstance(doc, dict) and "messages" in doc:
        doc = doc["messages"]
    if not isinstance(doc, list):
        raise UsageError(
            f'{where}: a conversation is a JSON list of {{"role", "content"}} messages'
        )
    try:
        prompt_of("moa run", doc)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {str(exc).replace('moa run(prompt): ', '', 1)}") from None
    return cast("list[dict[str, str]]", doc)


def checked_prompt(text: str) -> str:
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
        Path(path).write_text(dumps(doc, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--json {path}: {exc}") from None


def _run_document(
    history: History, result: str | None, pipeline: Step, prices: Prices, error: str | None = None
) -> dict[str, Any]:
    """What ``--json`` writes: the history, the result, the pipeline's expression, the cost."""
    doc = history.to_dict()
    doc["result"] = result
    doc["pipeline"] = repr(pipeline)
    doc["cost"] = cost_dict(cost(history, prices))
    doc["prices"] = saved_prices(prices, history)
    if error is not None:
        doc["error"] = error
    return doc


def _summary(history: History, prices: Prices) -> str:
    cached = sum(c.cached for c in history.calls)
    return (
        f"calls: {history.total_calls} ({len(history.failed_calls)} failed, {cached} cached)"
        f"   tokens: {tokens(history.input_tokens)} in, {tokens(history.output_tokens)} out"
        f"   cost: {cost(history, prices)}   wall time: {history.wall_time:.2f} s"
        f"   seed: {history.seed}"
    )


def plan_command(args: argparse.Namespace) -> int:
    """``moa plan`` (and ``moa run --plan``): the pipeline's bounds, no model called."""
    parsed = parse_expression(args.pipeline) if args.pipeline is not None else None
    check_writable("--json", args.json)
    if getattr(args, "messages", None) is not None:
        raise UsageError("--plan takes one prompt; a plan of a conversation is not made yet")
    given = args.prompt is not None or args.prompt_file is not None
    prompt = _read_prompt(args) if given else None
    assert prompt is None or isinstance(prompt, str)
    load_prices(args.prices)
    agent = model_option(args)
    # No client: a plan asks nothing (and needs no key); the model is --model's or the
    # provider's default.
    model = args.model or providers.PROVIDERS[args.provider].model
    pipeline = build_pipeline(args, parsed, as_agent(agent, model))
    bounds = plan(pipeline, prompt, prices=prices_for(args, pipeline), latency=args.latency)
    print(bounds.table())
    if args.json is not None:
        _write_json(args.json, bounds.to_dict())
    return 0


def run_command(args: argparse.Namespace) -> int:
    if args.plan:
        return plan_command(args)
    parsed = parse_expression(args.pipeline) if args.pipeline is not None else None
    check_writable("--json", args.json)
    prompt = _read_prompt(args)
    load_prices(args.prices)  # a bad price file is a usage error before anything runs
    if args.otlp is not None:
        checked(args.otlp)  # and a bad --otlp, before a model loads
    agent = model_option(args)
    cache = open_cache(args.cache, cache_namespace(args))
    try:
        client, model = providers.make_client(args.provider, args.base_url, args.model)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    pipeline = build_pipeline(args, parsed, as_agent(agent, model))
    prices = prices_for(args, pipeline)
    try:
        # The answer is out before the spans are sent (the block's end waits for that).
        with exporting(args.otlp, "moa") as tracer_provider:
            return _run(args, pipeline, prompt, client, cache, prices, tracer_provider)
    finally:
        if cache is not None:
            cache.close()


def _run(
    args: argparse.Namespace,
    pipeline: Step,
    prompt: str | list[dict[str, str]],
    client: Any,
    cache: Cache | None,
    prices: Prices,
    tracer_provider: Any,
) -> int:
    display = progress_for(args, pipeline)
    options = run_options(
        args, cache=cache, on_event=display.handler, prices=prices, tracer_provider=tracer_provider
    )
    try:
        with display:
            result, history, streamed = anyio.run(
                _stream_and_close if args.stream else _run_and_close,
                pipeline,
                prompt,
                client,
                options,
            )
    except MoaError as exc:
        if args.stream:
            print(flush=True)  # end a partly streamed answer's line before the error
        if args.json is not None and exc.history is not None:
            _write_json(args.json, _run_document(exc.history, None, pipeline, prices, str(exc)))
        if isinstance(exc, BudgetExceededError) and not args.quiet:
            if options.budget is not None:
                print(budget_line(options.budget), file=sys.stderr)
            if exc.partial is not None:
                print(f"the best answer the run had: {exc.partial}", file=sys.stderr)
        raise
    # Streamed, the answer is already out (a pipeline whose last step does not write the
    # answer, such as a transform, streams nothing: it is printed whole, as without --stream).
    print("" if streamed else result, flush=True)
    if args.json is not None:
        _write_json(args.json, _run_document(history, result, pipeline, prices))
    if not args.quiet:
        print(_summary(history, prices), file=sys.stderr)
        if options.budget is not None:
            print(budget_line(options.budget), file=sys.stderr)
    return 0
