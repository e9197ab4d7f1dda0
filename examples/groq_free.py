"""Free experimentation on Groq's free tier, through LiteLLM.

Dropout(0.2) drops each proposal with probability 0.2 (never all of them) before the
aggregator reads them, so the answer does not hinge on any single proposer. ``free_self_moa``
is the Self-MoA variant with one Groq model sampled four times.

    export GROQ_API_KEY=gsk_...
    python examples/groq_free.py ["your question"]

Free-tier rate limits apply (see console.groq.com/docs/rate-limits); the list of free models
changes, so check it if a call is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import exit_on_missing_extra, print_summary, prompt_from, require_key

from moa import Aggregate, Dropout, Propose, Step, run_sync
from moa.clients import litellm_client
from moa.recipes import self_moa

GROQ_FREE = [
    "llama-3.3-70b-versatile",
    "llama-3.1-8b-instant",
    "qwen/qwen3-32b",
    "meta-llama/llama-4-scout-17b-16e-instruct",
]
AGGREGATOR = "llama-3.3-70b-versatile"
PROMPT = "What are the most effective strategies for learning a new programming language?"


def build_pipeline() -> Step:
    """Four free models propose, a fifth of the proposals are dropped, Llama aggregates."""
    return Propose(GROQ_FREE, temp=0.7, max_tokens=512) | Dropout(0.2) | Aggregate(AGGREGATOR)


def free_self_moa() -> Step:
    """Self-MoA on Groq: ``Propose([AGGREGATOR] * 4, temp=0.7) | Aggregate(AGGREGATOR)``."""
    return self_moa(AGGREGATOR, n=4, temp=0.7)


def main(argv: Sequence[str] | None = None) -> None:
    require_key("GROQ_API_KEY")  # LiteLLM reads it from the environment
    with exit_on_missing_extra():
        client = litellm_client(prefix="groq/")  # LiteLLM names Groq's models groq/<model>
    prompt = prompt_from(argv, PROMPT)
    for name, pipeline in (("MoA", build_pipeline()), ("Self-MoA", free_self_moa())):
        print(f"== {name}: {pipeline!r}\n")
        result, history = run_sync(pipeline, prompt, client)
        print_summary(result, history)
        print()


if __name__ == "__main__":
    main()
