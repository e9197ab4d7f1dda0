"""Calls per second on Ray: ``moa.ray.run_dataset`` with 1 and 2 workers against ``run_many``
in one process, at the same per-worker cap, with a client that sleeps 50 ms per call; then a
rate limit split among workers against the same limit in one process.

    python benchmarks/ray_scale.py                      # ~2 minutes on 2 cores
    python benchmarks/ray_scale.py --runs 20000 --cap 512 --repeat 3

Throughput: each contender runs ``--runs`` prompts of ``Propose(3) | Aggregate`` (4 calls a
run) with ``max_concurrency=--cap`` (per worker on Ray), round-robin, ``--repeat`` times;
calls/s is calls over the driver's wall time (Ray's: from building the dataset to the last row
back, actor start-up included), and over the span from the first call's start to the last's
end (steady). The cap bound is ``workers x cap / 50 ms``. Scaling efficiency: 2 workers'
calls/s over twice 1 worker's.

Rate limit (``--rpm``): one call a prompt under ``Limits(default=ModelLimit(rpm=R))``, in one
process and split over 2 workers (``moa.ray.split_limits``). A moa bucket starts full (a
minute's budget, then ``R/60`` a second), so the figure is the rate after the first ``R``
calls: it must not exceed ``R/60`` calls/s in total.

Needs ``pip install 'moa-dsl[ray]'``; a local cluster of every core is started
(``ray.init(include_dashboard=False)``), workers of 0.25 CPU each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import anyio
from _common import print_header

import moa
from moa import Aggregate, Limits, ModelLimit, Propose

LATENCY = 0.05
PIPELINE = Propose(["a", "b", "c"]) | Aggregate("j")


async def sleepy(*, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int):
    """50 ms a call; the reply is when the call started and ended (the steady span)."""
    start = time.time()
    await anyio.sleep(LATENCY)
    return f"{start:.6f} {time.time():.6f}", 10, 2


def make_sleepy():
    return sleepy


def _span(texts: list[str]) -> float:
    starts, ends = [], []
    for text in texts:
        a, b = text.split()[:2]
        starts.append(float(a))
        ends.append(float(b))
    return max(ends) - min(starts)


def _call_texts(histories: list[moa.History]) -> list[str]:
    return [c.text for h in histories for c in h.calls if c.text]


def one_process(
    pipeline: moa.Step, prompts: list[str], cap: int, limits: Limits | None = None
) -> tuple[float, list]:
    start = time.perf_counter()
    results = anyio.run(
        lambda: moa.run_many(pipeline, prompts, sleepy, max_concurrency=cap, limits=limits)
    )
    wall = time.perf_counter() - start
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return wall, [r.history for r in results]


def on_ray(
    ray,
    pipeline: moa.Step,
    prompts: list[str],
    cap: int,
    workers: int,
    batch: int,
    limits: Limits | None = None,
) -> tuple[float, list]:
    import json

    from moa.ray import run_dataset

    start = time.perf_counter()
    rows = [{"id": i, "prompt": p} for i, p in enumerate(prompts)]
    dataset = ray.data.from_items(rows).repartition(max(1, len(rows) // batch))
    out = run_dataset(
        pipeline,
        dataset,
        make_sleepy,
        max_concurrency=cap,
        concurrency=workers,
        batch_size=batch,
        limits=limits,
    ).take_all()
    wall = time.perf_counter() - start
    assert len(out) == len(rows) and all(r["ok"] for r in out), [r["error"] for r in out][:3]
    return wall, [moa.History.from_dict(json.loads(r["history"])) for r in out]


def throughput(ray, args) -> None:
    prompts = [f"question {i}?" for i in range(args.runs)]
    calls = 4 * args.runs
    contenders = {
        "run_many, 1 process": lambda: one_process(PIPELINE, prompts, args.cap),
        "ray, 1 worker": lambda: on_ray(ray, PIPELINE, prompts, args.cap, 1, args.batch),
        "ray, 2 workers": lambda: on_ray(ray, PIPELINE, prompts, args.cap, 2, args.batch),
    }
    bound = {"run_many, 1 process": 1, "ray, 1 worker": 1, "ray, 2 workers": 2}
    walls: dict[str, list[float]] = {k: [] for k in contenders}
    spans: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.repeat):
        for name, run in contenders.items():
            wall, histories = run()
            walls[name].append(wall)
            spans[name].append(_span(_call_texts(histories)))
    print(
        f"\nthroughput: {args.runs} runs x 4 calls = {calls} calls, 50 ms each, cap {args.cap} "
        f"per worker, Ray blocks of {args.batch} rows; medians of {args.repeat}\n"
    )
    head = (
        f"{'contender':<22}{'wall s':>9}{'calls/s':>10}{'steady calls/s':>16}"
        f"{'cap bound':>11}{'of bound':>10}"
    )
    print(head)
    print("-" * len(head))
    rate = {}
    for name in contenders:
        wall, span = statistics.median(walls[name]), statistics.median(spans[name])
        cap_bound = bound[name] * args.cap / LATENCY
        rate[name] = calls / wall
        print(
            f"{name:<22}{wall:>9.2f}{calls / wall:>10.0f}{calls / span:>16.0f}"
            f"{cap_bound:>11.0f}{calls / span / cap_bound:>10.1%}"
        )
    eff = rate["ray, 2 workers"] / (2 * rate["ray, 1 worker"])
    print(
        f"\nscaling efficiency, 2 workers / (2 x 1 worker), calls/s over the wall: {eff:.1%}; "
        f"ray 1 worker / run_many: {rate['ray, 1 worker'] / rate['run_many, 1 process']:.2f}"
    )


def rate_limit(ray, args) -> None:
    per_second = args.rpm / 60
    n = args.rpm + int(per_second * args.limit_seconds)
    prompts = [f"question {i}?" for i in range(n)]
    single = Propose(["m"])
    print(
        f"\nrate limit: ModelLimit(rpm={args.rpm}) = {per_second:.1f} calls/s after a "
        f"burst of {args.rpm}; {n} calls of 50 ms, one a prompt, cap {args.cap}\n"
    )
    print(f"{'contender':<34}{'wall s':>9}{'calls/s after the burst':>25}{'x budget':>10}")
    print("-" * 78)
    limits = lambda: Limits(default=ModelLimit(rpm=args.rpm))  # noqa: E731 - fresh state each
    runs = {
        "run_many, 1 process, whole limit": lambda: one_process(
            single, prompts, args.cap, limits()
        ),
        "ray, 2 workers, split_limits": lambda: on_ray(
            ray, single, prompts, args.cap, 2, max(1, n // 4), limits()
        ),
    }
    for name, run in runs.items():
        wall, histories = run()
        starts = sorted(float(t.split()[0]) for t in _call_texts(histories))
        after = starts[args.rpm :]
        rate = (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else float("nan")
        print(f"{name:<34}{wall:>9.2f}{rate:>25.2f}{rate / per_second:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5000, help="prompts per contender (default 5000)")
    ap.add_argument("--cap", type=int, default=256, help="max_concurrency per worker (256)")
    ap.add_argument("--batch", type=int, default=1000, help="rows per Ray block (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, interleaved (default 3)")
    ap.add_argument("--rpm", type=int, default=600, help="the rate limit's budget (default 600)")
    ap.add_argument(
        "--limit-seconds", type=float, default=20, help="seconds of calls after the burst (20)"
    )
    args = ap.parse_args()
    import logging

    import ray
    import ray.data

    print_header(
        f"cpus    : {os.cpu_count()} (a local Ray cluster of all of them; workers of 0.25 CPU)",
        packages=("anyio", "tenacity", "ray"),
    )
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    started = time.perf_counter()
    try:
        throughput(ray, args)
        rate_limit(ray, args)
    finally:
        ray.shutdown()
    print(f"(measured in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
