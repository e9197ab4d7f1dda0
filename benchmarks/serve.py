"""What `moa serve` adds to a run: requests per second, latency and CPU per request through
the server against `moa.run` called directly, at 1, 16 and 128 concurrent clients, on a
scripted pipeline whose critical path is 50 ms (`Propose` of 3 then `Aggregate`, each call
sleeping 25 ms); then the server's memory (RSS) after 1,000, 10,000 and 20,000 more requests.

    python benchmarks/serve.py                       # about 2 minutes on 2 cores
    python benchmarks/serve.py --http h11            # uvicorn's pure-Python parser
    python benchmarks/serve.py --driver httpx        # the load sent by httpx
    python benchmarks/serve.py --tracemalloc         # what the server's new memory is

The method:

- direct: `moa.run` in this process by `clients` tasks, each starting its next run as soon as
  its last ends (a closed loop), `n` runs in all (at least 20 a client);
- served: the same closed loop, `n` requests over `clients` keep-alive connections, to the app
  `moa.serve.app` makes, run by uvicorn with the settings `moa serve` gives it
  (`moa.cli.serve.UVICORN`; uvicorn picks httptools and uvloop where installed, else h11 and
  asyncio: the header says which) in a process of its own on 127.0.0.1 (its RSS and CPU are
  its alone). The load comes from a third process, so no side shares an event loop;
- the columns: requests per second (n over the wall time) and their ratio, served over direct;
  the median latency of each side and what the server adds to it (served minus direct); the
  served p99; the CPU time a request of the direct process, of the server and of the load
  (from /proc: it is steadier than throughput on a shared machine). Every answer is checked;
- memory: the server's RSS after each batch, 128 clients sending; one that levels off holds
  nothing per request (`--tracemalloc` names the lines that allocated in between);
- no connection is idle while a phase runs, and each phase's process closes its own: the
  server never closes one under a request (uvicorn's 5 s keep-alive against httpx's 5 s pool
  expiry did, a ReadError; `moa serve` keeps an idle connection 75 s). A `Connection: close`
  answer opens a new connection; any other answer than the pipeline's stops the benchmark.

The load is a lean HTTP/1.1 client of this script's own (asyncio streams, one connection a
client, the JSON answer parsed and checked): on 2 cores it must cost far less than the
server, or it measures itself. One httpx `AsyncClient` with 128 connections does not: its
pool walks every connection on each request (`has_expired`: a `poll` and a `getpeername`
each, and every queued request woken when one is freed): 2 to 13 ms of CPU a request, so
it sends ~80 chat requests/s and ~400 `/health` requests/s whatever the server; that
was the "collapse" at 128 clients this benchmark once showed (84 served requests/s against
1,800 direct, p50 930 ms). `--driver httpx` sends with one `AsyncClient` of one connection a
client, which does not walk, but costs ~1.5 ms a request: at 128 clients it bounds the figure.

The direct side runs on one core; the served side on two, the server on one and the load on
the other (the figures are this machine's, and noisy when it is shared)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
from _common import pkg_version, print_header, quantile  # benchmarks/ is on sys.path as a script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import moa
from moa import Aggregate, Propose

PIPELINE = Propose(["a", "b", "c"]) | Aggregate("j")
CALL_DELAY = 0.025  # two layers: a 50 ms critical path
ASK = {"model": "mix", "messages": [{"role": "user", "content": "What is 2+2?"}]}
ANSWER = "j: 4"  # what the aggregator's scripted call answers
WARM_UP = 200  # requests before anything is measured, on each side


async def sleeping_client(*, model, messages, temp, max_tokens):
    """A call of 25 ms that keeps nothing (a ScriptedClient records every call: its memory
    would read as the server's)."""
    await anyio.sleep(CALL_DELAY)
    return f"{model}: 4", 12, 3


# -- the server's process ----------------------------------------------------------------------
def _serve(port: int, http: str, loop: str) -> None:
    """The pipeline on the scripted client, under uvicorn as `moa serve` runs it. With
    MOA_BENCH_TRACEMALLOC set, `GET /debug/tracemalloc` answers what was allocated since the
    last time it was asked, by line (tracemalloc slows the server: no throughput then)."""
    import uvicorn

    from moa.cli.serve import UVICORN
    from moa.serve import Served, app

    served = app({"mix": Served(PIPELINE, sleeping_client)}, max_requests=1024)
    if os.environ.get("MOA_BENCH_TRACEMALLOC"):
        served = _with_tracemalloc(served)
    uvicorn.run(
        served, host="127.0.0.1", port=port, log_level="warning", http=http, loop=loop, **UVICORN
    )


def _with_tracemalloc(inner: Any) -> Any:
    import gc
    import tracemalloc

    tracemalloc.start(1)
    last = [tracemalloc.take_snapshot()]
    ignored = (
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
    )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/debug/tracemalloc":
            return await inner(scope, receive, send)
        gc.collect()
        now = tracemalloc.take_snapshot().filter_traces(ignored)
        diff = now.compare_to(last[0].filter_traces(ignored), "lineno")
        last[0] = now
        current, _ = tracemalloc.get_traced_memory()
        lines = [f"traced now {current / 2**20:.2f} MiB; the largest changes since last asked:"]
        lines += [f"  {stat}" for stat in diff[:12]]
        body = "\n".join(lines).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


# -- the load's process ------------------------------------------------------------------------
def _drive(port: int, clients: int, n: int, driver: str) -> None:
    """`n` requests over `clients` connections, each sending its next as soon as its last is
    answered; prints the wall time and the latencies' median and 99th percentile as JSON."""
    one = _raw if driver == "raw" else _httpx
    cpu = time.process_time()
    wall, latencies = asyncio.run(one(port, clients, n))
    cpu = time.process_time() - cpu
    p50, p99 = statistics.median(latencies), quantile(latencies, 0.99)
    print(json.dumps({"wall": wall, "p50": p50, "p99": p99, "cpu": cpu}))


def _check(status: int, body: bytes) -> None:
    if status != 200:
        raise RuntimeError(f"the server answered {status}: {body[:300]!r}")
    answer = json.loads(body)["choices"][0]["message"]["content"]
    if answer != ANSWER:
        raise RuntimeError(f"the server answered {answer!r}, not {ANSWER!r}")


async def _closed_loop(clients: int, n: int, send: Any) -> tuple[float, list[float]]:
    """Run `send(worker)` n times by `clients` workers: the wall time and each latency."""
    todo = iter(range(n))
    latencies: list[float] = []

    async def worker(i: int) -> None:
        for _ in todo:
            start = time.perf_counter()
            await send(i)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return time.perf_counter() - start, latencies


async def _raw(port: int, clients: int, n: int) -> tuple[float, list[float]]:
    body = json.dumps(ASK).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]

    async def send(i: int) -> None:
        reader, writer = connections[i]
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(":", 1) for line in head[1:] if line)
        length = fields.get("content-length")
        if length is None:
            raise RuntimeError(f"no Content-Length in {head!r}")
        _check(int(head[0].split(" ", 2)[1]), await reader.readexactly(int(length)))
        if fields.get("connection", "").strip() == "close":  # the server ends it: a new one
            writer.close()
            connections[i] = await asyncio.open_connection("127.0.0.1", port)

    try:
        return await _closed_loop(clients, n, send)
    finally:
        for _, writer in connections:
            writer.close()


