"""litellm_client with ``litellm.acompletion`` patched by a scripted coroutine that returns
LiteLLM's own ModelResponse or raises LiteLLM's own exception classes (its HTTP layer varies by
provider, so it is not mocked); one test goes through the real acompletion's ``mock_response``.

LiteLLM runs on asyncio only (``asyncio.get_event_loop`` inside acompletion), so these tests
run on asyncio; one test checks the clear error on trio.
"""

import json
import os
import time

import anyio
import pytest

# LiteLLM fetches a price list over the network on import unless told to use its local copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")

import moa  # noqa: E402
from moa import Propose, ProviderError, Retry, StepFailedError  # noqa: E402
from moa.clients import litellm_client  # noqa: E402

pytestmark = [
    pytest.mark.anyio,
    # LiteLLM's own types trip a pydantic warning when first built; it is not moa's to fix.
    pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning"),
]

NO_WAIT = Retry(attempts=3, initial=0, jitter=0)
MESSAGES = [{"role": "user", "content": "Hi?"}]
MODEL = "llama-3.3-70b-versatile"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def model_response(text="hello", usage=True):
    fields = {
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ]
    }
    if usage:
        fields["usage"] = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    return litellm.ModelResponse(**fields)


class Scripted:
    """Stands in for litellm.acompletion: records its keyword arguments and the time, then
    raises or returns the next scripted outcome (the last one repeats)."""

    def __init__(self, *outcomes):
        self.outcomes = outcomes
        self.calls = []
        self.times = []

    async def __call__(self, **kwargs):
        self.calls.append(kwargs)
        self.times.append(time.monotonic())
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@pytest.fixture
def scripted(monkeypatch):
    def install(*outcomes):
        fake = Scripted(*outcomes)
        monkeypatch.setattr(litellm, "acompletion", fake)
        return fake

    return install


async def test_call_maps_to_acompletion_with_prefix_and_defaults(scripted):
    fake = scripted(model_response())
    client = litellm_client(prefix="groq/", top_p=0.8)
    assert await client(model=MODEL, messages=MESSAGES, temp=0.7, max_tokens=512) == ("hello", 9, 4)
    assert fake.calls == [
        {
            "model": f"groq/{MODEL}",
            "messages": MESSAGES,
            "temperature": 0.7,
            "max_tokens": 512,
            "top_p": 0.8,
        }
    ]


async def test_missing_usage_is_unknown_and_null_content_is_empty(scripted):
    scripted(model_response(text=None, usage=False))
    assert await litellm_client()(model=MODEL, messages=MESSAGES, temp=0.1, max_tokens=5) == (
        "",
        None,
        None,
    )


async def test_the_real_acompletion_shape_through_mock_response():
    client = litellm_client(prefix="groq/", mock_response="mocked answer")
    text, tin, tout = await client(model=MODEL, messages=MESSAGES, temp=0.2, max_tokens=10)
    assert text == "mocked answer"
    assert type(tin) is int and type(tout) is int


def test_repr_hides_an_api_key_and_defaults_may_not_set_call_fields():
    client = litellm_client(prefix="groq/", api_key="gsk_SECRET1234567890", top_p=0.5)
    assert repr(client) == "litellm_client(prefix='groq/', api_key=[REDACTED], top_p=0.5)"
    with pytest.raises(TypeError, match=r"litellm_client\(temperature=\.\.\.\)"):
        litellm_client(temperature=0)
    with pytest.raises(TypeError, match="prefix must be a str"):
        litellm_client(prefix=None)


def rate_limited(after):
    return litellm.RateLimitError(
        "GroqException - Rate limit reached",
        llm_provider="groq",
        model=MODEL,
        headers={"retry-after": after},
    )


async def test_rate_limit_is_retried_after_retry_after(scripted):
    fake = scripted(rate_limited("0.05"), model_response("ok"))
    result, history = await moa.run(
        Propose([MODEL]), "Q", litellm_client(prefix="groq/"), retry=NO_WAIT
    )
    assert result == "ok" and history.calls[0].attempts == 2
    assert fake.times[1] - fake.times[0] >= 0.05


async def test_rate_limit_error_names_model_status_and_wait(scripted):
    scripted(rate_limited("3"))
    with pytest.raises(ProviderError) as info:
        await litellm_client()(model=MODEL, messages=MESSAGES, temp=0.1, max_tokens=5)
    err = info.value
    assert (err.status, err.retryable, err.retry_after) == (429, True, 3.0)
    assert str(err).startswith(
        f"{MODEL}: rate limited (HTTP 429): litellm.RateLimitError: "
        "GroqException - Rate limit reached"
    )


RETRIED = [
    lambda: litellm.ServiceUnavailableError("down", llm_provider="groq", model=MODEL),
    lambda: litellm.InternalServerError("boom", llm_provider="groq", model=MODEL),
    lambda: litellm.Timeout("took too long", model=MODEL, llm_provider="groq"),
    lambda: litellm.APIConnectionError("reset by peer", llm_provider="groq", model=MODEL),
]


