"""Pipelines served as models behind an OpenAI-compatible HTTP API (``pip install
'moa-dsl[serve]'``): ``POST /v1/chat/completions`` (streamed or not), ``GET /v1/models`` and
``GET /health``, as a Starlette app run by uvicorn (``moa serve``).

Every chat UI, agent framework and SDK that speaks the OpenAI API can then pick a mixture
where it picks a model::

    app = moa.serve.app({"self-moa": moa.serve.Served(self_moa("m"), client)})
    # uvicorn.run(app, host="127.0.0.1", port=8000, timeout_keep_alive=75)

A request's messages are the run's conversation; its ``seed`` the run's seed. ``usage`` sums
every call of the run. ``"moa": {"history": true}`` in the request adds the run's history and
cost to the response (the ``moa`` field; on a stream, in the last chunk). A field the pipeline
cannot honour (``n`` above 1, tools, a JSON response format, log-probabilities) is refused,
never ignored; the sampling fields (``temperature``, ``max_tokens``, ``top_p``, penalties) are
accepted and leave each step's own settings in force: a pipeline sets them per step.

Errors have OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``) and status:
400 a bad request, 401 a missing or wrong key, 404 an unknown model, 413 a body past the limit,
429 the server at capacity (or the run's budget spent), 502 the pipeline's providers failed,
504 the run passed the request timeout. A client that disconnects cancels every call of its
run."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hmac
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from ._bounds import error_text
from ._client import Client
from ._conversation import prompt_of
from ._cost import DEFAULT_PRICES, Prices
from ._events import RunFinished, TextChunk
from ._history import History
from ._options import RunOptions
from ._pipeline import Step
from ._run import run, run_stream
from ._trace import Tracing, continued
from .errors import BudgetExceededError, MoaError

__all__ = ("ServeError", "Served", "app")

#: A request body's limit by default: 1 MiB (a long conversation is a few hundred KiB).
MAX_BODY = 1 << 20

# The request fields a pipeline honours, and those it takes and leaves to each step's own
# settings; any other field is refused (a client that sends tools expects them used).
_HONOURED = {"model", "messages", "stream", "stream_options", "seed", "n", "moa", "user"}
_SAMPLING = {
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "metadata",
    "store",
}
_REFUSED = {
    "tools": "tools (a pipeline calls no tools)",
    "tool_choice": "tools (a pipeline calls no tools)",
    "functions": "functions (a pipeline calls no functions)",
    "function_call": "functions (a pipeline calls no functions)",
    "parallel_tool_calls": "tools (a pipeline calls no tools)",
    "logprobs": "log-probabilities of the answer",
    "top_logprobs": "log-probabilities of the answer",
    "logit_bias": "a logit bias",
    "stop": "stop sequences (each step sets its own)",
    "audio": "audio",
    "modalities": "modalities other than text",
    "prediction": "predicted outputs",
    "response_format": "a response format other than text",
}


@dataclass(frozen=True)
class Served:
    """One model the server serves: ``pipeline`` run on ``client`` with ``options`` (its
    per-model ``Limits``, retries, timeouts, cache, budget), priced at ``prices`` for the
    ``moa`` extension's cost."""

    pipeline: Step
    client: Client
    options: RunOptions = field(default_factory=RunOptions)
    prices: Prices = DEFAULT_PRICES


