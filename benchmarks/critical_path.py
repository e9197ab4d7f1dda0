"""How close one run comes to its critical path, against mixture-llm.

The pipeline is ``Propose(6) | Synthesize(6) | Synthesize(6) | Aggregate`` (19 calls in 4
layers) and the client sleeps 50 ms per call (``anyio.sleep``) and answers ``"ok"``. Each layer
waits for all of its calls, so no schedule can finish a run in less than the critical path,
4 layers x 50 ms = 200 ms. The figure is the median run's wall time divided by 200 ms
(target: <= 1.01).

Contenders, all in ONE process and ONE event loop (anyio, backend="asyncio"), the same client:

  floor          four ``anyio.sleep(0.05)`` in a row: what the event loop's timers give with
                 no framework at all (the best any contender can do here)
  moa-defaults   await moa.run(p, prompt, client, seed=1)
  moa-cap+to+rt  the same with max_concurrency=64, timeout=30, retry=moa.Retry()
  mixture-llm    mixture_llm.run([Propose, Synthesize, Synthesize, Aggregate], ...), the
                 package moa grew from (skipped, with a note, when not installed)
  moa@REV-...    with ``--baseline REV``: the two moa contenders as moa was at git revision
                 REV, imported beside this checkout's: before and after, side by side

Every run is timed alone with ``time.perf_counter``; the contenders take turns round-robin,
the order rotated each turn, so drift in the machine falls on all of them alike.

    python benchmarks/critical_path.py                 # 20 runs per contender (~20 s)
    python benchmarks/critical_path.py --runs 50 --latency 0.1
    python benchmarks/critical_path.py --baseline ee4ce2a   # against that commit
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _common import (
    AGGREGATOR,
    MODELS,
    PROMPT,
    SEED_MISSING,
    median,
    moa_at,
    print_header,
    quantile,
    seed_contender,
)

import moa

LAYERS = 4
CALLS_PER_RUN = 6 + 6 + 6 + 1


class SleepingClient:
    """Sleeps ``latency`` seconds per call and answers "ok"; notes when each call started and
    ended (``time.perf_counter``), so a run's time splits into the calls' sleeps and the rest."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.spans: list[tuple[float, float]] = []

    @property
    def calls(self) -> int:
        return len(self.spans)

    async def __call__(self, *, model, messages, temp, max_tokens):
        t0 = time.perf_counter()
        await anyio.sleep(self.latency)
        self.spans.append((t0, time.perf_counter()))
        return "ok", 1, 1


def split(
    spans: list[tuple[float, float]], layer_sizes: tuple[int, ...], wall: float, latency: float
) -> tuple[float, float]:
    """(timer overshoot, everything else) in one run, in seconds.

    A layer ends when its last call ends; the call that ended last is the layer's critical
    call. Its span past ``latency`` is the event loop's timer overshoot (asyncio wakes a sleep
    up to about a millisecond late); the run's wall time minus the critical calls' spans is
    the framework's share: starting the calls, collecting them, building the next messages,
    history. The spans are in completion order, so a layer's spans are the next k of them
    (every call of a layer ends before any call of the next one starts)."""
    over = inside = 0.0
    i = 0
    for k in layer_sizes:
        start, end = max(spans[i : i + k], key=lambda s: s[1])
        over += end - start - latency
        inside += end - start
        i += k
    return over, wall - inside


Contender = tuple[str, Callable[[SleepingClient], Awaitable[str]]]
LAYER_SIZES = {"floor": (1, 1, 1, 1)}  # the rest: (6, 6, 6, 1)


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

    return [(f"{label}-defaults", defaults), (f"{label}-cap+to+rt", all_on)]


def contenders(
    latency: float, baseline_module: Any = None, baseline: str = ""
) -> tuple[list[Contender], str | None]:
    async def floor(client):
        for _ in range(LAYERS):  # one call per layer, awaited in a row: no framework at all
            text, _, _ = await client(model=AGGREGATOR, messages=[], temp=0.7, max_tokens=1)
        return text

    out: list[Contender] = [("floor", floor), *moa_contenders(moa, "moa")]
    if baseline_module is not None:
        out += moa_contenders(baseline_module, f"moa@{baseline}")
    seed = seed_contender()
    if seed is None:
        return out, SEED_MISSING
    out.append(seed)
    return out, None


