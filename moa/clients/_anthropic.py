"""The Anthropic client, on Anthropic's own Messages API."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from .._bounds import check_seconds
from .._client import Usage
from ..errors import MoaError, ProviderError
from ._common import PerLoop, check_defaults, token_count
from ._errors import provider_error, redact, url_passwords
from ._extras import require
from ._replies import MESSAGE, MESSAGE_EVENT, field, is_object, malformed, shown
from ._sse import StreamError, check_ended, close_shielded, sse_events

__all__ = ("AnthropicClient", "anthropic_client")

log = logging.getLogger("moa.clients")

_RESERVED = frozenset({"model", "messages", "system", "temperature", "max_tokens", "stream"})

# The events of a Messages API stream; any other is skipped, as Anthropic may add new ones.
_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)

# The usage fields a stream reports: message_start has them all, message_delta the final
# (cumulative) values of those it repeats.
_USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def split_system(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    """The system messages joined into one ``system`` text, and the other messages."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
    return system, rest


class _StreamState:
    """What a Messages API stream has said so far: the usage fields it reported, its stop
    reason, and whether any event, any known event, any text and message_stop came."""

    __slots__ = ("any_event", "any_known", "any_text", "stop_reason", "stopped", "usage")

    def __init__(self) -> None:
        self.usage: dict[str, Any] = {}
        self.stop_reason: Any = None
        self.any_text = self.stopped = self.any_event = self.any_known = False


