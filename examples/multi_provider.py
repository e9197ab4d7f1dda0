"""Mixing providers: OpenAI and Anthropic models in one pipeline, routed by model name.

Shuffle() puts the proposals in a random order before the aggregator reads them, so it cannot
favour whichever provider happens to come first.

    export OPENAI_API_KEY=sk-...
    export ANTHROPIC_API_KEY=sk-ant-...
    python examples/multi_provider.py ["your question"]
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import exit_on_missing_extra, print_summary, prompt_from, require_keys

from moa import Aggregate, Propose, Shuffle, Step, run_sync
from moa.clients import anthropic_client, openai_client, route

PROPOSERS = ["gpt-5-nano-2025-08-07", "claude-sonnet-4-5", "gpt-5-nano-2025-08-07"]
AGGREGATOR = "claude-sonnet-4-5"
PROMPT = "What are the most promising approaches to aligning AI systems with human values?"


def build_pipeline() -> Step:
    """Two providers propose, the order is shuffled, Claude aggregates."""
    return Propose(PROPOSERS) | Shuffle() | Aggregate(AGGREGATOR)


def main(argv: Sequence[str] | None = None) -> None:
    openai_key, anthropic_key = require_keys("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    # route() sends each call to the client whose prefix starts the model name.
    with exit_on_missing_extra():
        client = route(
            {
                "claude": anthropic_client(api_key=anthropic_key),
                "gpt": openai_client(api_key=openai_key),
            }
        )
    pipeline = build_pipeline()
    print(f"Pipeline: {pipeline!r}\n")
    result, history = run_sync(pipeline, prompt_from(argv, PROMPT), client)
    for call in history.calls:
        print(f"  {call.model}: {call.latency:.2f}s {'ok' if call.ok else call.error}")
    print()
    print_summary(result, history)


if __name__ == "__main__":
    main()
