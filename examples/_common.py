"""Helpers shared by the example scripts: API-key checks, the missing-SDK message, and a
short summary of a run. Not part of moa; each example imports it from its own folder."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from moa import History
from moa.clients import MissingExtraError


def require_keys(*names: str) -> list[str]:
    """The values of the environment variables ``names``; when any is unset or empty, print
    one line naming the missing ones and exit with status 1."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "this example"
        print(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
            f"export {'=... '.join(missing)}=... to run {script}",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return [os.environ[n] for n in names]


def require_key(name: str) -> str:
    """The value of the environment variable ``name``, or exit 1 naming it (see require_keys)."""
    return require_keys(name)[0]


@contextmanager
def exit_on_missing_extra() -> Iterator[None]:
    """Around the calls that make clients: when a client's SDK is not installed (moa's
    ``MissingExtraError``), print its one-line message, which ends with the ``pip install``
    command, and exit with status 1."""
    try:
        yield
    except MissingExtraError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None


def prompt_from(argv: Sequence[str] | None, default: str) -> str:
    """The prompt given on the command line, or ``default``."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(args).strip() or default


def fmt_tokens(value: int | None) -> str:
    """A token count with thousands separators, or "?" when the provider did not say."""
    return "?" if value is None else f"{value:,}"


def print_summary(result: str, history: History) -> None:
    """The final answer, then the run's totals: calls, tokens and wall time."""
    print(result)
    print()
    tokens_in, tokens_out = fmt_tokens(history.input_tokens), fmt_tokens(history.output_tokens)
    print(
        f"{history.total_calls} calls ({len(history.failed_calls)} failed), {tokens_in} tokens "
        f"in / {tokens_out} out, {history.wall_time:.2f}s, seed {history.seed}"
    )
