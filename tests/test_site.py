"""The documentation site's code runs, so no page can drift from what moa does.

Every fenced block of every page (docs/, and the README, the changelog and benchmarks/README.md,
which the site is built from) is one of these, by its fence's language:

- ``python``: run, the page's blocks in order in one namespace (top-level ``await`` allowed),
  on a stage of stand-ins the pages name in their opening lines (a scripted ``client``, a
  ``pipeline``, ``prompt``, ``prompts``), in a fresh folder; the law tests a page's
  ``check_laws`` defines run too. A block that cannot run here (it needs a provider's key, S3,
  a server on a fixed port) is listed in ``SHOWN`` with the reason and the test that covers
  what it shows; an entry that matches no block fails.
- ``console``: a terminal session, run on the embedded model by tests/test_transcripts.py.
- ``bash``, ``sh``: each command checked without running it: ``moa ...`` is parsed by the real
  parser, an extra named in ``pip install`` exists, a script or file it runs exists.
- ``json``, ``toml``: parsed. ``text`` and unlabelled blocks: output and diagrams, not code.

A block of any other language fails, so a new kind is a decision, not an accident.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

import anyio
import pytest
from hypothesis import settings

import moa

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
KINDS = {"python", "console", "bash", "sh", "json", "toml", "text", ""}


def pages() -> list[Path]:
    """Every Markdown source of the site: docs/ (its hooks aside) and the files it includes."""
    found = sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md", *found]


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def blocks(page: Path) -> list[tuple[str, int, str]]:
    """(language, first line of the code, code) of each fenced block, dedented."""
    text = page.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        indent = len(match.group(1))
        code = "\n".join(line[indent:] for line in match.group(3).splitlines())
        out.append((match.group(2), text[: match.start(3)].count("\n"), code + "\n"))
    return out


#: Blocks shown but not run: (page, a line the block holds) -> why, and what tests the same.
SHOWN = {
    ("docs/tutorial.md", "client = route("): "calls OpenAI and Anthropic with your keys; "
    "tests/clients/ drive both adapters through their SDKs against a scripted HTTP server",
    ("docs/how-to/ray.md", 'ray.data.read_parquet("s3://'): "reads S3 and calls a vLLM server; "
    "the page's next block runs the same call on a local cluster",
    ("docs/serve.md", 'OpenAI(base_url="http://127.0.0.1:8000/v1"'): "needs moa serve on port "
    "8000; tests/test_cli_serve.py asks a served self_moa the same through the openai SDK",
    ("docs/serve.md", "inner = moa.clients.openai_client("): "needs moa serve on port 8000; "
    "tests/test_serve.py runs a served pipeline as another run's client",
    ("docs/tracing.md", "OTLPSpanExporter(endpoint="): "exports to a collector on port 6006; "
    "tests/test_otlp.py exports a run to a local OTLP receiver",
}

#: Pages whose code needs the embedded model or a Ray cluster.
MARKS = {
    "docs/how-to/providers.md": pytest.mark.local,
    "docs/does-my-mixture-beat-my-best-model.md": pytest.mark.local,
    "docs/how-to/ray.md": pytest.mark.ray,
}


def shown(page: Path, code: str) -> bool:
    return any(p == name(page) and line in code for p, line in SHOWN)


def python_pages() -> list[object]:
    return [
        pytest.param(page, id=name(page), marks=MARKS.get(name(page), ()))
        for page in pages()
        if any(lang == "python" for lang, _, _ in blocks(page))
    ]


def stage(page: Path) -> dict[str, object]:
    """The stand-ins a page's examples use, as its opening lines say."""
    from moa import Aggregate, Propose
    from moa.testing import ScriptedClient

    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}", "moa": moa}
    exec("from moa import *", namespace)
    namespace.update(
        client=ScriptedClient(),
        pipeline=Propose(["a", "b", "c"]) | Aggregate("a"),
        prompt="What is 2 + 2?",
        prompts=["What is 2 + 2?", "Name a primary colour.", "Capital of Italy?"],
        P=["a", "b", "c"],
        models=["a", "b", "c"],
        judge="a",
    )
    return namespace


