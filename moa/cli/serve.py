"""``moa serve``: named pipelines served as models behind an OpenAI-compatible API, under
uvicorn (``pip install 'moa-dsl[serve]'``).

The models come from ``--pipeline NAME=EXPR`` / ``--recipe NAME`` on the command line, or from
a TOML file (``--config``)::

    [server]
    host = "127.0.0.1"
    port = 8000
    max_requests = 64        # runs at once, server-wide (429 past it)
    max_body = 1048576       # bytes a request may send (413 past it)
    request_timeout = 600    # seconds a run may take (504 past it)

    [models.self-moa]
    pipeline = "self_moa"    # a recipe's name, or a pipeline expression
    provider = "local"       # where its calls go: --provider's choices, or base_url + model
    max_concurrency = 4      # calls in flight at once, for each run of this model
    max_tokens = 256

The key (``Authorization: Bearer KEY``) is read from the environment variable ``--key-env``
names (default ``MOA_SERVE_KEY``), never from the command line, where other users can read
it; a server bound to anything but loopback refuses to start without one. SIGTERM or Ctrl-C
stops taking connections and lets the requests in flight finish."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tomllib
from typing import Any

from .._options import RunOptions
from ..clients._extras import MissingExtraError
from .common import UsageError
from .evaluate import _named
from .options import RECIPES, parse_expression, recipe, with_max_tokens
from .otel import checked, exporting
from .providers import PROVIDERS, make_client

__all__ = ("serve_command",)

#: uvicorn's settings for ``moa serve`` besides the address, the log level and the drain.
#: ``timeout_keep_alive``: an idle connection is closed after 75 s, not uvicorn's 5 s, so the
#: client's pool drops it first. httpx's pool (the OpenAI and Anthropic SDKs') keeps one 5 s:
#: against 5 s, a request sent on a connection idle 4.9-5 s met the server closing it, a
#: ReadError, which httpx does not retry on a POST (5-15% of them on a loaded server; none
#: at 75 s).
#: uvicorn runs httptools and uvloop where they are installed (``pip install httptools``: the
#: server's CPU a request about 15% less), h11 and asyncio otherwise.
UVICORN: dict[str, Any] = {"lifespan": "off", "timeout_keep_alive": 75}

_SERVER_KEYS = {"host", "port", "max_requests", "max_body", "request_timeout", "key_env"}
_MODEL_KEYS = {
    "pipeline",
    "provider",
    "base_url",
    "model",
    "max_tokens",
    "max_concurrency",
    "timeout",
    "deadline",
    "hedge_after",
}


def serve_command(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import MAX_BODY, app
    except ImportError:
        raise MissingExtraError(
            "moa serve needs Starlette and uvicorn: pip install 'moa-dsl[serve]'"
        ) from None
    if args.otlp is not None:
        checked(args.otlp)  # a bad --otlp, before a model loads
    config = _config(args.config)
    server = {**config.get("server", {})}
    for name in _SERVER_KEYS:  # the command line's settings over the file's
        if getattr(args, name) is not None:
            server[name] = getattr(args, name)
    host, port = server.get("host", "127.0.0.1"), server.get("port", 8000)
    key_env = server.get("key_env", "MOA_SERVE_KEY")
    key = os.environ.get(key_env) or None
    if key is None and not _loopback(host):
        raise UsageError(
            f"--host {host}: a server others can reach needs a key; set {key_env} in the "
            "environment (clients send it as Authorization: Bearer KEY)"
        )
    models = _models(args, config.get("models", {}))
    # The runs trace to the command's own provider (--otlp), named after the served model.
    with exporting(args.otlp, "moa serve") as tracer_provider:
        try:
            served = app(
                models,
                key=key,
                max_requests=server.get("max_requests", 64),
                max_body=server.get("max_body", MAX_BODY),
                timeout=server.get("request_timeout", 600.0),
                tracer_provider=tracer_provider,
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc).replace("moa.serve.app(", "[server] (", 1)) from None
        if not args.quiet:
            print(
                f"moa serve: http://{host}:{port}/v1 serves {', '.join(models)}"
                f"{'' if key else ' (no key asked: loopback only)'}",
                file=sys.stderr,
            )
        settings = uvicorn.Config(
            served,
            host=host,
            port=port,
            log_level="warning" if args.quiet else "info",
            timeout_graceful_shutdown=args.drain,
            **UVICORN,
        )
        _server_class()(settings, tracer_provider).run()
    return 0


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, sending the spans it holds once it has drained: uvicorn raises
        the signal that stopped it again as it returns, which ends the process before the
        tracer provider's own shutdown would send them."""

        def __init__(self, config: Any, tracer_provider: Any) -> None:
            super().__init__(config)
            self.tracer_provider = tracer_provider

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            if self.tracer_provider is not None:
                self.tracer_provider.force_flush()

    return Server