class ServeError(Exception):
    """A request refused or failed, as the OpenAI API says it: ``status``, the error's
    ``kind`` (its ``type``), ``param`` and ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.param, self.code = status, kind, param, code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": str(self),
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def app(
    models: Mapping[str, Served],
    *,
    key: str | None = None,
    max_requests: int = 64,
    max_body: int = MAX_BODY,
    timeout: float | None = 600.0,
    tracer_provider: Any = None,
) -> Any:
    """A Starlette app serving ``models`` by name. ``key``: the bearer key every request but
    ``/health`` must give (None: none asked; ``moa serve`` requires one off loopback).
    ``max_requests``: runs at once, server-wide (past it, 429 at once). ``max_body``: bytes
    a request may send (413 past it). ``timeout``: seconds a run may take (504 past it).
    ``tracer_provider``: where runs are traced, as ``invoke_workflow {model}`` (None: the
    global one), for a model whose options do not say."""
    try:
        from starlette.applications import Starlette
        from starlette.routing import Route
    except ImportError:
        raise ImportError(
            "moa.serve needs Starlette and uvicorn: pip install 'moa-dsl[serve]'"
        ) from None
    if not models:
        raise ValueError("moa.serve.app(): serve at least one model")
    for name, served in models.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"moa.serve.app(): a model's name is a non-empty str, not {name!r}")
        if not isinstance(served, Served):
            raise TypeError(f"moa.serve.app(): model {name!r} must be a moa.serve.Served")
    if type(max_requests) is not int or max_requests < 1:
        raise ValueError(
            f"moa.serve.app(max_requests=...): a whole number >= 1, not {max_requests!r}"
        )
    if type(max_body) is not int or max_body < 1:
        raise ValueError(
            f"moa.serve.app(max_body=...): a whole number of bytes >= 1, not {max_body!r}"
        )
    if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
        raise ValueError(f"moa.serve.app(timeout=...): seconds above 0, or None, not {timeout!r}")
    named = {n: _named(n, s, tracer_provider) for n, s in models.items()}
    server = _Server(named, key, max_requests, max_body, timeout)
    routes = [
        Route("/health", server.health, methods=["GET"]),
        Route("/v1/models", server.list_models, methods=["GET"]),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})


@functools.cache
def _closing_stream() -> Any:
    """Starlette's StreamingResponse, closing its body in the task that sent it. Starlette
    leaves a body it stopped sending (the client went away while a chunk was being sent) to
    be closed by the garbage collector, in another task, where the run's cancel scopes and
    the trace's context cannot be exited."""
    from starlette.responses import StreamingResponse

    class ClosingStream(StreamingResponse):
        async def stream_response(self, send: Any) -> None:
            body = self.body_iterator
            try:
                await super().stream_response(send)
            finally:
                close = getattr(body, "aclose", None)
                if close is not None:
                    await close()

    return ClosingStream


def _named(name: str, served: Served, tracer_provider: Any) -> Served:
    """``served``, traced as the model ``name`` at its prices (unless its options say how)."""
    if served.options.tracing is not None:
        return served
    tracing = Tracing(name=name, prices=served.prices, tracer_provider=tracer_provider)
    return dataclasses.replace(served, options=served.options.replace(tracing=tracing))


async def _not_found(request: Any, exc: Exception) -> Any:
    return _error(ServeError(404, f"no such endpoint: {request.url.path}", code="not_found"))


async def _not_allowed(request: Any, exc: Exception) -> Any:
    return _error(
        ServeError(
            405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed"
        )
    )


def _error(exc: ServeError) -> Any:
    from starlette.responses import JSONResponse

    headers = {"Retry-After": "1"} if exc.status == 429 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


