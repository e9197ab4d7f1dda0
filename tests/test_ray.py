"""``moa.ray.run_dataset`` on a local Ray cluster (the tests marked ``ray``): the same results as
``run_many``, however Ray splits the rows; every row exactly once when a worker dies; failed
and unusable rows kept as ``ok=False``; limits split among workers. ``moa batch --ray`` on the
real model is in test_cli_ray.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import anyio
import pytest
from conftest import _need

import moa
from moa import Aggregate, Dropout, History, Limits, ModelLimit, Propose, Shuffle
from moa.ray import OUTPUT_COLUMNS, split_limits

PIPELINE = Propose(["a", "b", "c"], temp=0.7) | Shuffle() | Dropout(0.4) | Aggregate("j")


async def seeded_client(
    *, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int, seed=None
):
    """A client whose reply is a function of the model, the messages and the call's seed, so
    a row given another seed (or another call's) answers differently."""
    await anyio.sleep(0.001)
    digest = hashlib.sha256(repr((model, messages, seed)).encode()).hexdigest()
    if "fail" in messages[-1]["content"] and model == "j":
        raise moa.ProviderError("scripted refusal", model=model, retryable=False, status=400)
    return f"{model} says {digest[:8]}", len(messages), 3


def make_seeded():
    return seeded_client


async def surrogate_client(*, model, messages, temp, max_tokens, seed=None):
    """A reply UTF-8 cannot hold: a lone surrogate, as a broken tokenizer can give."""
    return "half \ud800 a character", 1, 1


def make_surrogate():
    return surrogate_client


def dying_client(marker: str, pids: str, victim: str):
    """``seeded_client``, but the first worker to see ``victim`` kills its own process mid-call
    (``os.kill`` of the actor's PID, as an OOM killer or a lost node would), once."""
    Path(pids, str(os.getpid())).touch()

    async def client(*, model, messages, temp, max_tokens, seed=None):
        if victim in messages[-1]["content"] and not os.path.exists(marker):
            Path(marker).touch()
            await anyio.sleep(0.05)  # the rest of the block is in flight
            os.kill(os.getpid(), signal.SIGKILL)
        return await seeded_client(
            model=model, messages=messages, temp=temp, max_tokens=max_tokens, seed=seed
        )

    return client


def rows(n: int) -> list[dict]:
    return [{"id": f"q{i:03d}", "prompt": f"question {i}?"} for i in range(n)]


def by_id(out: list[dict]) -> dict:
    ids = [r["id"] for r in out]
    assert len(ids) == len(set(ids)), "a row came back twice"
    return {r["id"]: r for r in out}


def expected(data: list[dict], seed: int):
    results = anyio.run(
        partial(
            moa.run_many,
            PIPELINE,
            [r["prompt"] for r in data],
            seeded_client,
            seed=seed,
            ids=[r["id"] for r in data],
        )
    )
    return {r.id: r for r in results}


@pytest.mark.ray
def test_the_results_and_histories_are_run_manys_however_ray_splits_the_rows(ray_cluster):
    from moa.ray import run_dataset

    data = rows(60)
    want = expected(data, seed=11)
    for blocks, batch_size, workers in ((7, 8, 2), (1, 60, 1)):
        dataset = ray_cluster.data.from_items(data).repartition(blocks)
        out = by_id(
            run_dataset(
                PIPELINE,
                dataset,
                make_seeded,
                seed=11,
                batch_size=batch_size,
                workers=workers,
            ).take_all()
        )
        assert set(out) == set(want)
        for ident, r in want.items():
            row = out[ident]
            assert set(OUTPUT_COLUMNS) <= set(row)
            assert row["ok"] and row["error"] is None
            assert row["result"] == r.result
            assert History.from_dict(json.loads(row["history"])) == r.history
            assert row["input_tokens"] == r.history.input_tokens
            assert row["output_tokens"] == r.history.output_tokens
            assert row["prompt"] == r.prompt  # the input columns are kept
    # The seed reaches the rows: another seed gives other answers.
    other = expected(data, seed=12)
    assert sum(other[i].result != want[i].result for i in want) > 50


@pytest.mark.ray
def test_a_failed_or_unusable_row_is_a_row_with_ok_false_never_a_lost_one(ray_cluster):
    from moa.ray import run_dataset

    data = rows(20) + [
        {"id": "f1", "prompt": "please fail"},
        {"id": "e1", "prompt": "   "},
        {"id": "n1", "prompt": None},
        {"id": "q000", "prompt": "a second row with a used id"},
    ]
    dataset = ray_cluster.data.from_items(data).repartition(1)
    out = run_dataset(PIPELINE, dataset, make_seeded, seed=1, workers=1).take_all()
    assert len(out) == len(data)
    failed = {(r["id"], r["prompt"]): r for r in out if not r["ok"]}
    assert set(failed) == {("f1", "please fail"), ("e1", "   "), ("n1", None)}
    assert "scripted refusal" in failed["f1", "please fail"]["error"]
    assert failed["f1", "please fail"]["history"] is not None  # what ran before the failure
    assert "non-empty str" in failed["e1", "   "]["error"]
    assert all(r["result"] is None for r in failed.values())
    assert sum(r["ok"] for r in out) == 21


@pytest.mark.ray
def test_a_messages_column_runs_each_conversation_whole_beside_prompt_rows(ray_cluster):
    from moa.ray import run_dataset

    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Largest planet?"},
        {"role": "assistant", "content": "Jupiter."},
        {"role": "user", "content": "Its moons?"},
    ]
    # Rows of both kinds, each filling one column: the other is null or absent in its block.
    data = [*rows(3), {"id": "c1", "messages": chat}, {"id": "c2", "messages": chat[1:2]}]
    bad = [
        {"id": "x1", "messages": chat[:3]},  # ends with the assistant's turn
        {"id": "x2", "messages": chat, "prompt": "and a prompt?"},
        {"id": "x3", "messages": [{"role": "bot", "content": "hi"}]},
    ]
    asked = [r.get("prompt") or r["messages"] for r in data]
    want = anyio.run(
        partial(moa.run_many, PIPELINE, asked, seeded_client, seed=3, ids=[r["id"] for r in data])
    )
    for blocks in (1, 3):
        dataset = ray_cluster.data.from_items(data + bad).repartition(blocks)
        out = by_id(run_dataset(PIPELINE, dataset, make_seeded, seed=3, workers=1).take_all())
        for r in want:
            assert out[r.id]["ok"] and out[r.id]["result"] == r.result
            assert History.from_dict(json.loads(out[r.id]["history"])) == r.history
        assert History.from_dict(json.loads(out["c1"]["history"])).conversation == tuple(chat[:3])
        assert "the last message is the question" in out["x1"]["error"]
        assert "a prompt or messages, not both" in out["x2"]["error"]
        assert "messages[0]: role must be one of" in out["x3"]["error"]
        assert not any(out[r["id"]]["ok"] for r in bad)