def run_page(page: Path) -> dict[str, object]:
    """Run a page's python blocks in order in one namespace; a traceback points at the
    page's own lines. A block with a top-level ``await`` runs in an event loop of its own."""
    namespace = stage(page)
    for lang, line, code in blocks(page):
        if lang != "python" or shown(page, code):
            continue
        compiled = compile(
            "\n" * line + code,
            str(page),
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,  # not this module's `from __future__ import annotations`
        )
        if compiled.co_flags & 0x80:  # CO_COROUTINE: it awaits
            anyio.run(lambda: eval(compiled, namespace))
        else:
            exec(compiled, namespace)
    return namespace


@pytest.fixture
def fewer_examples():
    """The pages' law tests with 25 examples each: the pages are checked, not the steps."""
    before = settings.get_current_profile_name()
    settings.register_profile("docs", settings(settings.get_profile(before), max_examples=25))
    settings.load_profile("docs")
    yield
    settings.load_profile(before)


@pytest.mark.parametrize("page", python_pages())
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch, fewer_examples, request):
    monkeypatch.chdir(tmp_path)
    if name(page) == "docs/how-to/ray.md":
        request.getfixturevalue("ray_cluster")  # the session's local cluster: ray.init() done
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "GROQ_API_KEY"):
        monkeypatch.setenv(key, "sk-docs-test-0000")
    if name(page) == "docs/does-my-mixture-beat-my-best-model.md":
        tasks = next(code for lang, _, code in blocks(page) if lang == "json")
        (tmp_path / "mine.jsonl").write_text(tasks, encoding="utf-8")
    namespace = run_page(page)
    if name(page) == "docs/custom-steps.md":
        assert {
            "test_dedupe_sub_multiset",
            "test_truncate_fuses",
            "test_rotate_permutation",
            "test_pairwise_judge_judge_length_bound",
            "test_dedupe_keeps_the_first",
        } <= set(namespace)
    for test_name, test in namespace.items():
        if test_name.startswith("test_") and callable(test):
            test()


def test_every_shown_block_exists_and_says_why():
    for (page, line), why in SHOWN.items():
        found = [code for lang, _, code in blocks(ROOT / page) if line in code]
        assert len(found) == 1, f"{page}: no single block holds {line!r}"
        assert len(why) > 40


