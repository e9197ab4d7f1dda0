"""moa.serve: pipelines as models behind an OpenAI-compatible API, served by uvicorn on
127.0.0.1 and called by the real openai SDK, raw HTTP (httpx), and moa itself."""

from __future__ import annotations

import gc
import json
import logging
import socket
from contextlib import asynccontextmanager

import anyio
import pytest
from conftest import _need
from scripted import ScriptedClient

import moa
import moa.clients
from moa import Aggregate, Majority, Propose, RunOptions

_need("starlette", "pip install 'moa-dsl[serve]'")
_need("uvicorn", "pip install 'moa-dsl[serve]'")
_need("openai", "pip install 'moa-dsl[openai]'")

import httpx  # noqa: E402  (the openai SDK's own dependency)
import openai  # noqa: E402
import uvicorn  # noqa: E402

from moa.serve import Served, app  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"  # uvicorn runs on asyncio


PIPE = Propose(["a", "b", "c"]) | Aggregate("j")
KEY = "sk-test-serve-key"


@asynccontextmanager
async def serving(models, **options):
    """The app under uvicorn on a free port of 127.0.0.1: its base URL, until the block ends
    (then shut down as on SIGTERM: in-flight requests drained)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app(models, **options), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            while not server.started:
                await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{port}", server
            finally:
                while _opened:
                    await _opened.pop().close()
                server.should_exit = True


_opened: list[openai.AsyncOpenAI] = []


def sdk(base: str, key: str = "none") -> openai.AsyncOpenAI:
    """The openai SDK's client for the server at ``base``, closed when ``serving`` ends."""
    api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    _opened.append(api)
    return api


async def test_the_openai_sdk_gets_the_pipelines_answer_and_usage_over_every_call():
    client = ScriptedClient()
    async with serving({"mix": Served(PIPE, client)}) as (base, _):
        api = sdk(base)
        reply = await api.chat.completions.create(
            model="mix", messages=[{"role": "user", "content": "What is 2+2?"}], seed=7
        )
        models = await api.models.list()
    expected, history = await moa.run(PIPE, "What is 2+2?", ScriptedClient(), seed=7)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop" and reply.model == "mix"
    assert reply.usage.prompt_tokens == history.input_tokens
    assert reply.usage.completion_tokens == history.output_tokens
    assert len(client.calls) == 4
    assert [m.id for m in models.data] == ["mix"]


async def test_a_stream_sends_the_answer_in_pieces_then_usage_and_done():
    async with serving({"mix": Served(PIPE, ScriptedClient())}) as (base, _):
        stream = await sdk(base).chat.completions.create(
            model="mix",
            messages=[{"role": "user", "content": "q?"}],
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    expected, history = await moa.run(PIPE, "q?", ScriptedClient(), seed=3)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # pieces
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == (
        history.input_tokens + history.output_tokens
    )


async def test_a_conversation_is_the_runs_conversation():
    client = ScriptedClient()
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a planet."},
        {"role": "assistant", "content": "Mars."},
        {"role": "user", "content": [{"type": "text", "text": "Its moons?"}]},
    ]
    async with serving({"mix": Served(PIPE, client)}) as (base, _):
        reply = await sdk(base).chat.completions.create(model="mix", messages=turns, seed=1)
    asked = [dict(t, content="Its moons?") if i == 3 else t for i, t in enumerate(turns)]
    expected, _ = await moa.run(PIPE, asked, ScriptedClient(), seed=1)
    assert reply.choices[0].message.content == expected
    # Every proposer read the earlier turns.
    assert all(c["messages"][1]["content"] == "Name a planet." for c in client.calls[:3])


