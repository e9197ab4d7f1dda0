"""The exceptions moa raises. Every one derives from :class:`MoaError`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._history import History

__all__ = (
    "BatchStoppedError",
    "BudgetExceededError",
    "CacheError",
    "CacheMissError",
    "ClientOutputError",
    "ConfidenceUnavailableError",
    "EmptyInputError",
    "MoaError",
    "ProviderError",
    "RetryAfterTooLongError",
    "StepFailedError",
    "StreamInterruptedError",
)


class MoaError(Exception):
    """Base class of moa's errors. ``history``: when the error ends a run, what the run did
    until then (``run`` fills it in as the error leaves; None otherwise)."""

    history: History | None = None


class ClientOutputError(MoaError, TypeError):
    """A client returned something other than ``(text, input_tokens, output_tokens)``.

    Never retried: a client with the wrong shape is a bug, not a transient failure.
    """

    retryable = False

    def __init__(self, model: str, returned: Any, rule: str) -> None:
        try:
            shown = repr(returned)
        except Exception:  # a broken __repr__ must not turn this error into another one
            shown = f"<{type(returned).__name__} object with a failing repr>"
        if len(shown) > 200:
            shown = shown[:200] + "..."
        super().__init__(
            f"client returned {shown} for model {model!r}: {rule}; a client must return "
            "(text: str, input_tokens: int, output_tokens: int)"
        )
        self.model = model
        self.returned = returned


class ProviderError(MoaError):
    """A provider call failed. ``retryable`` says whether the retry policy may try again;
    ``retry_after`` (seconds), when the provider sent one, is the least wait before it does."""

    def __init__(
        self,
        message: str,
        *,
        model: str,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{model}: {message}")
        self.model = model
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class RetryAfterTooLongError(ProviderError):
    """The provider asked to wait longer before a retry (its Retry-After) than the retry
    policy's ``max_retry_after`` allows: the call fails at once instead of sleeping."""

    def __init__(self, model: str, retry_after: float, limit: float, cause: BaseException) -> None:
        super().__init__(
            f"the provider asks to wait {retry_after:g} s before a retry (Retry-After), more "
            f"than Retry(max_retry_after={limit:g}) allows: not retried ({cause})",
            model=model,
            retryable=False,
            retry_after=retry_after,
            status=getattr(cause, "status", None),
        )


class StepFailedError(MoaError):
    """A step could not produce its outputs; ``history`` holds everything run so far,
    the failed step's calls included (``run`` fills it in as the error leaves)."""

    def __init__(self, message: str, *, step: str, history: History | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.history = history


class EmptyInputError(StepFailedError):
    """An LLM step that needs responses received none."""


class CacheError(MoaError):
    """A cache file that cannot be used: not SQLite, not a moa cache, or found corrupt.

    The message names the file and says what is wrong; moa never reuses or overwrites it.
    """


class CacheMissError(MoaError):
    """In replay mode, a request that was never recorded: replay never calls a model."""

    retryable = False


class StreamInterruptedError(MoaError):
    """A streamed reply failed after some of its text had been delivered. It is never
    retried: a retry would deliver the same text twice."""

    retryable = False


class BatchStoppedError(MoaError):
    """A batch stopped before every prompt ran, because its prompts (an iterator, or a file's
    line) or its ``progress`` callback raised: that error is the ``__cause__``. The runs in
    flight finished first. ``results``: from ``run_many``, every finished run in input order
    (``as_completed`` already yielded them; its ``results`` is empty)."""

    def __init__(self, message: str, results: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.results = results


class ConfidenceUnavailableError(MoaError, ValueError):
    """A pipeline holds a step that reads each response's confidence (its tokens'
    log-probabilities), and the run's client cannot give them: refused at the run's start,
    before any call."""


class BudgetExceededError(MoaError):
    """A call was not made (or was stopped) because it could pass the run's
    :class:`~moa.Budget`. ``limit`` names the limit ("usd", "calls", "input_tokens",
    "output_tokens", "seconds"). When it ends a run: ``history``, what ran until then;
    ``partial``, the best answer the run had (the first output of the last step that
    finished; None before any did); ``used`` and ``left``, the budget's figures then.
    Never retried."""

    retryable = False

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.partial: str | None = None
        self.used: dict[str, float] | None = None
        self.left: dict[str, float | None] | None = None