@pytest.mark.parametrize("make", RETRIED, ids=["503", "500", "timeout", "connection"])
async def test_transient_errors_are_retried(scripted, make):
    fake = scripted(make(), model_response("ok"))
    result, history = await moa.run(Propose([MODEL]), "Q", litellm_client(), retry=NO_WAIT)
    assert result == "ok" and history.calls[0].attempts == 2 and len(fake.calls) == 2


NOT_RETRIED = [
    (
        lambda: litellm.AuthenticationError(
            "GroqException - Invalid API Key gsk_SECRET1234567890", llm_provider="groq", model=MODEL
        ),
        "authentication failed (HTTP 401)",
    ),
    (
        lambda: litellm.BadRequestError("bad field", model=MODEL, llm_provider="groq"),
        "request rejected (HTTP 400)",
    ),
    (
        lambda: litellm.NotFoundError("no such model", model=MODEL, llm_provider="groq"),
        "not found (check the model name) (HTTP 404)",
    ),
    (
        lambda: litellm.ContextWindowExceededError("too long", model=MODEL, llm_provider="groq"),
        "context overflow",
    ),
]


@pytest.mark.parametrize("make, words", NOT_RETRIED, ids=["401", "400", "404", "context"])
async def test_permanent_errors_are_not_retried(scripted, make, words):
    fake = scripted(make(), model_response("never"))
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose([MODEL]), "Q", litellm_client(), retry=NO_WAIT)
    record = info.value.history.calls[0]
    assert record.attempts == 1 and len(fake.calls) == 1
    assert record.error.startswith(f"ProviderError: {MODEL}: {words}")
    assert "SECRET" not in json.dumps(info.value.history.to_dict())


def test_on_trio_a_call_fails_at_once_saying_asyncio():
    async def main():
        await litellm_client()(model=MODEL, messages=MESSAGES, temp=0.1, max_tokens=5)

    with pytest.raises(ProviderError, match="runs on asyncio only") as info:
        anyio.run(main, backend="trio")
    assert not info.value.retryable


# Replies of the wrong shape, and requests that cannot be encoded


class Reply:
    """A response of litellm's attribute-read shape, with fields set as given."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


@pytest.mark.parametrize(
    "response, what",
    [
        (Reply(choices="nope"), "'choices' is 'nope' (a str), not a list"),
        (Reply(id="x"), "it has no 'choices'"),
        (Reply(choices=[Reply(finish_reason="stop")]), "choices[0] has no 'message'"),
        (
            Reply(choices=[Reply(message=Reply(role="assistant", content=5))]),
            "choices[0].message.content is 5 (an int), not a string or null",
        ),
    ],
    ids=["choices-str", "no-choices", "no-message", "content-int"],
)
async def test_a_response_that_is_no_chat_completion_is_an_error_not_retried(
    scripted, response, what
):
    fake = scripted(response, model_response("never"))
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose([MODEL]), "Q", litellm_client(), retry=NO_WAIT)
    record = info.value.history.calls[0]
    assert record.attempts == 1 and len(fake.calls) == 1
    assert record.error == f"ProviderError: {MODEL}: the reply is not a chat completion: {what}"


async def test_a_model_response_with_empty_text_is_an_answer(scripted):
    scripted(model_response(text=""))
    assert await litellm_client()(model=MODEL, messages=MESSAGES, temp=0.1, max_tokens=5) == (
        "",
        9,
        4,
    )


async def test_a_lone_surrogate_through_the_real_acompletion_is_not_retried():
    # LiteLLM wraps the SDK's UnicodeEncodeError in an InternalServerError (a 500) of its own.
    httpx2 = pytest.importorskip("httpx2")
    openai = pytest.importorskip("openai")

    def never(request):
        raise AssertionError("a request that cannot be encoded was sent")

    sdk = openai.AsyncOpenAI(
        api_key="sk-test-SECRET123456",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(never)),
    )
    client = litellm_client(prefix="openai/", client=sdk)
    with pytest.raises(ProviderError) as info:
        await client(
            model="gpt-4o", messages=[{"role": "user", "content": "\ud800"}], temp=0.1, max_tokens=5
        )
    assert str(info.value).startswith(
        "gpt-4o: the request text is not valid Unicode: it holds a lone surrogate ('\\ud800')"
    )
    assert not info.value.retryable


def test_repr_masks_the_password_of_api_base_and_keeps_its_parenthesis():
    client = litellm_client(api_base="http://user:PASS@host/v1", api_key="abc1234")
    assert repr(client) == "litellm_client(api_base='http://user:***@host/v1', api_key=[REDACTED])"
    assert client._secrets == ("abc1234", "PASS")
