"""Per-call overhead of moa's executor, against a hand-written anyio loop and mixture-llm.

The client answers instantly (no sleep, no I/O), so everything measured is the framework:
building messages, scheduling tasks, limits, timeouts, retry set-up, history. The pipeline is

    Propose(6 models) | Synthesize(6) | Synthesize(6) | Aggregate(1)      -> 19 calls per run

Contenders, all in ONE process and ONE asyncio event loop (anyio, backend="asyncio"):

  moa-defaults   await moa.run(p, prompt, client, seed=1)
  moa-cap+to+rt  the same with max_concurrency=64, timeout=30, retry=moa.Retry()
  moa-budget-... moa-defaults under a moa.Budget never reached, in calls alone and in calls
                 and dollars: what keeping a budget costs per call (this checkout only)
  moa-traced     moa-defaults traced to an OpenTelemetry SDK provider (batched to an exporter
                 that drops the spans); -traced+content records the messages too (with
                 moa-dsl[otel]; moa-defaults has no tracer provider configured: tracing off)
  anyio-baseline the same 19 calls in 4 layers with anyio task groups, the same kind of
                 messages (system + user with numbered responses), no history, no retries
  mixture-llm    mixture_llm.run([Propose, Synthesize, Synthesize, Aggregate], ...), the
                 package moa grew from (skipped, with a note, when not installed)
  moa@REV-...    with ``--baseline REV``: the two moa contenders as moa was at git revision
                 REV, imported beside this checkout's: before and after, side by side

Every run is timed alone with ``time.perf_counter``; the contenders take turns round-robin
(``--rounds`` rounds, the order rotated each round, ``--runs`` runs per contender in all) so
drift in the machine (frequency, other load) falls on all of them alike. The figure is the
median run time divided by 19, in microseconds per call.

    python benchmarks/overhead.py                    # defaults
    python benchmarks/overhead.py --runs 5000 --rounds 50
    python benchmarks/overhead.py --baseline ee4ce2a   # this checkout against that commit
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _common import (
    AGGREGATOR,
    MODELS,
    PROMPT,
    SEED_MISSING,
    moa_at,
    print_header,
    seed_contender,
)  # benchmarks/ is on sys.path as a script

# Run from a checkout without installing: the repository root holds the moa package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import moa

CALLS_PER_RUN = 6 + 6 + 6 + 1

SYSTEM = (
    "You are given several responses to the user's question. Some may be wrong or biased. "
    "Write one new, better response: keep what is correct, fix what is wrong, add what is "
    "missing. Answer the question directly and do not mention the responses."
)


class CountingClient:
    """The instant client, counting its calls so every contender is checked to make 19."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, *, model, messages, temp, max_tokens):
        self.calls += 1
        return "ok", 1, 1


# -- (c) the hand-written anyio baseline --------------------------------------------------------
def _numbered(responses: list[str]) -> str:
    return "\n\n".join(f"Response {i}:\n{text}" for i, text in enumerate(responses, 1))


async def _layer(client, models: list[str], messages: list[dict[str, str]]) -> list[str]:
    if len(models) == 1:
        text, _, _ = await client(model=models[0], messages=messages, temp=0.7, max_tokens=2048)
        return [text]
    out: list[str] = [""] * len(models)

    async def one(i: int, model: str) -> None:
        text, _, _ = await client(model=model, messages=messages, temp=0.7, max_tokens=2048)
        out[i] = text

    async with anyio.create_task_group() as tg:
        for i, m in enumerate(models):
            tg.start_soon(one, i, m)
    return out


def _with_responses(prompt: str, responses: list[str]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{_numbered(responses)}\n\nQuestion:\n{prompt}"},
    ]


async def anyio_baseline(prompt: str, client) -> str:
    responses = await _layer(client, MODELS, [{"role": "user", "content": prompt}])
    responses = await _layer(client, MODELS, _with_responses(prompt, responses))
    responses = await _layer(client, MODELS, _with_responses(prompt, responses))
    responses = await _layer(client, [AGGREGATOR], _with_responses(prompt, responses))
    return responses[0]


# -- the contenders -----------------------------------------------------------------------------
Contender = tuple[str, Callable[[CountingClient], Awaitable[str]]]


def moa_contenders(m: Any, label: str) -> list[Contender]:
    """moa (the module ``m``, this checkout's or an earlier one's) with no options, and with a
    cap, a timeout and a retry policy."""
    p = m.Propose(MODELS) | m.Synthesize(MODELS) | m.Synthesize(MODELS) | m.Aggregate(AGGREGATOR)
    retry = m.Retry()

    async def defaults(client):
        text, _ = await m.run(p, PROMPT, client, seed=1)
        return text

    async def all_on(client):
        text, _ = await m.run(
            p, PROMPT, client, seed=1, max_concurrency=64, timeout=30, retry=retry
        )
        return text

    out = [(f"{label}-defaults", defaults), (f"{label}-cap+to+rt", all_on)]
    if hasattr(m, "Budget"):
        # One budget for all the runs (a Budget is shared, as Limits are), never reached:
        # in calls alone, and in calls and dollars (each try priced twice: charged, settled).
        prices = {name: (1.0, 1.0) for name in (*MODELS, AGGREGATOR)}
        for kind, budget in (
            ("budget-calls", m.Budget(calls=10**12)),
            ("budget-usd", m.Budget(calls=10**12, usd=10.0**9, prices=prices)),
        ):

            async def budgeted(client, budget=budget):
                text, _ = await m.run(p, PROMPT, client, seed=1, budget=budget)
                return text

            out.append((f"{label}-{kind}", budgeted))
    tracer_provider = _sdk_provider() if hasattr(m, "Tracing") else None
    if tracer_provider is not None:
        # An application's OpenTelemetry set-up (the SDK, a batch processor, an exporter that
        # drops what it gets): what tracing costs per call, without and with content.
        for kind, content in (("traced", False), ("traced+content", True)):
            tracing = m.Tracing(tracer_provider=tracer_provider, content=content)

            async def traced(client, tracing=tracing):
                text, _ = await m.run(p, PROMPT, client, seed=1, tracing=tracing)
                return text

            out.append((f"{label}-{kind}", traced))
    return out