async def test_the_history_extension_is_opt_in():
    async with serving({"mix": Served(PIPE, ScriptedClient())}) as (base, _):
        async with httpx.AsyncClient(base_url=base) as http:
            ask = {"model": "mix", "messages": [{"role": "user", "content": "q?"}]}
            plain = (await http.post("/v1/chat/completions", json=ask)).json()
            extended = (
                await http.post("/v1/chat/completions", json=ask | {"moa": {"history": True}})
            ).json()
    assert "moa" not in plain
    history = moa.History.from_dict(extended["moa"]["history"])
    assert len(history.calls) == 4 and extended["moa"]["cost"]["usd"] >= 0


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1]", 400, "JSON object"),
        (
            {"model": "nope", "messages": [{"role": "user", "content": "q"}]},
            404,
            "'nope' does not exist",
        ),
        ({"model": "mix", "messages": []}, 400, "messages"),
        ({"model": "mix", "messages": [{"role": "user", "content": "q"}], "n": 2}, 400, "n:"),
        (
            {
                "model": "mix",
                "messages": [{"role": "user", "content": "q"}],
                "tools": [{"type": "function"}],
            },
            400,
            "tools",
        ),
        (
            {
                "model": "mix",
                "messages": [{"role": "user", "content": "q"}],
                "response_format": {"type": "json_object"},
            },
            400,
            "response format",
        ),
        (
            {"model": "mix", "messages": [{"role": "user", "content": "q"}], "colour": 1},
            400,
            "unknown field 'colour'",
        ),
        ({"model": "mix", "messages": [{"role": "assistant", "content": "q"}]}, 400, "messages"),
        (
            {"model": "mix", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            400,
            "only text",
        ),
        (
            {"model": "mix", "messages": [{"role": "user", "content": "q"}], "seed": "7"},
            400,
            "seed",
        ),
    ],
)
async def test_a_bad_request_is_refused_in_openais_shape_before_any_call(body, status, words):
    client = ScriptedClient()
    async with serving({"mix": Served(PIPE, client)}) as (base, _):
        async with httpx.AsyncClient(base_url=base) as http:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = await http.post(
                "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
            )
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert client.calls == []


async def test_sampling_fields_are_taken_and_leave_the_steps_settings():
    client = ScriptedClient()
    async with serving({"mix": Served(PIPE, client)}) as (base, _):
        await sdk(base).chat.completions.create(
            model="mix", messages=[{"role": "user", "content": "q"}], temperature=0.1, max_tokens=5
        )
    assert {c["temp"] for c in client.calls} == {0.7} and {
        c["max_tokens"] for c in client.calls
    } == {PIPE.steps[0].max_tokens}


async def test_a_key_is_asked_of_every_request_but_health():
    async with serving({"mix": Served(PIPE, ScriptedClient())}, key=KEY) as (base, _):
        with pytest.raises(openai.AuthenticationError) as wrong:
            await sdk(base, "sk-wrong").models.list()
        assert (await sdk(base, KEY).models.list()).data[0].id == "mix"
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/health")).json()["status"] == "ok"
            bare = await http.post("/v1/chat/completions", json={"model": "mix"})
    assert wrong.value.status_code == 401 and bare.status_code == 401
    assert KEY not in wrong.value.message and "sk-wrong" not in wrong.value.message


async def test_a_body_past_the_limit_is_413_however_it_is_sent():
    async with serving({"mix": Served(PIPE, ScriptedClient())}, max_body=1000) as (base, _):
        async with httpx.AsyncClient(base_url=base) as http:
            big = {"model": "mix", "messages": [{"role": "user", "content": "x" * 2000}]}
            declared = await http.post("/v1/chat/completions", json=big)

            async def chunks():
                for _ in range(40):
                    yield b" " * 100  # no Content-Length: chunked

            chunked = await http.post(
                "/v1/chat/completions",
                content=chunks(),
                headers={"content-type": "application/json"},
            )
    assert declared.status_code == 413 and chunked.status_code == 413


