"""Secrets the adapters hold never reach an error message, the history or a repr: keys of any
length from 4 characters, and the password of a base_url. Runs on asyncio and trio."""

import json

import pytest

pytest.importorskip("openai")
pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

from mockhttp import MockServer, error  # noqa: E402

import moa  # noqa: E402
from moa import Propose, ProviderError, Retry, StepFailedError  # noqa: E402
from moa.clients import anthropic_client, openai_client  # noqa: E402
from moa.clients._errors import redact  # noqa: E402

pytestmark = pytest.mark.anyio

NO_WAIT = Retry(attempts=3, initial=0, jitter=0)
MESSAGES = [{"role": "user", "content": "Hi?"}]
CLAUDE = "claude-opus-4-6"


@pytest.mark.parametrize("key", ["abc1234", "k9Zq", "local-dev"])
def test_a_configured_key_of_four_characters_or_more_is_redacted(key):
    assert redact(f"invalid key {key}, try again", [key]) == "invalid key [REDACTED], try again"


def test_a_key_of_three_characters_or_fewer_is_not_searched_for():
    # Hiding every "ab" would garble the message; no provider issues such keys.
    assert redact("tab table abc", ["ab"]) == "tab table abc"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("http://user:PASS@host/v1", "http://user:***@host/v1"),
        (
            "connect to 'https://me:p%40ss:w0rd@proxy.example:8443/api' failed",
            "connect to 'https://me:***@proxy.example:8443/api' failed",
        ),
        ("at http://:x@host", "at http://:***@host"),
        ("clone https://ghp_TOKEN1@github.example/x", "clone https://***@github.example/x"),
    ],
)
def test_the_password_of_any_url_is_masked(text, shown):
    assert redact(text) == shown


def test_urls_without_userinfo_are_left_alone():
    text = "http://host:8080/v1 and https://host/v1?a=b@c and mailto:x@y"
    assert redact(text) == text


def test_userinfo_without_a_password_is_masked_whole_as_it_may_be_a_token():
    assert redact("https://user@host/v1?a=b@c") == "https://***@host/v1?a=b@c"


def test_a_key_field_that_ends_a_repr_keeps_its_parenthesis():
    assert redact("client(api_key=abc123)") == "client(api_key=[REDACTED])"


async def test_openai_a_short_key_echoed_by_the_server_never_reaches_history():
    server = MockServer(error(401, "Incorrect API key provided: abc1234."))
    client = openai_client(
        base_url="http://127.0.0.1:8000/v1", api_key="abc1234", http_client=server.http_client()
    )
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose(["local"]), "Q", client, retry=NO_WAIT)
    dumped = json.dumps(info.value.history.to_dict())
    assert "abc1234" not in dumped and "abc1234" not in str(info.value)
    assert "Incorrect API key provided: [REDACTED]." in dumped


async def test_anthropic_a_short_key_echoed_by_the_server_never_reaches_the_error():
    server = MockServer(error(401, "invalid x-api-key k9Zq7"))
    client = anthropic_client("k9Zq7", http_client=server.http_client())
    with pytest.raises(ProviderError) as info:
        await client(model=CLAUDE, messages=MESSAGES, temp=0.3, max_tokens=8)
    assert "k9Zq7" not in str(info.value) and "[REDACTED]" in str(info.value)


def test_reprs_show_a_base_url_with_its_password_masked():
    client = openai_client(base_url="http://user:PASS@host/v1", api_key="sk-test-SECRET123456")
    assert repr(client) == "openai_client(base_url='http://user:***@host/v1')"
    client = anthropic_client(
        "sk-ant-api03-SECRET123456", base_url="https://me:hunter2@proxy.example"
    )
    assert repr(client) == "anthropic_client(base_url='https://me:***@proxy.example')"


@pytest.mark.parametrize("factory", ["openai", "anthropic"])
async def test_the_password_of_base_url_never_reaches_an_error_message(factory):
    echo = "proxy refused user me with password hunter2, at https://me:hunter2@proxy.example/v1"
    server = MockServer(error(403, echo))
    if factory == "openai":
        client = openai_client(
            base_url="https://me:hunter2@proxy.example/v1",
            api_key="sk-x-1234567",
            http_client=server.http_client(),
        )
        call = client(model="gpt-4o", messages=MESSAGES, temp=0.3, max_tokens=8)
    else:
        client = anthropic_client(
            "sk-ant-x-1234567",
            base_url="https://me:hunter2@proxy.example",
            http_client=server.http_client(),
        )
        call = client(model=CLAUDE, messages=MESSAGES, temp=0.3, max_tokens=8)
    with pytest.raises(ProviderError) as info:
        await call
    message = str(info.value)
    assert "hunter2" not in message
    assert "password [REDACTED], at https://me:***@proxy.example/v1" in message


async def test_the_password_of_a_base_url_from_the_environment_is_redacted(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "https://me:hunter2@proxy.example/v1")
    server = MockServer(error(403, "bad password hunter2"))
    client = openai_client(api_key="sk-x-1234567", http_client=server.http_client())
    with pytest.raises(ProviderError) as info:
        await client(model="gpt-4o", messages=MESSAGES, temp=0.3, max_tokens=8)
    assert "hunter2" not in str(info.value) and str(info.value).endswith("bad password [REDACTED]")
