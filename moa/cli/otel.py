"""``--otlp URL``: a command's runs traced to an OpenTelemetry collector (Phoenix, Jaeger,
Langfuse, an OpenTelemetry Collector...) over OTLP/HTTP. Needs ``moa-dsl[otel]``.

The command's runs trace to an SDK tracer provider of the command's own (the process's global
provider is left alone; a Ray worker's is its own); its spans are sent when the command ends,
each export waiting a few seconds at most. Message content is recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..clients._extras import MissingExtraError
from .common import UsageError

__all__ = (
    "EXPORT_SECONDS",
    "add_otlp_option",
    "checked",
    "endpoint",
    "exporting",
    "install",
    "made",
)


def add_otlp_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--otlp",
        metavar="URL",
        default=None,
        help="send OpenTelemetry spans of every run over OTLP/HTTP to URL (a collector's "
        "base URL, or its /v1/traces); needs pip install 'moa-dsl[otel]'",
    )


def endpoint(url: str) -> str:
    """The traces endpoint of ``url``: as given when its path ends in ``/v1/traces``, else
    ``/v1/traces`` added to it (OTLP/HTTP's path, under a collector's base path such as
    Langfuse's ``/api/public/otel``). A URL that is not http(s) is a usage error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--otlp {url}: an http:// or https:// URL of an OTLP/HTTP collector")
    if parts.path.rstrip("/").endswith("/v1/traces"):
        return url
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/v1/traces"))


@contextlib.contextmanager
def exporting(url: str | None, service: str) -> Iterator[Any]:
    """A tracer provider sending spans to ``url`` while the block runs (None when ``url`` is
    None), as service ``service`` (``$OTEL_SERVICE_NAME`` wins); what it holds is sent (or
    dropped, with the SDK's warning) when the block ends. The command hands it to its runs
    as ``Tracing(tracer_provider=...)``: the process's global provider is left alone."""
    if url is None:
        yield None
        return
    provider = made(url, service)
    try:
        yield provider
    finally:
        provider.shutdown()  # sends what is queued, within the exporter's timeout


def install(url: str, service: str) -> Any:
    """:func:`made`, as the process's global tracer provider (a Ray worker's: every run of
    the worker traces to it)."""
    from opentelemetry import trace

    provider = made(url, service)
    trace.set_tracer_provider(provider)
    return provider


def made(url: str, service: str) -> Any:
    """An SDK tracer provider batching spans to ``url`` over OTLP/HTTP. Each export waits at
    most ``EXPORT_SECONDS``: a collector that is down costs a command seconds, not a hang."""
    target = checked(url)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(named))
    exporter = OTLPSpanExporter(endpoint=target, timeout=EXPORT_SECONDS)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def checked(url: str) -> str:
    """``url``'s traces endpoint, once the SDK and the exporter are known to be installed:
    a command checks ``--otlp`` before it starts anything (a Ray cluster, a server)."""
    target = endpoint(url)
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "--otlp needs the OpenTelemetry SDK and exporter: pip install 'moa-dsl[otel]'"
        ) from None
    return target


#: The most seconds one export of spans may take, its retries included.
EXPORT_SECONDS = 3.0
