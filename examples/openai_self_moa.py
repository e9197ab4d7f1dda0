"""Self-MoA with OpenAI: one model sampled six times, then aggregated by itself.

Li et al. (2025), "Rethinking Mixture-of-Agents", arXiv:2502.00674: sampling one strong model
several times can beat a mixture of different models.

    export OPENAI_API_KEY=sk-...
    python examples/openai_self_moa.py ["your question"]
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import exit_on_missing_extra, print_summary, prompt_from, require_key

from moa import Step, run_sync
from moa.clients import openai_client
from moa.recipes import self_moa

MODEL = "gpt-5-nano-2025-08-07"
SAMPLES = 6
PROMPT = "Explain the implications of quantum computing for cryptography."


def build_pipeline() -> Step:
    """``Propose([MODEL] * 6, temp=0.7) | Aggregate(MODEL)``, via the recipe."""
    return self_moa(MODEL, n=SAMPLES, temp=0.7)


def main(argv: Sequence[str] | None = None) -> None:
    key = require_key("OPENAI_API_KEY")
    with exit_on_missing_extra():
        client = openai_client(api_key=key)
    pipeline = build_pipeline()
    print(f"Pipeline: {pipeline!r}\n")
    result, history = run_sync(pipeline, prompt_from(argv, PROMPT), client)
    # The proposals are in the first step's outputs; show how the samples differ.
    for i, text in enumerate(history[0].outputs, 1):
        print(f"  sample {i}: {text[:100].replace(chr(10), ' ')}...")
    print()
    print_summary(result, history)


if __name__ == "__main__":
    main()
