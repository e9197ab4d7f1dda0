"""The questions an eval asks (moa._tasks): load_tasks from JSON Lines, Parquet and lists, each
bad line refused naming its file and line, and split_tasks cutting them into a dev part and a
held-out part that never meet."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import moa
from moa import Task, TaskError, load_tasks, split_tasks


def jsonl(tmp_path, *lines: str | dict, name: str = "tasks.jsonl"):
    """A JSON Lines file of ``lines`` (a dict is dumped; a str is written as it is)."""
    path = tmp_path / name
    path.write_text(
        "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def test_the_public_names():
    assert moa.Task is Task and moa.TaskError is TaskError
    assert moa.load_tasks is load_tasks and moa.split_tasks is split_tasks
    assert issubclass(TaskError, ValueError)


# -- JSON Lines --------------------------------------------------------------------------------
def test_a_jsonl_file_gives_its_tasks_in_order(tmp_path):
    path = jsonl(
        tmp_path,
        {"id": "q1", "prompt": "2+2?", "answer": "4"},
        {"id": "q2", "question": "Capital of Italy?", "answer": "Rome", "aliases": ["Roma"]},
        {"id": 3, "prompt": "Say hi", "answer": "hi", "match": "exact"},
    )
    assert load_tasks(path) == [
        Task("q1", "2+2?", "4"),
        Task("q2", "Capital of Italy?", "Rome", ("Roma",)),
        Task(3, "Say hi", "hi", (), "exact"),
    ]
    assert load_tasks(str(path)) == load_tasks(path)  # a str path or a PathLike


def test_answers_and_aliases_may_be_numbers(tmp_path):
    path = jsonl(tmp_path, {"prompt": "1500?", "answer": 1500, "aliases": [1500.0, "1,500"]})
    (task,) = load_tasks(path)
    assert task.answer == "1500"
    assert task.aliases == ("1500.0", "1,500")
    assert task.answers == ("1500", "1500.0", "1,500")


def test_text_is_stripped(tmp_path):
    (task,) = load_tasks(jsonl(tmp_path, {"prompt": "  2+2?\n", "answer": " 4 "}))
    assert (task.prompt, task.answer) == ("2+2?", "4")


def test_the_id_defaults_to_the_position_among_the_tasks(tmp_path):
    path = jsonl(
        tmp_path,
        {"prompt": "a", "answer": "1"},
        "",
        {"prompt": "b", "answer": "2"},
        {"id": "named", "prompt": "c", "answer": "3"},
        {"prompt": "d", "answer": "4"},
    )
    assert [t.id for t in load_tasks(path)] == [0, 1, "named", 3]


def test_blank_lines_are_skipped_and_lines_keep_their_numbers(tmp_path):
    path = jsonl(tmp_path, {"prompt": "a", "answer": "1"}, "", "   ", "{oops")
    with pytest.raises(TaskError, match=r"tasks\.jsonl line 4: not JSON"):
        load_tasks(path)
    path = jsonl(tmp_path, "", {"prompt": "a", "answer": "1"}, "\t", name="b.jsonl")
    assert load_tasks(path) == [Task(0, "a", "1")]


def test_a_duplicate_id_names_both_lines(tmp_path):
    path = jsonl(
        tmp_path,
        {"id": "x", "prompt": "a", "answer": "1"},
        {"id": "y", "prompt": "b", "answer": "2"},
        {"id": "x", "prompt": "c", "answer": "3"},
    )
    with pytest.raises(TaskError, match=r"line 3: id 'x' is used on .*tasks\.jsonl line 1 too"):
        load_tasks(path)


def test_a_defaulted_id_clashes_with_an_explicit_one(tmp_path):
    path = jsonl(tmp_path, {"id": 1, "prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"})
    with pytest.raises(TaskError, match=r"line 2: id 1 is used on .* line 1 too"):
        load_tasks(path)


def test_ids_1_and_1_as_text_are_different(tmp_path):
    path = jsonl(
        tmp_path, {"id": 1, "prompt": "a", "answer": "1"}, {"id": "1", "prompt": "b", "answer": "2"}
    )
    assert [t.id for t in load_tasks(path)] == [1, "1"]


@pytest.mark.parametrize("bad", ["{oops", '{"prompt": "a", "answer": }', "[1, 2", "nan nan"])
def test_a_line_that_is_not_json_is_named(tmp_path, bad):
    path = jsonl(tmp_path, {"prompt": "a", "answer": "1"}, bad)
    with pytest.raises(TaskError, match=r"tasks\.jsonl line 2: not JSON"):
        load_tasks(path)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"answer": "1"}, r"line 2: no 'prompt' \(nor 'question', nor 'messages'\)"),
        ({"prompt": None, "answer": "1"}, r"line 2: no 'prompt'"),
        ({"prompt": "a"}, r"line 2: no 'answer'"),
        ({"prompt": "a", "answer": None}, r"line 2: no 'answer'"),
        ({"prompt": "   ", "answer": "1"}, r"line 2: 'prompt' is empty"),
        ({"prompt": "a", "answer": ""}, r"line 2: 'answer' is empty"),
        ({"prompt": "a", "answer": True}, r"line 2: 'answer' must be a string or a number"),
        ({"prompt": ["a"], "answer": "1"}, r"line 2: 'prompt' must be a string or a number"),
        ({"prompt": "a", "answer": {"x": 1}}, r"line 2: 'answer' must be a string or a number"),
        ({"prompt": "a", "answer": "1", "aliases": "one"}, r"line 2: 'aliases' must be a list"),
        ({"prompt": "a", "answer": "1", "aliases": ["one", ""]}, r"line 2: 'aliases' is empty"),
        ({"prompt": "a", "answer": "1", "match": "fuzzy"}, r"line 2: 'match' must be one of"),
        ({"id": True, "prompt": "a", "answer": "1"}, r"line 2: 'id' must be"),
        ({"id": "", "prompt": "a", "answer": "1"}, r"line 2: 'id' must be"),
        ({"id": 1.5, "prompt": "a", "answer": "1"}, r"line 2: 'id' must be"),
    ],
)
def test_a_bad_task_names_its_line(tmp_path, row, message):
    path = jsonl(tmp_path, {"prompt": "ok", "answer": "0"}, row)
    with pytest.raises(TaskError, match=message):
        load_tasks(path)


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "3", "null"])
def test_a_line_that_is_not_an_object_is_refused(tmp_path, line):
    with pytest.raises(TaskError, match=r"line 1: a task is an object"):
        load_tasks(jsonl(tmp_path, line))


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "café?", "answer": "oui"}\n'.encode("latin-1"))
    with pytest.raises(TaskError, match=r"latin1\.jsonl: not UTF-8"):
        load_tasks(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(TaskError, match=r"nowhere\.jsonl: No such file or directory"):
        load_tasks(tmp_path / "nowhere.jsonl")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_a_file_without_tasks_is_refused(tmp_path, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TaskError, match=r"empty\.jsonl: no tasks"):
        load_tasks(str(path))


def test_a_file_without_tasks_given_as_a_path_is_named(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(TaskError, match=r"empty\.jsonl: no tasks"):
        load_tasks(path)


# -- Parquet -----------------------------------------------------------------------------------
def parquet(tmp_path, rows: list[dict], name: str = "tasks.parquet"):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / name
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_a_parquet_file_gives_its_tasks_in_order(tmp_path):
    path = parquet(
        tmp_path,
        [
            {"id": "a", "prompt": "2+2?", "answer": "4", "aliases": ["four"]},
            {"id": "b", "prompt": "Capital of Italy?", "answer": "Rome", "aliases": []},
        ],
    )
    assert load_tasks(path) == [
        Task("a", "2+2?", "4", ("four",)),
        Task("b", "Capital of Italy?", "Rome"),
    ]


def test_a_parquet_file_with_number_answers_and_no_ids(tmp_path):
    path = parquet(tmp_path, [{"question": "2+2?", "answer": 4}, {"question": "3+3?", "answer": 6}])
    assert load_tasks(path) == [Task(0, "2+2?", "4"), Task(1, "3+3?", "6")]


def test_a_parquet_folder_is_read_whole(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    parquet(folder, [{"id": "a", "prompt": "p", "answer": "1"}], name="part-0.parquet")
    tasks = load_tasks(folder)
    assert [t.id for t in tasks] == ["a"]


def test_a_bad_parquet_row_is_named(tmp_path):
    path = parquet(tmp_path, [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": None}])
    with pytest.raises(TaskError, match=r"tasks\.parquet row 2: no 'answer'"):
        load_tasks(path)


def test_a_parquet_file_mixing_prompt_and_question_columns(tmp_path):
    path = parquet(
        tmp_path,
        [
            {"prompt": "2+2?", "question": None, "answer": "4"},
            {"prompt": None, "question": "3+3?", "answer": "6"},
        ],
    )
    assert [t.prompt for t in load_tasks(path)] == ["2+2?", "3+3?"]


# -- lists -------------------------------------------------------------------------------------
def test_a_list_of_dicts_and_tasks():
    tasks = load_tasks(
        [
            {"prompt": "a", "answer": 1},
            Task("t", "b", "2"),
            {"question": "c", "answer": "3", "match": "contains"},
        ]
    )
    assert tasks == [Task(0, "a", "1"), Task("t", "b", "2"), Task(2, "c", "3", (), "contains")]


def test_a_list_of_tasks_is_kept_as_it_is():
    given_tasks = [Task("x", "p", "1"), Task("y", "q", "2", ("two",), "number")]
    assert load_tasks(given_tasks) == given_tasks
    assert load_tasks(iter(given_tasks)) == given_tasks  # any iterable


def test_a_bad_list_item_is_named_by_its_position():
    with pytest.raises(TaskError, match=r"task 1: no 'answer'"):
        load_tasks([{"prompt": "a", "answer": "1"}, {"prompt": "b"}])
    with pytest.raises(TaskError, match=r"task 0: a task is an object, not 'a' \(str\)"):
        load_tasks(["a"])


def test_a_duplicate_id_in_a_list_names_both_positions():
    with pytest.raises(TaskError, match=r"task 1: id 'x' is used on task 0 too"):
        load_tasks([Task("x", "a", "1"), {"id": "x", "prompt": "b", "answer": "2"}])


def test_an_empty_list_is_refused():
    with pytest.raises(TaskError, match=r"no tasks"):
        load_tasks([])


# -- split_tasks -------------------------------------------------------------------------------
TEN = [Task(i, f"q{i}", str(i)) for i in range(10)]


def test_a_split_is_a_partition_in_file_order():
    dev, held = split_tasks(TEN, holdout=0.3, seed=4)
    assert len(dev) == 7 and len(held) == 3
    assert not set(t.id for t in dev) & set(t.id for t in held)
    assert sorted(dev + held, key=lambda t: t.id) == TEN
    assert dev == sorted(dev, key=lambda t: t.id)
    assert held == sorted(held, key=lambda t: t.id)


def test_a_split_is_seeded():
    assert split_tasks(TEN, seed=1) == split_tasks(TEN, seed=1)
    assert len({tuple(t.id for t in split_tasks(TEN, seed=s)[1]) for s in range(8)}) > 1


def test_the_default_split_is_half_and_half():
    dev, held = split_tasks(TEN)
    assert len(dev) == len(held) == 5


@given(st.integers(2, 60), st.floats(0.01, 0.99), st.integers(0, 2**32))
def test_every_split_is_a_partition_or_refused(n, holdout, seed):
    tasks = [Task(i, "p", "a") for i in range(n)]
    try:
        dev, held = split_tasks(tasks, holdout, seed)
    except TaskError as exc:
        assert "cannot be split" in str(exc)
        assert round(n * (1 - holdout)) in (0, n)
        return
    ids = [t.id for t in dev] + [t.id for t in held]
    assert sorted(ids) == list(range(n)) and dev and held
    assert len(held) == n - round(n * (1 - holdout))


@pytest.mark.parametrize("holdout", [0, 0.0, 1, 1.0, -0.2, 1.5, 0.995, math.nan, math.inf])
def test_a_holdout_outside_the_open_range_is_refused(holdout):
    with pytest.raises(ValueError, match=r"split_tasks\(holdout=\.\.\.\): holdout must be"):
        split_tasks(TEN, holdout)


@pytest.mark.parametrize("holdout", ["0.5", None, True])
def test_a_holdout_that_is_not_a_number_is_refused(holdout):
    with pytest.raises(TypeError, match=r"split_tasks\(holdout=\.\.\.\)"):
        split_tasks(TEN, holdout)


@pytest.mark.parametrize("n, holdout", [(0, 0.5), (1, 0.5), (10, 0.99), (10, 0.01)])
def test_too_few_tasks_to_split_are_refused(n, holdout):
    with pytest.raises(TaskError, match=rf"split_tasks: {n} tasks cannot be split"):
        split_tasks(TEN[:n], holdout)


# -- conversations ----------------------------------------------------------------------------
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Which planet is the largest?"},
    {"role": "assistant", "content": "Jupiter."},
    {"role": "user", "content": "How many moons does it have?"},
]


def test_a_task_may_be_a_conversation_ending_with_its_question(tmp_path):
    (task,) = load_tasks(jsonl(tmp_path, {"id": "moons", "messages": CHAT, "answer": "95"}))
    assert task.prompt == "How many moons does it have?"
    assert task.earlier == tuple((m["role"], m["content"]) for m in CHAT[:-1])
    assert task.asked == CHAT  # what a run is given
    plain = Task("q", "2+2?", "4")
    assert plain.earlier == () and plain.asked == "2+2?"
    assert hash(task) == hash(Task(*[getattr(task, f) for f in task.__dataclass_fields__]))


@pytest.mark.parametrize(
    "row, message",
    [
        ({"messages": CHAT, "prompt": "also?", "answer": "1"}, "a prompt or messages, not both"),
        ({"messages": CHAT[:3], "answer": "1"}, "must be the user's, not the assistant's"),
        ({"messages": "hi", "answer": "1"}, "a conversation is a list"),
        ({"messages": [{"role": "bot", "content": "hi"}], "answer": "1"}, r"messages\[0\]: role"),
    ],
)
def test_a_bad_conversation_is_refused_naming_its_line(tmp_path, row, message):
    with pytest.raises(TaskError, match=rf"tasks.jsonl line 1: .*{message}"):
        load_tasks(jsonl(tmp_path, {"id": "x", **row}))
