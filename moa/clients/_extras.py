"""Optional dependencies: imported when an adapter is built, never by ``import moa``."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MoaError


class MissingExtraError(MoaError, ImportError):
    """An adapter's optional dependency is not installed; the message gives the install command."""


def require(module: str, extra: str, adapter: str, install: str | None = None) -> ModuleType:
    """Import ``module`` for ``adapter``, or raise with the exact command that installs it
    (``install``, default ``pip install 'moa-dsl[extra]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        command = install or f"pip install 'moa-dsl[{extra}]'"
        raise MissingExtraError(
            f"{adapter} needs the {module!r} package, which is not installed: {command}"
        ) from exc