class AnthropicClient:
    """A ``moa.Client`` over ``anthropic.AsyncAnthropic`` (one per event loop); built by
    :func:`anthropic_client`."""

    #: ``gen_ai.provider.name`` on its calls' spans.
    provider = "anthropic"

    __slots__ = ("_sdks", "_secrets", "base_url", "defaults", "send_temperature")

    def __init__(
        self,
        sdks: PerLoop,
        *,
        base_url: str | None,
        send_temperature: bool,
        defaults: dict[str, Any],
        secrets: tuple[str, ...],
    ) -> None:
        self._sdks = sdks
        self.base_url = base_url
        self.send_temperature = send_temperature
        self.defaults = defaults
        self._secrets = secrets

    def __repr__(self) -> str:
        args = [f"base_url={self.base_url!r}"] if self.base_url is not None else []
        if not self.send_temperature:
            args.append("send_temperature=False")
        args += [f"{k}={v!r}" for k, v in self.defaults.items()]
        return redact(f"anthropic_client({', '.join(args)})", self._secrets)

    def params(
        self, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int
    ) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` for one call."""
        system, rest = split_system(messages)
        params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": rest}
        if system:
            params["system"] = system
        # anthropic 1.0 took ``temperature`` out of create()'s signature; the API still reads
        # it from the body, where extra_body puts it (older SDKs do the same).
        body = dict(self.defaults)
        if self.send_temperature:
            body["temperature"] = temp
        if body:
            params["extra_body"] = body
        return params

    def _stream_error(self, error: Any, model: str) -> ProviderError:
        """An error event inside a begun stream, sorted as the same failure before it."""
        sorted_ = self._error(StreamError(error), model)
        assert sorted_ is not None  # a StreamError is always a provider's
        return sorted_

    def _error(self, exc: Exception, model: str) -> ProviderError | None:
        """The ``ProviderError`` for an SDK exception, whether raised when a request opens or
        in the middle of its stream; None when ``exc`` is no provider failure (a bug)."""
        if isinstance(exc, ValueError) and "streaming is required" in str(exc).lower():
            # The SDK refuses, before sending, a non-streaming call it expects to run past
            # ten minutes (a large max_tokens); retrying cannot help.
            return ProviderError(
                redact(
                    f"{exc} (give anthropic_client(timeout=...) to send it anyway)", self._secrets
                ),
                model=model,
                retryable=False,
            )
        error = provider_error(exc, model=model, secrets=self._secrets)
        if error is None:
            return None
        said = str(error)[len(model) + 2 :]
        if error.status == 400 and self.send_temperature and "temperature" in said:
            error = ProviderError(
                f"{said}; if this model takes no temperature, use "
                f"anthropic_client(send_temperature=False)",
                model=model,
                retryable=False,
                status=400,
            )
        return error

    async def __call__(
        self, *, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int
    ) -> tuple[str, int | None, int | None]:
        try:
            params = self.params(model, messages, temp, max_tokens)
            response = await self._sdks.get().messages.create(**params)
        except Exception as exc:
            error = self._error(exc, model)
            if error is None:
                raise
        else:
            return _reply(model, response, self._secrets)
        # Raised outside the except block, so the SDK's exception (whose text may echo a key)
        # is neither the cause nor the context.
        raise error from None

    async def stream(
        self, *, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int
    ) -> AsyncIterator[str | Usage]:
        """The reply's text chunks as the API sends them, then its :class:`~moa.Usage` (input
        tokens include cached ones, as for ``__call__``). Failures, when the stream opens or
        in its middle, are sorted into ``ProviderError`` as ``__call__`` sorts them; the HTTP
        response is closed however the iteration ends."""
        stream = await self._open(model, self.params(model, messages, temp, max_tokens))
        state = _StreamState()
        try:
            sort = functools.partial(self._error, model=model)
            async with aclosing(
                sse_events(stream.response, model=model, secrets=self._secrets, sort=sort)
            ) as events:
                async for kind, data in events:
                    text = self._take_event(model, kind, data, state)
                    if text:
                        yield text
        finally:
            await close_shielded(stream)
        _check_outcome(model, state, self._secrets)
        yield Usage(*_counts(state.usage))

    def _take_event(self, model: str, kind: str, data: Any, state: _StreamState) -> str | None:
        """Read one stream event into ``state``: the text it adds (None or "" when none). An
        error event, or a malformed one, raises its ``ProviderError``."""
        state.any_event = True
        if kind not in _EVENTS:
            return None  # Anthropic may add event types; its docs say to skip them.
        state.any_known = True
        if kind == "error":
            # An error inside the stream (overloaded_error...), sorted by its type.
            error = data.get("error", data) if isinstance(data, dict) else data
            raise self._stream_error(error, model)
        if not isinstance(data, dict):
            raise malformed(
                model,
                MESSAGE_EVENT,
                f"a {kind} event's data is {shown(data)}, not a JSON object",
                self._secrets,
            )
        if kind == "content_block_delta":
            text = _delta_text(model, data, self._secrets)
            if text:
                state.any_text = True
            return text
        if kind == "message_start":
            _take_usage(
                state.usage, _part(model, kind, data, "message", self._secrets).get("usage")
            )
        elif kind == "message_delta":
            _take_usage(state.usage, data.get("usage"))
            state.stop_reason = _part(model, kind, data, "delta", self._secrets).get("stop_reason")
        elif kind == "message_stop":
            state.stopped = True
        return None

    async def _open(self, model: str, params: dict[str, Any]) -> Any:
        try:
            return await self._sdks.get().messages.create(stream=True, **params)
        except Exception as exc:
            error = self._error(exc, model)
            if error is None:
                raise
        raise error from None

    async def aclose(self) -> None:
        """Close this event loop's HTTP connections; a later call opens new ones."""
        sdk = self._sdks.pop()
        if sdk is not None:
            await sdk.close()


def _check_outcome(model: str, state: _StreamState, secrets: tuple[str, ...]) -> None:
    """After a stream's body: raise when it was no Messages API stream or did not end (see
    ``check_ended``), log when it ended with no text."""
    if state.any_event and not state.any_known:
        # Events came, but none of the Messages API: another API's stream, not a cut one.
        raise malformed(
            model,
            MESSAGE_EVENT,
            "no event of the stream was one of its "
            "events (message_start, content_block_delta, message_stop...)",
            secrets,
        )
    check_ended(
        model,
        ended=state.stopped or state.stop_reason is not None,
        any_text=state.any_text,
        what="message",
        signals="stop_reason and no message_stop",
        reason_name="stop_reason",
        reason=state.stop_reason,
        log=log,
    )


def _reply(
    model: str, response: Any, secrets: tuple[str, ...]
) -> tuple[str, int | None, int | None]:
    texts = [
        text
        for i, block in enumerate(_blocks(model, response, secrets))
        if (text := _block_text(model, i, block, secrets)) is not None
    ]
    if not texts:
        log.warning(
            '%s: the response has no text block (stop_reason=%r); returning ""',
            model,
            field(response, "stop_reason"),
        )
    usage: dict[str, Any] = {}
    _take_usage(usage, field(response, "usage"))
    return ("".join(texts), *_counts(usage))


def _blocks(model: str, response: Any, secrets: tuple[str, ...]) -> list[Any]:
    # The content blocks of a message; an empty list is an answer (it said nothing).
    if not is_object(response):
        raise malformed(
            model, MESSAGE, f"the body is {shown(response)}, not a JSON object", secrets
        )
    blocks = field(response, "content")
    if not isinstance(blocks, list):
        raise malformed(
            model,
            MESSAGE,
            "it has no 'content'"
            if blocks is None
            else f"'content' is {shown(blocks)}, not a list",
            secrets,
        )
    return blocks


def _block_text(model: str, i: int, block: Any, secrets: tuple[str, ...]) -> str | None:
    # A text block's text; None for a block of another type (thinking, tool_use...).
    kind = field(block, "type") if is_object(block) else None
    if not isinstance(kind, str):
        raise malformed(
            model, MESSAGE, f"content[{i}] is {shown(block)}, not a block with a 'type'", secrets
        )
    if kind != "text":
        return None
    text = field(block, "text")
    if not isinstance(text, str):
        raise malformed(
            model,
            MESSAGE,
            f"content[{i}] is a text block whose text is {shown(text)}, not a string",
            secrets,
        )
    return text


def _part(
    model: str, kind: str, data: dict[str, Any], name: str, secrets: tuple[str, ...]
) -> dict[str, Any]:
    # The object ``name`` of a stream event (a message_start's message, a delta).
    part = data.get(name)
    if not isinstance(part, dict):
        raise malformed(
            model,
            MESSAGE_EVENT,
            f"a {kind} event's {name} is {shown(part)}, not an object",
            secrets,
        )
    return part


def _delta_text(model: str, data: dict[str, Any], secrets: tuple[str, ...]) -> str | None:
    # The text a content_block_delta adds; None for a delta of another type (thinking...).
    delta = _part(model, "content_block_delta", data, "delta", secrets)
    if delta.get("type") != "text_delta":
        return None
    text = delta.get("text")
    if not isinstance(text, str):
        raise malformed(
            model, MESSAGE_EVENT, f"a text_delta's text is {shown(text)}, not a string", secrets
        )
    return text


def _take_usage(into: dict[str, Any], usage: Any) -> None:
    # The fields ``usage`` (the SDK's object, or a stream event's dict) reports; a later
    # report replaces an earlier one's.
    for name in _USAGE_FIELDS:
        value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
        if value is not None:
            into[name] = value


def _counts(usage: dict[str, Any]) -> tuple[int | None, int | None]:
    tin = token_count(usage.get("input_tokens"))
    if tin is not None:
        # input_tokens counts only the uncached part of the prompt.
        for name in ("cache_creation_input_tokens", "cache_read_input_tokens"):
            tin += token_count(usage.get(name)) or 0
    return tin, token_count(usage.get("output_tokens"))


def anthropic_client(
    api_key: str | None = None,
    *,
    base_url: str | None = None,
    http_client: Any = None,
    timeout: float | None = None,
    send_temperature: bool = True,
    **defaults: Any,
) -> AnthropicClient:
    """A client for Anthropic's Messages API (``moa-dsl[anthropic]``).

    ``api_key`` defaults to ``ANTHROPIC_API_KEY``. System messages are joined into the
    ``system`` parameter; text blocks of the reply are concatenated; input tokens include cached
    ones. ``send_temperature=False`` is for models that refuse a temperature. ``defaults`` are
    extra request fields sent with every call (``top_k=40``). ``http_client`` (an
    ``httpx2.AsyncClient``, yours to keep on one event loop) and ``timeout`` go to the SDK,
    which never retries: ``moa.run``'s retry policy does. The key (any of 4 characters or more:
    a shorter one is not searched for, as hiding every "ab" would garble messages) and the
    password of ``base_url`` never appear in error messages or the repr
    (``http://user:***@host``).
    """
    anthropic = require("anthropic", "anthropic", "anthropic_client")
    _check_arguments(api_key, base_url, timeout, send_temperature, defaults)
    options = _sdk_options(api_key, base_url, http_client, timeout)
    try:
        sdk = anthropic.AsyncAnthropic(**options)
    except anthropic.AnthropicError as exc:
        message = redact(str(exc), (api_key, *url_passwords(base_url)))
    else:
        _check_credentials(sdk)
        sdks = PerLoop(functools.partial(anthropic.AsyncAnthropic, **options), sdk)
        return AnthropicClient(
            sdks,
            base_url=base_url,
            send_temperature=send_temperature,
            defaults=dict(defaults),
            secrets=_sdk_secrets(sdk, base_url),
        )
    # Raised outside the except block, so the SDK's exception is neither cause nor context.
    raise _start_failure(api_key, message) from None


def _check_arguments(
    api_key: object,
    base_url: object,
    timeout: float | None,
    send_temperature: object,
    defaults: dict[str, Any],
) -> None:
    """Raise the ``TypeError`` or ``ValueError`` of the first argument of
    :func:`anthropic_client` of the wrong type or value."""
    for name, value in (("api_key", api_key), ("base_url", base_url)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"anthropic_client({name}=...): {name} must be a str or None, "
                f"not {type(value).__name__}"
            )
    check_seconds("anthropic_client", "timeout", timeout)
    if not isinstance(send_temperature, bool):
        raise TypeError(
            f"anthropic_client(send_temperature=...): send_temperature must be a "
            f"bool, not {type(send_temperature).__name__}"
        )
    check_defaults("anthropic_client", defaults, _RESERVED)


def _sdk_options(
    api_key: str | None, base_url: str | None, http_client: Any, timeout: float | None
) -> dict[str, Any]:
    """The keyword arguments of ``anthropic.AsyncAnthropic``: never a retry of its own."""
    options: dict[str, Any] = {"api_key": api_key or None, "base_url": base_url, "max_retries": 0}
    if http_client is not None:
        options["http_client"] = http_client
    if timeout is not None:
        options["timeout"] = timeout
    return options


def _check_credentials(sdk: Any) -> None:
    """Raise ``MoaError`` when the SDK started with no credentials at all (no key, token or
    other credentials)."""
    if (
        getattr(sdk, "api_key", None) is None
        and getattr(sdk, "auth_token", None) is None
        and getattr(sdk, "credentials", None) is None
    ):
        raise MoaError(
            "anthropic_client needs an API key: pass api_key=... or set the "
            "ANTHROPIC_API_KEY environment variable"
        )


def _sdk_secrets(sdk: Any, base_url: str | None) -> tuple[str, ...]:
    """The secrets a started SDK holds, to redact: its key, its auth token and the password of
    its base URL."""
    key = getattr(sdk, "api_key", None)
    secrets = tuple(s for s in (key, getattr(sdk, "auth_token", None)) if isinstance(s, str))
    # ANTHROPIC_BASE_URL may have given the URL, and its password.
    return secrets + url_passwords(str(getattr(sdk, "base_url", "") or base_url or ""))


def _start_failure(api_key: str | None, message: str) -> MoaError:
    """The error for an SDK that refused to start with ``message`` (redacted): a missing key
    when none was given, else the SDK's own words."""
    if api_key is None:
        return MoaError(
            f"anthropic_client needs an API key: pass api_key=... or set the "
            f"ANTHROPIC_API_KEY environment variable (the Anthropic SDK found no other "
            f"credentials: {message})"
        )
    return MoaError(f"anthropic_client could not start the Anthropic SDK: {message}")
