"""OpenTelemetry spans for a run, named by the GenAI semantic conventions
(open-telemetry/semantic-conventions-genai v0.1.0, on semantic-conventions v1.45.0).

One trace per run: a root span ``invoke_workflow {name}`` (INTERNAL), a child span per step
(``step {Kind}``: sub-pipelines, Parallels and their branches nest as the pipeline does), and
under each LLM step a ``chat {model}`` span (CLIENT) per model call, covering its retries and
hedged tries. A span carries the conventions' attributes (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.*``, ``gen_ai.usage.*``, ``error.type``) and moa's
own (``moa.*``). Message content is recorded only when asked for.

The library needs ``opentelemetry-api`` only, and none of it when tracing is off: a run with no
tracer provider configured (or without the package) composes no tracing layer at all, so it
pays one check per run, not per call. The spans are the current span while their work runs, so
an instrumented provider SDK's own spans nest under them (``Tracing(calls=False)`` leaves the
call spans to it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._bounds import check_type, describe
from ._cost import DEFAULT_PRICES, Prices, price_table
from ._events import CallRetrying
from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from ._contract import Message, Request
    from ._history import CallRecord, History, StepRecord
    from ._pipeline import Step

try:
    from opentelemetry import trace as _otel
except ImportError:  # pragma: no cover - the library runs without it
    _otel = None  # type: ignore[assignment]

# The call layer's shapes (moa._calls' Call, TryNow, Site, Outcome), restated: _calls imports
# this module, so this one cannot import it.
Site = Any
Outcome = Any
Call = Callable[["Request", Site], Awaitable[Outcome]]
TryNow = Callable[["Request", Site, object], "Outcome | None"]

__all__ = (
    "CONTENT_ENV",
    "SEMCONV",
    "Spans",
    "Tracing",
    "carried",
    "continued",
    "flush_spans",
    "portable",
    "spans_for",
)

#: The conventions the span and attribute names follow.
SEMCONV = "semantic-conventions-genai v0.1.0 (semantic-conventions v1.45.0)"
#: The environment variable OpenTelemetry's GenAI instrumentations read to record content.
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_LONG = 4096  # the most characters of a step's expression on a span


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracing:
    """How a run reports to OpenTelemetry (``RunOptions(tracing=...)``).

    ``enabled=False`` emits nothing. ``content`` records the messages each call sends and
    receives and the run's question and answer (``gen_ai.input.messages``,
    ``gen_ai.output.messages``); None reads ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
    (``true`` records), so content stays out of traces unless someone asks. ``calls=False``
    emits the run and step spans only: for a provider SDK that is instrumented already, whose
    own ``chat`` spans then nest under moa's steps instead of being counted twice. ``name``
    is the workflow's name (``gen_ai.agent.name``, low cardinality: the served model's name,
    not the prompt). ``tracer_provider`` is the provider to use (None: the global one, so a
    run traces as soon as the application configures OpenTelemetry). ``prices`` (a
    :class:`~moa.Prices`, or a mapping of model to (input, output) $ per million tokens over
    the defaults) prices each call for ``moa.cost.usd``; None: the run's budget's prices,
    else :data:`~moa.DEFAULT_PRICES`.

    With ``content`` off, no message, persona or prompt template is recorded: a step's or an
    agent's expression is recorded with its ``system=`` and ``prompt=`` texts left out.
    """

    enabled: bool = True
    content: bool | None = None
    calls: bool = True
    name: str = "moa"
    tracer_provider: Any = None
    prices: Prices | None = None

    def __post_init__(self) -> None:
        for name in ("enabled", "calls"):
            check_type("Tracing", name, getattr(self, name), bool, "a bool")
        if self.content is not None:
            check_type("Tracing", "content", self.content, bool, "a bool or None")
        check_type("Tracing", "name", self.name, str, "a str")
        if not self.name.strip():
            raise ValueError(f"Tracing(name=...): name must be a non-empty str, not {self.name!r}")
        if self.prices is not None:
            object.__setattr__(self, "prices", price_table("Tracing", self.prices))
        provider = self.tracer_provider
        if provider is not None and not callable(getattr(provider, "get_tracer", None)):
            raise TypeError(
                "Tracing(tracer_provider=...): an OpenTelemetry TracerProvider (with "
                f"get_tracer) or None, not {describe(provider)}"
            )


_DEFAULT = Tracing()


def spans_for(
    tracing: Tracing | None, client: object, prices: Prices | None = None
) -> Spans | None:
    """The spans a run composed with ``tracing`` emits, or None when it emits none: tracing
    off, OpenTelemetry not installed, or no tracer provider configured (the API's proxy).
    ``prices``: the run's own (its budget's), where ``tracing`` names none."""
    tracing = _DEFAULT if tracing is None else tracing
    if _otel is None or not tracing.enabled:
        return None
    provider = tracing.tracer_provider
    if provider is None:
        provider = _otel.get_tracer_provider()
        if isinstance(provider, (_otel.ProxyTracerProvider, _otel.NoOpTracerProvider)):
            return None
    content = tracing.content
    if content is None:
        content = os.environ.get(CONTENT_ENV, "").strip().lower() in _CONTENT_ON
    table = tracing.prices or prices or DEFAULT_PRICES
    return Spans(_tracer(provider), tracing, content, client, table)


# The values of CONTENT_ENV that record content: "true", and the newer GenAI instrumentations'
# modes that put it on spans.
_CONTENT_ON = ("true", "span_only", "span_and_event")


_TRACERS: dict[int, tuple[Any, Any]] = {}


def _tracer(provider: Any) -> Any:
    # A tracer per provider, made once: an SDK's get_tracer builds a new one each time.
    held = _TRACERS.get(id(provider))
    if held is None or held[0] is not provider:
        held = (provider, provider.get_tracer("moa", __version__, schema_url=_SCHEMA))
        if len(_TRACERS) > 64:  # providers made per test: keep the table small
            _TRACERS.clear()
        _TRACERS[id(provider)] = held
    return held[1]


_SCHEMA = "https://opentelemetry.io/schemas/1.45.0"


def provider_of(client: object, model: str) -> str:
    """``gen_ai.provider.name`` for a call of ``model`` on ``client``: the provider of the
    client a router hands it to, else the client's ``provider`` attribute (moa's clients have
    one: ``openai``, ``anthropic``, ``litellm``, ``llama_cpp``), else the client's name (a
    custom client)."""
    route = getattr(client, "client_for", None)
    if callable(route):
        try:
            return provider_of(route(model), model)
        except Exception:  # no route for the model: the call itself will say so
            pass
    name = getattr(client, "provider", None)
    if isinstance(name, str) and name:
        return name
    return getattr(client, "__name__", None) or type(client).__name__


class Spans:
    """The span layers of one run (or one batch): the run's root, each step's, each call's."""

    __slots__ = ("calls", "client", "content", "name", "pricers", "prices", "providers", "tracer")

    def __init__(
        self, tracer: Any, tracing: Tracing, content: bool, client: object, prices: Prices
    ) -> None:
        self.tracer, self.content, self.client = tracer, content, client
        self.calls, self.name, self.prices = tracing.calls, tracing.name, prices
        # Per model, looked up once: a genai-prices lookup is ~100 us, a call's span ~10.
        self.pricers: dict[str, Callable[[int, int], float | None]] = {}
        self.providers: dict[str, str] = {}

    # -- the run ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(
        self, step: Step, prompt: str, earlier: tuple[Message, ...], seed: int
    ) -> Iterator[Any]:
        """The run's root span, current while the run goes."""
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.agent.name": self.name,
            "moa.pipeline": self._shown(step),
            "moa.seed": str(seed),  # exact: a JavaScript UI rounds a 64-bit int
        }
        if earlier:
            attrs["moa.conversation.turns"] = len(earlier)
        if self.content:
            turns = [*earlier, {"role": "user", "content": prompt}]
            attrs["gen_ai.input.messages"] = _messages(turns)
        with self._span(f"invoke_workflow {self.name}", _otel.SpanKind.INTERNAL, attrs) as span:
            yield span

    def ran(self, span: Any, history: History | None, answer: str | None) -> None:
        """The run's figures on its span: tokens and calls summed, cost, degraded steps."""
        if history is None:
            return
        calls = [c for s in history.steps for c in s.calls]
        tin = sum(c.input_tokens or 0 for c in calls if not c.cached)
        tout = sum(c.output_tokens or 0 for c in calls if not c.cached)
        # moa's names, not gen_ai.usage.*: the conventions' workflow span has no usage, and a
        # backend that adds up a trace's usage would count every call twice.
        attrs: dict[str, Any] = {
            "moa.usage.input_tokens": tin,
            "moa.usage.output_tokens": tout,
            "moa.calls": len(calls),
        }
        dollars = [self._cost(c) for c in calls]
        if calls and all(d is not None for d in dollars):
            attrs["moa.cost.usd"] = sum(d for d in dollars if d is not None)
        degraded = [s.degraded for s in history.steps if s.degraded]
        if degraded:
            attrs["moa.degraded"] = True
        if answer is not None and self.content:
            attrs["gen_ai.output.messages"] = _messages([{"role": "assistant", "content": answer}])
        span.set_attributes(attrs)

    # -- a step ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, step: Step, path: tuple[int, ...]) -> Iterator[Any]:
        """A step's span, current while it runs (its calls' spans are its children)."""
        attrs: dict[str, Any] = {"moa.step": self._shown(step), "moa.step.path": _path(path)}
        for name in ("min_success", "quorum"):  # what the step needs, and when it stops
            value = getattr(step, name, None)
            if type(value) is int:
                attrs[f"moa.step.{name}"] = value
        with self._span(f"step {type(step).__name__}", _otel.SpanKind.INTERNAL, attrs) as span:
            yield span

    def stepped(self, span: Any, rec: StepRecord) -> None:
        """A step's record on its span: kind, calls, failures, cancellations, degradation."""
        attrs: dict[str, Any] = {"moa.step.kind": rec.kind, "moa.step.outputs": len(rec.outputs)}
        if rec.calls:
            attrs["moa.step.calls"] = len(rec.calls)
            attrs["moa.step.failed"] = sum(1 for c in rec.calls if c.error is not None)
            attrs["moa.step.cancelled"] = sum(1 for c in rec.calls if c.cancelled)
        if rec.degraded:
            attrs["moa.step.degraded"] = rec.degraded
        span.set_attributes(attrs)

    # -- a call ----------------------------------------------------------------------------------
    def traced(self, inner: Call) -> Call:
        """``inner`` with a ``chat {model}`` span around each call, current while it runs."""

        async def call(req: Request, site: Site) -> Outcome:
            with self._span(
                f"chat {req.model}", _otel.SpanKind.CLIENT, self._asked(req, site)
            ) as span:
                out = await inner(req, site)
                self._answered(span, out.record)
                return out

        return call

    def traced_now(self, try_now: TryNow) -> TryNow:
        """``try_now`` with a span for each call it answers at once (a cached answer)."""

        def now(req: Request, site: Site, step: object) -> Outcome | None:
            out = try_now(req, site, step)
            if out is not None:
                span = self.tracer.start_span(
                    f"chat {req.model}",
                    kind=_otel.SpanKind.CLIENT,
                    attributes=self._asked(req, site),
                )
                self._answered(span, out.record)
                span.end()
            return out

        return now

    def retrying(self, event: object) -> None:
        """A failed try that will be tried again (a CallRetrying), as an event on the call's
        span: the retry layer reports it from inside the call, where that span is current."""
        span = _otel.get_current_span()
        if isinstance(event, CallRetrying) and span.is_recording():
            span.add_event(
                "moa.retry",
                {
                    "moa.retry.attempt": event.attempt,
                    "error.type": _error_type(event.error),
                    "moa.retry.wait": event.wait,
                },
            )

    def _asked(self, req: Request, site: Site) -> dict[str, Any]:
        provider = self.providers.get(req.model)
        if provider is None:
            provider = self.providers[req.model] = provider_of(self.client, req.model)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": req.model,
            "moa.step.path": _path(site.path),
            "moa.call.index": site.call_index,
        }
        for name, value in (
            ("gen_ai.request.temperature", req.temp),
            ("gen_ai.request.max_tokens", req.max_tokens),
            ("gen_ai.request.seed", req.seed),
        ):
            if value is not None:  # a custom step's request may leave one out
                attrs[name] = value
        if req.agent is not None:
            attrs["moa.agent"] = req.agent if self.content else _redacted(req.agent)
        if self.content:
            attrs["gen_ai.input.messages"] = _messages(req.messages)
        return attrs

    def _answered(self, span: Any, rec: CallRecord) -> None:
        attrs: dict[str, Any] = {"moa.retry.attempts": rec.attempts}
        if rec.cached:  # nothing spent: the tokens the stored answer cost are not this run's
            attrs["moa.cache.hit"] = True
        else:
            if rec.input_tokens is not None:
                attrs["gen_ai.usage.input_tokens"] = rec.input_tokens
            if rec.output_tokens is not None:
                attrs["gen_ai.usage.output_tokens"] = rec.output_tokens
        dollars = self._cost(rec)
        if dollars is not None:
            attrs["moa.cost.usd"] = dollars
        if rec.hedges:
            attrs["moa.hedge.tries"] = len(rec.hedges) + 1
            attrs["moa.hedge.cancelled"] = sum(1 for h in rec.hedges if h.cancelled)
        if rec.confidence is not None:
            attrs["moa.confidence"] = float(rec.confidence.mean)
        if rec.error is not None:
            attrs["error.type"] = _error_type(rec.error)
            span.set_status(_otel.Status(_otel.StatusCode.ERROR, rec.error))
        elif rec.text is not None and self.content:
            attrs["gen_ai.output.messages"] = _messages(
                [{"role": "assistant", "content": rec.text}]
            )
        span.set_attributes(attrs)

    def _cost(self, rec: CallRecord) -> float | None:
        if rec.cached:
            return 0.0
        if rec.input_tokens is None or rec.output_tokens is None:
            return None
        pricer = self.pricers.get(rec.model)
        if pricer is None:
            pricer = self.pricers[rec.model] = self.prices.pricer(rec.model)
        return pricer(rec.input_tokens, rec.output_tokens)

    def _shown(self, step: Step) -> str:
        """A step's expression as a span shows it: whole with content, else without the
        texts of its personas and prompts."""
        return _shown(step, self.content)

    @contextlib.contextmanager
    def _span(self, name: str, kind: Any, attrs: dict[str, Any]) -> Iterator[Any]:
        """A span, current while the block runs; an exception out of it sets ``error.type``
        and the error status, a cancellation ``moa.cancelled`` (it is not an error)."""
        span = self.tracer.start_span(name, kind=kind, attributes=attrs)
        with _otel.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield span
            except Exception as exc:
                name = type(exc).__name__
                if self.content:
                    span.record_exception(exc)
                    text = str(exc)
                else:  # its notes and message may quote a step's persona or prompt
                    text = _redacted(str(exc))
                    span.add_event("exception", {"exception.type": name, "exception.message": text})
                span.set_attribute("error.type", name)
                span.set_status(_otel.Status(_otel.StatusCode.ERROR, f"{name}: {text}"))
                raise
            except BaseException:  # cancelled, or interrupted: the run said why elsewhere
                span.set_attribute("moa.cancelled", True)
                raise


