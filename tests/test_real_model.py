"""The real model: SmolLM2-135M-Instruct on llama.cpp, in-process, behind a real
OpenAI-compatible server driven by the real openai SDK, and in examples/local_moa.py.

Marked ``local``: a developer without the model skips them (``-m "not local"``, or they skip
themselves); under CI (``CI`` set) a missing model or llama-cpp-python is a failure, not a skip.
The ``model_path`` and ``llama_server`` fixtures are in conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import moa
from moa import Aggregate, Propose, Shuffle

pytestmark = pytest.mark.local

ROOT = Path(__file__).resolve().parent.parent

QUESTION = "What is the capital of France? Answer in one short sentence."


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
    pipeline = (
        Propose(["smollm2"] * 3, max_tokens=48) | Shuffle() | Aggregate("smollm2", max_tokens=64)
    )
    result, history = moa.run_sync(pipeline, QUESTION, client, seed=1)
    _check_real_run(result, history, 4)


def test_local_client_cancellation_stops_generation(model_path):
    import anyio

    from moa.clients import local_client

    client = local_client(model_path, n_ctx=2048)

    async def main():
        with anyio.move_on_after(0.3):
            await moa.run(
                Propose(["smollm2"] * 2, max_tokens=2000), "Write a very long story.", client
            )
        # the model is free again at once: the cancelled generation stopped at its next token
        start = anyio.current_time()
        await moa.run(Propose(["smollm2"], max_tokens=4), "Hi", client)
        return anyio.current_time() - start

    assert anyio.run(main) < 5


def test_openai_client_against_a_real_llama_cpp_server(llama_server):
    import anyio

    from moa.clients import openai_client

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


def test_local_moa_example_runs_offline(model_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "local_moa.py"), "What is 2 + 2?"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Prompt:   What is 2 + 2?" in out
    assert "Proposals (3):" in out
    answer = out.split("\nFinal answer:\n", 1)[1].split("\n\ncalls: ", 1)[0]
    assert answer.strip()
    assert "calls: 4 (0 failed)" in out
    assert "per-call latency" in out


def test_real_outputs_recorded_then_replayed_offline(model_path, tmp_path):
    """Record a real run into a cache; replay it with no model at all: same result, same
    calls, same outputs, nothing sent."""
    from moa.clients import local_client

    pipeline = (
        Propose(["smollm2"] * 3, max_tokens=32) | Shuffle() | Aggregate("smollm2", max_tokens=32)
    )
    with moa.Cache(tmp_path / "recording.sqlite") as recording:
        result, history = moa.run_sync(
            pipeline, QUESTION, local_client(model_path, n_ctx=2048), seed=5, cache=recording
        )
    _check_real_run(result, history, 4)

    async def no_model(**request):  # replay mode never calls the client
        raise AssertionError(f"replay called the model: {request['model']}")

    with moa.Cache(tmp_path / "recording.sqlite", mode="replay") as replay:
        replayed, again = moa.run_sync(pipeline, QUESTION, no_model, seed=5, cache=replay)
    assert replayed == result
    assert [c.text for c in again.calls] == [c.text for c in history.calls]
    assert [s.outputs for s in again.steps] == [s.outputs for s in history.steps]
    assert all(c.cached for c in again.calls) and again.cost().known == 0
