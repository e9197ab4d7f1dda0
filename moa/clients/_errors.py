"""Sorting a provider SDK's exception into a ``ProviderError`` the retry policy can read.

Every adapter sends its failures through :func:`provider_error`: a rate limit, a timeout, a
dropped connection or a server error is retryable (with the provider's Retry-After as the least
wait); a bad key, a bad request, an unknown model or an overflowing context is not. Messages name
the model, the HTTP status and the provider's own words, and never carry an API key.

A request the SDK cannot encode (a prompt holding a lone surrogate) is not retryable either:
the same text fails the same way every time.

Only duck typing is used here (``status_code``, ``response.headers``, class names), so this
module imports no SDK and serves OpenAI, Anthropic and LiteLLM (whose errors subclass OpenAI's)
alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import ProviderError

__all__ = ("provider_error", "redact", "retry_after_seconds", "url_passwords")

_REDACTED = "[REDACTED]"

# Shapes of keys and credentials that may be echoed in a provider's error text: OpenAI
# (sk-..., sk-proj-...), Anthropic (sk-ant-...), OpenRouter (sk-or-...), Groq (gsk_...), xAI,
# Google (AIza...), then Bearer tokens and key=value pairs whatever the key looks like.
_KEY_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_-])(?:sk|rk|pk)-[A-Za-z0-9_\-]{6,}"
    r"|(?<![A-Za-z0-9_-])gsk_[A-Za-z0-9_\-]{6,}"
    r"|(?<![A-Za-z0-9_-])xai-[A-Za-z0-9_\-]{6,}"
    r"|(?<![A-Za-z0-9_-])AIza[A-Za-z0-9_\-]{20,}"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s'\",;}]+")
_KEY_VALUE = re.compile(
    r"(?i)\b(api[_-]?key|x-api-key|access[_-]?token|auth[_-]?token|authorization)"
    r"(['\"]?\s*[:=]\s*['\"]?)(?!bearer\b)[^\s'\",;&})]+"
)

# The password of a URL's userinfo (http://user:PASS@host/v1), whatever its length; the user
# name stays, so the URL can still be told from others. The password runs to the last "@"
# before the path, as urlsplit reads it.
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@'\"]*):[^/\s'\"]+@")
_MASKED_PASSWORD = r"\1:***@"
# Userinfo with no password (https://TOKEN@host) is often a token itself: all of it is masked.
_URL_TOKEN = re.compile(r"(?<=://)[^/\s:@'\"]+@")

# A configured secret shorter than this is not searched for: replacing every "a" or "ab" of a
# message would mangle it, and no provider issues keys of 1-3 characters. Anything from 4 on is
# redacted, so a short key a local server was given is hidden too.
_MIN_SECRET = 4

_RETRYABLE_4XX = frozenset({408, 409, 425, 429})

# Class names (anywhere in the MRO) of timeouts and connection failures across the SDKs and
# their HTTP layers: openai/anthropic APITimeoutError, litellm Timeout, httpx TimeoutException.
_TIMEOUT_NAMES = frozenset({"APITimeoutError", "Timeout", "TimeoutException"})
_CONNECTION_NAMES = frozenset(
    {"APIConnectionError", "ConnectError", "NetworkError", "TransportError", "RemoteProtocolError"}
)

_CONTEXT_OVERFLOW = re.compile(
    r"(?i)context[ _-]?(length|window)|maximum context|prompt is too long|input is too long"
    r"|too many (input )?tokens|exceeds? the (model'?s? )?(maximum )?context"
)

_MAX_MESSAGE = 500


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every configured secret of 4 characters or more, anything shaped like a
    key and the password of any URL (``http://user:***@host``, or ``http://***@host`` for a
    bare token) replaced."""
    # URL passwords first, so one that is also a configured secret still reads "***".
    text = _URL_TOKEN.sub("***@", _URL_PASSWORD.sub(_MASKED_PASSWORD, text))
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= _MIN_SECRET:
            text = text.replace(secret, _REDACTED)
    text = _KEY_SHAPES.sub(_REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)