def _config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not TOML: {exc}") from None
    unknown = sorted(set(doc) - {"server", "models"})
    if unknown:
        raise UsageError(
            f"--config {path}: unknown table [{unknown[0]}]; the tables are [server] and [models.NAME]"
        )
    extra = sorted(set(doc.get("server", {})) - _SERVER_KEYS)
    if extra:
        raise UsageError(
            f"--config {path}: [server] has no setting {extra[0]!r}; it takes {', '.join(sorted(_SERVER_KEYS))}"
        )
    for name, table in doc.get("models", {}).items():
        if not isinstance(table, dict):
            raise UsageError(f"--config {path}: [models.{name}] must be a table")
        extra = sorted(set(table) - _MODEL_KEYS)
        if extra:
            raise UsageError(
                f"--config {path}: [models.{name}] has no setting {extra[0]!r}; it takes "
                f"{', '.join(sorted(_MODEL_KEYS))}"
            )
        if "pipeline" not in table:
            raise UsageError(f'--config {path}: [models.{name}] needs pipeline = "EXPR or recipe"')
    return doc


def _models(args: argparse.Namespace, tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every model to serve: the config's tables, then --pipeline and --recipe (one client per
    distinct provider, endpoint and model: the embedded model loads once)."""
    from ..serve import Served

    specs: dict[str, dict[str, Any]] = {name: dict(t) for name, t in tables.items()}
    for text in args.pipeline or ():
        name, expression = _named(text)
        _fresh(name, specs, "--pipeline")
        specs[name] = {"pipeline": expression}
    for name in args.recipe or ():
        _fresh(name, specs, "--recipe")
        specs[name] = {"pipeline": name}
    if not specs:
        raise UsageError(
            "give the models to serve: --pipeline NAME=EXPR, --recipe NAME or --config FILE"
        )
    out = {}
    clients: dict[tuple[Any, ...], tuple[Any, str]] = {}
    for name, spec in specs.items():
        where = (spec.get("provider", args.provider), spec.get("base_url", args.base_url))
        asked = spec.get("model", args.model)
        if where[0] not in PROVIDERS:
            raise UsageError(
                f"model {name!r}: no provider {where[0]!r}; one of {', '.join(sorted(PROVIDERS))}"
            )
        key = (*where, asked)
        if key not in clients:
            clients[key] = make_client(where[0], where[1], asked)
        client, model_name = clients[key]
        text = spec["pipeline"]
        if text in RECIPES:
            local = where[0] == "local" and not where[1]
            step = recipe(text, model_name if asked or local else None)
        else:
            step = parse_expression(text)
        max_tokens = spec.get("max_tokens", args.max_tokens)
        if max_tokens is not None:
            step = with_max_tokens(step, max_tokens)
        try:
            options = RunOptions(
                max_concurrency=spec.get("max_concurrency", args.max_concurrency),
                timeout=spec.get("timeout", args.timeout),
                deadline=spec.get("deadline"),
                hedge_after=spec.get("hedge_after"),
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(f"model {name!r}: {exc}") from None
        out[name] = Served(step, client, options)
    return out


def _fresh(name: str, specs: dict[str, Any], option: str) -> None:
    if name in specs:
        raise UsageError(f"{option}: a model is named {name!r} already")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