def test_a_broken_block_fails_at_its_line_in_the_page(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n```python\nx = 1\nassert x == 2\n```\n", encoding="utf-8")
    monkeypatch.setattr(f"{__name__}.name", lambda p: p.name)
    with pytest.raises(AssertionError) as info:
        run_page(page)
    frame = info.traceback[-1]
    assert (str(frame.path), frame.lineno + 1) == (str(page), 5)


def test_every_block_is_of_a_kind_the_tests_know():
    for page in pages():
        for lang, line, _ in blocks(page):
            assert lang in KINDS, f"{name(page)}:{line}: a {lang!r} block"


# ---- shell: checked, not run -------------------------------------------------------------

EXTRAS = set(
    tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
)
#: Commands a shell block may run that need no check beyond being named.
PLAIN = {
    ".",
    "source",
    "cd",
    "export",
    "printf",
    "echo",
    "curl",
    "mkdocs",
    "pytest",
    "ray",
    "uvicorn",
}


def commands(code: str) -> list[list[str]]:
    """The shell commands of a block: continued lines joined, split at ``&&``, ``||``, ``;``,
    ``|`` and newlines (not inside quotes), leading ``VAR=value`` assignments dropped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|"):
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words.pop(0)
                if words:
                    out.append(words)
                words = []
            else:
                words.append(token)
    return out


def check_command(words: list[str]) -> None:
    from moa.cli import build_parser

    head, args = words[0], words[1:]
    if head == "moa":
        if args in (["--version"], ["--help"]):
            return
        build_parser().parse_args(args)  # SystemExit(2) on a flag the parser does not know
    elif head in ("python", "python3"):
        if args[:2] in (["-m", "venv"], ["-m", "pytest"], ["-m", "pip"]) or args[:1] == ["-c"]:
            return
        script = next(a for a in args if not a.startswith("-"))
        assert (ROOT / script).is_file(), f"no script {script}"
    elif head == "pip":
        for arg in args:
            extras = re.search(r"\[([\w,-]+)\]", arg)
            if extras and ("moa-dsl" in arg or arg.startswith(".")):
                unknown = set(extras.group(1).split(",")) - EXTRAS
                assert not unknown, f"no extra {unknown} in pyproject.toml"
    elif head == "bash":
        assert (ROOT / args[0]).is_file(), f"no script {args[0]}"
    else:
        assert head in PLAIN, f"a shell block runs {head!r}: check it here or add it to PLAIN"


def shell_blocks() -> list[object]:
    return [
        pytest.param(code, id=f"{name(page)}:{line}")
        for page in pages()
        for lang, line, code in blocks(page)
        if lang in ("bash", "sh")
    ]


@pytest.mark.parametrize("code", shell_blocks())
def test_every_shell_command_is_one_moa_and_the_checkout_accept(code):
    for words in commands(code):
        try:
            check_command(words)
        except SystemExit as exc:
            pytest.fail(f"moa refuses {shlex.join(words)} (exit {exc.code})")


def test_a_mistyped_flag_in_a_shell_block_fails():
    with pytest.raises(SystemExit):
        check_command(["moa", "run", "hi", "--recipe", "self_moa", "--max-tokenz", "5"])
    with pytest.raises(AssertionError, match="no extra"):
        check_command(["pip", "install", "moa-dsl[nonesuch]"])


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, id=name(p))
        for p in pages()
        if any(b[0] in ("json", "toml") for b in blocks(p))
    ],
)
def test_every_json_and_toml_block_parses(page):
    for lang, _, code in blocks(page):
        if lang == "toml":
            tomllib.loads(code)
        elif lang == "json":
            try:
                json.loads(code)
            except json.JSONDecodeError:  # JSON Lines: one value a line
                for row in filter(str.strip, code.splitlines()):
                    json.loads(row)


# ---- the site's structure ----------------------------------------------------------------


def site_config() -> dict[str, object]:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:", lambda loader, suffix, node: None)
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)


def nav_files(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in nav_files(value)]
    if isinstance(nav, list):
        return [f for item in nav for f in nav_files(item)]
    return []


GENERATED = {"reference/cli.md", "benchmarks.md", "changelog.md"}  # made by docs/hooks/site.py


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    listed = nav_files(site_config()["nav"])
    on_disk = {p.relative_to(DOCS).as_posix() for p in pages() if DOCS in p.parents}
    assert set(listed) - GENERATED == on_disk
    assert len(listed) == len(set(listed))


def reference_directives() -> set[str]:
    found = set()
    for page in (DOCS / "reference").rglob("*.md"):
        found |= set(re.findall(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.M))
    return found


def _public_modules() -> tuple[str, ...]:
    """The modules the reference documents: the list the docs' roles hook reads (one list)."""
    spec = importlib.util.spec_from_file_location("roles", DOCS / "hooks" / "roles.py")
    assert spec is not None and spec.loader is not None
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    return tuple(roles.PUBLIC_MODULES)


PUBLIC = _public_modules()


def public_names() -> dict[str, object]:
    import importlib

    names: dict[str, object] = {"moa.eval": moa.eval}
    for module_name in PUBLIC:
        module = importlib.import_module(module_name)
        for attr in module.__all__:
            names[f"{module_name}.{attr}"] = getattr(module, attr)
    return names


def test_every_public_name_is_in_the_api_reference():
    """Each name of a public module's ``__all__`` has a ``::: path`` of its own in
    docs/reference/, or is the same object as a name that has one (``moa.steps.LLMStep`` is
    ``moa.LLMStep``; ``moa.errors.X`` is ``moa.X``)."""
    documented = reference_directives()
    names = public_names()
    by_object = {id(obj): path for path, obj in names.items() if path in documented}
    missing = [
        path for path, obj in names.items() if path not in documented and id(obj) not in by_object
    ]
    assert not missing, f"not in docs/reference/: {missing}"
    assert documented <= set(names), f"not public: {documented - set(names)}"