def url_passwords(url: str | None) -> tuple[str, ...]:
    """The password in ``url``'s userinfo, as written and percent-decoded (the form an HTTP
    layer may echo), for the secrets an adapter redacts; () when there is none."""
    if not url:
        return ()
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    return tuple(dict.fromkeys(p for p in (password, unquote(password or "")) if p))


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except Exception:
        return None
    if value is None and isinstance(headers, Mapping):
        # A plain dict (litellm's ``exc.headers``) is case-sensitive; HTTP headers are not.
        value = next(
            (v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None
        )
    return value if isinstance(value, str) else None


def retry_after_seconds(headers: Any, *, now: datetime | None = None) -> float | None:
    """The wait a response asks for, in seconds: ``retry-after-ms``, else ``retry-after`` as
    seconds or as an HTTP date; None when neither is there or readable."""
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    after = _header(headers, "retry-after")
    if after is None:
        return None
    try:
        value = float(after)
    except ValueError:
        try:
            when = parsedate_to_datetime(after)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return value if math.isfinite(value) and value >= 0 else None


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _headers_of(exc: BaseException) -> list[Any]:
    # litellm puts the headers it kept on ``exc.headers`` or ``exc.litellm_response_headers``;
    # the SDKs keep the response.
    found = [getattr(exc, "headers", None), getattr(exc, "litellm_response_headers", None)]
    response = getattr(exc, "response", None)
    found.append(getattr(response, "headers", None))
    return [h for h in found if h is not None]


def _provider_message(exc: BaseException) -> str:
    api_message = getattr(exc, "api_message", None)  # anthropic: error.message from the body
    if isinstance(api_message, str) and api_message.strip():
        return api_message.strip()
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error", body)
        message = err.get("message") if isinstance(err, Mapping) else None
        if isinstance(message, str) and message:
            return message.strip()
        if isinstance(err, str) and err.strip():
            return err.strip()
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) and message else str(exc)
    # The SDKs prefix "Error code: 429 - "; the status is said once, by us.
    return re.sub(r"^Error code: \d+\s*-?\s*", "", text.strip())


def _is_context_overflow(exc: BaseException, message: str) -> bool:
    if "ContextWindowExceededError" in _names(exc):
        return True
    codes = (getattr(exc, "code", None), getattr(exc, "error_code", None))
    if any(isinstance(c, str) and "context_length" in c for c in codes):
        return True
    return bool(_CONTEXT_OVERFLOW.search(message))


def _cause_text(exc: BaseException) -> str:
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is None:
        return ""
    text = str(cause)
    return f" ({type(cause).__name__}: {text})" if text else f" ({type(cause).__name__})"


def _encoding_error(exc: BaseException) -> UnicodeEncodeError | None:
    # The UnicodeEncodeError ``exc`` is or wraps: the SDKs raise it as it is, LiteLLM re-raises
    # it as a status error of its own (a 500) that repeats its words. One in the chain that
    # ``exc`` does not repeat is not its cause: the SDK was called while it was being handled.
    if isinstance(exc, UnicodeEncodeError):
        return exc
    said = str(exc)
    seen = {id(exc)}
    link = exc.__cause__ or exc.__context__
    while link is not None and id(link) not in seen:
        if isinstance(link, UnicodeEncodeError) and str(link) in said:
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def _unencodable(error: UnicodeEncodeError) -> str:
    if error.reason == "surrogates not allowed":
        bad = error.object[error.start : error.end] if isinstance(error.object, str) else ""
        return (
            f"the request text is not valid Unicode: it holds a lone surrogate ({bad!r}), "
            f"which no provider accepts; remove it or re-decode the text it came from"
        )
    # Not the text (a header or URL that is not ASCII): no part of what failed is shown, as it
    # may be a key.
    return (
        f"the request cannot be encoded: {error.encoding} cannot encode a character "
        f"({error.reason}); HTTP headers and URLs must be ASCII"
    )


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def provider_error(
    exc: BaseException, *, model: str, secrets: Iterable[str | None] = ()
) -> ProviderError | None:
    """The ``ProviderError`` for an SDK's exception, or None when ``exc`` is not a failed
    provider call (a bug, a bad argument), which the adapter then lets through unchanged.

    Retryable: timeouts, connection failures, 408, 409, 425, 429 and 5xx but 501. Not
    retryable: 400 (context overflow included), 401, 403, 404, 413, 422 and the rest, and a
    request that cannot be encoded (a lone surrogate in the prompt).
    """
    secrets = tuple(secrets)
    encoding = _encoding_error(exc)
    if encoding is not None:
        return ProviderError(
            _shorten(redact(_unencodable(encoding), secrets)), model=model, retryable=False
        )
    status = _status_of(exc)
    failure = _transport_failure(exc)
    if failure is not None:
        return ProviderError(
            _shorten(redact(_failure_message(failure, exc), secrets)),
            model=model,
            retryable=True,
            status=status,
        )
    if status is None:
        return None
    return _status_error(exc, status, model=model, secrets=secrets)


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status ``exc`` carries as ``status_code``; None when it has none (or no int)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, bool) or not isinstance(status, int):
        return None
    return status