async def measure(
    cands: list[Contender], runs: int, latency: float
) -> dict[str, list[tuple[float, float, float]]]:
    """Per run and contender: (wall, timer overshoot, the rest), in seconds."""
    for name, fn in cands:  # warm up once, and check each makes the calls it should
        client = SleepingClient(latency)
        text = await fn(client)
        want = sum(LAYER_SIZES.get(name, (6, 6, 6, 1)))
        if client.calls != want or text != "ok":
            raise SystemExit(
                f"{name}: made {client.calls} calls and returned {text!r}; "
                f"expected {want} calls and 'ok'"
            )
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in cands}
    perf = time.perf_counter
    for r in range(runs):
        k = r % len(cands)
        for name, fn in cands[k:] + cands[:k]:
            gc.collect()
            client = SleepingClient(latency)
            t0 = perf()
            await fn(client)
            wall = perf() - t0
            over, rest = split(client.spans, LAYER_SIZES.get(name, (6, 6, 6, 1)), wall, latency)
            samples[name].append((wall, over, rest))
    return samples


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="timed runs per contender (default 20)")
    ap.add_argument(
        "--latency",
        type=float,
        default=0.05,
        help="seconds the client sleeps per call (default 0.05)",
    )
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="also run moa as it was at git revision REV, in the same loop (before/after)",
    )
    args = ap.parse_args(argv)
    if args.runs < 1 or not args.latency > 0:
        ap.error("need runs >= 1 and latency > 0")
    critical = LAYERS * args.latency
    before, short = moa_at(args.baseline) if args.baseline else (None, "")
    cands, note = contenders(args.latency, before, short)
    print_header(
        f"pipeline: Propose(6) | Synthesize(6) | Synthesize(6) | Aggregate(1) = {CALLS_PER_RUN} "
        f"calls in {LAYERS} layers; client sleeps {args.latency * 1e3:g} ms per call "
        f"(anyio.sleep), asyncio backend",
        f"critical path: {LAYERS} x {args.latency * 1e3:g} ms = {critical * 1e3:g} ms; "
        f"{args.runs} timed runs per contender, round-robin",
        *([f"baseline: moa at {short} ({args.baseline})"] if before is not None else []),
        *([note] if note else []),
    )

    t0 = time.perf_counter()
    samples = anyio.run(measure, cands, args.runs, args.latency, backend="asyncio")
    elapsed = time.perf_counter() - t0

    walls = {name: [w for w, _, _ in xs] for name, xs in samples.items()}
    med = {name: median(xs) for name, xs in walls.items()}
    over = {name: median([o for _, o, _ in xs]) for name, xs in samples.items()}
    rest = {name: median([r for _, _, r in xs]) for name, xs in samples.items()}
    original = med.get("mixture-llm")
    width = max(len(name) for name, _ in cands) + 2
    header = (
        f"{'contender':<{width}}{'median ms':>11}{'p10-p90 ms':>15}{'x critical path':>17}"
        f"{'x floor':>9}{'x mixture-llm':>15}{'timers ms':>11}{'framework ms':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, _ in cands:
        xs = walls[name]
        spread = f"{quantile(xs, 0.1) * 1e3:.1f}-{quantile(xs, 0.9) * 1e3:.1f}"
        vs = f"{med[name] / original:.4f}" if original else "n/a"
        print(
            f"{name:<{width}}{med[name] * 1e3:>11.2f}{spread:>15}{med[name] / critical:>17.4f}"
            f"{med[name] / med['floor']:>9.4f}{vs:>15}{over[name] * 1e3:>11.2f}"
            f"{rest[name] * 1e3:>14.2f}"
        )
    print(
        "\ntimers ms: how late the event loop woke the layers' critical calls, summed over the "
        "4 layers\nframework ms: wall time outside the critical calls' sleeps (start, collect, "
        "next messages, history)\n(medians of each column on its own, so they need not add "
        "up to the median wall exactly)"
    )
    ratio = med["moa-defaults"] / critical
    print(
        f"\ntarget: moa-defaults wall / critical path <= 1.01: "
        f"{'met' if ratio <= 1.01 else 'NOT met'} ({ratio:.4f}; the floor alone is "
        f"{med['floor'] / critical:.4f})"
    )
    if before is not None:
        for kind in ("defaults", "cap+to+rt"):
            a, b = f"moa-{kind}", f"moa@{short}-{kind}"
            print(
                f"{a} / {b}: wall {med[a] / med[b]:.4f}, framework ms "
                f"{rest[a] * 1e3:.2f} vs {rest[b] * 1e3:.2f} (after / before)"
            )
    print(f"(measured in {elapsed:.1f} s)")


if __name__ == "__main__":
    main()
