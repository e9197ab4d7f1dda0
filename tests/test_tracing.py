"""OpenTelemetry spans of a run, read back from the SDK's in-memory exporter: the tree (run,
steps, calls), the GenAI attributes and moa's own, content only when asked, the switch for an
instrumented SDK, and nothing at all when no tracer provider is configured."""

from __future__ import annotations

import json

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import moa
from moa import (
    Aggregate,
    Cache,
    Parallel,
    Propose,
    Retry,
    RunOptions,
    Shuffle,
    Take,
    Tracing,
    run,
    run_many,
    run_stream,
)
from moa._calls import compose
from moa._executor import Stop
from moa._trace import CONTENT_ENV, provider_of
from moa.clients import route
from moa.errors import StepFailedError
from tests.scripted import ScriptedClient

pytestmark = pytest.mark.anyio
FAST = Retry(attempts=3, initial=0, max_wait=0, jitter=0)


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def traced(provider, **kw):
    return Tracing(tracer_provider=provider, **kw)


def tree(spans):
    """{span name: [children's names]} and the root, by parent ids."""
    by_id = {s.context.span_id: s for s in spans}
    kids: dict[str, list[str]] = {}
    roots = []
    for s in spans:
        if s.parent is None or s.parent.span_id not in by_id:
            roots.append(s)
        else:
            kids.setdefault(by_id[s.parent.span_id].name, []).append(s.name)
    return roots, {k: sorted(v) for k, v in kids.items()}


def named(spans, name):
    return [s for s in spans if s.name == name]


async def test_a_run_is_one_trace_of_run_steps_and_calls(provider, exporter):
    client = ScriptedClient()
    answer, history = await run(
        Propose(["a", "b"]) | Shuffle() | Aggregate("j"), "Q", client, tracing=traced(provider)
    )
    spans = exporter.get_finished_spans()
    roots, kids = tree(spans)
    assert [r.name for r in roots] == ["invoke_workflow moa"]
    assert kids == {
        "invoke_workflow moa": ["step Aggregate", "step Propose", "step Shuffle"],
        "step Propose": ["chat a", "chat b"],
        "step Aggregate": ["chat j"],
    }
    assert len({s.context.trace_id for s in spans}) == 1
    root = roots[0]
    assert root.kind is SpanKind.INTERNAL
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["gen_ai.agent.name"] == "moa"
    assert root.attributes["moa.seed"] == str(history.seed)  # exact in any UI
    assert root.attributes["moa.calls"] == 3
    assert root.attributes["moa.pipeline"] == "Propose(['a', 'b']) | Shuffle() | Aggregate('j')"
    # moa's names for the sums: gen_ai.usage.* on the root would count every call twice.
    assert root.attributes["moa.usage.input_tokens"] == history.input_tokens
    assert root.attributes["moa.usage.output_tokens"] == history.output_tokens
    assert not [k for k in root.attributes if k.startswith("gen_ai.usage")]
    assert root.status.status_code is StatusCode.UNSET


async def test_a_call_span_carries_the_genai_attributes(provider, exporter):
    seeds = []

    async def client(*, model, messages, temp, max_tokens, seed):
        seeds.append(seed)
        return "4", 5, 2

    await run(Propose(["a"], temp=0.3, max_tokens=77), "Q", client, tracing=traced(provider))
    (chat,) = named(exporter.get_finished_spans(), "chat a")
    a = chat.attributes
    assert chat.kind is SpanKind.CLIENT
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "client"  # a custom client: its name
    assert a["gen_ai.request.model"] == "a"
    assert a["gen_ai.request.temperature"] == 0.3
    assert a["gen_ai.request.max_tokens"] == 77
    assert a["gen_ai.request.seed"] == seeds[0]
    assert a["gen_ai.usage.input_tokens"] == 5 and a["gen_ai.usage.output_tokens"] == 2
    assert a["moa.step.path"] == "0" and a["moa.call.index"] == 0
    assert a["moa.retry.attempts"] == 1
    (step,) = named(exporter.get_finished_spans(), "step Propose")
    assert step.attributes["moa.step.calls"] == 1 and step.attributes["moa.step.kind"] == "llm"


