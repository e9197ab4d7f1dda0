"""The OpenAI client, for OpenAI and every server that speaks its Chat Completions API
(OpenRouter, Together, Groq, vLLM, llama.cpp's server, Ollama...)."""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio

from .._bounds import check_seconds
from .._client import Reply, Usage
from .._response import Confidence
from ..errors import MoaError, ProviderError
from ._common import PerLoop, check_defaults, token_count
from ._errors import provider_error, redact, url_passwords
from ._extras import require
from ._replies import CHAT_CHUNK, chat_text, field, malformed, shown
from ._sse import DONE, StreamError, check_ended, close_shielded, sse_events

__all__ = ("OpenAIClient", "openai_client")

log = logging.getLogger("moa.clients")

# The request fields a call sets itself; a default naming one would fight the step's values.
_RESERVED = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "reasoning_effort",
        "stream",
        "n",
    }
)
# Request options of the SDK rather than JSON fields.
_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body"})

# A placeholder key for local servers, which ignore it; the SDK refuses to start without one.
LOCAL_KEY = "not-needed"

_O_SERIES = re.compile(r"o\d")


def _base_name(model: str) -> str:
    # "openai/gpt-5-nano" (OpenRouter) is the same model as "gpt-5-nano".
    return model.rsplit("/", 1)[-1].lower()


def is_reasoning_model(model: str) -> bool:
    """gpt-5* and the o-series (o1, o3, o4-mini...): they take ``max_completion_tokens``,
    ``reasoning_effort`` and no ``temperature``."""
    name = _base_name(model)
    return name.startswith("gpt-5") or bool(_O_SERIES.match(name))


def _default_effort(model: str) -> str | None:
    # "minimal" is the gpt-5 family's fastest setting (mixture-llm's choice); gpt-5.1 and later
    # and gpt-5-chat do not accept it, and the o-series keeps the server's default.
    name = _base_name(model)
    if name.startswith("gpt-5") and not name.startswith("gpt-5.") and "chat" not in name:
        return "minimal"
    return None


class _StreamState:
    """What a Chat Completions stream has said so far: the token counts it reported, its
    finish reason, and whether any event, any chunk with choices, any text and [DONE] came."""

    __slots__ = ("any_chunk", "any_event", "any_text", "done", "finish", "logprobs", "tin", "tout")

    def __init__(self) -> None:
        self.tin: int | None = None
        self.tout: int | None = None
        self.logprobs: list[float] = []
        self.finish: Any = None
        self.any_text = self.done = self.any_event = self.any_chunk = False


