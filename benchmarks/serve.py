"""What `moa serve` adds to a run: requests per second and latency per request through the
server (uvicorn, 127.0.0.1, httpx clients) against `moa.run` called directly in one process,
at 1, 16 and 128 concurrent clients, on a scripted pipeline whose critical path is 50 ms
(`Propose` of 3 then `Aggregate`, each call sleeping 25 ms); then the server's memory (RSS)
after 1,000 requests and after 10,000 more (no growth is the target).

    python benchmarks/serve.py                     # about 1 minute
    python benchmarks/serve.py --requests 2000     # more requests per concurrency

The server runs in a process of its own (its RSS is its alone); both sides run on this
machine's 2 cores, so the figures include the HTTP client's CPU too."""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import moa
from moa import Aggregate, Propose

PIPELINE = Propose(["a", "b", "c"]) | Aggregate("j")
CALL_DELAY = 0.025  # two layers: a 50 ms critical path
ASK = {"model": "mix", "messages": [{"role": "user", "content": "What is 2+2?"}]}


async def sleeping_client(*, model, messages, temp, max_tokens):
    """A call of 25 ms that keeps nothing (a ScriptedClient records every call: its memory
    would read as the server's)."""
    await anyio.sleep(CALL_DELAY)
    return f"{model}: 4", 12, 3


def _serve(port: int) -> None:
    """The server process: the pipeline on a scripted client under uvicorn."""
    import uvicorn

    from moa.serve import Served, app

    served = app({"mix": Served(PIPELINE, sleeping_client)}, max_requests=1024)
    uvicorn.run(served, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _load(n: int, concurrency: int, one) -> tuple[float, list[float]]:
    """``n`` requests by ``concurrency`` workers: the wall time and each request's latency."""
    latencies: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            start = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return time.perf_counter() - start, latencies


async def _measure(base: str, sizes: list[int], requests: int) -> list[tuple]:
    import httpx

    rows = []

    async def direct() -> None:
        await moa.run(PIPELINE, ASK["messages"][0]["content"], sleeping_client)

    limits = httpx.Limits(max_connections=max(sizes), max_keepalive_connections=max(sizes))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:

        async def served() -> None:
            response = await http.post("/v1/chat/completions", json=ASK)
            response.raise_for_status()

        await _load(50, 8, served)  # warm-up, both sides
        await _load(50, 8, direct)
        for c in sizes:
            n = max(requests, 4 * c)
            d_wall, d_lat = await _load(n, c, direct)
            s_wall, s_lat = await _load(n, c, served)
            rows.append(
                (c, n, n / d_wall, n / s_wall, statistics.median(d_lat), statistics.median(s_lat))
            )
    return rows


async def _memory(base: str, pid: int, total: int) -> tuple[float, float]:
    import httpx

    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:

        async def served() -> None:
            (await http.post("/v1/chat/completions", json=ASK)).raise_for_status()

        await _load(1000, 128, served)
        before = _rss_mib(pid)
        await _load(total, 128, served)
        return before, _rss_mib(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=400, help="requests per concurrency (at least 4 per client)"
    )
    parser.add_argument("--sizes", default="1,16,128", help="concurrent clients")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument("--serve-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_only:
        _serve(args.serve_only)
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([sys.executable, __file__, "--serve-only", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(200):
            try:
                httpx.get(f"{base}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"command : python benchmarks/serve.py {' '.join(sys.argv[1:])}".rstrip())
        print(
            f"machine : {platform.platform()}, {os.cpu_count()} CPUs, CPython {platform.python_version()}"
        )
        print(f"date    : {datetime.now(UTC).isoformat(timespec='seconds')}")
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        print(f"moa     : {commit.stdout.strip()}")
        print(
            f"pipeline: {PIPELINE!r}, each call sleeping {CALL_DELAY * 1000:.0f} ms (critical path 50 ms)"
        )
        print()
        rows = anyio.run(_measure, base, sizes, args.requests)
        print(
            f"{'clients':>7} {'requests':>8} {'direct req/s':>13} {'served req/s':>13} {'ratio':>6} "
            f"{'direct p50 ms':>14} {'served p50 ms':>14} {'added ms':>9}"
        )
        for c, n, d_rps, s_rps, d_p50, s_p50 in rows:
            print(
                f"{c:>7} {n:>8} {d_rps:>13.1f} {s_rps:>13.1f} {s_rps / d_rps:>6.3f} "
                f"{d_p50 * 1000:>14.1f} {s_p50 * 1000:>14.1f} {(s_p50 - d_p50) * 1000:>9.2f}"
            )
        before, after = anyio.run(_memory, base, server.pid, args.memory_requests)
        print()
        print(
            f"server RSS: {before:.1f} MiB after 1,000 requests, {after:.1f} MiB after "
            f"{args.memory_requests:,} more ({after - before:+.1f} MiB)"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