async def test_content_is_recorded_only_when_asked(provider, exporter, monkeypatch):
    monkeypatch.delenv(CONTENT_ENV, raising=False)
    convo = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]
    await run(Propose(["a"]), convo, ScriptedClient(), tracing=traced(provider))
    for s in exporter.get_finished_spans():
        assert not any(k.startswith(("gen_ai.input", "gen_ai.output")) for k in s.attributes)
    exporter.clear()
    await run(Propose(["a"]), convo, ScriptedClient(), tracing=traced(provider, content=True))
    (chat,) = named(exporter.get_finished_spans(), "chat a")
    sent = json.loads(chat.attributes["gen_ai.input.messages"])
    assert sent[0] == {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]}
    assert sent[-1]["role"] == "user" and sent[-1]["parts"][0]["content"].endswith("Q")
    got = json.loads(chat.attributes["gen_ai.output.messages"])
    assert got[0]["role"] == "assistant" and got[0]["parts"][0]["type"] == "text"
    (root,) = named(exporter.get_finished_spans(), "invoke_workflow moa")
    assert json.loads(root.attributes["gen_ai.input.messages"])[0]["role"] == "system"
    exporter.clear()
    monkeypatch.setenv(CONTENT_ENV, "True")  # as OpenTelemetry's own instrumentations read it
    await run(Propose(["a"]), "Q", ScriptedClient(), tracing=traced(provider))
    assert "gen_ai.input.messages" in named(exporter.get_finished_spans(), "chat a")[0].attributes


async def test_calls_false_leaves_the_call_spans_to_an_instrumented_sdk(provider, exporter):
    tracer = provider.get_tracer("an-instrumented-sdk")

    async def sdk(*, model, messages, temp, max_tokens):
        with tracer.start_as_current_span(f"chat {model} (sdk)"):
            await anyio.sleep(0)
            return "ok", 1, 1

    await run(Propose(["a", "b"]) | Aggregate("j"), "Q", sdk, tracing=traced(provider, calls=False))
    _, kids = tree(exporter.get_finished_spans())
    assert kids["step Propose"] == ["chat a (sdk)", "chat b (sdk)"]  # nested, not doubled
    assert kids["step Aggregate"] == ["chat j (sdk)"]
    assert not [s for s in exporter.get_finished_spans() if s.name in ("chat a", "chat j")]


async def test_a_failed_call_has_its_error_type_and_its_retries(provider, exporter):
    client = ScriptedClient(transient={"a": 2}, permanent={"b"})
    with pytest.raises(StepFailedError):
        await run(
            Propose(["a", "b"], min_success=2), "Q", client, retry=FAST, tracing=traced(provider)
        )
    spans = exporter.get_finished_spans()
    (a,) = named(spans, "chat a")
    assert a.attributes["moa.retry.attempts"] == 3 and "error.type" not in a.attributes
    assert [e.name for e in a.events] == ["moa.retry", "moa.retry"]
    assert [e.attributes["moa.retry.attempt"] for e in a.events] == [1, 2]
    assert a.events[0].attributes["error.type"] == "Transient"
    (b,) = named(spans, "chat b")
    assert b.status.status_code is StatusCode.ERROR
    assert b.attributes["error.type"] == "Permanent"
    (root,) = named(spans, "invoke_workflow moa")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["error.type"] == "StepFailedError"
    assert root.attributes["moa.calls"] == 2  # the history so far reaches the span
    (step,) = named(spans, "step Propose")
    assert step.attributes["error.type"] == "StepFailedError"


async def test_quorum_stragglers_are_marked_cancelled_not_failed(provider, exporter):
    delays = {"a": 0, "b": 0, "c": 10}
    client = ScriptedClient(lambda m, _: m, delay=lambda m, _: delays[m])
    await run(Propose(list("abc"), quorum=2), "Q", client, tracing=traced(provider))
    spans = exporter.get_finished_spans()
    (c,) = named(spans, "chat c")
    assert c.attributes["moa.cancelled"] is True
    assert c.status.status_code is StatusCode.UNSET
    (step,) = named(spans, "step Propose")
    assert step.attributes["moa.step.cancelled"] == 1 and step.attributes["moa.step.quorum"] == 2


async def test_a_cached_answer_is_a_span_marked_as_a_hit(provider, exporter, tmp_path):
    cache = Cache(tmp_path / "c.sqlite")
    await run(Propose(["a"]), "Q", ScriptedClient(), cache=cache, seed=1)
    await run(Propose(["a"]), "Q", ScriptedClient(), cache=cache, seed=1, tracing=traced(provider))
    (chat,) = named(exporter.get_finished_spans(), "chat a")
    assert chat.attributes["moa.cache.hit"] is True
    assert chat.attributes["moa.cost.usd"] == 0.0


