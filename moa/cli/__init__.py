"""The ``moa`` command line: the parser and ``main``.

``moa demo`` runs a real Self-MoA offline on the embedded model. ``moa run`` runs a pipeline
expression or a recipe on one prompt: the answer alone on stdout, live progress and a summary
on stderr. ``moa batch`` runs a JSONL file of prompts, resumably. ``moa trace`` shows a saved
run as a tree. Exit status: 0 done, 1 a run failed, 2 a usage or expression error, 130 Ctrl-C.
Each command is a module: :mod:`~moa.cli.run` (demo and run), :mod:`~moa.cli.batch`,
:mod:`~moa.cli.trace`; :mod:`~moa.cli.providers` makes the client, :mod:`~moa.cli.options`
the pipeline, prices and cache, :mod:`~moa.cli.progress` the progress display.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .._bounds import SEED_RANGE
from .._scoring import SCORERS
from .._version import __version__
from ..errors import MoaError
from .batch import batch_command
from .common import UsageError, short
from .evaluate import eval_command, tune_command
from .options import RECIPES, with_max_tokens
from .otel import add_otlp_option
from .providers import PROVIDERS, make_client
from .run import DEMO_PROMPT, demo, plan_command, run_command
from .serve import serve_command
from .trace import trace_command

__all__ = ("PROVIDERS", "UsageError", "build_parser", "main", "make_client", "with_max_tokens")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number, got {short(text, 40)!r}"
        ) from None
    if value not in SEED_RANGE:
        raise argparse.ArgumentTypeError("must be a 64-bit integer (-2**63 to 2**63 - 1)")
    return value


def _provider_options(p: argparse.ArgumentParser) -> None:
    """Where the models run: what demo, run and batch share."""
    p.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        default="local",
        help="where the models run (default: local, the embedded SmolLM2-135M)",
    )
    p.add_argument(
        "--base-url", help="an OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server)"
    )
    p.add_argument("--model", help="the model name (default: the provider's)")
    p.add_argument(
        "--seed", type=_seed, default=None, help="seed for the random steps (replays a run)"
    )
    p.add_argument("--timeout", type=_seconds, default=None, help="seconds per call attempt")


def _run_options(p: argparse.ArgumentParser, batch: bool = False) -> None:
    """The options ``run`` and ``batch`` share (``batch``: a batch's own)."""
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--pipeline",
        metavar="EXPR",
        help="a pipeline expression, e.g. \"Propose(['m', 'm']) | Aggregate('m')\"",
    )
    which.add_argument(
        "--recipe",
        choices=RECIPES,
        help="a ready-made pipeline from moa.recipes; with --model, or on the "
        "local model, every model in it is that one",
    )
    _provider_options(p)
    p.add_argument(
        "--max-tokens",
        type=_positive,
        default=None,
        help="set max_tokens of every LLM step of the pipeline",
    )
    p.add_argument(
        "--max-concurrency",
        type=_positive,
        default=None,
        help="calls in flight at once: for the run, or across the whole batch (with --ray: "
        "in each worker, default 64)",
    )
    p.add_argument(
        "--cache",
        metavar="FILE",
        help="a response cache (SQLite): answers it holds are not asked again",
    )
    p.add_argument(
        "--prices",
        metavar="FILE",
        help='a JSON price table {"model": [input, output]} in $ per million tokens, '
        "over the defaults",
    )
    p.add_argument(
        "--deadline",
        type=_seconds,
        default=None,
        help="seconds a Propose, Synthesize or Refine round waits, where the step sets no "
        "deadline: then it goes on with the replies it has (marked degraded)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    add_otlp_option(p)
    _budget_options(p, batch)


def _budget_options(p: argparse.ArgumentParser, batch: bool = False) -> None:
    """``--budget-*``: a moa.Budget the run (or the whole batch) never passes."""
    g = p.add_argument_group("budget (never passed: a call that could pass it is not made)")
    if batch:
        g.add_argument(
            "--on-budget",
            choices=("finish", "cancel"),
            default="finish",
            help="when the budget is met: let the prompts in flight finish (default) or "
            "cancel them; the prompts not run are run by the same command with a new budget",
        )
    g.add_argument("--budget-usd", type=_dollars, default=None, help="dollars, at --prices")
    g.add_argument("--budget-calls", type=_positive, default=None, help="calls (tries)")
    g.add_argument("--budget-input-tokens", type=_positive, default=None, help="input tokens")
    g.add_argument("--budget-output-tokens", type=_positive, default=None, help="output tokens")
    g.add_argument(
        "--budget-seconds", type=_seconds, default=None, help="seconds from the first call"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``moa`` command's parser: one subcommand each for demo, run, plan, batch, trace,
    eval, tune and serve, and ``--version``. The site's command-line reference is made from it."""
    parser = argparse.ArgumentParser(prog="moa", description="Mixture-of-Agents pipelines.")
    parser.add_argument(
        "--version", action="version", version=f"moa {__version__}", help="print moa's version"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    _run_parser(sub)
    _plan_parser(sub)
    _batch_parser(sub)
    _trace_parser(sub)
    _eval_parser(sub)
    _tune_parser(sub)
    _serve_parser(sub)
    return parser


def _demo_parser(sub: Any) -> None:
    """``moa demo``."""
    d = sub.add_parser(
        "demo",
        help="run a Self-MoA (samples + aggregation) on a real model",
        description="Runs a Self-MoA: N samples of one model, then an aggregation "
        "by the same model. Offline on the embedded SmolLM2 by default.",
    )
    d.add_argument(
        "prompt", nargs="?", default=DEMO_PROMPT, help="the question (default: %(default)r)"
    )
    _provider_options(d)
    d.add_argument("--samples", type=_positive, default=3, help="proposals to sample (default: 3)")
    d.add_argument("--max-tokens", type=_positive, default=160, help="per call (default: 160)")
    d.set_defaults(handler=demo)


def _run_parser(sub: Any) -> None:
    """``moa run``."""
    r = sub.add_parser(
        "run",
        help="run a pipeline on one prompt; the answer alone goes to stdout",
        description="Runs a pipeline expression or a recipe on one prompt. The answer goes to "
        "stdout; progress and a summary go to stderr. Exit status: 0 done, 1 the "
        "run failed, 2 a usage or expression error, 130 interrupted.",
    )
    r.add_argument("prompt", nargs="?", help="the question (default: --prompt-file, or stdin)")
    r.add_argument("--prompt-file", metavar="FILE", help="read the prompt from FILE ('-': stdin)")
    r.add_argument(
        "--messages",
        metavar="FILE",
        help='a conversation instead of a prompt: a JSON list of {"role", "content"} '
        "messages (system, user, assistant), the last the user's question ('-': stdin)",
    )
    _run_options(r)
    r.add_argument(
        "--stream",
        action="store_true",
        help="print the final answer as it is generated (when the last step writes "
        "it: Aggregate, Vote, AggregateSeq)",
    )
    r.add_argument(
        "--json",
        metavar="FILE",
        help="write the run's history, result, pipeline and cost to FILE (also when "
        "the run fails, for `moa trace`)",
    )
    r.add_argument(
        "--plan",
        action="store_true",
        help="print what the run can cost (moa plan) and ask nothing",
    )
    r.add_argument("--latency", type=_seconds, default=None, help=argparse.SUPPRESS)
    r.set_defaults(handler=run_command)


def _plan_parser(sub: Any) -> None:
    """``moa plan``."""
    p = sub.add_parser(
        "plan",
        help="what a pipeline can cost, before any call: calls, depth, tokens, dollars",
        description="Prints a pipeline's bounds without calling any model: its calls (exact "
        "where the pipeline fixes them, else a range), how many run one after another, upper "
        "bounds on input and output tokens per step and in all (from the prompt when given), "
        "the dollars at most (with the prompt, at --prices), and a time estimate "
        "(--latency). A step whose calls depend on what replies say is shown as unbounded.",
    )
    p.add_argument("prompt", nargs="?", help="the question (optional: its length bounds tokens)")
    p.add_argument("--prompt-file", metavar="FILE", help="read the prompt from FILE ('-': stdin)")
    _run_options(p)
    p.add_argument(
        "--latency", type=_seconds, default=None, help="seconds per call, for a time estimate"
    )
    p.add_argument("--json", metavar="FILE", help="write the plan to FILE as JSON")
    p.set_defaults(handler=plan_command, plan=True)


class _Renamed(argparse.Action):
    """An option's old name: works as the new one, and says so on stderr."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None) -> None:
        print(
            f"moa: {option} is {self.metavar} now; the old name goes in the next release",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def _batch_parser(sub: Any) -> None:
    """``moa batch``."""
    b = sub.add_parser(
        "batch",
        help="run a pipeline on every prompt of a JSONL file, resumably",
        description="Runs a pipeline on every prompt of INPUT, a line each (a JSON string, "
        '{"prompt": ..., "id": ...}, or {"messages": [...], "id": ...}: a conversation '
        'of {"role", "content"} messages, the last the user\'s; the id defaults to the '
        "0-based index among the prompts), and appends one result line per prompt to OUT "
        "as it finishes. Rerun the same command to resume: ids OUT holds a success for "
        "are skipped, failed ones run again. With --seed S each prompt's seed comes "
        "from S and its id, as moa.run_many(prompts, ids=ids, seed=S). Exit status 1 "
        "when any prompt failed.",
    )
    b.add_argument(
        "input",
        metavar="INPUT",
        help="the prompts: JSON Lines ('-': stdin), or Parquet (a .parquet file or folder "
        "with a prompt column or a messages column, and an optional id column)",
    )
    b.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        required=True,
        help="where the results go, read first to resume: JSON Lines (appended), or "
        "OUT.parquet, a folder of Parquet parts",
    )
    b.add_argument(
        "--max-runs",
        type=_positive,
        default=None,
        help="prompts run at once (default: 4; not with --ray)",
    )
    b.add_argument(
        "--concurrency",
        type=_positive,
        dest="max_runs",
        metavar="--max-runs",
        action=_Renamed,
        help=argparse.SUPPRESS,
    )
    b.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster (moa-dsl[ray]): the one at ADDRESS ('auto': the one this "
        "machine belongs to), or a local one started for this batch when none is given",
    )
    b.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="Ray workers, each running --max-concurrency calls at once (default: 2)",
    )
    _run_options(b, batch=True)
    b.set_defaults(handler=batch_command)


def _trace_parser(sub: Any) -> None:
    """``moa trace``."""
    t = sub.add_parser(
        "trace",
        help="show a saved run (moa run --json, or a moa batch line) as a tree",
        description="Shows a run saved by `moa run --json FILE` (or line N of a `moa batch` "
        "output with --line N) as a tree: steps, calls, tokens, cost, errors and "
        "the judges' raw replies.",
    )
    t.add_argument("file", metavar="FILE")
    t.add_argument(
        "--line",
        type=_positive,
        default=None,
        help="the line of a batch output (JSONL) to show, counting from 1",
    )
    t.add_argument("--full", action="store_true", help="show every call's text in full")
    t.add_argument("--prices", metavar="FILE", help="a JSON price table over the defaults")
    t.set_defaults(handler=trace_command)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value <= 0.99:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 0.99, got {value}")
    return value


def _dollars(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be dollars, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _eval_options(p: argparse.ArgumentParser) -> None:
    """What ``eval`` and ``tune`` share."""
    p.add_argument(
        "tasks",
        metavar="TASKS",
        help="the questions: JSON Lines (prompt or question, answer; optional id, aliases, "
        "match) or Parquet",
    )
    p.add_argument(
        "--pipeline",
        action="append",
        metavar="[NAME=]EXPR",
        help="a pipeline expression to evaluate, named NAME in the report (repeatable)",
    )
    p.add_argument(
        "--recipe", action="append", choices=RECIPES, help="a recipe to evaluate (repeatable)"
    )
    _provider_options(p)
    p.add_argument(
        "--scorer",
        choices=(*SCORERS, "judge"),
        default="auto",
        help="how a reply is checked against the answer (default: auto: numbers as numbers, "
        "else the answer's words in the reply); judge: a model asked in both orders",
    )
    p.add_argument("--judge", metavar="MODEL", help="the judge model of --scorer judge")
    p.add_argument(
        "--max-tokens", type=_positive, default=None, help="max_tokens of every LLM step"
    )
    p.add_argument(
        "--max-concurrency", type=_positive, default=None, help="calls in flight at once"
    )
    p.add_argument(
        "--max-runs", type=_positive, default=None, help="tasks in flight at once (default: 4)"
    )
    p.add_argument(
        "--cache",
        metavar="FILE",
        help="a response cache (SQLite): rerun with it to resume, or to add a contender at "
        "the cost of its new calls only (default: a temporary one)",
    )
    p.add_argument(
        "--prices",
        metavar="FILE",
        help='a JSON price table {"model": [input, output]} in $ per million tokens',
    )
    p.add_argument("--json", metavar="FILE", help="save the whole report (every reply) as JSON")
    p.add_argument(
        "--chart",
        metavar="FILE",
        help="save the accuracy-per-cost chart (.svg, or .png with matplotlib)",
    )
    p.add_argument(
        "--limit", type=_positive, default=None, help="only the first N tasks (a quick look)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _eval_parser(sub: Any) -> None:
    """``moa eval``."""
    e = sub.add_parser(
        "eval",
        help="score pipelines on your questions against their single models",
        description="Runs each pipeline (and, unless --no-baselines, each agent of its first "
        "Propose alone) on every task of TASKS, scores the replies, and prints accuracy with "
        "95 %% intervals, the difference from the best single agent (paired bootstrap), "
        "oracle and beta (the all-wrong rate), error correlations, calls and cost per "
        "correct answer. Exit status 2 for a bad task file or option.",
    )
    _eval_options(e)
    e.add_argument("--csv", metavar="FILE", help="save one row per contender as CSV")
    e.add_argument(
        "--no-baselines", action="store_true", help="do not add each agent alone as a contender"
    )
    e.set_defaults(handler=eval_command)


def _tune_parser(sub: Any) -> None:
    """``moa tune``."""
    t = sub.add_parser(
        "tune",
        help="choose a mixture on dev questions, then check it once on held-out ones",
        description="Searches a space of mixtures (personas, samples, temperatures, selection "
        "steps, an aggregator) on the dev tasks, chooses one, and evaluates it once on held-out "
        "tasks against the single agent the search would have picked. Prints the held-out "
        "result with its interval (a warning when it includes 0), the search table, and the "
        "winning expression for moa run --pipeline.",
    )
    _eval_options(t)
    held = t.add_mutually_exclusive_group()
    held.add_argument(
        "--holdout-tasks", metavar="FILE", help="held-out tasks (default: part of TASKS)"
    )
    held.add_argument(
        "--holdout",
        type=_share,
        default=0.5,
        help="the share of TASKS held out when no --holdout-tasks (default: 0.5)",
    )
    t.add_argument(
        "--space",
        metavar="FILE",
        help="a JSON object: personas, samples, temps, selections, max_tokens (and models)",
    )
    t.add_argument(
        "--budget-calls", type=_positive, default=None, help="refuse a search needing more calls"
    )
    t.add_argument("--budget-usd", type=_dollars, default=None, help="refuse a search costing more")
    t.add_argument(
        "--penalty",
        type=float,
        default=0.0,
        help="accuracy (0 to 1) given up per extra call per task when choosing (default: 0)",
    )
    t.set_defaults(handler=tune_command)


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError("a TCP port is 1 to 65535")
    return value


def _serve_parser(sub: Any) -> None:
    """``moa serve``."""
    s = sub.add_parser(
        "serve",
        help="serve pipelines as models behind an OpenAI-compatible API",
        description="Serves named pipelines as models: POST /v1/chat/completions (streamed "
        "or not), GET /v1/models, GET /health. Models from --pipeline NAME=EXPR, --recipe "
        "NAME and a TOML --config (a [server] table and [models.NAME] tables). The key "
        "clients must send is read from the environment (--key-env); off loopback one is "
        "required. Needs pip install 'moa-dsl[serve]'.",
    )
    s.add_argument("--config", metavar="FILE", help="a TOML file: [server] and [models.NAME]")
    s.add_argument(
        "--pipeline", action="append", metavar="NAME=EXPR", help="serve EXPR as model NAME"
    )
    s.add_argument(
        "--recipe", action="append", choices=RECIPES, help="serve a recipe under its own name"
    )
    s.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        default="local",
        help="where the models' calls go (default: local, the embedded SmolLM2-135M)",
    )
    s.add_argument("--base-url", help="an OpenAI-compatible endpoint the calls go to")
    s.add_argument("--model", help="the model name (default: the provider's)")
    s.add_argument("--timeout", type=_seconds, default=None, help="seconds per call attempt")
    s.add_argument("--max-tokens", type=_positive, default=None, help="every LLM step's max_tokens")
    s.add_argument(
        "--max-concurrency", type=_positive, default=None, help="calls in flight, each run"
    )
    s.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=_port, default=None, help="port (default 8000)")
    s.add_argument(
        "--key-env",
        default=None,
        metavar="VAR",
        help="the environment variable holding the key (default MOA_SERVE_KEY)",
    )
    s.add_argument(
        "--max-requests", type=_positive, default=None, help="runs at once, server-wide (64)"
    )
    s.add_argument("--max-body", type=_positive, default=None, help="request body bytes (1 MiB)")
    s.add_argument(
        "--request-timeout", type=_seconds, default=None, help="seconds a run may take (600)"
    )
    s.add_argument(
        "--drain",
        type=_seconds,
        default=30.0,
        help="on SIGTERM or Ctrl-C, seconds the requests in flight have to finish (30)",
    )
    s.add_argument("--quiet", "-q", action="store_true", help="only warnings on stderr")
    add_otlp_option(s)
    s.set_defaults(handler=serve_command)


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # A reply or a saved file holding text the terminal cannot encode is shown escaped,
        # never a UnicodeEncodeError halfway through the output.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except UsageError as exc:
        print(f"moa: {exc}", file=sys.stderr)
        return 2
    except MoaError as exc:
        print(f"moa: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("moa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