class OpenAIClient:
    """A ``moa.Client`` over ``openai.AsyncOpenAI`` (one per event loop); built by
    :func:`openai_client`."""

    #: ``gen_ai.provider.name`` on its calls' spans.
    provider = "openai"

    __slots__ = ("_options", "_sdks", "_secrets", "base_url", "defaults", "reasoning_effort")

    def __init__(
        self,
        sdks: PerLoop,
        *,
        base_url: str | None,
        reasoning_effort: str | None,
        defaults: dict[str, Any],
        secrets: tuple[str, ...],
    ) -> None:
        self._sdks = sdks
        self.base_url = base_url
        self.reasoning_effort = reasoning_effort
        self._options = {k: defaults.pop(k) for k in _OPTIONS & defaults.keys()}
        self.defaults = {**self._options.pop("extra_body", {}), **defaults}
        self._secrets = secrets

    def __repr__(self) -> str:
        args = [f"base_url={self.base_url!r}"] if self.base_url is not None else []
        if self.reasoning_effort is not None:
            args.append(f"reasoning_effort={self.reasoning_effort!r}")
        args += [f"{k}={v!r}" for k, v in {**self.defaults, **self._options}.items()]
        return redact(f"openai_client({', '.join(args)})", self._secrets)

    def params(
        self,
        model: str,
        temp: float,
        max_tokens: int,
        seed: int | None = None,
        logprobs: bool = False,
    ) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for one call, bar the messages.
        ``seed`` is the request's ``seed`` field (OpenAI, vLLM and llama.cpp's server sample
        from it); a call's seed replaces a ``seed`` given as a default. ``logprobs`` asks for
        the sampled tokens' log-probabilities (not of a reasoning model, which gives none:
        its replies then carry no confidence)."""
        params: dict[str, Any] = {"model": model}
        if logprobs and not is_reasoning_model(model):
            params["logprobs"] = True
            params["top_logprobs"] = 1  # llama.cpp's server gives none without it
        if is_reasoning_model(model):
            params["max_completion_tokens"] = max_tokens
            effort = self.reasoning_effort or _default_effort(model)
            if effort is not None:
                params["reasoning_effort"] = effort
        else:
            params["max_tokens"] = max_tokens
            params["temperature"] = temp
        body = dict(self.defaults)
        if seed is not None:
            body["seed"] = seed
        if body:
            params["extra_body"] = body
        params.update(self._options)
        return params

    def _stream_error(self, error: Any, model: str) -> ProviderError:
        """An error event inside a begun stream, sorted as the same failure before it."""
        sorted_ = self._error(StreamError(error), model)
        assert sorted_ is not None  # a StreamError is always a provider's
        return sorted_

    def _error(self, exc: Exception, model: str) -> ProviderError | None:
        # How __call__ and stream sort a failure: None for one that is no provider's (a bug).
        return provider_error(exc, model=model, secrets=self._secrets)

    async def __call__(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        seed: int | None = None,
        logprobs: bool = False,
    ) -> Reply | tuple[str, int | None, int | None]:
        """The reply to one call: ``(text, input_tokens, output_tokens)``, or a
        :class:`~moa.Reply` with the model's confidence when ``logprobs`` asked for it and the
        server gave it."""
        try:
            response = await self._sdks.get().chat.completions.create(
                messages=messages, **self.params(model, temp, max_tokens, seed, logprobs)
            )
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
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        seed: int | None = None,
        logprobs: bool = False,
    ) -> AsyncIterator[str | Usage]:
        """The reply's text chunks as the server sends them, then its :class:`~moa.Usage`
        (``Usage(None, None)`` from a server that reports no usage in a stream), with the
        reply's confidence when ``logprobs`` asked for it and the server gave it. Failures,
        when the stream opens or in its middle, are sorted into ``ProviderError`` as
        ``__call__`` sorts them; the HTTP response is closed however the iteration ends."""
        params = self.params(model, temp, max_tokens, seed, logprobs)
        stream = await self._open(model, messages, params, {"include_usage": True})
        if stream is None:
            # The server refused stream_options: it will not report usage anyway.
            stream = await self._open(model, messages, params, None)
        state = _StreamState()
        try:
            sort = functools.partial(self._error, model=model)
            async with aclosing(
                sse_events(stream.response, model=model, secrets=self._secrets, sort=sort)
            ) as events:
                async for _, chunk in events:
                    if chunk is DONE:
                        state.any_event = state.done = True
                        await _drain(events)
                        break
                    text = self._take_chunk(model, chunk, state)
                    if text:
                        yield text
        finally:
            await close_shielded(stream)
        _check_outcome(model, state, self._secrets)
        yield Usage(
            state.tin, state.tout, Confidence.of(state.logprobs) if state.logprobs else None
        )

    def _take_chunk(self, model: str, chunk: Any, state: _StreamState) -> str | None:
        """Read one stream chunk (not [DONE]) into ``state``: the text it adds (None or ""
        when none). An error event, or a malformed chunk, raises its ``ProviderError``."""
        state.any_event = True
        if not isinstance(chunk, dict):
            raise malformed(
                model, CHAT_CHUNK, f"a chunk is {shown(chunk)}, not a JSON object", self._secrets
            )
        if chunk.get("error"):
            # An error event inside the stream (OpenRouter's, vLLM's, OpenAI's).
            raise self._stream_error(chunk["error"], model)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            state.tin = token_count(usage.get("prompt_tokens"))
            state.tout = token_count(usage.get("completion_tokens"))
        choice = _chunk_choice(model, chunk, self._secrets)
        state.any_chunk = state.any_chunk or chunk.get("choices") is not None
        if choice is None:  # the usage chunk
            return None
        state.finish = choice.get("finish_reason") or state.finish
        state.logprobs.extend(token_logprobs(choice.get("logprobs")))
        text = _chunk_text(model, choice, self._secrets)
        if text:
            state.any_text = True
        return text

    async def _open(
        self,
        model: str,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        stream_options: dict[str, Any] | None,
    ) -> Any:
        # None: the server rejected stream_options (an older or strict OpenAI-compatible one).
        options = {} if stream_options is None else {"stream_options": stream_options}
        try:
            return await self._sdks.get().chat.completions.create(
                messages=messages, stream=True, **options, **params
            )
        except Exception as exc:
            error = self._error(exc, model)
            if error is None:
                raise
        if (
            stream_options is not None
            and error.status in (400, 422)
            and "stream_options" in str(error)
        ):
            return None
        raise error from None

    async def aclose(self) -> None:
        """Close this event loop's HTTP connections; a later call opens new ones."""
        sdk = self._sdks.pop()
        if sdk is not None:
            await sdk.close()


