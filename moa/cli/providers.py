"""Where the models run: ``--provider``, ``--base-url`` and ``--model`` made into a client,
with the embedded model's own rules (its names, a GGUF file) and ``--model`` as an Agent."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._agent import Agent, AgentLike
from .._parse import PipelineSyntaxError, parse_agent
from .common import UsageError

__all__ = ("EMBEDDED_NAMES", "PROVIDERS", "Provider", "as_agent", "make_client", "model_option")


@dataclass(frozen=True)
class Provider:
    """How ``--provider NAME`` reaches a model: the key it needs and the model it defaults to."""

    key_env: str | None
    model: str
    base_url: str | None = None
    kind: str = "openai"


PROVIDERS = {
    "local": Provider(None, "SmolLM2-135M-Instruct", kind="local"),
    "openai": Provider("OPENAI_API_KEY", "gpt-5-nano-2025-08-07"),
    "anthropic": Provider("ANTHROPIC_API_KEY", "claude-sonnet-4-5", kind="anthropic"),
    "openrouter": Provider(
        "OPENROUTER_API_KEY", "qwen/qwen-2.5-72b-instruct", "https://openrouter.ai/api/v1"
    ),
    "groq": Provider("GROQ_API_KEY", "llama-3.3-70b-versatile", "https://api.groq.com/openai/v1"),
    "together": Provider(
        "TOGETHER_API_KEY", "Qwen/Qwen2.5-72B-Instruct-Turbo", "https://api.together.xyz/v1"
    ),
}


def make_client(provider: str, base_url: str | None, model: str | None) -> tuple[Any, str]:
    """The client and model name that ``--provider``/``--base-url``/``--model`` ask for."""
    from .. import clients

    if base_url and provider == "local":
        # --base-url alone: any OpenAI-compatible server (vLLM, Ollama, llama.cpp server).
        if not model:
            raise UsageError("--base-url needs --model: the name the server knows the model by")
        return clients.openai_client(
            base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY")
        ), model
    spec = PROVIDERS[provider]
    if spec.kind == "local":
        return _local_model(model, spec.model)
    key = os.environ.get(spec.key_env or "")
    if not key:
        raise UsageError(f"--provider {provider} needs {spec.key_env} set in the environment")
    if spec.kind == "anthropic":
        return clients.anthropic_client(api_key=key, base_url=base_url), model or spec.model
    return clients.openai_client(
        base_url=base_url or spec.base_url, api_key=key
    ), model or spec.model


#: What ``--model`` may say on the embedded provider for the embedded model (any case).
EMBEDDED_NAMES = ("smollm2", "smollm2-135m-instruct", "smollm2-135m-instruct.q4_1")


def _local_model(model: str | None, default: str) -> tuple[Any, str]:
    """The embedded provider's client and model label: the embedded SmolLM2, or the GGUF
    file ``--model`` names. Any other name is a mistake (it would run SmolLM2 under that
    name), so it is refused with the options that reach other models."""
    if model is None or model.casefold() in EMBEDDED_NAMES:
        return _local_client(None), model or default
    if model.casefold().endswith(".gguf") or os.sep in model:
        path = Path(model).expanduser()
        if not path.is_file():
            raise UsageError(f"--model {model}: no such model file")
        return _local_client(path), path.stem
    raise UsageError(
        f"--model {model!r}: the embedded provider runs SmolLM2-135M-Instruct (--model "
        f"smollm2) or a GGUF file you name (--model path/to/model.gguf); for another model "
        f"use --provider {{{','.join(p for p in PROVIDERS if p != 'local')}}} or --base-url URL"
    )


def _local_client(path: Path | None) -> Any:
    from .. import clients

    try:
        return clients.local_client(path)
    except ValueError as exc:  # a bad MOA_THREADS
        raise UsageError(str(exc)) from None


def model_option(args: argparse.Namespace) -> Agent | None:
    """``--model`` given as an agent expression (``"Agent('m', temp=0)"``): the agent, with
    ``args.model`` set to its model name for ``make_client``; None for a plain name."""
    text = args.model
    if text is None or not text.lstrip().startswith("Agent("):
        return None
    try:
        agent = parse_agent(text)
    except PipelineSyntaxError as exc:
        raise UsageError(f"--model: {exc}") from None
    args.model = agent.model
    return agent


def as_agent(agent: Agent | None, model: str) -> AgentLike:
    """The agent the command runs: ``--model``'s agent on the model ``make_client`` chose (a
    GGUF path becomes its name), or the model name alone."""
    return model if agent is None else dataclasses.replace(agent, model=model)
