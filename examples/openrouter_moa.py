"""The paper's layered MoA through OpenRouter: one API key, models from several vendors.

Wang et al. (2024), "Mixture-of-Agents Enhances Large Language Model Capabilities",
arXiv:2406.04692. Layer 1 proposes, layer 2 has every model rewrite the answer after reading
all proposals, and one model aggregates the result.

    export OPENROUTER_API_KEY=sk-or-...
    python examples/openrouter_moa.py ["your question"]
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import exit_on_missing_extra, print_summary, prompt_from, require_key

from moa import Aggregate, Propose, Step, Synthesize, run_sync
from moa.clients import openai_client

# Modern open models standing in for the Together MoA proposers.
PROPOSERS = [
    "qwen/qwen-2.5-72b-instruct",
    "meta-llama/llama-3.3-70b-instruct",
    "mistralai/mixtral-8x22b-instruct",
]
AGGREGATOR = "qwen/qwen-2.5-72b-instruct"
PROMPT = "Compare and contrast the economic policies of Keynesianism and monetarism."


def build_pipeline() -> Step:
    """Propose -> Synthesize -> Aggregate over three OpenRouter models."""
    return (
        Propose(PROPOSERS, temp=0.7, max_tokens=512)
        | Synthesize(PROPOSERS, temp=0.7, max_tokens=512)
        | Aggregate(AGGREGATOR)
    )


def main(argv: Sequence[str] | None = None) -> None:
    key = require_key("OPENROUTER_API_KEY")
    # OpenRouter speaks OpenAI's Chat Completions API, so the OpenAI client reaches it.
    with exit_on_missing_extra():
        client = openai_client(base_url="https://openrouter.ai/api/v1", api_key=key)
    pipeline = build_pipeline()
    print(f"Pipeline: {pipeline!r}\n")
    result, history = run_sync(pipeline, prompt_from(argv, PROMPT), client)
    print_summary(result, history)


if __name__ == "__main__":
    main()
