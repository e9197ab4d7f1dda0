"""The LiteLLM client: one interface to a hundred providers, named ``provider/model``."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

from ..errors import ProviderError
from ._common import check_defaults, token_count
from ._errors import provider_error, redact, url_passwords
from ._extras import require
from ._replies import chat_text, field

__all__ = ("LiteLLMClient", "litellm_client")

_RESERVED = frozenset({"model", "messages", "temperature", "max_tokens", "stream"})
# Defaults that may hold a credential: their values never reach a repr or a message.
_SECRET_NAMES = ("api_key", "azure_ad_token", "aws_secret_access_key", "aws_session_token")
# Defaults that hold a URL, whose password (http://user:PASS@host) is a credential too.
_URL_NAMES = ("api_base", "base_url")


class LiteLLMClient:
    """A ``moa.Client`` over ``litellm.acompletion``; built by :func:`litellm_client`.

    LiteLLM runs on asyncio only (it calls ``asyncio.get_event_loop``); on trio a call fails
    at once, not retried, saying so.
    """

    #: ``gen_ai.provider.name`` on its calls' spans.
    provider = "litellm"

    __slots__ = ("_secrets", "defaults", "litellm", "prefix")

    def __init__(self, litellm: ModuleType, *, prefix: str, defaults: dict[str, Any]) -> None:
        self.litellm = litellm
        self.prefix = prefix
        self.defaults = defaults
        self._secrets = tuple(v for k in _SECRET_NAMES if isinstance(v := defaults.get(k), str))
        for name in _URL_NAMES:
            url = defaults.get(name)
            self._secrets += url_passwords(url) if isinstance(url, str) else ()

    def __repr__(self) -> str:
        args = [f"prefix={self.prefix!r}"] if self.prefix else []
        args += [
            f"{k}=[REDACTED]" if k in _SECRET_NAMES else f"{k}={v!r}"
            for k, v in self.defaults.items()
        ]
        return redact(f"litellm_client({', '.join(args)})", self._secrets)

    async def __call__(
        self, *, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int
    ) -> tuple[str, int | None, int | None]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise ProviderError(
                "litellm_client runs on asyncio only (LiteLLM calls asyncio's "
                "event loop); run with backend='asyncio'",
                model=model,
                retryable=False,
            ) from None
        try:
            # Looked up on each call, so a patched ``litellm.acompletion`` is the one used.
            response = await self.litellm.acompletion(
                model=self.prefix + model,
                messages=messages,
                temperature=temp,
                max_tokens=max_tokens,
                **self.defaults,
            )
        except Exception as exc:
            error = provider_error(exc, model=model, secrets=self._secrets)
            if error is None:
                raise
        else:
            return _reply(model, response, self._secrets)
        raise error from None


def _reply(
    model: str, response: Any, secrets: tuple[str, ...]
) -> tuple[str, int | None, int | None]:
    choices = field(response, "choices")
    if choices == []:
        raise ProviderError(
            redact(f"the response has no choices: {response!r}", secrets)[:300],
            model=model,
            retryable=True,
        )
    text = chat_text(model, response, secrets)
    usage = field(response, "usage")  # absent, not None, when the provider sent none
    return (
        text,
        token_count(getattr(usage, "prompt_tokens", None)),
        token_count(getattr(usage, "completion_tokens", None)),
    )


def litellm_client(prefix: str = "", **defaults: Any) -> LiteLLMClient:
    """A client on LiteLLM (``moa-dsl[litellm]``): each call is
    ``litellm.acompletion(model=prefix + model, messages, temperature, max_tokens, **defaults)``.

    ``litellm_client(prefix="groq/")`` reaches Groq with Groq's own model names (the key comes
    from ``GROQ_API_KEY``, as LiteLLM reads it). Runs on asyncio only. The values of
    ``api_key`` and the other credential defaults, and the password of ``api_base``, never
    appear in the repr or in error messages (a credential shorter than 4 characters is not
    searched for in messages, as hiding every "ab" would garble them).
    """
    if not isinstance(prefix, str):
        raise TypeError(
            f"litellm_client(prefix=...): prefix must be a str such as 'groq/', "
            f"not {type(prefix).__name__}"
        )
    check_defaults("litellm_client", defaults, _RESERVED)
    litellm = require("litellm", "litellm", "litellm_client")
    return LiteLLMClient(litellm, prefix=prefix, defaults=dict(defaults))