async def test_past_the_servers_capacity_a_request_is_429_at_once():
    client = ScriptedClient(delay=0.5)
    async with serving({"mix": Served(PIPE, client)}, max_requests=2) as (base, _):
        api = sdk(base)
        statuses: list[int] = []

        async def one():
            try:
                await api.chat.completions.create(
                    model="mix", messages=[{"role": "user", "content": "q"}]
                )
                statuses.append(200)
            except openai.RateLimitError as exc:
                statuses.append(exc.status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert sorted(statuses) == [200, 200, 429, 429, 429]


async def test_failing_providers_are_502_with_no_secret():
    client = ScriptedClient(permanent={"a", "b", "c"})
    async with serving({"mix": Served(PIPE, client)}, key=KEY) as (base, _):
        with pytest.raises(openai.APIStatusError) as failed:
            await sdk(base, KEY).chat.completions.create(
                model="mix", messages=[{"role": "user", "content": "q"}]
            )
    assert failed.value.status_code == 502
    assert "providers failed" in failed.value.message and KEY not in failed.value.message


async def test_a_run_past_the_timeout_is_504_and_cancelled():
    client = ScriptedClient(hang={"j"})
    async with serving({"mix": Served(PIPE, client)}, timeout=0.5) as (base, _):
        with pytest.raises(openai.APIStatusError) as late:
            await sdk(base).chat.completions.create(
                model="mix", messages=[{"role": "user", "content": "q"}]
            )
    assert late.value.status_code == 504 and client.in_flight == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_disconnects_cancels_every_call_of_its_run(stream):
    client = ScriptedClient(hang={"b", "c"})
    async with serving({"mix": Served(PIPE, client)}) as (base, _):
        async with httpx.AsyncClient(base_url=base) as http:
            ask = {"model": "mix", "messages": [{"role": "user", "content": "q"}], "stream": stream}
            with anyio.move_on_after(0.5):
                async with http.stream("POST", "/v1/chat/completions", json=ask) as response:
                    async for _ in response.aiter_bytes():
                        pass
            assert client.in_flight == 2  # b and c hang: the run waits on them
            # The connection is closed: the server cancels the run.
            with anyio.fail_after(5):
                while client.in_flight:
                    await anyio.sleep(0.02)
            health = (await http.get("/health")).json()
    assert health["in_flight"] == 0 and client.finished == 1  # only "a" answered


async def test_moa_itself_calls_a_served_mixture_through_openai_client_streamed_or_not():
    async with serving({"mix": Served(PIPE, ScriptedClient())}) as (base, _):
        inner = moa.clients.openai_client(base_url=f"{base}/v1", api_key="none")
        outer = Propose(["mix", "mix"]) | Aggregate("mix")
        text, history = await moa.run(outer, "q?", inner, seed=2)
        async with moa.run_stream(Propose(["mix"]) | Aggregate("mix"), "q?", inner) as events:
            pieces = [e.text async for e in events if isinstance(e, moa.TextChunk)]
        await inner.aclose()
    assert text and len(history.calls) == 3 and all(c.ok for c in history.calls)
    assert len(pieces) > 1


async def test_shutdown_during_a_stream_lets_it_finish():
    client = ScriptedClient(chunk_delay=0.05)
    async with serving({"mix": Served(PIPE, client)}) as (base, server):
        stream = await sdk(base).chat.completions.create(
            model="mix", messages=[{"role": "user", "content": "q"}], stream=True
        )
        got = []
        async for chunk in stream:
            got.append(chunk)
            server.should_exit = True  # as SIGTERM does: no new connection, the rest drained
    assert got[-1].choices[0].finish_reason == "stop"


def test_app_refuses_bad_settings():
    with pytest.raises(ValueError, match="at least one model"):
        app({})
    with pytest.raises(TypeError, match="moa.serve.Served"):
        app({"m": PIPE})
    with pytest.raises(ValueError, match="max_requests"):
        app({"m": Served(PIPE, ScriptedClient())}, max_requests=0)
    with pytest.raises(ValueError, match="timeout"):
        app({"m": Served(PIPE, ScriptedClient())}, timeout=float("nan"))


async def test_per_model_options_apply():
    client = ScriptedClient(delay=0.05)
    served = Served(PIPE, client, RunOptions(max_concurrency=1))
    async with serving({"mix": served}) as (base, _):
        await sdk(base).chat.completions.create(
            model="mix", messages=[{"role": "user", "content": "q"}]
        )
    assert client.max_in_flight == 1


async def test_a_client_that_leaves_while_sending_its_body_costs_nothing(capsys):
    client = ScriptedClient()
    async with serving({"mix": Served(PIPE, client)}) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        stream = await anyio.connect_tcp("127.0.0.1", port)
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        )
        await stream.send(head + b'Content-Length: 500\r\n\r\n{"model": ')
        await stream.aclose()  # 490 bytes short
        async with httpx.AsyncClient(base_url=base) as http:
            with anyio.fail_after(5):
                while (await http.get("/health")).json()["in_flight"]:
                    await anyio.sleep(0.02)
    assert client.calls == [] and "Traceback" not in capsys.readouterr().err


