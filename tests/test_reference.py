"""The concurrent executor against a plain sequential reference interpreter.

The reference walks the pipeline one call at a time, with one ``random.Random(seed)`` for the
run and nothing of moa/_executor.py; on random pipelines, with calls that finish in a shuffled
order, the executor must give the same result, outputs and step records.
"""

import random
from collections import Counter

import anyio
from drawing import MODELS, delay_randoms, llm_steps, pipelines, random_delays, transforms
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from scripted import ScriptedClient

import moa
from moa import (
    Aggregate,
    EmptyInputError,
    Filter,
    LLMStep,
    Parallel,
    Pipeline,
    Propose,
    Rank,
    Refine,
    Reply,
    Response,
    Sample,
    Shuffle,
    Synthesize,
    Take,
    Transform,
    Vote,
)
from moa._contract import reads
from moa.steps import OffLoop

PROMPT = "What is the answer?"


class NoResponses(Exception):
    """The reference's EmptyInputError: an LLM step that needs responses received none."""


async def reference(step, prompt, client, seed):
    """``(outputs, records)`` of running ``step`` sequentially; a record is
    ``(step, path, kind, inputs, outputs, calls)`` and a call ``(model, messages, temp,
    max_tokens, text)``. When a step reads where responses came from, every call asks for
    log-probabilities and its reply goes on as a Response (agent, model, confidence)."""
    records = []
    origin = reads(step).origin

    async def walk(step, responses, rng, path):
        if isinstance(step, Pipeline):
            for i, sub in enumerate(step.steps):
                responses = await walk(sub, responses, rng, path + (i,))
            return responses
        if isinstance(step, Parallel):
            rngs = [random.Random(rng.getrandbits(63)) for _ in step.branches]
            out = []
            for i, (branch, branch_rng) in enumerate(zip(step.branches, rngs)):
                out += await walk(branch, responses, branch_rng, path + (i,))
            records.append((repr(step), path, "parallel", tuple(responses), tuple(out), ()))
            return out
        if isinstance(step, Transform):
            out = step.apply(list(responses), rng)
            records.append((repr(step), path, "transform", tuple(responses), tuple(out), ()))
            return out
        if isinstance(step, LLMStep):
            if step.needs_responses and not responses:
                raise NoResponses(repr(step))
            calls = []
            plan = step.plan(prompt, list(responses), rng)
            replies = None
            while True:
                try:
                    requests = plan.send(replies)
                except StopIteration as done:
                    out, _ = done.value
                    break
                if isinstance(requests, OffLoop):  # work off the loop: here, just done
                    replies = requests.fn(*requests.args)
                    continue
                replies = []
                for req in requests:
                    messages = [dict(m) for m in req.messages]
                    extra = {"logprobs": True} if origin else {}
                    reply = await client(
                        model=req.model,
                        messages=messages,
                        temp=req.temp,
                        max_tokens=req.max_tokens,
                        **extra,
                    )
                    text = reply[0]
                    calls.append((req.model, messages, req.temp, req.max_tokens, text))
                    if origin:
                        confidence = reply.confidence if isinstance(reply, Reply) else None
                        text = Response(
                            text,
                            agent=req.agent or req.model,
                            model=req.model,
                            confidence=confidence,
                        )
                    replies.append(text)
            records.append((repr(step), path, "llm", tuple(responses), tuple(out), tuple(calls)))
            return out
        raise TypeError(f"the reference cannot run {step!r}")

    outputs = await walk(step, [], random.Random(seed), () if isinstance(step, Pipeline) else (0,))
    return outputs, records


def as_reference_records(history):
    """The executor's step records in the reference's shape."""
    return [
        (
            r.step,
            r.path,
            r.kind,
            r.inputs,
            r.outputs,
            tuple(
                (c.model, [dict(m) for m in c.messages], c.temp, c.max_tokens, c.text)
                for c in r.calls
            ),
        )
        for r in history.steps
    ]


def sent(client):
    """What a scripted client was asked, as a multiset."""
    return Counter(
        (c["model"], repr(c["messages"]), c["temp"], c["max_tokens"]) for c in client.calls
    )


# -- pipelines whose first step is a Propose, with a Parallel and a judge ---------------------
branches = pipelines(transforms() | llm_steps(), max_leaves=5)


@st.composite
def runnable_pipelines(draw):
    """Propose, then several steps (transforms, LLM steps, nested branches), among them at
    least one Parallel of two or more branches and one more LLM step."""
    rest = draw(st.lists(st.one_of(transforms(), llm_steps(), branches), min_size=1, max_size=4))
    rest.insert(draw(st.integers(0, len(rest))), draw(llm_steps()))
    fork = Parallel(*draw(st.lists(branches, min_size=2, max_size=3)))
    rest.insert(draw(st.integers(0, len(rest))), fork)
    agents = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=4))
    return Propose(agents) | Pipeline(*rest)


def run_both(p, seed, delays, backend, max_concurrency):
    """``(executor's outcome, reference's outcome)``; an outcome is ``(result, outputs,
    records, calls sent)`` or "no responses"."""
    # The reference runs first: drawn functions then meet their arguments in a fixed order.
    ref_client = ScriptedClient()
    try:
        outputs, records = anyio.run(reference, p, PROMPT, ref_client, seed)
    except NoResponses:
        expected = "no responses"
    else:
        expected = (outputs[0] if outputs else "", tuple(outputs), records, sent(ref_client))
    event(expected if isinstance(expected, str) else "ran")
    client = ScriptedClient(delay=random_delays(delays))
    try:
        result, history = moa.run_sync(
            p, PROMPT, client, seed=seed, backend=backend, max_concurrency=max_concurrency
        )
    except EmptyInputError:
        executed = "no responses"
    else:
        assert history.seed == seed
        executed = (result, history.outputs, as_reference_records(history), sent(client))
    return executed, expected


@settings(max_examples=200, deadline=None)
@given(
    runnable_pipelines(),
    st.integers(0, 2**63 - 1),
    delay_randoms,
    st.sampled_from(["asyncio", "trio"]),
    st.sampled_from([None, 1, 2, 5]),
)
@example(
    Propose(["alpha", "beta"])
    | (Shuffle() | Take(1)) & (Refine(["gamma"]) | Sample(2))
    | Rank("alpha", n=2)
    | Synthesize(["beta", "gamma"])
    | Vote("alpha"),
    7,
    random.Random(0),
    "asyncio",
    None,
)
@example(
    Propose(["alpha"]) | (Filter(lambda s: False) & Take(1)) | Pipeline() & Aggregate("beta"),
    1,
    random.Random(1),
    "trio",
    2,
)
def test_executor_agrees_with_the_reference(p, seed, delays, backend, max_concurrency):
    executed, expected = run_both(p, seed, delays, backend, max_concurrency)
    if isinstance(executed, str) or isinstance(expected, str):
        assert executed == expected
        return
    result, outputs, records, calls_sent = executed
    assert result == expected[0]
    assert outputs == expected[1]
    for got, want in zip(records, expected[2]):
        assert got == want
    assert len(records) == len(expected[2])
    assert calls_sent == expected[3]
