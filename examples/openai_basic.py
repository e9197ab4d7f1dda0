"""Basic Mixture-of-Agents with OpenAI: three proposals, one aggregator.

    export OPENAI_API_KEY=sk-...
    python examples/openai_basic.py ["your question"]

The pipeline is a value: ``build_pipeline()`` returns it and you can print, compare or reuse
it. Running it needs the OpenAI SDK: ``pip install 'moa-dsl[openai]'``.
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import exit_on_missing_extra, print_summary, prompt_from, require_key

from moa import Aggregate, Propose, Step, run_sync
from moa.clients import openai_client

MODEL = "gpt-5-nano-2025-08-07"
PROMPT = "What are the key differences between Python and Rust?"


def build_pipeline() -> Step:
    """Three samples of one OpenAI model, combined by the same model."""
    return Propose([MODEL, MODEL, MODEL], temp=0.7) | Aggregate(MODEL)


def main(argv: Sequence[str] | None = None) -> None:
    key = require_key("OPENAI_API_KEY")
    with exit_on_missing_extra():
        client = openai_client(api_key=key)
    pipeline = build_pipeline()
    print(f"Pipeline: {pipeline!r}\n")
    result, history = run_sync(pipeline, prompt_from(argv, PROMPT), client)
    print_summary(result, history)


if __name__ == "__main__":
    main()