def _transport_failure(exc: BaseException) -> str | None:
    """The transport failure ``exc`` is, in words: "timed out" for a timeout, "connection
    failed" for a connection failure; None for any other exception."""
    names = _names(exc)
    # A timeout first: the SDKs' APITimeoutError is also an APIConnectionError.
    if names & _TIMEOUT_NAMES or isinstance(exc, TimeoutError):
        return "timed out"
    if names & _CONNECTION_NAMES or isinstance(exc, ConnectionError):
        return "connection failed"
    return None


def _failure_message(failure: str, exc: BaseException) -> str:
    """The message of a timeout or connection ``failure``: what it is, the provider's words
    and the exception's cause."""
    detail = _provider_message(exc)
    return f"{failure}: {detail}{_cause_text(exc)}" if detail else f"{failure}{_cause_text(exc)}"


def _is_retryable(status: int) -> bool:
    """Whether a failure with HTTP ``status`` may succeed on a retry."""
    # 501 Not Implemented will not change on a retry, unlike the other 5xx.
    return status in _RETRYABLE_4XX or (status >= 500 and status != 501)


def _status_kind(exc: BaseException, status: int, said: str) -> str:
    """What a failure with HTTP ``status`` is, in words (``said`` is the provider's own)."""
    if status == 429:
        return "rate limited"
    if status == 529:
        return "overloaded"
    if status in (408, 504):
        return "timed out"
    if status >= 500:
        return "server error"
    if status in (401, 403):
        return "authentication failed" if status == 401 else "permission denied"
    if status == 404:
        return "not found (check the model name)"
    if status in (400, 413, 422) and _is_context_overflow(exc, said):
        return "context overflow: the messages do not fit the model's context window"
    return "request rejected"


def _retry_after(exc: BaseException) -> float | None:
    """The wait, in seconds, that the first of ``exc``'s headers to ask for one asks for;
    None when none does."""
    return next(
        (s for s in (retry_after_seconds(h) for h in _headers_of(exc)) if s is not None), None
    )


def _status_error(
    exc: BaseException, status: int, *, model: str, secrets: tuple[str | None, ...]
) -> ProviderError:
    """The ``ProviderError`` for a failure with HTTP ``status``: its kind, the status, the
    provider's words and, when retryable, the wait the response asks for."""
    said = _provider_message(exc)
    retryable = _is_retryable(status)
    kind = _status_kind(exc, status, said)
    retry_after = _retry_after(exc) if retryable else None
    message = f"{kind} (HTTP {status})"
    if said:
        message += f": {said}"
    if retry_after is not None:
        message += f"; retry after {retry_after:g} s"
    return ProviderError(
        _shorten(redact(message, secrets)),
        model=model,
        retryable=retryable,
        retry_after=retry_after,
        status=status,
    )