def traced_seeded(path: str):
    """``seeded_client``, in a worker whose global tracer provider writes each span it ends
    to ``path`` (a line of JSON): what the worker's runs traced, for the driver to read."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult as Result

    class ToFile(SpanExporter):
        def export(self, spans):
            with open(path, "a") as f:
                for s in spans:
                    parent = s.parent.span_id if s.parent else None
                    ids = {"trace": s.context.trace_id, "parent": parent}
                    f.write(json.dumps({"name": s.name, **ids}) + "\n")
            return Result.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ToFile()))
    trace.set_tracer_provider(provider)
    return seeded_client


@pytest.mark.ray
def test_the_workers_runs_continue_the_trace_current_where_run_dataset_is_called(
    ray_cluster, tmp_path
):
    _need("opentelemetry.sdk", "pip install 'moa-dsl[otel]'")
    from opentelemetry.sdk.trace import TracerProvider

    from moa.ray import run_dataset

    spans = tmp_path / "spans.jsonl"
    tracer = TracerProvider().get_tracer("the-driver")
    with tracer.start_as_current_span("batch") as batch:
        dataset = ray_cluster.data.from_items(rows(4))
        out = run_dataset(PIPELINE, dataset, partial(traced_seeded, str(spans)), workers=1)
        assert all(r["ok"] for r in out.take_all())
    got = [json.loads(line) for line in spans.read_text().splitlines()]
    roots = [s for s in got if s["name"] == "invoke_workflow moa"]
    assert len(roots) == 4
    assert {s["trace"] for s in got} == {batch.get_span_context().trace_id}
    assert {r["parent"] for r in roots} == {batch.get_span_context().span_id}


@pytest.mark.ray
def test_a_reply_with_a_lone_surrogate_is_a_saved_row_not_a_lost_dataset(ray_cluster):
    from moa.ray import run_dataset

    out = run_dataset(
        Propose(["a"]), ray_cluster.data.from_items(rows(6)), make_surrogate, seed=1, workers=1
    ).take_all()
    assert len(out) == 6 and all(r["ok"] for r in out)
    assert all(r["result"] == "half \ufffd a character" for r in out)
    assert json.loads(out[0]["history"])["outputs"] == ["half \ud800 a character"]


@pytest.mark.ray
def test_a_repeated_id_runs_on_its_own_the_same_in_one_block_or_two(ray_cluster):
    from moa.ray import run_dataset

    data = [*rows(3), {"id": "q001", "prompt": "another prompt, the same id"}]
    want = {
        (r["id"], r["prompt"]): expected([r], seed=4)[r["id"]].result for r in data
    }  # each row alone, with its id's seed
    for blocks, batch_size in ((1, 4), (2, 2)):
        dataset = ray_cluster.data.from_items(data).repartition(blocks)
        out = run_dataset(
            PIPELINE, dataset, make_seeded, seed=4, workers=1, batch_size=batch_size
        ).take_all()
        assert len(out) == 4 and all(r["ok"] for r in out)
        assert {(r["id"], r["prompt"]): r["result"] for r in out} == want


@pytest.mark.ray
def test_a_worker_killed_mid_block_costs_a_retry_of_its_block_not_the_batch(ray_cluster, tmp_path):
    from moa.ray import run_dataset

    data = rows(80)
    pids = tmp_path / "pids"
    pids.mkdir()
    marker = tmp_path / "killed"
    factory = partial(dying_client, str(marker), str(pids), "question 37?")
    dataset = ray_cluster.data.from_items(data).repartition(8)
    out = by_id(
        run_dataset(
            PIPELINE, dataset, factory, seed=5, batch_size=10, workers=2, num_cpus=0.25
        ).take_all()
    )
    assert marker.exists(), "no worker was killed: the test proved nothing"
    assert len(list(pids.iterdir())) >= 3, "no worker was started in place of the killed one"
    want = expected(data, seed=5)
    assert set(out) == set(want)  # every id exactly once (by_id refuses repeats)
    assert all(out[i]["ok"] and out[i]["result"] == want[i].result for i in want)


def test_limits_are_split_evenly_among_the_workers():
    limits = Limits(
        {"a": ModelLimit(max_concurrency=9, rpm=600, tpm=10_000), "b": ModelLimit(rpm=1)},
        default=ModelLimit(max_concurrency=2),
    )
    half = split_limits(limits, 2)
    assert half.per_model["a"] == ModelLimit(max_concurrency=4, rpm=300, tpm=5_000)
    assert half.per_model["b"] == ModelLimit(rpm=0.5)  # rates split exactly: never over budget
    assert half.default == ModelLimit(max_concurrency=1)
    assert split_limits(None, 3) is None
    with pytest.raises(ValueError, match="'a' allows 9 calls in flight, fewer than the 10"):
        split_limits(limits, 10)
    with pytest.raises(ValueError, match="the default limit allows 2 calls in flight"):
        split_limits(Limits(default=ModelLimit(max_concurrency=2)), 3)
    whole = split_limits(limits, 1)
    assert (whole.per_model, whole.default) == (limits.per_model, limits.default)


@pytest.mark.ray
def test_bad_arguments_are_refused_before_anything_runs(ray_cluster):
    from moa.ray import run_dataset

    dataset = ray_cluster.data.from_items(rows(2))
    with pytest.raises(ValueError, match="no column 'text'"):
        run_dataset(PIPELINE, dataset, make_seeded, prompt_column="text")
    with pytest.raises(ValueError, match="already has column 'ok'"):
        run_dataset(PIPELINE, ray_cluster.data.from_items([{**rows(1)[0], "ok": 1}]), make_seeded)
    # A schema known only by running the upstream: refused when the first block is read.
    late = dataset.add_column("result", lambda df: df["prompt"])
    with pytest.raises(Exception, match="already has column 'result'"):
        run_dataset(PIPELINE, late, make_seeded).take_all()
    with pytest.raises(TypeError, match="client_factory"):
        run_dataset(PIPELINE, dataset, 42)
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        run_dataset(PIPELINE, dataset, make_seeded, workers=0)
    with pytest.raises(TypeError, match="events cannot reach you"):
        run_dataset(PIPELINE, dataset, make_seeded, on_event=print)
    with pytest.raises(ValueError, match="hedge_after"):
        run_dataset(PIPELINE, dataset, make_seeded, hedge_after=0)
    with pytest.warns(DeprecationWarning, match=r"concurrency=...\) is workers"):
        run_dataset(PIPELINE, dataset, make_seeded, concurrency=1, hedge_after=5.0)
    with pytest.raises(TypeError, match="did you mean max_concurrency"):
        run_dataset(PIPELINE, dataset, make_seeded, max_concurency=3)
    with pytest.raises(TypeError, match="seed must be an int"):
        run_dataset(PIPELINE, dataset, make_seeded, seed="7")
    with pytest.raises(ValueError, match="timeout"):
        run_dataset(PIPELINE, dataset, make_seeded, timeout=-1)
    with pytest.raises(TypeError, match="limits"):
        run_dataset(PIPELINE, dataset, make_seeded, limits={"m": 1})
    with pytest.raises(TypeError, match="run_dataset"):
        run_dataset("Propose(['a'])", dataset, make_seeded)


def test_import_moa_never_imports_ray():
    code = "import sys, moa, moa.clients, moa.recipes; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _touch_per_batch(batch, folder):
    Path(folder, f"{os.getpid()}-{len(batch['id'])}-{time.time_ns()}").touch()
    return batch


@pytest.mark.ray
def test_run_dataset_runs_nothing_until_the_output_is_read(ray_cluster, tmp_path):
    from moa.ray import run_dataset

    upstream = ray_cluster.data.from_items(rows(8)).map_batches(
        partial(_touch_per_batch, folder=str(tmp_path))
    )
    out = run_dataset(PIPELINE, upstream, make_seeded, seed=1)
    assert list(tmp_path.iterdir()) == []  # no upstream block ran (an LLM stage would pay)
    assert len(out.take_all()) == 8
    assert list(tmp_path.iterdir())


@pytest.mark.ray
def test_a_budget_is_split_among_the_workers_and_rows_past_it_are_saved_not_run(ray_cluster):
    from moa.ray import run_dataset

    data = rows(40)
    # 4 calls a row; 2 workers with 30 calls each: at most 15 rows, the rest saved as not run.
    # A row at a time in each worker: ten at once could hold all 30 calls in their proposers
    # (calls in flight count at their most) and finish none, which is the budget kept too.
    out = by_id(
        run_dataset(
            PIPELINE,
            ray_cluster.data.from_items(data).repartition(4),
            make_seeded,
            seed=11,
            batch_size=1,
            workers=2,
            budget=moa.Budget(calls=60),
        ).take_all()
    )
    assert len(out) == 40  # every row once: none lost, none retried by Ray
    done = [r for r in out.values() if r["ok"]]
    not_run = [r for r in out.values() if r["error"] and r["error"].startswith("not run:")]
    calls = sum(len(History.from_dict(json.loads(r["history"])).calls) for r in done)
    assert calls <= 60 and 0 < len(done) < 40 and not_run, (len(done), calls, len(not_run))
    assert "share of the budget was spent" in not_run[0]["error"]
