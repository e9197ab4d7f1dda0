"""What you need to write a step of your own: the bases and the helpers they use.

A transform is a function of the responses and the run's RNG (:func:`transform`, or a
:class:`Transform` subclass); an LLM step (:class:`LLMStep`) describes its calls as
:class:`Request` values built with :func:`ask` and :func:`messages`, and reads the replies;
a judge's reply is read with :func:`parse_pick` or :func:`parse_ranking`. Work too heavy for
the event loop is handed to the executor as an :class:`OffLoop`. ``docs/custom-steps.md``
walks through both kinds, with their law tests.
"""

from ._answers import answer_key as answer_key
from ._contract import LLMStep as LLMStep
from ._contract import OffLoop as OffLoop
from ._contract import Plan as Plan
from ._contract import Request as Request
from ._contract import ask as ask
from ._contract import messages as messages
from ._contract import numbered as numbered
from ._contract import with_responses as with_responses
from ._custom import transform as transform
from ._judging import parse_pick as parse_pick
from ._judging import parse_ranking as parse_ranking
from ._transforms import Transform as Transform

__all__ = (
    "LLMStep",
    "OffLoop",
    "Plan",
    "Request",
    "Transform",
    "answer_key",
    "ask",
    "messages",
    "numbered",
    "parse_pick",
    "parse_ranking",
    "transform",
    "with_responses",
)
