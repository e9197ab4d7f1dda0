"""Inspecting a run: every step's outputs, calls, tokens and time, from the history.

``run`` returns ``(result, history)``; the history holds one record per step, in pipeline
order, with every model call the step made. Rank keeps the judge's two best proposals, so
you can see in the history how many responses each step passed on.

    export GROQ_API_KEY=gsk_...
    python examples/with_history.py ["your question"]
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import exit_on_missing_extra, fmt_tokens, prompt_from, require_key

from moa import Aggregate, History, Propose, Rank, Shuffle, Step, run_sync
from moa.clients import litellm_client

MODEL = "llama-3.3-70b-versatile"
PROMPT = "What makes a good API design?"


def build_pipeline() -> Step:
    """Four samples, shuffled, the best two kept by a judge, then aggregated."""
    return (
        Propose([MODEL] * 4, temp=0.7, max_tokens=256)
        | Shuffle()
        | Rank(MODEL, n=2)
        | Aggregate(MODEL, max_tokens=512)
    )


def _sum(values: list[int | None]) -> int | None:
    return None if None in values else sum(values)  # type: ignore[arg-type]


def format_history(history: History) -> str:
    """One line per step (its expression, outputs, calls, tokens, time), each call indented
    beneath it, any notes the step left, and the run's totals."""
    lines = []
    for i, step in enumerate(history, 1):
        tokens_in = fmt_tokens(_sum([c.input_tokens for c in step.calls]))
        tokens_out = fmt_tokens(_sum([c.output_tokens for c in step.calls]))
        lines.append(
            f"{i}. {step.step}\n"
            f"   {len(step.inputs)} in -> {len(step.outputs)} outputs | {len(step.calls)} calls"
            f" | {tokens_in} tokens in / {tokens_out} out | {step.duration:.2f}s"
        )
        for call in step.calls:
            status = "ok" if call.ok else f"FAILED after {call.attempts} attempts: {call.error}"
            lines.append(
                f"     {call.model}: {call.latency:.2f}s | "
                f"{fmt_tokens(call.input_tokens)} in / "
                f"{fmt_tokens(call.output_tokens)} out | {status}"
            )
        lines.extend(f"     note: {note}" for note in step.notes)
    lines.append(
        f"Total: {len(history)} steps, {history.total_calls} calls "
        f"({len(history.failed_calls)} failed), {fmt_tokens(history.input_tokens)} tokens in / "
        f"{fmt_tokens(history.output_tokens)} out, {history.wall_time:.2f}s, seed {history.seed}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    require_key("GROQ_API_KEY")  # LiteLLM reads it from the environment
    with exit_on_missing_extra():
        client = litellm_client(prefix="groq/")  # LiteLLM names Groq's models groq/<model>

    pipeline = build_pipeline()
    print(f"Pipeline: {pipeline!r}\n")
    result, history = run_sync(pipeline, prompt_from(argv, PROMPT), client)
    print(result)
    print()
    print(format_history(history))


if __name__ == "__main__":
    main()