async def test_a_hedged_call_counts_its_tries(provider, exporter):
    slow = {"n": 0}

    async def client(*, model, messages, temp, max_tokens):
        slow["n"] += 1
        if slow["n"] == 1:
            await anyio.sleep(10)
        return "ok", 1, 1

    await run(Propose(["a"]), "Q", client, hedge_after=0.01, tracing=traced(provider))
    (chat,) = named(exporter.get_finished_spans(), "chat a")
    assert chat.attributes["moa.hedge.tries"] == 2
    assert chat.attributes["moa.hedge.cancelled"] == 1


async def test_sub_pipelines_and_parallel_branches_nest(provider, exporter):
    inner = Propose(["a"]) | Take(1)
    pipe = Parallel(inner, Propose(["b"])) | Aggregate("j")
    await run(pipe, "Q", ScriptedClient(), tracing=traced(provider))
    spans = exporter.get_finished_spans()
    _, kids = tree(spans)
    assert kids["invoke_workflow moa"] == ["step Aggregate", "step Parallel"]
    assert kids["step Parallel"] == ["step Pipeline", "step Propose"]
    assert kids["step Pipeline"] == ["step Propose", "step Take"]
    paths = sorted(s.attributes["moa.step.path"] for s in spans if s.name.startswith("step"))
    assert paths == ["0", "0.0", "0.0.0", "0.0.1", "0.1", "1"]


async def test_every_run_of_a_batch_is_its_own_trace(provider, exporter):
    results = await run_many(
        Propose(["a"]), ["q1", "q2", "q3"], ScriptedClient(), tracing=traced(provider)
    )
    assert all(r.ok for r in results)
    roots = named(exporter.get_finished_spans(), "invoke_workflow moa")
    assert len(roots) == 3 and len({r.context.trace_id for r in roots}) == 3


async def test_a_streamed_run_is_traced_too(provider, exporter):
    async with run_stream(
        Propose(["a"]) | Aggregate("j"), "Q", ScriptedClient(), tracing=traced(provider, name="mix")
    ) as events:
        async for _ in events:
            pass
    _, kids = tree(exporter.get_finished_spans())
    assert kids["invoke_workflow mix"] == ["step Aggregate", "step Propose"]
    assert kids["step Aggregate"] == ["chat j"]


async def test_the_runs_span_is_a_child_of_the_callers(provider, exporter):
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("request") as outer:
        await run(Propose(["a"]), "Q", ScriptedClient(), tracing=traced(provider))
    (root,) = named(exporter.get_finished_spans(), "invoke_workflow moa")
    assert root.parent.span_id == outer.get_span_context().span_id


async def test_nothing_is_composed_without_a_configured_provider(monkeypatch):
    # The API's default provider is a proxy with nothing behind it: no layer at all.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    calls = compose(ScriptedClient(), RunOptions(), Stop())
    assert calls.spans is None
    off = compose(ScriptedClient(), RunOptions(tracing=Tracing(enabled=False)), Stop())
    assert off.spans is None


async def test_a_configured_global_provider_traces_by_default(provider, exporter, monkeypatch):
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    await run(Propose(["a"]), "Q", ScriptedClient())
    assert [s.name for s in exporter.get_finished_spans()] == [
        "chat a",
        "step Propose",
        "invoke_workflow moa",
    ]
    exporter.clear()
    await run(Propose(["a"]), "Q", ScriptedClient(), tracing=Tracing(enabled=False))
    assert exporter.get_finished_spans() == ()


def test_the_provider_name_follows_the_route():
    class Openai:
        provider = "openai"

        async def __call__(self, **kw):  # pragma: no cover - never called
            return "", 0, 0

    async def mine(*, model, messages, temp, max_tokens):  # pragma: no cover
        return "", 0, 0

    router = route({"gpt": Openai()}, default=mine)
    assert provider_of(router, "gpt-4o") == "openai"
    assert provider_of(router, "llama") == "mine"
    assert provider_of(route({"gpt": Openai()}), "claude") == "Router"  # no route: the router


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"enabled": 1}, "enabled must be a bool"),
        ({"content": "yes"}, "content must be a bool or None"),
        ({"name": " "}, "name must be a non-empty str"),
        ({"tracer_provider": object()}, "an OpenTelemetry TracerProvider"),
        ({"prices": [1]}, "Tracing\\(prices=...\\): a moa.Prices, a mapping"),
        ({"name": 5}, "name must be a str"),
    ],
)
def test_tracing_settings_are_checked_where_they_are_made(kw, message):
    with pytest.raises((TypeError, ValueError), match=message):
        Tracing(**kw)
    with pytest.raises(TypeError, match="tracing must be a moa.Tracing or None"):
        moa.RunOptions(tracing=True)


