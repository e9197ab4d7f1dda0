"""``--otlp URL``: a command's runs traced to an OpenTelemetry collector (Phoenix, Jaeger,
Langfuse, an OpenTelemetry Collector...) over OTLP/HTTP. Needs ``moa-dsl[otel]``.

The SDK's tracer provider becomes the global one while the command runs, so every run of the
command finds it (a run traces whenever one is configured); its spans are flushed when the
command ends. Message content is recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from ..clients._extras import MissingExtraError
from .common import UsageError

__all__ = ("add_otlp_option", "endpoint", "exporting", "install")


def add_otlp_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--otlp",
        metavar="URL",
        default=None,
        help="send OpenTelemetry spans of every run over OTLP/HTTP to URL (a collector's "
        "base URL, or its /v1/traces); needs pip install 'moa-dsl[otel]'",
    )


def endpoint(url: str) -> str:
    """The traces endpoint of ``url``: as given when it names a path, else ``/v1/traces``
    on it (OTLP/HTTP's path). A URL that is not http(s) is a usage error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--otlp {url}: an http:// or https:// URL of an OTLP/HTTP collector")
    if parts.path in ("", "/"):
        return url.rstrip("/") + "/v1/traces"
    return url


@contextlib.contextmanager
def exporting(url: str | None, service: str) -> Iterator[Callable[[], None]]:
    """Spans sent to ``url`` while the block runs, as service ``service``; all sent (or
    dropped with the SDK's warning) when it ends. Nothing when ``url`` is None. The block gets
    ``flush()``, which sends what is queued now: a server calls it once it has drained, as
    the signal that stopped it may end the process before the block does."""
    if url is None:
        yield lambda: None
        return
    provider = install(url, service)

    def flush() -> None:
        provider.force_flush()

    try:
        yield flush
    finally:
        provider.shutdown()  # flushes what is queued


def install(url: str, service: str) -> Any:
    """An SDK tracer provider exporting to ``url`` over OTLP/HTTP (batched), made the global
    one: every run of this process traces to it. Returns it."""
    target = endpoint(url)
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise MissingExtraError(
            "--otlp needs the OpenTelemetry SDK and exporter: pip install 'moa-dsl[otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=target)))
    trace.set_tracer_provider(provider)
    return provider
