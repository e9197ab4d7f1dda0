"""moa: Mixture-of-Agents pipelines as one-line expressions.

``Propose(models) | Shuffle() | Dropout(.2) | Aggregate(model)`` is a Pipeline value;
``await run(pipeline, prompt, client)`` runs it on anyio.
"""

from ._custom import transform as transform
from ._batch import RunResult as RunResult
from ._batch import as_completed as as_completed
from ._batch import run_many as run_many
from ._executor import Client as Client
from ._executor import Retry as Retry
from ._executor import run as run
from ._executor import run_sync as run_sync
from ._history import CallRecord as CallRecord
from ._limits import Limits as Limits
from ._limits import ModelLimit as ModelLimit
from ._history import History as History
from ._history import StepRecord as StepRecord
from ._llm_steps import Aggregate as Aggregate
from ._llm_steps import LLMStep as LLMStep
from ._llm_steps import Propose as Propose
from ._llm_steps import Rank as Rank
from ._llm_steps import Refine as Refine
from ._llm_steps import Request as Request
from ._llm_steps import Synthesize as Synthesize
from ._llm_steps import Vote as Vote
from ._llm_steps import messages as messages
from ._llm_steps import numbered as numbered
from ._llm_steps import parse_ranking as parse_ranking
from ._parse import PipelineSyntaxError as PipelineSyntaxError
from ._parse import parse_pipeline as parse_pipeline
from ._pipeline import Parallel as Parallel
from ._pipeline import Pipeline as Pipeline
from ._pipeline import Step as Step
from ._pipeline import parallel as parallel
from ._pipeline import pipeline as pipeline
from ._transforms import Dropout as Dropout
from ._transforms import Filter as Filter
from ._transforms import Map as Map
from ._transforms import Sample as Sample
from ._transforms import Shuffle as Shuffle
from ._transforms import Take as Take
from ._transforms import Transform as Transform
from .errors import ClientOutputError as ClientOutputError
from .errors import EmptyInputError as EmptyInputError
from .errors import MoaError as MoaError
from .errors import ProviderError as ProviderError
from .errors import StepFailedError as StepFailedError

__version__ = "0.1.0"

__all__ = (
    "Aggregate",
    "CallRecord",
    "Client",
    "ClientOutputError",
    "Dropout",
    "EmptyInputError",
    "Filter",
    "History",
    "LLMStep",
    "Limits",
    "Map",
    "MoaError",
    "ModelLimit",
    "Parallel",
    "Pipeline",
    "PipelineSyntaxError",
    "Propose",
    "ProviderError",
    "Rank",
    "Refine",
    "Request",
    "Retry",
    "RunResult",
    "Sample",
    "Shuffle",
    "Step",
    "StepFailedError",
    "StepRecord",
    "Synthesize",
    "Take",
    "Transform",
    "Vote",
    "as_completed",
    "messages",
    "numbered",
    "parallel",
    "parse_pipeline",
    "parse_ranking",
    "pipeline",
    "run",
    "run_many",
    "run_sync",
    "transform",
)
