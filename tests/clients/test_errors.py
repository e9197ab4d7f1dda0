"""Error sorting shared by the adapters: retryable or not, Retry-After, and key redaction."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from moa.clients._errors import provider_error, redact, retry_after_seconds


class StatusError(Exception):
    """Shaped like an SDK's status error: a status_code, a body and a response."""

    def __init__(self, status, message="", headers=None, body=None):
        super().__init__(message)
        self.status_code = status
        self.body = body
        self.response = type("Response", (), {"headers": headers or {}})()


class APITimeoutError(Exception):
    pass


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 529])
def test_transient_statuses_are_retryable(status):
    assert provider_error(StatusError(status, "x"), model="m").retryable


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422, 501])
def test_permanent_statuses_are_not(status):
    err = provider_error(StatusError(status, "x", headers={"retry-after": "5"}), model="m")
    assert not err.retryable and err.retry_after is None and err.status == status


def test_timeouts_and_connection_failures_are_retryable_by_class_name_or_builtin():
    assert provider_error(APITimeoutError(), model="m").retryable
    assert provider_error(TimeoutError(), model="m").retryable
    assert provider_error(ConnectionResetError("reset"), model="m").retryable


def test_other_exceptions_are_not_provider_errors():
    assert provider_error(TypeError("bad argument"), model="m") is None
    assert provider_error(KeyError("x"), model="m") is None


def test_message_names_model_status_and_what_the_provider_said():
    body = {"error": {"message": "You exceeded your quota", "type": "insufficient_quota"}}
    err = provider_error(StatusError(429, "Error code: 429 - ...", body=body), model="gpt-4o")
    assert str(err) == "gpt-4o: rate limited (HTTP 429): You exceeded your quota"
    err = provider_error(StatusError(503, "Error code: 503 - Service down"), model="m")
    assert str(err) == "m: server error (HTTP 503): Service down"


@pytest.mark.parametrize(
    "said",
    [
        "This model's maximum context length is 8192 tokens",
        "prompt is too long: 208000 tokens > 200000 maximum",
        "Please reduce the length of the messages: context_length_exceeded",
        "input exceeds the context window",
    ],
)
def test_context_overflow_is_said(said):
    assert "context overflow" in str(provider_error(StatusError(400, said), model="m"))


def test_retry_after_header_forms():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert (
        retry_after_seconds(
            {"retry-after": format_datetime(now + timedelta(seconds=30), usegmt=True)}, now=now
        )
        == 30.0
    )
    assert (
        retry_after_seconds(
            {"retry-after": format_datetime(now - timedelta(seconds=30), usegmt=True)}, now=now
        )
        == 0.0
    )
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after-ms": "nan", "retry-after": "-1"}) is None
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None


def test_retry_after_reaches_the_error():
    err = provider_error(StatusError(429, "slow", headers={"retry-after-ms": "1500"}), model="m")
    assert err.retry_after == 1.5 and str(err).endswith("; retry after 1.5 s")


@pytest.mark.parametrize(
    "key",
    [
        "sk-test-SECRET123456",
        "sk-ant-api03-SECRET123456",
        "sk-proj-SECRET123456",
        "sk-or-v1-SECRET123456",
        "gsk_SECRET123456abcdef",
        "xai-SECRET123456abcdef",
        "AIzaSyD-SECRET123456abcdefghijklm",
    ],
)
def test_key_shapes_are_redacted(key):
    assert "SECRET" not in redact(f"Incorrect API key provided: {key}.")


def test_configured_keys_bearer_tokens_and_key_fields_are_redacted():
    text = redact(
        "key plainsecretvalue; Authorization: Bearer abc.def.ghi; api_key='zzz123'; "
        "x-api-key: yyy999",
        ["plainsecretvalue"],
    )
    assert text == (
        "key [REDACTED]; Authorization: Bearer [REDACTED]; api_key='[REDACTED]'; "
        "x-api-key: [REDACTED]"
    )


def test_redaction_leaves_ordinary_text_alone():
    text = "disk-usage-monitor task-runner risk-assessment: max_tokens=5, model gpt-4o"
    assert redact(text, ["short"]) == text
