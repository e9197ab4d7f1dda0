"""route: the longest matching prefix picks the client; no match is a clear, unretried error."""

import pytest
from scripted import ScriptedClient

import moa
from moa import Propose, Retry, StepFailedError
from moa.clients import route
from moa.clients._route import NoRouteError

pytestmark = pytest.mark.anyio


def named(name):
    return ScriptedClient(reply=lambda model, messages: f"{name} answered {model}")


async def ask(client, model):
    text, _, _ = await client(
        model=model, messages=[{"role": "user", "content": "Q"}], temp=0.5, max_tokens=8
    )
    return text


async def test_the_longest_matching_prefix_wins():
    client = route(
        {"gpt": named("openai"), "gpt-5": named("reasoning"), "claude": named("anthropic")},
        default=named("fallback"),
    )
    assert await ask(client, "gpt-4o") == "openai answered gpt-4o"
    assert await ask(client, "gpt-5-nano") == "reasoning answered gpt-5-nano"
    assert await ask(client, "claude-opus-4-6") == "anthropic answered claude-opus-4-6"
    assert await ask(client, "llama-3.3-70b") == "fallback answered llama-3.3-70b"


async def test_the_chosen_client_gets_the_call_unchanged():
    inner = named("x")
    await ask(route({"gpt": inner}), "gpt-4o")
    assert inner.calls == [
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Q"}],
            "temp": 0.5,
            "max_tokens": 8,
        }
    ]


async def test_no_match_and_no_default_names_the_model_and_prefixes_and_is_not_retried():
    client = route({"gpt": named("openai"), "claude": named("anthropic")})
    with pytest.raises(NoRouteError, match=r"no client for model 'llama-3'.*'gpt', 'claude'"):
        await ask(client, "llama-3")
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose(["llama-3"]), "Q", client, retry=Retry(initial=0, jitter=0))
    assert info.value.history.calls[0].attempts == 1
    assert "NoRouteError" in info.value.history.calls[0].error


@pytest.mark.parametrize(
    "clients, default, error, match",
    [
        ({"": named("a")}, None, ValueError, "every prefix must be a non-empty str"),
        ({3: named("a")}, None, ValueError, "every prefix must be a non-empty str, got 3"),
        ({"gpt": "openai"}, None, TypeError, "the client for 'gpt' must be an async callable"),
        ({}, None, ValueError, "at least one prefix or a default"),
        ({"gpt": named("a")}, 42, TypeError, "default must be an async callable"),
        ([("gpt", named("a"))], None, TypeError, "clients must be a dict"),
    ],
)
def test_bad_routes_fail_at_construction(clients, default, error, match):
    with pytest.raises(error, match=match):
        route(clients, default=default)


def test_repr_reads_as_the_call():
    class Named:
        def __init__(self, name):
            self.name = name

        def __repr__(self):
            return f"{self.name}()"

        async def __call__(self, **kwargs):
            return "", 0, 0

    assert (
        repr(route({"gpt": Named("a"), "claude": Named("b")}, default=Named("c")))
        == "route({'gpt': a(), 'claude': b()}, default=c())"
    )
    assert repr(route({}, default=Named("c"))) == "route({}, default=c())"


async def test_stream_goes_to_the_routed_client_or_is_one_chunk():
    from moa import Usage
    from moa.testing import ScriptedClient

    streaming = ScriptedClient(lambda m, _: "a b c")

    async def plain(*, model, messages, temp, max_tokens):
        return "whole reply", 2, 3

    router = route({"s": streaming}, default=plain)
    msgs = [{"role": "user", "content": "hi"}]
    got = [x async for x in router.stream(model="s1", messages=msgs, temp=0.0, max_tokens=5)]
    assert got[:3] == ["a ", "b ", "c"] and isinstance(got[3], Usage) and streaming.streams == 1
    got = [x async for x in router.stream(model="other", messages=msgs, temp=0.0, max_tokens=5)]
    assert got == ["whole reply", Usage(2, 3)]