def _sdk_provider() -> Any:
    """An OpenTelemetry SDK tracer provider whose spans are batched to an exporter that drops
    them; None without the SDK (``moa-dsl[otel]``)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return None

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    return provider


def contenders(
    baseline_module: Any = None, baseline: str = ""
) -> tuple[list[Contender], str | None]:
    """The contenders, and a note when mixture-llm could not be imported."""

    async def by_hand(client):
        return await anyio_baseline(PROMPT, client)

    out: list[Contender] = [("anyio-baseline", by_hand), *moa_contenders(moa, "moa")]
    if baseline_module is not None:
        out += moa_contenders(baseline_module, f"moa@{baseline}")
    seed = seed_contender()
    if seed is None:
        return out, SEED_MISSING
    out.append(seed)
    return out, None


async def measure(
    cands: list[Contender], runs: int, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Per-run seconds for every contender, taken round-robin."""
    for name, fn in cands:  # warm up, and check each makes exactly 19 calls
        for _ in range(warmup):
            client = CountingClient()
            text = await fn(client)
            if client.calls != CALLS_PER_RUN or text != "ok":
                raise SystemExit(
                    f"{name}: made {client.calls} calls and returned {text!r}; "
                    f"expected {CALLS_PER_RUN} calls and 'ok'"
                )
    samples: dict[str, list[float]] = {name: [] for name, _ in cands}
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    perf = time.perf_counter
    for r, n in enumerate(per_round):
        k = r % len(cands)
        order = cands[k:] + cands[:k]  # rotate who goes first
        for name, fn in order:
            gc.collect()
            out = samples[name]
            client = CountingClient()
            for _ in range(n):
                t0 = perf()
                await fn(client)
                out.append(perf() - t0)
    return samples


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--runs", type=int, default=3000, help="timed runs per contender, in all (default 3000)"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=30,
        help="round-robin rounds the runs are split into (default 30)",
    )
    ap.add_argument(
        "--warmup", type=int, default=200, help="untimed runs per contender first (default 200)"
    )
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="also run moa as it was at git revision REV, in the same loop (before/after)",
    )
    args = ap.parse_args(argv)
    if args.runs < 1 or args.rounds < 1 or args.rounds > args.runs or args.warmup < 1:
        ap.error("need runs >= rounds >= 1 and warmup >= 1")

    before, short = moa_at(args.baseline) if args.baseline else (None, "")
    cands, note = contenders(before, short)
    print_header(
        f"pipeline: Propose(6) | Synthesize(6) | Synthesize(6) | Aggregate(1) = "
        f"{CALLS_PER_RUN} calls/run, instant client, asyncio backend",
        f"sampling: {args.runs} timed runs per contender in {args.rounds} round-robin rounds, "
        f"{args.warmup} warm-up runs each",
        *([f"baseline: moa at {short} ({args.baseline})"] if before is not None else []),
        *([note] if note else []),
    )

    t0 = time.perf_counter()
    samples = anyio.run(measure, cands, args.runs, args.rounds, args.warmup, backend="asyncio")
    elapsed = time.perf_counter() - t0

    us = {name: [s * 1e6 / CALLS_PER_RUN for s in xs] for name, xs in samples.items()}
    med = {name: statistics.median(xs) for name, xs in us.items()}
    base = med["anyio-baseline"]
    original = med.get("mixture-llm")
    width = max(len(name) for name, _ in cands) + 2
    header = (
        f"{'contender':<{width}}{'median us/call':>16}{'p10-p90 us/call':>18}"
        f"{'x anyio-baseline':>18}{'x mixture-llm':>15}"
    )
    print(header)
    print("-" * len(header))
    for name, _ in cands:
        q = statistics.quantiles(us[name], n=10)
        spread = f"{q[0]:.2f}-{q[-1]:.2f}"
        vs = f"{med[name] / original:.2f}" if original else "n/a"
        print(f"{name:<{width}}{med[name]:>16.2f}{spread:>18}{med[name] / base:>18.2f}{vs:>15}")
    if before is not None:
        print()
        for kind in ("defaults", "cap+to+rt"):
            ratio = med[f"moa-{kind}"] / med[f"moa@{short}-{kind}"]
            print(f"moa-{kind} / moa@{short}-{kind}: {ratio:.3f} (after / before)")
    for kind in ("budget-calls", "budget-usd", "traced", "traced+content"):
        if f"moa-{kind}" in med:
            print(f"moa-{kind} / moa-defaults: {med[f'moa-{kind}'] / med['moa-defaults']:.3f}")
    print(f"\n(measured in {elapsed:.1f} s)")


if __name__ == "__main__":
    main()