@contextlib.contextmanager
def continued(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """The trace a caller sent along (W3C ``traceparent``, as HTTP headers or a dict from
    :func:`carried`) as the current context while the block runs, so a run in it is a child
    of the caller's span. Nothing when there is none, when it does not parse, when a span is
    current already (an instrumented server's, itself the caller's child), or when
    OpenTelemetry is not installed."""
    if _otel is None or not carrier or "traceparent" not in carrier:
        yield
        return
    if _otel.get_current_span().get_span_context().is_valid:
        yield  # a server span (an instrumented server) continues the caller's trace already
        return
    from opentelemetry import context, propagate

    incoming = propagate.extract(carrier)
    if not _otel.get_current_span(incoming).get_span_context().is_valid:
        yield  # a traceparent that does not parse: nothing to continue
        return
    token = context.attach(incoming)
    try:
        yield
    finally:
        context.detach(token)


def carried() -> dict[str, str]:
    """The current trace as a carrier (``traceparent``...) for another process to continue
    with :func:`continued`; empty when there is none to carry."""
    if _otel is None or not _otel.get_current_span().get_span_context().is_valid:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def portable(tracing: Tracing | None) -> Tracing | None:
    """``tracing`` as another process can take it: without its tracer provider (the other
    process traces to its own global one)."""
    if tracing is None or tracing.tracer_provider is None:
        return tracing
    return dataclasses.replace(tracing, tracer_provider=None)


def flush_spans() -> None:
    """Sends the spans the global tracer provider holds (an SDK's batch processor queues
    them): for a worker process that may be stopped without an orderly exit."""
    if _otel is None:
        return
    flush = getattr(_otel.get_tracer_provider(), "force_flush", None)
    if callable(flush):
        flush()


def _error_type(error: str) -> str:
    """``error.type`` from a recorded error (``"TimeoutError: ..."``): the exception's name."""
    name = error.split(":", 1)[0].strip()
    return name if name.replace(".", "").replace("_", "").isalnum() else "_OTHER"


# A system= or prompt= keyword of a step's or an agent's expression, with its str literal (as
# repr writes one: single or double quotes, backslash escapes).
_TEXTS = re.compile(r"""\b(system|prompt)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def _redacted(text: str) -> str:
    """``text`` with the persona and prompt texts of the expressions in it left out."""
    return _TEXTS.sub(r"\1=…", text)


@functools.lru_cache(maxsize=1024)
def _shown_hashed(step: Step, content: bool) -> str:
    # Steps are immutable values: a step's expression is made once, not on every run.
    text = repr(step)
    return _clipped(text if content else _redacted(text))


def _shown(step: Step, content: bool) -> str:
    try:
        return _shown_hashed(step, content)
    except TypeError:  # a custom step that is not hashable
        return _shown_hashed.__wrapped__(step, content)


def _path(path: tuple[int, ...]) -> str:
    """A step's path as a span shows it: ``"2"``, ``"0.1"`` (a string: an OpenTelemetry
    sequence costs a check per item, on every call's span)."""
    return ".".join(map(str, path))


def _clipped(text: str) -> str:
    return text if len(text) <= _LONG else text[: _LONG - 1] + "…"


def _messages(messages: Sequence[Mapping[str, str]]) -> str:
    """Messages in the conventions' JSON form (role and text parts), as a JSON string: OTLP
    backends read structured attributes unevenly, and the conventions allow the string. No
    ``finish_reason``: moa's client contract does not carry one, and a guess would mislead."""
    out = [
        {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in messages
    ]
    return json.dumps(out, ensure_ascii=False)