async def _events(base: str, ask: dict) -> list:
    """The data of a stream's events, as JSON ([DONE] as the string)."""
    out = []
    async with httpx.AsyncClient(base_url=base) as http:
        async with http.stream("POST", "/v1/chat/completions", json=ask | {"stream": True}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    data = line[6:]
                    out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_a_stream_whose_run_fails_ends_with_an_error_event():
    client = ScriptedClient(permanent={"a", "b", "c"})
    async with serving({"mix": Served(PIPE, client)}) as (base, _):
        events = await _events(
            base, {"model": "mix", "messages": [{"role": "user", "content": "q"}]}
        )
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "providers failed" in events[-1]["error"]["message"] and "[DONE]" not in events


async def test_a_pipeline_that_ends_without_a_writing_step_streams_its_answer_whole():
    voted = Propose(["a", "b", "c"]) | Majority()
    async with serving({"vote": Served(voted, ScriptedClient())}) as (base, _):
        events = await _events(
            base, {"model": "vote", "messages": [{"role": "user", "content": "q"}], "seed": 5}
        )
    expected, _ = await moa.run(voted, "q", ScriptedClient(), seed=5)
    pieces = [e["choices"][0]["delta"].get("content") for e in events[1:-1] if e["choices"]]
    assert pieces == [expected, None] and events[-1] == "[DONE]"


# -- traces --------------------------------------------------------------------------------------
TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
ASK = {"model": "mix", "messages": [{"role": "user", "content": "q?"}]}


@pytest.fixture
def spans(monkeypatch):
    """The spans of the server's runs, its tracer provider the global one (as an application
    that configured OpenTelemetry has it)."""
    _need("opentelemetry.sdk", "pip install 'moa-dsl[otel]'")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    return exporter


@pytest.mark.parametrize("stream", [False, True])
async def test_an_incoming_traceparent_makes_the_run_a_child_of_the_callers_span(spans, stream):
    async with serving({"mix": Served(PIPE, ScriptedClient())}) as (base, _):
        async with httpx.AsyncClient() as http:
            reply = await http.post(
                f"{base}/v1/chat/completions",
                json={**ASK, "stream": stream},
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
            )
            assert reply.status_code == 200
            await http.post(f"{base}/v1/chat/completions", json=ASK)  # no traceparent
    roots = [s for s in spans.get_finished_spans() if s.name == "invoke_workflow mix"]
    assert len(roots) == 2  # named after the served model
    joined, alone = roots
    assert format(joined.context.trace_id, "032x") == TRACE_ID
    assert format(joined.parent.span_id, "016x") == PARENT_ID and joined.parent.is_remote
    assert alone.parent is None and format(alone.context.trace_id, "032x") != TRACE_ID
    chats = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert len(chats) == 8 and {s.attributes["gen_ai.provider.name"] for s in chats} == {
        "ScriptedClient"
    }


async def test_a_client_stalled_then_gone_mid_stream_ends_its_run_in_its_own_task(caplog):
    """Starlette stops sending when the client disconnects while a chunk waits to be sent
    (its transport paused); the body is then closed in the request's own task: the run's
    calls are cancelled there, nothing is left for the garbage collector to close elsewhere
    ("Attempted to exit cancel scope in a different task"), and the count goes back to 0."""
    client = ScriptedClient(chunk_delay=0.05)
    served = app({"mix": Served(PIPE, client)})
    server = served.routes[0].endpoint.__self__
    body = json.dumps({**ASK, "stream": True}).encode()
    sent: list[dict] = []
    asked = False

    async def receive():
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep(0.3)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) >= 3:
            await anyio.sleep_forever()  # a stalled client

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }  # fmt: skip
    with anyio.fail_after(5):
        await served(scope, receive, send)
    gc.collect()
    await anyio.sleep(0.1)
    assert server.in_flight == 0
    assert client.in_flight == 0  # every call of the run was cancelled
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_servers_own_tracer_provider_gets_its_runs_named_after_the_model():
    _need("opentelemetry.sdk", "pip install 'moa-dsl[otel]'")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with serving({"mix": Served(PIPE, ScriptedClient())}, tracer_provider=provider) as (
        base,
        _,
    ):
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"{base}/v1/chat/completions", json=ASK)).status_code == 200
    assert [s.name for s in exporter.get_finished_spans()][-1] == "invoke_workflow mix"
