"""Confidence and evaluation on the real model: log-probabilities come back from the embedded
SmolLM2 in-process and through a real llama_cpp.server read by the openai SDK, and a seeded
``moa.eval`` on it repeats exactly.

Marked ``local`` (see test_real_model.py); the fixtures are in conftest.py.
"""

from __future__ import annotations

import math

import anyio
import pytest

import moa
from moa import Majority, Propose, WeightedMajority

pytestmark = pytest.mark.local

TASKS = [
    {"id": "add", "prompt": "What is 2 + 3? Answer with a number.", "answer": "5"},
    {"id": "cap", "prompt": "What is the capital of France? One word.", "answer": "Paris"},
    {"id": "sub", "prompt": "What is 9 - 4? Answer with a number.", "answer": "5"},
]


def _check_confidence(history):
    assert history.calls
    for call in history.calls:
        c = call.confidence
        assert c is not None, call
        # one log-probability per generated token, each a probability's log: <= 0, finite
        assert c.tokens == call.output_tokens > 0
        assert math.isfinite(c.logprob_sum) and c.logprob_sum <= 0
        assert 0 < c.weight <= 1


def test_local_client_reads_log_probabilities_equal_to_llama_cpps_own(model_path):
    from llama_cpp import Llama

    from moa.clients import local_client

    client = local_client(model_path, n_ctx=512)
    pipeline = Propose(["smollm2"] * 2, temp=0.0, max_tokens=12) | WeightedMajority()
    _, history = moa.run_sync(pipeline, TASKS[1]["prompt"], client, seed=3)
    _check_confidence(history)
    greedy = history.calls[0]

    # llama.cpp's own log-probabilities of the same greedy reply, from a second model that
    # keeps every logit: moa reads them while sampling and must agree.
    llm = Llama(str(model_path), n_ctx=512, logits_all=True, verbose=False, n_threads=1)
    try:
        out = llm.create_chat_completion(
            messages=[{"role": "user", "content": TASKS[1]["prompt"]}],
            temperature=0.0,
            max_tokens=12,
            logprobs=True,
            top_logprobs=1,
        )
    finally:
        llm.close()
    choice = out["choices"][0]
    assert choice["message"]["content"] == greedy.text
    theirs = [float(t["logprob"]) for t in choice["logprobs"]["content"]]
    assert len(theirs) == greedy.confidence.tokens
    assert greedy.confidence.logprob_sum == pytest.approx(sum(theirs), abs=0.05)


def test_openai_sdk_reads_log_probabilities_from_a_real_llama_cpp_server(llama_server):
    from moa.clients import openai_client

    client = openai_client(base_url=llama_server)
    pipeline = Propose(["smollm2"] * 2, temp=0.5, max_tokens=12) | WeightedMajority()

    async def main():
        try:
            return await moa.run(pipeline, TASKS[0]["prompt"], client, seed=4, timeout=120)
        finally:
            await client.aclose()

    result, history = anyio.run(main)
    _check_confidence(history)
    assert result in [c.text for c in history.calls]


def test_a_seeded_eval_on_the_real_model_repeats_exactly(model_path):
    from moa.clients import local_client

    client = local_client(model_path, n_ctx=512)
    contenders = {
        "vote": Propose(["smollm2"] * 3, temp=0.8, max_tokens=12) | Majority(),
        "weighted": Propose(["smollm2"] * 3, temp=0.8, max_tokens=12) | WeightedMajority(),
    }

    def once(seed):
        report = moa.eval_sync(contenders, TASKS, client, seed=seed)
        doc = report.to_dict()
        for c in doc["contenders"]:
            c.pop("wall")
        return report, doc

    first, doc = once(7)
    again, doc_again = once(7)
    assert doc == doc_again
    # the samples come from the seed: the weighted vote saw confidences, the baselines ran
    assert [c.name for c in first] == ["smollm2 t=0.8", "smollm2 t=0", "vote", "weighted"]
    assert first["weighted"].calls == 3 * len(TASKS)
    assert first["smollm2 t=0.8"].cached_calls == len(TASKS)  # the weighted vote's first
    assert first["vote"].cached_calls == 3 * len(TASKS)  # every sample from the cache
    _, doc_other = once(8)
    replies = [[r["reply"] for r in c["results"]] for c in doc["contenders"]]
    other = [[r["reply"] for r in c["results"]] for c in doc_other["contenders"]]
    assert replies[1] == other[1]  # greedy does not depend on the seed
    assert replies[0] != other[0] or replies[2] != other[2]  # samples do
