"""A griffe extension: the Sphinx roles in moa's docstrings as mkdocstrings cross-references.

moa's docstrings name other objects as ``:class:`~moa.Agent``` or ``:func:`run``` so that they
read well in ``help()``. mkdocstrings renders Markdown, where a role is plain text, so each one is
rewritten when the package is loaded: to a link ``[Agent][moa.Agent]`` where the name is public
(in the ``__all__`` of a module the reference documents, or a member of such a class), else to
inline code. A link is made only to an object the reference renders, so ``mkdocs build
--strict`` never meets a reference it cannot resolve from here.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: The modules the reference documents, each name of their ``__all__`` under its own path.
PUBLIC_MODULES = (
    "moa",
    "moa.steps",
    "moa.testing",
    "moa.clients",
    "moa.ray",
    "moa.serve",
    "moa.errors",
    "moa.recipes",
)
#: Public names outside any ``__all__``.
EXTRA = {"moa.eval": "moa._eval.evaluate"}

ROLE = re.compile(r":(class|func|meth|attr|exc|mod|data|obj):`(~?)([\w.]+)(\(\))?`")


class Roles(griffe.Extension):
    """Rewrites every docstring of the ``moa`` package once it is loaded; an attribute
    documented by ``#:`` comments above it (as Sphinx reads them) gets them as its docstring."""

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        if attr.docstring is None and attr.lineno and attr.parent is not None:
            lines = (
                attr.lines_collection[attr.filepath]
                if attr.filepath in attr.lines_collection
                else []
            )
            comment: list[str] = []
            at = attr.lineno - 2
            while at >= 0 and lines[at].strip().startswith("#:"):
                comment.insert(0, lines[at].strip()[2:].strip())
                at -= 1
            if comment:
                attr.docstring = griffe.Docstring(
                    "\n".join(comment), lineno=at + 2, endlineno=attr.lineno - 1, parent=attr
                )

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "moa":
            return
        public = _public_names(pkg)
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj.docstring.value, obj, pkg, public)


def _public_names(pkg: griffe.Module) -> dict[str, str]:
    """Each public object's canonical path (where it is defined) and any public path of its own
    (``moa.Agent``), mapped to the path the reference renders it under. A name public in two
    modules (``moa.LLMStep``, ``moa.steps.LLMStep``) renders under the first."""
    public: dict[str, str] = {}
    for modpath in PUBLIC_MODULES:
        module = pkg if modpath == "moa" else pkg.get_member(modpath.removeprefix("moa."))
        public.setdefault(modpath, modpath)
        for name in module.exports or ():
            name = str(name)
            member = module[name]
            canonical = member.final_target.path if member.is_alias else member.path
            shown = public.setdefault(canonical, f"{modpath}.{name}")
            public.setdefault(f"{modpath}.{name}", shown)
            target = member.final_target if member.is_alias else member
            if target.is_class:
                for attr, sub in target.members.items():
                    if not attr.startswith("_") and not sub.is_alias:
                        public.setdefault(f"{canonical}.{attr}", f"{shown}.{attr}")
                        public.setdefault(f"{shown}.{attr}", f"{shown}.{attr}")
    for path, canonical in EXTRA.items():
        public[path] = path
        public.setdefault(canonical, path)
    return public


def _objects(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


def rewrite(text: str, obj: griffe.Object, pkg: griffe.Module, public: dict[str, str]) -> str:
    """``text`` with each role a link to a public object, or inline code."""

    def replace(match: re.Match[str]) -> str:
        _, short, name, call = match.groups()
        shown = (name.rsplit(".", 1)[-1] if short else name) + (call or "")
        target = resolve(name, obj, pkg, public)
        return f"[`{shown}`][{target}]" if target else f"`{shown}`"

    text = ROLE.sub(replace, text)
    # a doctest paragraph is shown as a console session of Python
    text = "\n\n".join(
        f"```pycon\n{part}\n```" if part.startswith(">>> ") else part for part in text.split("\n\n")
    )
    # reST's "text::" before an indented block is "text:" in print; the block is code either way
    return re.sub(r"(?<=\S)::(?=\n\n)", ":", text)


def resolve(name: str, obj: griffe.Object, pkg: griffe.Module, public: dict[str, str]) -> str:
    """The rendered path of ``name`` as written in ``obj``'s docstring, or "" when the
    reference does not render it: a full path first, then the name in the scopes around
    ``obj`` (its class, its module), then as a name of ``moa``."""
    if name in public:
        return public[name]
    scope: griffe.Object | None = obj
    while scope is not None:
        candidate = _lookup(scope, name)
        if candidate in public:
            return public[candidate]
        scope = scope.parent
    for modpath in PUBLIC_MODULES:
        if f"{modpath}.{name}" in public:
            return public[f"{modpath}.{name}"]
    return ""


def _lookup(scope: griffe.Object, name: str) -> str:
    """The canonical path ``name`` has in ``scope``, or "" when it is not there."""
    head, _, rest = name.partition(".")
    member = scope.members.get(head)
    if member is None:
        return ""
    try:
        path = member.final_target.path if member.is_alias else member.path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return ""
    return f"{path}.{rest}" if rest else path
