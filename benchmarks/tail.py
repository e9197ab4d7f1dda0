"""Tail latency of one Propose layer under heavy-tailed proposers: wait-all, quorum, hedging.

Six proposers answer after a log-normal latency (median 100 ms, sigma 1.0: p75 196 ms, p99
1.02 s per call; the client really sleeps that long with ``anyio.sleep``). One Propose layer
runs on ``--runs`` prompts under each policy, ``--window`` runs in flight at a time (each a
``moa.run``; a run starts as another ends):

  wait-all     Propose(6 agents): the layer ends when the slowest call answers
  quorum 4/6   Propose(6 agents, quorum=4): it ends at the 4th answer; the rest are cancelled
  hedge        Propose(6 agents) run with hedge_after=<p75 of one call's latency>: a call
               unanswered by then races a duplicate, and the first answer wins
  quorum+hedge both at once (an extra row, not one of the three policies compared)

The latency model is per call and seeded: call k (0, 1, ...) of one model on one prompt
draws its latency from ``random.Random(f"{seed}|{prompt}|{model}|{k}")``. So every policy sees
the same first draws, and a hedged duplicate (k=1) draws a fresh latency of its own. The
layer's latency is its ``StepRecord.duration``; the "model" columns are the same statistic
computed from the draws alone (what a framework with no cost at all would show).

Target: the quorum or the hedge p95 <= 0.5 x the wait-all p95. Hedging's price is its extra
calls: the duplicates, counted with ``len(call.hedges)``.

Why a window and not all runs at once through ``run_many``: the layer latency should be the
latency model's, not the event loop's. With 1000 runs at once (6000 calls in flight) a hedged
call costs a few hundred microseconds of CPU, the loop falls seconds behind its timers, and
the figures measure that instead (``--window 1000`` shows it). 50 runs in flight keep the loop
lightly loaded; the "model" columns tell how close the measurement stays.

    python benchmarks/tail.py                          # 1000 runs per policy, 50 in flight (~30 s)
    python benchmarks/tail.py --plot benchmarks/tail.png
    python benchmarks/tail.py --runs 300 --sigma 1.5 --hedge-quantile 0.9
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections import Counter

import anyio
from _common import print_header, quantile

import moa

AGENTS = [f"proposer-{i}" for i in range(6)]
QUORUM = 4


def draw(seed: int, prompt: str, model: str, k: int, median: float, sigma: float) -> float:
    rng = random.Random(f"{seed}|{prompt}|{model}|{k}")
    return median * math.exp(sigma * rng.gauss(0.0, 1.0))


class LogNormalClient:
    """Sleeps a seeded log-normal latency per call; call k of a (prompt, model) pair draws its
    own, so a hedged duplicate gets a fresh one."""

    def __init__(self, seed: int, median: float, sigma: float) -> None:
        self.seed, self.median, self.sigma = seed, median, sigma
        self.counts: Counter[tuple[str, str]] = Counter()

    async def __call__(self, *, model, messages, temp, max_tokens):
        prompt = messages[-1]["content"]
        k = self.counts[prompt, model]
        self.counts[prompt, model] += 1
        await anyio.sleep(draw(self.seed, prompt, model, k, self.median, self.sigma))
        return f"{model} answers", 10, 5


def model_latency(policy: str, prompt: str, args: argparse.Namespace, hedge: float) -> float:
    """The layer latency the latency model alone implies: no framework, no event loop."""
    per_call = []
    for m in AGENTS:
        first = draw(args.seed, prompt, m, 0, args.median, args.sigma)
        if "hedge" in policy and first > hedge:
            first = min(first, hedge + draw(args.seed, prompt, m, 1, args.median, args.sigma))
        per_call.append(first)
    per_call.sort()
    return per_call[QUORUM - 1] if "quorum" in policy else per_call[-1]


POLICIES = ("wait-all", "quorum 4/6", "hedge", "quorum+hedge")


async def measure(args: argparse.Namespace, hedge: float, prompts: list[str]) -> dict:
    out = {}
    for policy in POLICIES:
        step = moa.Propose(AGENTS, quorum=QUORUM) if "quorum" in policy else moa.Propose(AGENTS)
        client = LogNormalClient(args.seed, args.median, args.sigma)
        histories: list[moa.History | None] = [None] * len(prompts)
        queue = iter(range(len(prompts)))

        async def worker() -> None:  # a window of --window runs in flight, each a moa.run
            for i in queue:
                _, histories[i] = await moa.run(
                    step,
                    prompts[i],
                    client,
                    seed=i,
                    hedge_after=hedge if "hedge" in policy else None,
                )

        c0, t0 = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(min(args.window, len(prompts))):
                tg.start_soon(worker)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        calls = [c for h in histories for c in h.calls]  # type: ignore[union-attr]
        out[policy] = {
            "layer": [h.steps[0].duration for h in histories],  # type: ignore[union-attr]
            "model": [model_latency(policy, p, args, hedge) for p in prompts],
            "calls": len(calls),
            "hedges": sum(len(c.hedges) for c in calls),
            "cancelled": sum(c.cancelled for c in calls)
            + sum(h.cancelled for c in calls for h in c.hedges),
            "wall": wall,
            "cpu": cpu,
        }
    return out


def plot(path: str, res: dict, args: argparse.Namespace, hedge: float) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    colours = {
        "wait-all": "tab:red",
        "quorum 4/6": "tab:blue",
        "hedge": "tab:green",
        "quorum+hedge": "tab:gray",
    }
    for policy in POLICIES:
        xs = sorted(x * 1e3 for x in res[policy]["layer"])
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        p95 = quantile(xs, 0.95)
        style = ":" if policy == "quorum+hedge" else "-"
        ax.step(
            xs,
            ys,
            where="post",
            color=colours[policy],
            linestyle=style,
            label=f"{policy}: p50 {quantile(xs, 0.5):.0f} ms, p95 {p95:.0f} ms",
        )
        ax.axvline(p95, color=colours[policy], linestyle=style, alpha=0.35, linewidth=1)
    ax.axhline(0.95, color="black", alpha=0.25, linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("Propose layer latency, ms (log scale)")
    ax.set_ylabel("fraction of runs")
    ax.set_title(
        f"6 proposers, log-normal latency (median {args.median * 1e3:g} ms, "
        f"sigma {args.sigma:g}); {args.runs} runs per policy, {args.window} in flight;\n"
        f"hedge after {hedge * 1e3:.0f} ms",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: wrote {path}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000, help="runs per policy (default 1000)")
    ap.add_argument(
        "--median", type=float, default=0.1, help="median call latency in seconds (default 0.1)"
    )
    ap.add_argument(
        "--sigma", type=float, default=1.0, help="sigma of the log of the latency (default 1.0)"
    )
    ap.add_argument(
        "--hedge-quantile",
        type=float,
        default=0.75,
        help="hedge_after is this quantile of one call's latency (default 0.75)",
    )
    ap.add_argument("--window", type=int, default=50, help="runs in flight at a time (default 50)")
    ap.add_argument("--seed", type=int, default=2024, help="latency model seed (default 2024)")
    ap.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write a CDF of the layer latency per policy (needs matplotlib)",
    )
    args = ap.parse_args(argv)
    if (
        args.runs < 20
        or args.window < 1
        or not args.median > 0
        or not args.sigma > 0
        or not 0 < args.hedge_quantile < 1
    ):
        ap.error("need runs >= 20, median > 0, sigma > 0 and 0 < hedge-quantile < 1")
    if args.plot:  # fail before the measurement, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            ap.error("--plot needs matplotlib, which is not installed: pip install matplotlib")
    hedge = args.median * math.exp(
        args.sigma * statistics.NormalDist().inv_cdf(args.hedge_quantile)
    )
    one = [
        args.median * math.exp(args.sigma * statistics.NormalDist().inv_cdf(q))
        for q in (0.5, 0.95, 0.99)
    ]
    prompts = [f"Question {i}: name a prime above {i}." for i in range(args.runs)]
    print_header(
        f"layer   : one Propose layer of 6 agents; {args.runs} runs per policy, each a "
        f"moa.run(..., seed=i), {args.window} in flight at a time; asyncio backend",
        f"latency : log-normal per call, median {args.median * 1e3:g} ms, sigma {args.sigma:g} "
        f"(one call: p50 {one[0] * 1e3:.0f}, p95 {one[1] * 1e3:.0f}, p99 {one[2] * 1e3:.0f} ms); "
        f"seeded per (prompt, model, k-th call), seed {args.seed}",
        f"policies: wait-all = Propose(6); quorum 4/6 = Propose(6, quorum=4); hedge = "
        f"run(..., hedge_after={hedge:.4f}) (p{args.hedge_quantile * 100:g} of one call); "
        f"quorum+hedge = both",
        "measured: StepRecord.duration per run; model: the same figure from the drawn "
        "latencies alone",
    )

    t0 = time.perf_counter()
    res = anyio.run(measure, args, hedge, prompts, backend="asyncio")
    elapsed = time.perf_counter() - t0

    base95 = quantile(res["wait-all"]["layer"], 0.95)
    header = (
        f"{'policy':<14}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'  model p50/p95/p99 ms':>24}{'p95 x wait-all':>16}{'calls':>7}"
        f"{'hedges':>8}{'extra':>7}{'cancelled':>11}{'wall s':>8}{'CPU s':>7}"
    )
    print(header)
    print("-" * len(header))
    for policy in POLICIES:
        r = res[policy]
        xs, ms = r["layer"], r["model"]
        q = [quantile(xs, p) * 1e3 for p in (0.5, 0.95, 0.99)]
        mq = "/".join(f"{quantile(ms, p) * 1e3:.0f}" for p in (0.5, 0.95, 0.99))
        print(
            f"{policy:<14}{q[0]:>8.1f}{q[1]:>8.1f}{q[2]:>8.1f}{max(xs) * 1e3:>8.0f}{mq:>24}"
            f"{quantile(xs, 0.95) / base95:>16.3f}{r['calls']:>7}{r['hedges']:>8}"
            f"{r['hedges'] / r['calls']:>7.1%}{r['cancelled']:>11}{r['wall']:>8.1f}"
            f"{r['cpu']:>7.2f}"
        )
    print(
        "\ncalls: primary calls recorded; hedges: duplicates started (sum of len(call.hedges)); "
        "extra: hedges / calls;\ncancelled: calls and duplicates stopped before answering "
        "(quorum reached, or the other side of a hedge won);\nwall s, CPU s: the policy's whole "
        "batch (CPU / wall is how busy the event loop was)"
    )
    for policy in ("quorum 4/6", "hedge"):
        ratio = quantile(res[policy]["layer"], 0.95) / base95
        print(
            f"target: {policy} p95 <= 0.5 x wait-all p95: "
            f"{'met' if ratio <= 0.5 else 'NOT met'} ({ratio:.3f})"
        )
    print(f"(measured in {elapsed:.1f} s)")
    if args.plot:
        plot(args.plot, res, args, hedge)


if __name__ == "__main__":
    main()