async def _drain(events: AsyncIterator[Any]) -> None:
    """Read what is left of a stream after its [DONE], for at most 0.1 s; a failed read ends it."""
    # Read the rest of the body (normally nothing) so that an HTTP/1.1 connection can be
    # reused, as the SDK does, but not for long; what comes after [DONE] cannot spoil the reply.
    with anyio.move_on_after(0.1):
        try:
            async for _ in events:
                pass
        except ProviderError:
            pass


def _check_outcome(model: str, state: _StreamState, secrets: tuple[str, ...]) -> None:
    """After a stream's body: raise when it was no Chat Completions stream or did not end (see
    ``check_ended``), log when it ended with no text."""
    if state.any_event and not state.any_chunk:
        # Events came, but none had choices: another API's stream, not a cut one.
        raise malformed(model, CHAT_CHUNK, "no event of the stream had 'choices'", secrets)
    check_ended(
        model,
        ended=state.done or state.finish is not None,
        any_text=state.any_text,
        what="reply",
        signals="finish_reason and no [DONE]",
        reason_name="finish_reason",
        reason=state.finish,
        log=log,
    )


def _chunk_choice(
    model: str, chunk: dict[str, Any], secrets: tuple[str, ...]
) -> dict[str, Any] | None:
    # The first choice of a stream chunk; None for a chunk without one (the usage chunk).
    choices = chunk.get("choices")
    if choices is None or choices == []:
        return None
    if not isinstance(choices, list):
        raise malformed(
            model, CHAT_CHUNK, f"a chunk's 'choices' is {shown(choices)}, not a list", secrets
        )
    if not isinstance(choices[0], dict):
        raise malformed(
            model,
            CHAT_CHUNK,
            f"a chunk's choices[0] is {shown(choices[0])}, not an object",
            secrets,
        )
    return choices[0]


def _chunk_text(model: str, choice: dict[str, Any], secrets: tuple[str, ...]) -> str | None:
    # The text a chunk's choice adds: None when its delta carries none (the role, the finish).
    delta = choice.get("delta")
    if delta is None:
        return None
    if not isinstance(delta, dict):
        raise malformed(
            model, CHAT_CHUNK, f"a chunk's delta is {shown(delta)}, not an object", secrets
        )
    text = delta.get("content")
    if text is None or isinstance(text, str):
        return text
    raise malformed(
        model,
        CHAT_CHUNK,
        f"a chunk's delta content is {shown(text)}, not a string or null",
        secrets,
    )


def token_logprobs(logprobs: Any) -> list[float]:
    """The sampled tokens' log-probabilities in a choice's ``logprobs`` (``{"content": [{"token":
    ..., "logprob": ...}, ...]}``, an object or a dict): those that are finite numbers <= 0,
    in order; none from a server that sent none."""
    content = field(logprobs, "content") if logprobs is not None else None
    if not isinstance(content, list):
        return []
    out = []
    for item in content:
        value = field(item, "logprob")
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and -math.inf < value <= 0
        ):
            out.append(float(value))
    return out


