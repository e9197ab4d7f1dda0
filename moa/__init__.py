"""moa: Mixture-of-Agents pipelines as one-line expressions.

``Propose(models) | Shuffle() | Dropout(.2) | Aggregate(model)`` is a Pipeline value;
``await run(pipeline, prompt, client)`` runs it on anyio.
"""

from . import steps as steps  # the custom-step API, after what it re-exports
from ._agent import Agent as Agent
from ._batch import RunResult as RunResult
from ._batch import as_completed as as_completed
from ._batch import run_many as run_many
from ._budget import Budget as Budget
from ._cache import Cache as Cache
from ._client import Client as Client
from ._client import Reply as Reply
from ._client import StreamingClient as StreamingClient
from ._client import Usage as Usage
from ._contract import LLMStep as LLMStep
from ._cost import DEFAULT_PRICES as DEFAULT_PRICES
from ._cost import Cost as Cost
from ._cost import Price as Price
from ._cost import Prices as Prices
from ._cost import cost as cost
from ._custom import transform as transform
from ._eval import evaluate as eval  # noqa: F401  (not in __all__: a star import keeps the builtin)
from ._eval import evaluate_sync as eval_sync
from ._events import CallFinished as CallFinished
from ._events import CallRetrying as CallRetrying
from ._events import Event as Event
from ._events import RunFinished as RunFinished
from ._events import StepFinished as StepFinished
from ._events import StepStarted as StepStarted
from ._events import TextChunk as TextChunk
from ._history import CallRecord as CallRecord
from ._history import History as History
from ._history import StepRecord as StepRecord
from ._limits import Limits as Limits
from ._limits import ModelLimit as ModelLimit
from ._llm_steps import Aggregate as Aggregate
from ._llm_steps import AggregateSeq as AggregateSeq
from ._llm_steps import Pick as Pick
from ._llm_steps import Propose as Propose
from ._llm_steps import Rank as Rank
from ._llm_steps import Refine as Refine
from ._llm_steps import Synthesize as Synthesize
from ._llm_steps import Vote as Vote
from ._options import RunOptions as RunOptions
from ._parse import PipelineSyntaxError as PipelineSyntaxError
from ._parse import parse_pipeline as parse_pipeline
from ._pipeline import Parallel as Parallel
from ._pipeline import Pipeline as Pipeline
from ._pipeline import Step as Step
from ._pipeline import parallel as parallel
from ._pipeline import pipeline as pipeline
from ._plan import RunPlan as RunPlan
from ._plan import Span as Span
from ._plan import StepPlan as StepPlan
from ._plan import plan as plan
from ._report import ContenderResult as ContenderResult
from ._report import Difference as Difference
from ._report import EvalReport as EvalReport
from ._report import TaskResult as TaskResult
from ._response import Confidence as Confidence
from ._response import Response as Response
from ._retry import Retry as Retry
from ._run import run as run
from ._run import run_stream as run_stream
from ._run import run_sync as run_sync
from ._scoring import Judge as Judge
from ._seeds import row_seed as row_seed
from ._select import Majority as Majority
from ._select import MostConfident as MostConfident
from ._select import MostConsistent as MostConsistent
from ._select import WeightedMajority as WeightedMajority
from ._tasks import Task as Task
from ._tasks import TaskError as TaskError
from ._tasks import load_tasks as load_tasks
from ._tasks import split_tasks as split_tasks
from ._trace import Tracing as Tracing
from ._transforms import Dropout as Dropout
from ._transforms import Filter as Filter
from ._transforms import Map as Map
from ._transforms import Sample as Sample
from ._transforms import Shuffle as Shuffle
from ._transforms import Take as Take
from ._transforms import Transform as Transform
from ._tune import Space as Space
from ._tune import TuneReport as TuneReport
from ._tune import tune as tune
from ._tune import tune_sync as tune_sync
from ._version import __version__ as __version__
from .errors import BatchStoppedError as BatchStoppedError
from .errors import BudgetExceededError as BudgetExceededError
from .errors import CacheError as CacheError
from .errors import CacheMissError as CacheMissError
from .errors import ClientOutputError as ClientOutputError
from .errors import ConfidenceUnavailableError as ConfidenceUnavailableError
from .errors import EmptyInputError as EmptyInputError
from .errors import MoaError as MoaError
from .errors import ProviderError as ProviderError
from .errors import RetryAfterTooLongError as RetryAfterTooLongError
from .errors import StepFailedError as StepFailedError
from .errors import StreamInterruptedError as StreamInterruptedError

#: Names that moved to :mod:`moa.steps` (the custom-step API); ``moa.<name>`` still works until
#: the next release, with a DeprecationWarning.
_MOVED = ("Request", "messages", "numbered", "parse_pick", "parse_ranking")


def __getattr__(name: str) -> object:
    if name in _MOVED:
        import warnings

        warnings.warn(
            f"moa.{name} is moa.steps.{name} now; moa.{name} goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(steps, name)
    raise AttributeError(f"module 'moa' has no attribute {name!r}")


__all__ = (
    "DEFAULT_PRICES",
    "Agent",
    "Aggregate",
    "AggregateSeq",
    "BatchStoppedError",
    "Budget",
    "BudgetExceededError",
    "Cache",
    "CacheError",
    "CacheMissError",
    "CallFinished",
    "CallRecord",
    "CallRetrying",
    "Client",
    "ClientOutputError",
    "Confidence",
    "ConfidenceUnavailableError",
    "ContenderResult",
    "Cost",
    "Difference",
    "Dropout",
    "EmptyInputError",
    "EvalReport",
    "Event",
    "Filter",
    "History",
    "Judge",
    "LLMStep",
    "Limits",
    "Majority",
    "Map",
    "MoaError",
    "ModelLimit",
    "MostConfident",
    "MostConsistent",
    "Parallel",
    "Pick",
    "Pipeline",
    "PipelineSyntaxError",
    "Price",
    "Prices",
    "Propose",
    "ProviderError",
    "Rank",
    "Refine",
    "Reply",
    "Response",
    "Retry",
    "RetryAfterTooLongError",
    "RunFinished",
    "RunOptions",
    "RunPlan",
    "RunResult",
    "Sample",
    "Shuffle",
    "Space",
    "Span",
    "Step",
    "StepFailedError",
    "StepFinished",
    "StepPlan",
    "StepRecord",
    "StepStarted",
    "StreamInterruptedError",
    "StreamingClient",
    "Synthesize",
    "Take",
    "Task",
    "TaskError",
    "TaskResult",
    "TextChunk",
    "Tracing",
    "Transform",
    "TuneReport",
    "Usage",
    "Vote",
    "WeightedMajority",
    "as_completed",
    "cost",
    "eval_sync",
    "load_tasks",
    "parallel",
    "parse_pipeline",
    "pipeline",
    "plan",
    "row_seed",
    "run",
    "run_many",
    "run_stream",
    "run_sync",
    "split_tasks",
    "transform",
    "tune",
    "tune_sync",
)
