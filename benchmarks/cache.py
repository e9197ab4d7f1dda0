"""What the response cache costs: one SQLite get and put against a run's whole call, side by
side in one process. Cache operations run on the event loop's thread, so their time is time
the loop is not serving other calls.

    python benchmarks/cache.py [--entries 5000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import anyio
from _common import median, print_header, quantile

import moa
from moa.testing import ScriptedClient

MESSAGES = [{"role": "system", "content": "x" * 500}, {"role": "user", "content": "q" * 2000}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=5000, help="entries written and read")
    args = ap.parse_args()
    print_header(f"entries: {args.entries}, messages of 2,500 characters, answers of 700")
    with tempfile.TemporaryDirectory() as tmp, moa.Cache(os.path.join(tmp, "c.sqlite")) as cache:
        puts, gets, misses = [], [], []
        for i in range(args.entries):
            t = time.perf_counter()
            cache.put("m", MESSAGES, 0.7, 512, i, "answer " * 100, 100, 200)
            puts.append(time.perf_counter() - t)
        for i in range(args.entries):
            t = time.perf_counter()
            cache.get("m", MESSAGES, 0.7, 512, i)
            gets.append(time.perf_counter() - t)
            t = time.perf_counter()
            cache.get("m", MESSAGES, 0.7, 512, args.entries + i)
            misses.append(time.perf_counter() - t)

        # A whole run, all from the cache, against the same run with no cache at all.
        pipe = moa.Propose(["a", "b", "c", "d", "e", "f"]) | moa.Aggregate("a")
        prompts = [f"question {i}" for i in range(200)]
        anyio.run(lambda: moa.run_many(pipe, prompts, ScriptedClient(), seed=1, cache=cache))

        async def timed(cached: bool) -> float:
            t = time.perf_counter()
            await moa.run_many(
                pipe, prompts, ScriptedClient(), seed=1, cache=cache if cached else None
            )
            return (time.perf_counter() - t) / (len(prompts) * 7)

        rounds = [(anyio.run(timed, False), anyio.run(timed, True)) for _ in range(15)]
    print(f"\n{'operation':<34}{'median us':>11}{'p99 us':>9}")
    for name, xs in (("put (insert or replace)", puts), ("get, hit", gets), ("get, miss", misses)):
        print(f"{name:<34}{median(xs) * 1e6:>11.1f}{quantile(xs, 0.99) * 1e6:>9.1f}")
    plain, cached = median([r[0] for r in rounds]), median([r[1] for r in rounds])
    print(f"\nper call, instant client, no cache : {plain * 1e6:8.1f} us")
    print(
        f"per call, every answer cached      : {cached * 1e6:8.1f} us  "
        f"({cached / plain:.2f}x; 15 interleaved rounds of 200 runs x 7 calls)"
    )


if __name__ == "__main__":
    main()