class _Server:
    """The endpoints over the served models, the key, and the count of runs in flight."""

    def __init__(
        self,
        models: dict[str, Served],
        key: str | None,
        max_requests: int,
        max_body: int,
        timeout: float | None,
    ) -> None:
        self.models, self.key, self.max_body, self.timeout = models, key, max_body, timeout
        self.max_requests = max_requests
        self.in_flight = 0
        self.served = 0

    # -- endpoints ---------------------------------------------------------------------------
    async def health(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", "in_flight": self.in_flight, "served": self.served})

    async def list_models(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:
            self._authorised(request)
        except ServeError as exc:
            return _error(exc)
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "moa"} for n in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Any) -> Any:
        try:
            self._authorised(request)
            if self.in_flight >= self.max_requests:
                raise ServeError(
                    429,
                    f"the server is at capacity ({self.max_requests} runs at once); retry shortly",
                    kind="rate_limit_error",
                    code="over_capacity",
                )
            self.in_flight += 1
        except ServeError as exc:
            return _error(exc)
        try:
            ask = _Ask.of(await self._body(request), self.models)
            if ask.stream:
                # The stream's generator takes its own place when it starts (and gives it back
                # in its finally): one never started (the client left first) holds none.
                return self._streamed(request, ask)
            return await self._whole(request, ask)
        except ServeError as exc:
            return _error(exc)
        finally:
            self.in_flight -= 1

    # -- the parts ---------------------------------------------------------------------------
    def _authorised(self, request: Any) -> None:
        if self.key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.key.encode()
        ):
            raise ServeError(
                401,
                "a valid API key is required: Authorization: Bearer KEY",
                kind="authentication_error",
                code="invalid_api_key",
            )

    async def _body(self, request: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _too_large(self.max_body)
        from starlette.requests import ClientDisconnect

        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise _too_large(self.max_body)
                chunks.append(chunk)
        except ClientDisconnect:  # gone before its request was whole: nothing to run
            raise ServeError(499, "the client disconnected", code="client_closed") from None
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ServeError(400, f"the body is not JSON: {exc}", code="invalid_json") from None

    async def _whole(self, request: Any, ask: _Ask) -> Any:
        from starlette.responses import JSONResponse, Response

        served = ask.served
        result: tuple[str, History] | None = None
        failed: ServeError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_disconnect, request, tg.cancel_scope)
            try:
                with _timed(self.timeout), continued(request.headers):
                    result = await run(
                        served.pipeline, ask.prompt, served.client, served.options, seed=ask.seed
                    )
            except ServeError as exc:  # raised past the task group, it would come in a group
                failed = exc
            except MoaError as exc:
                failed = _failed(exc)
            tg.cancel_scope.cancel()  # the disconnect watch ends with the run
        if failed is not None:
            raise failed
        if result is None:  # the client went away: every call of the run was cancelled
            return Response(status_code=499)
        self.served += 1
        return JSONResponse(_completion(ask, *result))

    def _streamed(self, request: Any, ask: _Ask) -> Any:
        return _closing_stream()(
            self._events(ask, request.headers),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, ask: _Ask, headers: Any) -> AsyncIterator[str]:
        """The run as server-sent events: a chunk per piece of the answer, then the last chunk
        (with usage when asked), then ``[DONE]``. A failure after the first event is an error
        event. Starlette cancels this generator when the client disconnects: the run is
        cancelled with it."""
        served, head = ask.served, _head(ask, "chat.completion.chunk")
        self.in_flight += 1
        try:
            yield _sse({**head, "choices": [_delta({"role": "assistant", "content": ""})]})
            written = False
            with _timed(self.timeout):
                async with contextlib.AsyncExitStack() as stack:
                    started = run_stream(
                        served.pipeline, ask.prompt, served.client, served.options, seed=ask.seed
                    )
                    # The caller's trace is current while the run's task starts (it copies it),
                    # never across this generator's yields.
                    with continued(headers):
                        events = await stack.enter_async_context(started)
                    async for event in events:
                        if isinstance(event, TextChunk) and event.text:
                            written = True
                            yield _sse({**head, "choices": [_delta({"content": event.text})]})
                        elif isinstance(event, RunFinished):
                            if not written and event.result:
                                yield _sse({**head, "choices": [_delta({"content": event.result})]})
                            self.served += 1
                            for last in _last_chunks(ask, head, event.history):
                                yield _sse(last)
            yield "data: [DONE]\n\n"
        except ServeError as exc:
            yield _sse(exc.body())
        except MoaError as exc:
            yield _sse(_failed(exc).body())
        finally:
            self.in_flight -= 1


@contextmanager
def _timed(seconds: float | None) -> Iterator[None]:
    """A run's time limit: ServeError 504 when it passes (None: none)."""
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError:
        raise ServeError(
            504,
            f"the run passed the server's timeout of {seconds:g} s and was cancelled",
            kind="timeout_error",
            code="timeout",
        ) from None


async def _cancel_on_disconnect(request: Any, scope: anyio.CancelScope) -> None:
    # The body is read: what the client sends next is its disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def _too_large(limit: int) -> ServeError:
    return ServeError(
        413,
        f"the request body is larger than this server takes ({limit:,} bytes)",
        code="too_large",
    )


def _failed(exc: MoaError) -> ServeError:
    """A run's failure as the API says it: 429 a budget spent, 502 the providers failed."""
    if isinstance(exc, BudgetExceededError):
        return ServeError(
            429, f"the model's budget is spent: {exc}", kind="rate_limit_error", code="budget"
        )
    return ServeError(
        502,
        f"the pipeline's providers failed: {error_text(exc)}",
        kind="upstream_error",
        code="upstream_failed",
    )