async def _httpx(port: int, clients: int, n: int) -> tuple[float, list[float]]:
    import httpx

    base = f"http://127.0.0.1:{port}"
    pools = [
        httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=1), timeout=60)
        for _ in range(clients)
    ]

    async def send(i: int) -> None:
        response = await pools[i].post("/v1/chat/completions", json=ASK)
        _check(response.status_code, response.content)

    try:
        return await _closed_loop(clients, n, send)
    finally:
        for pool in pools:
            await pool.aclose()


# -- this process ------------------------------------------------------------------------------
def _load(port: int, clients: int, n: int, driver: str) -> dict[str, float]:
    """The served side of one measurement, in a process of its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--drive", str(port), str(clients), str(n), driver],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"the load failed:\n{out.stderr}")
    return dict(json.loads(out.stdout))


async def _direct(clients: int, n: int) -> tuple[float, list[float]]:
    async def send(i: int) -> None:
        text, _ = await moa.run(PIPELINE, ASK["messages"][0]["content"], sleeping_client)
        if text != ANSWER:
            raise RuntimeError(f"the run answered {text!r}")

    return await _closed_loop(clients, n, send)


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
        return str(response.read().decode())


def _cpu_s(pid: int) -> float:
    """The CPU seconds (user and system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _picked(asked: str, fast: str, default: str) -> str:
    """What uvicorn runs when asked ``auto``: the fast one where it is installed."""
    if asked != "auto":
        return asked
    return fast if importlib.util.find_spec(fast) else default


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _table(port: int, server: int, sizes: list[int], requests: int, driver: str) -> int:
    """The throughput and latency table; returns the requests the server answered."""
    print(
        f"{'':16} {'requests/s':^22} {'median latency, ms':^24} {'p99 ms':>6}  "
        f"{'CPU ms a request':^20}"
    )
    header = (
        f"{'clients':>7} {'requests':>8} {'direct':>7} {'served':>7} {'ratio':>6} "
        f"{'direct':>7} {'served':>7} {'added':>8} {'served':>6}  "
        f"{'direct':>6} {'server':>6} {'load':>6}"
    )
    print(header)
    print("-" * len(header))
    answered = 0
    for clients in sizes:
        n = max(requests, 20 * clients)
        d_cpu = time.process_time()
        wall, latencies = anyio.run(_direct, clients, n)
        d_cpu = time.process_time() - d_cpu
        d_rps, d_p50 = n / wall, statistics.median(latencies)
        s_cpu = _cpu_s(server)
        served = _load(port, clients, n, driver)
        s_cpu = _cpu_s(server) - s_cpu
        answered += n
        s_rps, s_p50 = n / served["wall"], served["p50"]
        print(
            f"{clients:>7} {n:>8} {d_rps:>7.1f} {s_rps:>7.1f} {s_rps / d_rps:>6.3f} "
            f"{d_p50 * 1000:>7.1f} {s_p50 * 1000:>7.1f} {(s_p50 - d_p50) * 1000:>+8.1f} "
            f"{served['p99'] * 1000:>6.1f}  {d_cpu / n * 1000:>6.3f} "
            f"{s_cpu / n * 1000:>6.3f} {served['cpu'] / n * 1000:>6.3f}",
            flush=True,
        )
    return answered


def _memory(
    port: int, server: int, answered: int, batches: list[int], clients: int, args: Any
) -> None:
    """The server's RSS after each batch of requests, by `clients` clients."""
    print(f"server RSS, {clients} clients sending:")
    print(f"{'answered':>10} {'RSS MiB':>8} {'change':>7}")
    series = [(answered, _rss_mib(server))]
    print(f"{answered:>10,} {series[0][1]:>8.1f}", flush=True)
    if args.tracemalloc:
        _get(port, "/debug/tracemalloc")  # the baseline
    for batch in batches:
        _load(port, clients, batch, args.driver)
        answered += batch
        rss = _rss_mib(server)
        change = rss - series[-1][1]
        in_flight = json.loads(_get(port, "/health")).get("in_flight")
        print(
            f"{answered:>10,} {rss:>8.1f} {change:>+7.1f}  ({batch:,} more: "
            f"{change * 2**20 / batch:+,.0f} B a request; {in_flight} in flight after)",
            flush=True,
        )
        series.append((answered, rss))
        if args.tracemalloc:
            print("    " + _get(port, "/debug/tracemalloc").replace("\n", "\n    "))
    if len(series) > 2:
        (a, first), (b, last) = series[1], series[-1]
        print(
            f"from {a:,} to {b:,} answered: {last - first:+.1f} MiB "
            f"({(last - first) * 2**20 / (b - a):+,.0f} B a request)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=400,
        help="requests per concurrency, at least 20 a client (default 400)",
    )
    parser.add_argument("--sizes", default="1,16,128", help="concurrent clients (1,16,128)")
    parser.add_argument(
        "--memory",
        default="1000,10000,20000",
        help="the memory phase's batches of requests, RSS after each ('' for none)",
    )
    parser.add_argument("--memory-clients", type=int, default=128)
    parser.add_argument(
        "--http", choices=("auto", "h11", "httptools"), default="auto", help="uvicorn's parser"
    )
    parser.add_argument(
        "--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="uvicorn's loop"
    )
    parser.add_argument(
        "--driver",
        choices=("raw", "httpx"),
        default="raw",
        help="the load's HTTP client: this script's own, or httpx (one AsyncClient a client)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="the server traces its allocations; after each memory batch, what grew (slow)",
    )
    parser.add_argument("--serve-only", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--drive", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_only:
        _serve(int(args.serve_only[0]), *args.serve_only[1:])
        return
    if args.drive:
        port, clients, n, driver = args.drive
        _drive(int(port), int(clients), int(n), driver)
        return

    sizes = [int(x) for x in args.sizes.split(",")]
    batches = [int(x) for x in args.memory.split(",") if x]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, **({"MOA_BENCH_TRACEMALLOC": "1"} if args.tracemalloc else {})}
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-only", str(port), args.http, args.loop], env=env
    )
    try:
        for _ in range(300):
            try:
                _get(port, "/health")
                break
            except OSError:
                time.sleep(0.1)
        from moa.cli.serve import UVICORN

        http = _picked(args.http, "httptools", "h11")
        loop = _picked(args.loop, "uvloop", "asyncio")
        settings = ", ".join(f"{k}={v!r}" for k, v in UVICORN.items())
        load = f"httpx {pkg_version('httpx')}" if args.driver == "httpx" else "this script"
        print_header(
            f"cpu     : {_cpu_model()}, {os.cpu_count()} cores (shared: the figures are noisy)",
            f"server  : uvicorn {pkg_version('uvicorn')}, HTTP parser {http} "
            f"{pkg_version(http)}, loop {loop}; moa serve's settings: {settings}",
            f"load    : {load}'s HTTP/1.1 client, a keep-alive connection a client, in a "
            "process of its own",
            f"pipeline: {PIPELINE!r}, each call sleeping {CALL_DELAY * 1000:.0f} ms "
            "(critical path 50 ms)",
            packages=("anyio", "starlette", "uvicorn", "h11", "httptools", "uvloop", "httpx"),
        )
        if args.tracemalloc:
            print("tracemalloc on in the server: its throughput is not the figure here\n")
        anyio.run(_direct, 8, WARM_UP)
        _load(port, 8, WARM_UP, args.driver)
        answered = WARM_UP + _table(port, server.pid, sizes, args.requests, args.driver)
        if batches:
            print()
            _memory(port, server.pid, answered, batches, args.memory_clients, args)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
