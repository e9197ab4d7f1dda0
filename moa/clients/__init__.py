"""Clients for real models, each a factory returning a ``moa.Client``.

``import moa.clients`` imports no provider SDK; each factory imports its own when called and,
when the extra is missing, raises an error that gives the install command.
"""

from ._anthropic import anthropic_client as anthropic_client
from ._extras import MissingExtraError as MissingExtraError
from ._litellm import litellm_client as litellm_client
from ._local import UnsafeBuildError as UnsafeBuildError
from ._local import default_model_path as default_model_path
from ._local import default_threads as default_threads
from ._local import local_client as local_client
from ._openai import openai_client as openai_client
from ._route import NoRouteError as NoRouteError
from ._route import route as route

__all__ = (
    "MissingExtraError",
    "NoRouteError",
    "UnsafeBuildError",
    "anthropic_client",
    "default_model_path",
    "default_threads",
    "litellm_client",
    "local_client",
    "openai_client",
    "route",
)
