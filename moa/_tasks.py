"""The questions an evaluation asks: :class:`Task` (a prompt and its reference answer), read
from a user's JSON Lines or Parquet file, each bad line refused with its number, and split
into a dev part and a held-out part that never meet."""

from __future__ import annotations

import importlib
import json
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._bounds import check_number, describe
from ._conversation import messages_of, prompt_of

__all__ = ("MATCHES", "Task", "TaskError", "load_tasks", "split_tasks")

#: How a reply is compared with a task's answer when the task says (``match``), or the scorer
#: is ``"auto"``: ``number`` (the last number in the reply), ``contains`` (the answer's words in
#: the reply's), ``exact`` (the whole reply, normalised).
MATCHES = ("number", "contains", "exact")


class TaskError(ValueError):
    """A task file, or a task, that cannot be used: the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Task:
    """One question: its ``id``, the ``prompt`` asked, the reference ``answer`` and other
    right answers (``aliases``), how a reply is compared with them when the scorer is
    ``"auto"`` (``match``: None for the scorer's own rule, where numbers are compared as
    numbers and anything else by its words), and the conversation's turns before the question
    (``earlier``: ``(role, content)`` pairs; none for a one-turn task)."""

    id: str | int
    prompt: str
    answer: str
    aliases: tuple[str, ...] = ()
    match: str | None = None
    earlier: tuple[tuple[str, str], ...] = ()

    @property
    def answers(self) -> tuple[str, ...]:
        """The answer and its aliases."""
        return (self.answer, *self.aliases)

    @property
    def asked(self) -> str | list[dict[str, str]]:
        """What a run is given: the prompt, or the conversation ending with it."""
        if not self.earlier:
            return self.prompt
        turns = [{"role": role, "content": content} for role, content in self.earlier]
        return [*turns, {"role": "user", "content": self.prompt}]


def _text(value: object, where: str, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TaskError(f"{where}: {name!r} must be a string or a number, not {describe(value)}")
    text = str(value).strip()
    if not text:
        raise TaskError(f"{where}: {name!r} is empty")
    return text


def task_of(row: Any, where: str, position: int) -> Task:
    """A Task from one row (a dict: ``prompt`` or ``question``, or ``messages`` (a
    conversation ending with the question), ``answer``, optional ``id``, ``aliases``,
    ``match``); TaskError naming ``where`` for a row that is not one."""
    if not isinstance(row, dict):
        raise TaskError(f"{where}: a task is an object, not {describe(row)}")
    prompt = row.get("prompt")
    if prompt is None:  # absent, or null in a Parquet file whose other rows say "question"
        prompt = row.get("question")
    earlier: tuple[tuple[str, str], ...] = ()
    if row.get("messages") is not None:
        if prompt is not None:
            raise TaskError(f"{where}: a task asks a prompt or messages, not both")
        earlier, prompt = _conversation(row["messages"], where)
    if prompt is None:
        raise TaskError(f"{where}: no 'prompt' (nor 'question', nor 'messages'): the question")
    if "answer" not in row or row["answer"] is None:
        raise TaskError(f"{where}: no 'answer': the reference a reply is scored against")
    aliases = row.get("aliases") or []
    if not isinstance(aliases, list):
        raise TaskError(f"{where}: 'aliases' must be a list of answers, not {describe(aliases)}")
    match = row.get("match")
    if match is not None and match not in MATCHES:
        raise TaskError(f"{where}: 'match' must be one of {', '.join(MATCHES)}, not {match!r}")
    ident = row.get("id")
    if ident is None:
        ident = position
    if isinstance(ident, bool) or not isinstance(ident, (str, int)) or ident == "":
        raise TaskError(f"{where}: 'id' must be a non-empty string or an integer")
    return Task(
        ident,
        _text(prompt, where, "prompt"),
        _text(row["answer"], where, "answer"),
        tuple(_text(a, where, "aliases") for a in aliases),
        match,
        earlier,
    )


def _conversation(value: object, where: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """A task's ``messages``: its earlier turns as (role, content) pairs, and its question."""
    try:
        turns = messages_of(value)
        prompt_of("messages", list(turns))  # the last turn must be the user's question
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{where}: {str(exc).replace('messages(prompt): ', '', 1)}") from None
    return tuple((m["role"], m["content"]) for m in turns[:-1]), turns[-1]["content"]


def _rows(path: str) -> Iterator[tuple[str, Any]]:
    if path.endswith(".parquet") or os.path.isdir(path):
        try:
            dataset = importlib.import_module("pyarrow.dataset")
        except ImportError:
            raise TaskError(f"{path}: Parquet needs pyarrow (pip install pyarrow)") from None
        for n, row in enumerate(dataset.dataset(path, format="parquet").to_table().to_pylist(), 1):
            yield f"{path} row {n}", row
        return
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is no task
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield f"{path} line {n}", json.loads(line)
                    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
                        raise TaskError(f"{path} line {n}: not JSON ({exc})") from None
    except OSError as exc:
        raise TaskError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TaskError(f"{path}: not UTF-8 ({exc.reason})") from None


def load_tasks(source: str | os.PathLike[str] | Iterable[Task | dict[str, Any]]) -> list[Task]:
    """The tasks of a JSON Lines file, a Parquet file or folder, or a list (of Tasks or
    dicts), in order; each line or row must have a prompt (or question) and an answer, its
    id defaulting to its position; ids and prompts must be unique. TaskError names the line."""
    rows: Iterable[tuple[str, Any]]
    if isinstance(source, (dict, Task)):
        raise TaskError("tasks: give a list of tasks (or a file), not one task")
    if isinstance(source, (str, os.PathLike)):
        rows = _rows(os.fspath(source))
    else:
        rows = ((f"task {i}", r) for i, r in enumerate(source))
    tasks: list[Task] = []
    seen: dict[str, str] = {}
    asked: dict[str, str] = {}
    for where, row in rows:
        task = row if isinstance(row, Task) else task_of(row, where, len(tasks))
        key = json.dumps(task.id)
        if key in seen:
            raise TaskError(f"{where}: id {task.id!r} is used on {seen[key]} too; ids are unique")
        seen[key] = where
        prompt = " ".join(task.prompt.split())
        if prompt in asked:
            # The same question twice counts twice, its answers come from the cache the
            # second time, and a split can put it on both sides.
            raise TaskError(f"{where}: the prompt of {asked[prompt]} again; each question once")
        asked[prompt] = where
        tasks.append(task)
    if not tasks:
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the tasks"
        raise TaskError(f"{name}: no tasks")
    return tasks


def split_tasks(
    tasks: Sequence[Task], holdout: float = 0.5, seed: int = 0
) -> tuple[list[Task], list[Task]]:
    """``(dev, held_out)``: a seeded shuffle of ``tasks`` cut so that ``holdout`` (a share
    between 0 and 1) are held out, both parts in file order; both must hold a task."""
    check_number("split_tasks", "holdout", holdout, above=True, high=0.99)
    order = list(range(len(tasks)))
    random.Random(seed).shuffle(order)
    cut = round(len(tasks) * (1 - holdout))
    dev, held = sorted(order[:cut]), sorted(order[cut:])
    if not dev or not held:
        raise TaskError(
            f"split_tasks: {len(tasks)} tasks cannot be split {1 - holdout:.0%} / {holdout:.0%} "
            "with a task on each side"
        )
    return [tasks[i] for i in dev], [tasks[i] for i in held]
