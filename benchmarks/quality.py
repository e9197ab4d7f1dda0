"""Quality: do the selection steps turn a model's candidates into a better answer than the
model alone? A short script over ``moa.eval``: the statistics live in the library.

Every contender answers every question of a task file (``quality_tasks.jsonl`` by default: 80
short questions, arithmetic and facts; ``--holdout`` for the 88 of
``quality_tasks_holdout.jsonl``) on one model M (the embedded SmolLM2-135M-Instruct unless
``--base-url``/``--model`` name another), proposals capped at 48 tokens:

  vote            Propose([M @0] + [M @0.3] * 5) | Majority()
  weighted        ... | WeightedMajority()                 (CISC: votes weighed by confidence)
  deepconf        ... | WeightedMajority(drop=0.5)          (the least confident half dropped)
  confident       ... | MostConfident()                     (best-of-n by confidence)
  consistent      Propose(each of 4 personas @0.3, 3 times) | MostConsistent()  (SLM-MUX)
  persona vote    recipes.persona_vote(M)
  self-moa        Propose([M @0.7] * 3) | Aggregate(M)

and each of M's agents alone (moa.eval adds them). The first four share their six candidates
through the cache, so they differ only in how they choose; after the table the script prints,
for each, the share of the oracle gap it closes over the plain vote on those same candidates:
(accuracy - vote's) / (oracle - vote's).

    MOA_THREADS=1 python benchmarks/quality.py --cache /tmp/quality.sqlite          # ~20 min
    python benchmarks/quality.py --holdout --cache /tmp/quality.sqlite
    python benchmarks/quality.py --limit 10 --only vote weighted
    python benchmarks/quality.py --base-url http://127.0.0.1:8000/v1 --model qwen

``moa tune`` searches such mixtures on the design set and checks its choice on the holdout set;
benchmarks/README.md has both tables and the commands that made them.
"""

from __future__ import annotations

import argparse
import os
import sys

import _common
import anyio

import moa
from moa import (
    Agent,
    Aggregate,
    Majority,
    MostConfident,
    MostConsistent,
    Propose,
    WeightedMajority,
)
from moa.recipes import VOTE_PERSONAS, persona_vote

HERE = os.path.dirname(os.path.abspath(__file__))
DESIGN = os.path.join(HERE, "quality_tasks.jsonl")
HOLDOUT = os.path.join(HERE, "quality_tasks_holdout.jsonl")
#: The contenders that choose among the same candidates, and the plain vote they are read against.
SAME_CANDIDATES = ("weighted", "deepconf", "confident")


def contenders(model: str, max_tokens: int = 48) -> dict[str, moa.Step]:
    """The pipelines compared, by name (see the module docstring)."""
    pool = Propose([model] + [Agent(model, temp=0.3)] * 5, temp=0.0, max_tokens=max_tokens)
    personas = [
        Agent(model, temp=0.3, system=p) if p else Agent(model, temp=0.3)
        for p in VOTE_PERSONAS[:4]
        for _ in range(3)
    ]
    return {
        "vote": pool | Majority(),
        "weighted": pool | WeightedMajority(),
        "deepconf": pool | WeightedMajority(drop=0.5),
        "confident": pool | MostConfident(),
        "consistent": Propose(personas, max_tokens=max_tokens) | MostConsistent(),
        "persona vote": persona_vote(model, extract=None, max_tokens=max_tokens),
        "self-moa": Propose([model] * 3, temp=0.7, max_tokens=max_tokens)
        | Aggregate(model, max_tokens=2 * max_tokens),
    }


def gap_closed(report: moa.EvalReport) -> list[str]:
    """For each selection over the vote's candidates: the share of the oracle gap it closes."""
    vote = report["vote"]
    reach = vote.oracle()
    lines = [
        f"Over the vote's {vote.k} candidates (oracle {100 * (reach or 0):.1f} %, beta "
        f"{100 * (vote.beta or 0):.1f} %, candidate error correlation "
        f"{vote.candidate_phi or 0:.2f}), the share of the oracle gap each selection closes:"
    ]
    for name in ("vote", *SAME_CANDIDATES):
        if name not in report.names:
            continue
        c = report[name]
        gap = (reach or 0) - vote.accuracy
        share = "-" if gap <= 0 else f"{(c.accuracy - vote.accuracy) / gap:+.0%}"
        d = report.versus(name, "vote")
        lines.append(
            f"  {name:<10} {100 * c.accuracy:5.1f} %  vs vote {d} won/lost {d.won}/{d.lost} "
            f"p={d.p:.3f}  gap closed {share}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", default=None, help="a task file (default: the design set)")
    ap.add_argument("--holdout", action="store_true", help="the holdout set instead")
    ap.add_argument("--limit", type=int, help="only the first N tasks")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these contenders")
    ap.add_argument("--base-url", help="an OpenAI-compatible server instead of the embedded model")
    ap.add_argument("--model", default="smollm2", help="the model name (default: smollm2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", help="a moa.Cache file: rerun to resume or replay")
    ap.add_argument("--json", help="save the report (every reply) as JSON")
    ap.add_argument("--chart", help="save the accuracy-per-call chart (.svg or .png)")
    args = ap.parse_args(argv)
    _common.print_header(packages=("anyio", "llama-cpp-python", "openai"))

    chosen = contenders(args.model)
    if args.only:
        unknown = sorted(set(args.only) - set(chosen))
        if unknown:
            ap.error(f"no contender {unknown[0]!r}; they are {', '.join(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in args.only or k == "vote"}
    tasks = moa.load_tasks(args.tasks or (HOLDOUT if args.holdout else DESIGN))[: args.limit]
    if args.base_url:
        from moa.clients import openai_client

        client = openai_client(base_url=args.base_url)
    else:
        from moa.clients import local_client

        client = local_client()
    cache = moa.Cache(args.cache) if args.cache else None

    def progress(done: int, total: int, name: str) -> None:
        if done % 50 == 0 or done == total:
            print(f"  {done}/{total} runs ({name})", file=sys.stderr, flush=True)

    report = anyio.run(
        lambda: moa.eval(
            chosen,
            tasks,
            client,
            seed=args.seed,
            cache=cache,
            prices={args.model: (0, 0)},
            max_runs=4,
            progress=progress,
        )
    )
    print(report.table())
    print()
    print("\n".join(gap_closed(report)))
    if args.json:
        report.save(args.json)
    if args.chart:
        report.save(args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
