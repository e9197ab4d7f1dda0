"""mkdocs hooks: the pages made from something else at build time, so they cannot drift.

- ``reference/cli.md``: every command and option of ``moa``, read from ``moa.cli.build_parser()``;
- ``benchmarks.md``: ``benchmarks/README.md`` (its chart beside it, its links into ``docs/``
  made the site's);
- ``changelog.md``: ``CHANGELOG.md`` (its links into ``docs/`` and to the benchmarks made the
  site's);
- ``llms.txt``: the site's map for a language model (llmstxt.org), from the nav: each page's
  title, link and first sentence.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "reference/cli.md", content=cli_page()))
    bench = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    bench = bench.replace("](../docs/", "](")
    files.append(File.generated(config, "benchmarks.md", content=bench))
    files.append(
        File.generated(config, "tail.png", abs_src_path=str(ROOT / "benchmarks" / "tail.png"))
    )
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").replace("](docs/", "](")
    changelog = changelog.replace("](benchmarks/README.md", "](benchmarks.md")
    files.append(File.generated(config, "changelog.md", content=changelog))
    files.append(File.generated(config, "llms.txt", content=llms_txt(config, files)))
    return files


def llms_txt(config: Any, files: Files) -> str:
    """The llms.txt of the site: its summary, then a section per top-level nav entry listing
    each page with its first sentence. Links are relative to the site's root."""
    out = [f"# {config['site_name']}", "", f"> {config['site_description']}", ""]
    out += [
        "Every code block of these pages runs in moa's tests. The API reference is generated "
        "from the docstrings, the command-line reference from the parser.",
        "",
    ]
    loose: list[str] = []
    for entry in config["nav"]:
        ((title, value),) = entry.items()
        if isinstance(value, str):
            loose.append(_llms_line(title, value, files))
        else:
            out += [f"## {title}", "", *_llms_lines(value, files), ""]
    return "\n".join([*out, "## Start and project", "", *loose, ""])


def _llms_lines(entries: list[Any], files: Files) -> list[str]:
    lines = []
    for entry in entries:
        ((title, value),) = entry.items()
        if isinstance(value, str):
            lines.append(_llms_line(title, value, files))
        else:
            lines += _llms_lines(value, files)
    return lines


def _llms_line(title: str, src: str, files: Files) -> str:
    file = files.get_file_from_path(src)
    text = file.content_string if file is not None else ""
    body = [line for line in text.splitlines() if line and not line.startswith(("#", ":::", "```"))]
    first = re.split(r"(?<=[.:])\s", " ".join(body[:3]), maxsplit=1)[0] if body else ""
    url = src.removesuffix("index.md").removesuffix(".md") + ("/" if src != "index.md" else "")
    return f"- [{title}]({url}): {first}".rstrip(": ")


def cli_page() -> str:
    """The command-line reference: each subcommand's summary, usage and options, as
    ``moa COMMAND --help`` gives them."""
    from moa.cli import build_parser

    parser = build_parser()
    out = [
        "# Command line",
        "",
        "Generated from `moa.cli.build_parser()`, the parser `moa` itself runs, when the site is "
        "built; `moa COMMAND --help` prints the same. Exit status: 0 done, 1 a run failed, "
        "2 a usage or expression error, 130 interrupted.",
        "",
        "```text",
        _usage(parser),
        "```",
        "",
        *_options(parser),
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    for name, command in sub.choices.items():
        out += [f"## moa {name}", "", _sentence(helps.get(name) or ""), ""]
        if command.description:
            out += [_escape(command.description), ""]
        out += ["```text", _usage(command), "```", "", *_options(command)]
    return "\n".join(out) + "\n"


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=88)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _options(parser: argparse.ArgumentParser) -> list[str]:
    formatter = argparse.HelpFormatter(parser.prog)
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            names = ", ".join(
                f"`{o} {_metavar(action)}`" if action.nargs != 0 else f"`{o}`"
                for o in action.option_strings
            )
        else:
            names = f"`{action.metavar or action.dest}`"
        text = formatter._expand_help(action) if action.help else ""
        if action.choices is not None and action.metavar is not None:  # not shown in the name
            text = (
                text.rstrip(".") + ". One of: " + ", ".join(f"`{c}`" for c in action.choices) + "."
            )
        if action.required and action.option_strings:
            text += " Required."
        rows.append(f"| {names} | {_escape(text)} |")
    if not rows:
        return []
    return ["| argument | what it does |", "|---|---|", *rows, ""]


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("." if text and not text.endswith(".") else "")


def _escape(text: str) -> str:
    """Help text as Markdown: ``|`` kept inside a table cell, ``*`` and ``_`` kept literal."""
    return re.sub(r"([|*_<>])", r"\\\1", text)