async def test_content_off_keeps_personas_and_prompt_templates_out(provider, exporter):
    persona = moa.Agent("a", system="SECRET PERSONA")
    pipe = Propose([persona, "b"]) | Aggregate("j", prompt="SECRET TEMPLATE {responses}")
    client = ScriptedClient(permanent={"j"})
    with pytest.raises(StepFailedError):
        await run(pipe, "Q", client, retry=FAST, tracing=traced(provider, content=False))
    seen = []
    for s in exporter.get_finished_spans():
        seen += [str(v) for v in s.attributes.values()]
        seen += [str(v) for e in s.events for v in e.attributes.values()]
        seen.append(s.status.description or "")
    assert not [v for v in seen if "SECRET" in v]
    (root,) = named(exporter.get_finished_spans(), "invoke_workflow moa")
    assert root.attributes["moa.pipeline"].startswith("Propose([Agent('a', system=…), 'b'])")
    assert "prompt=…" in root.attributes["moa.pipeline"]
    exporter.clear()
    with pytest.raises(StepFailedError):
        await run(pipe, "Q", client.fresh(), retry=FAST, tracing=traced(provider, content=True))
    (root,) = named(exporter.get_finished_spans(), "invoke_workflow moa")
    assert "SECRET PERSONA" in root.attributes["moa.pipeline"]


async def test_a_cached_call_spends_no_tokens_on_its_span(provider, exporter, tmp_path):
    cache = Cache(tmp_path / "c.sqlite")
    await run(Propose(["a"]), "Q", ScriptedClient(), cache=cache, seed=1)
    await run(Propose(["a"]), "Q", ScriptedClient(), cache=cache, seed=1, tracing=traced(provider))
    (chat,) = named(exporter.get_finished_spans(), "chat a")
    assert not [k for k in chat.attributes if k.startswith("gen_ai.usage")]
    (root,) = named(exporter.get_finished_spans(), "invoke_workflow moa")
    assert root.attributes["moa.usage.input_tokens"] == 0


async def test_calls_are_priced_at_the_tracings_prices_else_the_budgets(provider, exporter):
    async def client(*, model, messages, temp, max_tokens):
        return "ok", 1_000_000, 2_000_000

    prices = {"a": (1.0, 2.0)}  # $ per million tokens
    await run(Propose(["a"]), "Q", client, tracing=traced(provider, prices=prices))
    (chat,) = named(exporter.get_finished_spans(), "chat a")
    assert chat.attributes["moa.cost.usd"] == 5.0
    (root,) = named(exporter.get_finished_spans(), "invoke_workflow moa")
    assert root.attributes["moa.cost.usd"] == 5.0
    exporter.clear()
    budget = moa.Budget(usd=100.0, prices={"a": (3.0, 0.0)})
    await run(Propose(["a"]), "Q", client, budget=budget, tracing=traced(provider))
    assert named(exporter.get_finished_spans(), "chat a")[0].attributes["moa.cost.usd"] == 3.0
    exporter.clear()
    await run(Propose(["a"]), "Q", client, tracing=traced(provider))  # no price for "a"
    assert "moa.cost.usd" not in named(exporter.get_finished_spans(), "chat a")[0].attributes


async def test_the_runs_and_steps_own_figures(provider, exporter):
    convo = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]
    delays = {"a": 0, "b": 5}
    client = ScriptedClient(lambda m, _: m, delay=lambda m, _: delays.get(m, 0), transient={"a": 1})
    pipe = Propose([moa.Agent("a", name="alpha"), "b"], deadline=0.2) | Aggregate("j")
    await run(
        pipe,
        convo,
        client,
        retry=Retry(attempts=2, initial=0.01, max_wait=0.01, jitter=0),
        tracing=traced(provider),
    )
    spans = exporter.get_finished_spans()
    (root,) = named(spans, "invoke_workflow moa")
    assert root.attributes["moa.conversation.turns"] == 2 and root.attributes["moa.degraded"]
    (step,) = named(spans, "step Propose")
    assert step.attributes["moa.step"] == "Propose([Agent('a', name='alpha'), 'b'], deadline=0.2)"
    assert step.attributes["moa.step.min_success"] == 1 and "moa.step.degraded" in step.attributes
    assert step.attributes["moa.step.outputs"] == 1 and step.attributes["moa.step.failed"] == 0
    (a,) = named(spans, "chat a")
    assert a.attributes["moa.agent"] == "alpha"
    assert a.events[0].attributes["moa.retry.wait"] == pytest.approx(0.01)