@dataclass(frozen=True)
class _Ask:
    """A chat-completion request, checked: the model's name and its Served, the run's prompt
    (a conversation), seed, streaming, and what the response adds."""

    name: str
    served: Served
    prompt: Any
    seed: int | None
    stream: bool
    usage_in_stream: bool
    history: bool

    @classmethod
    def of(cls, body: Any, models: Mapping[str, Served]) -> _Ask:
        if not isinstance(body, dict):
            raise ServeError(400, "the body must be a JSON object")
        unknown = sorted(set(body) - _HONOURED - _SAMPLING - set(_REFUSED))
        if unknown:
            raise ServeError(400, f"unknown field {unknown[0]!r}", param=unknown[0])
        for field_name, what in _REFUSED.items():
            if _asks_for(field_name, body.get(field_name)):
                raise ServeError(
                    400,
                    f"{field_name}: a moa pipeline cannot honour {what}",
                    param=field_name,
                    code="unsupported",
                )
        name = body.get("model")
        if not isinstance(name, str):
            raise ServeError(400, "model: give the name of a served model", param="model")
        served = models.get(name)
        if served is None:
            raise ServeError(
                404,
                f"the model {name!r} does not exist here; served: {', '.join(models)}",
                param="model",
                code="model_not_found",
            )
        n = body.get("n", 1)
        if n != 1 or isinstance(n, bool):
            raise ServeError(
                400,
                "n: a pipeline gives one answer a run; ask again for another",
                param="n",
                code="unsupported",
            )
        seed = body.get("seed")
        if seed is not None and (type(seed) is not int or not -(2**63) <= seed < 2**63):
            raise ServeError(400, "seed: an integer of 64 bits", param="seed")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ServeError(400, "stream: true or false", param="stream")
        options = body.get("stream_options") or {}
        extension = body.get("moa") or {}
        if not isinstance(options, dict) or not isinstance(extension, dict):
            raise ServeError(400, "stream_options and moa are JSON objects")
        return cls(
            name,
            served,
            _conversation(body.get("messages")),
            seed,
            stream,
            options.get("include_usage") is True,
            extension.get("history") is True,
        )


def _asks_for(name: str, value: Any) -> bool:
    """Whether a refused field asks for something (its empty or off value asks for nothing)."""
    if name == "response_format":
        return isinstance(value, dict) and value.get("type", "text") != "text"
    if name == "modalities":
        return value is not None and value != ["text"]
    return value not in (None, False, [], {}, "none")


def _conversation(messages: Any) -> Any:
    """The request's messages as a moa conversation: text content only (parts of type text
    are joined), ``developer`` read as ``system``; ValueError's text as a 400."""
    if not isinstance(messages, list) or not messages:
        raise ServeError(400, "messages: a non-empty list of messages", param="messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ServeError(400, f"messages[{i}]: a message is a JSON object", param="messages")
        role, content = m.get("role"), m.get("content")
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if len(parts) != len(content) or any(
                p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content
            ):
                raise ServeError(
                    400,
                    f"messages[{i}]: only text content is supported",
                    param="messages",
                    code="unsupported",
                )
            content = "".join(parts)  # type: ignore[arg-type]
        if role == "developer":
            role = "system"
        if role == "tool" or m.get("tool_calls"):
            raise ServeError(
                400,
                f"messages[{i}]: tool messages need tools, which a pipeline does not call",
                param="messages",
                code="unsupported",
            )
        turns.append({"role": role, "content": content})
    try:
        prompt_of("serve", turns)
    except (TypeError, ValueError) as exc:
        raise ServeError(
            400, str(exc).replace("serve(prompt): ", "messages: ", 1), param="messages"
        ) from None
    return turns


def _head(ask: _Ask, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-moa-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": ask.name,
    }


def _usage(history: History) -> dict[str, int]:
    tin, tout = history.input_tokens or 0, history.output_tokens or 0
    return {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}


def _extension(ask: _Ask, history: History) -> dict[str, Any]:
    cost = history.cost(ask.served.prices)
    return {
        "moa": {
            "history": history.to_dict(),
            "cost": {"usd": cost.known, "unpriced_models": list(cost.unknown)},
        }
    }


def _completion(ask: _Ask, text: str, history: History) -> dict[str, Any]:
    return {
        **_head(ask, "chat.completion"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": _usage(history),
        **(_extension(ask, history) if ask.history else {}),
    }


def _delta(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


def _last_chunks(ask: _Ask, head: dict[str, Any], history: History) -> list[dict[str, Any]]:
    last = {**head, "choices": [_delta({}, "stop")]}
    if ask.history:
        last |= _extension(ask, history)
    out = [last]
    if ask.usage_in_stream:  # as OpenAI sends it: a chunk of its own, with no choices
        out.append({**head, "choices": [], "usage": _usage(history)})
    return out


def _sse(doc: dict[str, Any]) -> str:
    return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"
