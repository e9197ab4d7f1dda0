"""moa.testing: property-test steps, built-in or your own, with the laws the built-ins obey.

Strategies (:mod:`moa.testing.strategies`) draw responses, prompts, seeds, steps, pipelines and
scripted clients; laws (:mod:`moa.testing.laws`) are named checks such as ``permutation`` or
``fuses(min)``; :func:`check_laws` turns a list of them into one pytest test per law::

    from moa import Shuffle
    from moa.testing import check_laws, deterministic_under_seed, permutation

    check_laws(Shuffle(), [permutation, deterministic_under_seed])

Needs Hypothesis: ``pip install 'moa-dsl[testing]'``. ``import moa`` never imports it.
"""

try:
    import hypothesis as _hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError("moa.testing needs Hypothesis: pip install 'moa-dsl[testing]'") from exc

from ._check import check_laws as check_laws
from ._scripted import Permanent as Permanent
from ._scripted import ScriptedClient as ScriptedClient
from ._scripted import Transient as Transient
from ._scripted import default_reply as default_reply
from .laws import Case as Case
from .laws import LawViolation as LawViolation
from .laws import Outcome as Outcome
from .laws import assert_equivalent as assert_equivalent
from .laws import commutes_with_map as commutes_with_map
from .laws import deterministic_under_seed as deterministic_under_seed
from .laws import equivalent_to as equivalent_to
from .laws import fuses as fuses
from .laws import idempotent as idempotent
from .laws import identity_at as identity_at
from .laws import law as law
from .laws import length_bound as length_bound
from .laws import never_empty as never_empty
from .laws import order_preserving as order_preserving
from .laws import permutation as permutation
from .laws import sub_multiset as sub_multiset
from .strategies import llm_steps as llm_steps
from .strategies import pipelines as pipelines
from .strategies import predicates as predicates
from .strategies import prompts as prompts
from .strategies import responses as responses
from .strategies import scripted_clients as scripted_clients
from .strategies import seeds as seeds
from .strategies import text_functions as text_functions
from .strategies import transforms as transforms

__all__ = (
    "Case",
    "LawViolation",
    "Outcome",
    "Permanent",
    "ScriptedClient",
    "Transient",
    "assert_equivalent",
    "check_laws",
    "commutes_with_map",
    "default_reply",
    "deterministic_under_seed",
    "equivalent_to",
    "fuses",
    "idempotent",
    "identity_at",
    "law",
    "length_bound",
    "llm_steps",
    "never_empty",
    "order_preserving",
    "permutation",
    "pipelines",
    "predicates",
    "prompts",
    "responses",
    "scripted_clients",
    "seeds",
    "sub_multiset",
    "text_functions",
    "transforms",
)
