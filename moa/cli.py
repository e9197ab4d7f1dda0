"""The ``moa`` command line. ``moa demo`` runs a real Self-MoA offline on the embedded model."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from . import Aggregate, History, MoaError, Propose, run

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
        return clients.local_client(), model or spec.model
    key = os.environ.get(spec.key_env or "")
    if not key:
        raise UsageError(f"--provider {provider} needs {spec.key_env} set in the environment")
    if spec.kind == "anthropic":
        return clients.anthropic_client(api_key=key, base_url=base_url), model or spec.model
    return clients.openai_client(base_url=base_url or spec.base_url, api_key=key), model or spec.model


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


async def _run_and_close(pipeline, prompt, client, seed, timeout):  # type: ignore[no-untyped-def]
    """``moa.run``, then close the client's connections (the HTTP clients have ``aclose``), so
    none is left open when the event loop ends."""
    try:
        return await run(pipeline, prompt, client, seed=seed, timeout=timeout)
    finally:
        aclose = getattr(client, "aclose", None)
        if aclose is not None:
            await aclose()


def demo(args: argparse.Namespace) -> int:
    client, model = make_client(args.provider, args.base_url, args.model)
    pipeline = Propose([model] * args.samples, temp=0.7, max_tokens=args.max_tokens) | Aggregate(
        model, temp=0.3, max_tokens=args.max_tokens
    )
    print(f"moa demo: a Self-MoA on {model} ({args.provider if not args.base_url else args.base_url})")
    print(f"pipeline: {pipeline!r}")
    print(f"prompt:   {args.prompt}")
    result, history = anyio.run(_run_and_close, pipeline, args.prompt, client, args.seed,
                                args.timeout)
    _print_history(history, result)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