def _reply(
    model: str, response: Any, secrets: tuple[str, ...]
) -> Reply | tuple[str, int | None, int | None]:
    choices = field(response, "choices")
    if choices == [] or (choices is None and field(response, "error")):
        # A 200 with no choices is what OpenRouter sends when the upstream provider failed
        # mid-request (an "error" object in the body): a transient fault, so retryable.
        error = field(response, "error")
        said = error.get("message") if isinstance(error, dict) else error
        detail = f": {said}" if said else ""
        raise ProviderError(
            redact(f"the response has no choices{detail}", secrets), model=model, retryable=True
        )
    text = chat_text(model, response, secrets)
    usage = field(response, "usage")
    logprobs = token_logprobs(field(field(response, "choices")[0], "logprobs"))
    reply = (
        text,
        token_count(getattr(usage, "prompt_tokens", None)),
        token_count(getattr(usage, "completion_tokens", None)),
    )
    # Three items, as a client returns, unless there is a confidence to add.
    return Reply(*reply, Confidence.of(logprobs)) if logprobs else reply


def openai_client(
    base_url: str | None = None,
    api_key: str | None = None,
    *,
    reasoning_effort: str | None = None,
    http_client: Any = None,
    timeout: float | None = None,
    **defaults: Any,
) -> OpenAIClient:
    """A client for an OpenAI-compatible Chat Completions API (``moa-dsl[openai]``).

    ``api_key`` defaults to ``OPENAI_API_KEY``; a ``base_url`` without a key (a local server)
    sends a placeholder. gpt-5* and o-series models get ``max_completion_tokens`` and no
    temperature, plus ``reasoning_effort`` ("minimal" for the gpt-5 family unless given);
    other models get ``max_tokens`` and ``temperature``. ``defaults`` are extra request fields
    sent with every call (``top_p=0.9``, ``extra_headers={...}``). ``http_client`` (an
    ``httpx2.AsyncClient``) and ``timeout`` go to the SDK. The client may serve one event loop
    after another (``run_sync`` twice); it opens fresh connections for each, but an
    ``http_client`` you give is yours to keep on one loop. The SDK never retries: ``moa.run``'s
    retry policy does. The key (any of 4 characters or more: a shorter one is not searched for,
    as hiding every "ab" would garble messages) and the password of ``base_url`` never appear in
    error messages or the repr (``http://user:***@host/v1``).
    """
    openai = require("openai", "openai", "openai_client")
    for name, value in (
        ("base_url", base_url),
        ("api_key", api_key),
        ("reasoning_effort", reasoning_effort),
    ):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"openai_client({name}=...): {name} must be a str or None, "
                f"not {type(value).__name__}"
            )
    check_seconds("openai_client", "timeout", timeout)
    check_defaults("openai_client", defaults, _RESERVED)
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        if base_url is None:
            raise MoaError(
                "openai_client needs an API key: pass api_key=... or set the "
                "OPENAI_API_KEY environment variable (a local server needs only "
                "base_url=...)"
            )
        key = LOCAL_KEY
    options: dict[str, Any] = {"api_key": key, "base_url": base_url, "max_retries": 0}
    if http_client is not None:
        options["http_client"] = http_client
    if timeout is not None:
        options["timeout"] = timeout
    secrets = (key, *url_passwords(base_url))
    try:
        sdk = openai.AsyncOpenAI(**options)
    except openai.OpenAIError as exc:
        message = redact(str(exc), secrets)
    else:
        # OPENAI_BASE_URL may have given the URL, and its password.
        secrets = tuple(dict.fromkeys(secrets + url_passwords(str(getattr(sdk, "base_url", "")))))
        sdks = PerLoop(functools.partial(openai.AsyncOpenAI, **options), sdk)
        return OpenAIClient(
            sdks,
            base_url=base_url,
            reasoning_effort=reasoning_effort,
            defaults=dict(defaults),
            secrets=secrets,
        )
    raise MoaError(f"openai_client could not start the OpenAI SDK: {message}") from None
