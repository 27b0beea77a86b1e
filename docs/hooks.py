"""MkDocs hook: the CLI and API reference pages, generated at build time so they cannot drift.

- `reference/cli.md` walks `variational.cli.build_parser()` and its sub-parsers: every command's
  usage, arguments and examples (the parser's epilog). A command another front end registers
  appears without any change here.
- `reference/api/<package>.md` lists the public names (`__all__`) of each public package and
  points mkdocstrings at the module that defines each one, found by importing the package now.
  Modules inside the packages move; the packages and their `__all__` are the contract.
- Pages under docs/ that `nav` in mkdocs.yml does not list (design notes, benchmark pages, guides
  other work adds) are appended to their section, titled by their first heading, and a public
  package of OPTIONAL_PACKAGES gets its API page once it exists; the strict build would otherwise
  fail on a page left out of the navigation.

The worktree's `src/` goes first on `sys.path`, so the pages describe this checkout's code even
when another copy of the package is installed in the environment.
"""

from __future__ import annotations

import argparse
import html
import importlib
import importlib.util
import inspect
import re
import sys
import textwrap
from pathlib import Path

from mkdocs.structure.files import File

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

# Public packages that other work adds: their page and nav entry appear once they can be imported.
OPTIONAL_PACKAGES = {
    "variational.diffusion": "Diffusion models trained and scored by their variational bound.",
}

# The public packages, in the order their pages appear. A name exported by several of them is
# rendered once, on the page of the package that defines it, and linked from the others.
PACKAGES = {
    "variational.core": "Objectives, variational families and diagnostics shared by VI and the VAE.",
    "variational.vi": "General variational inference for a log joint density.",
    "variational.vae": "Variational autoencoders: configuration, training, evaluation.",
    "variational.calculus": "The calculus of variations: functionals, Euler-Lagrange equations, extremals.",
    "variational.data": "Image datasets: IDX files, scikit-learn digits, numpy arrays.",
    "variational.errors": "The errors a user can act on; the command line prints them as one line.",
}


# ---------------------------------------------------------------------------------------------
# CLI reference


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each sub-command, in registration order."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            out += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return out


def _cell(text: str) -> str:
    """Help text as a Markdown table cell: no HTML, emphasis or column breaks from it."""
    text = html.escape(text, quote=False).replace("|", "&#124;")
    return re.sub(r"([*_\\])", r"\\\1", text)


def _sentence(phrase: str) -> str:
    # not capitalised: argparse help often starts with an option value ("auto: ...")
    return phrase if phrase.endswith(".") else phrase + "."


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
            name = ", ".join(f"`{s}{metavar}`" for s in action.option_strings)
        else:
            name = f"`{action.metavar or action.dest}`"
        # the help phrase, then what the parser knows: choices, default, repetition
        parts = [_cell(formatter._expand_help(action))] if action.help else []  # expands %(default)s
        if action.choices and not isinstance(action.choices, dict):
            parts.append("One of " + ", ".join(f"`{c}`" for c in action.choices))
        said = " ".join(parts).lower()
        shown = action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings
        if shown and "default" not in said:
            parts.append(f"Default `{action.default}`")
        if isinstance(action, argparse._AppendAction) and "repeat" not in said:
            parts.append("Repeatable")
        text = " ".join(_sentence(p) for p in parts)
        rows.append(f"| {name} | {text} |")
    return rows


def _command_section(path: list[str], parser: argparse.ArgumentParser, summary: str) -> list[str]:
    level = "#" * min(len(path) + 1, 4)
    lines = [f"{level} `{' '.join(path)}`", ""]
    if summary:
        lines += [summary[0].upper() + summary[1:] + ".", ""]
    if parser.description and parser.description.rstrip(".") != summary:
        lines += [parser.description, ""]
    # argparse wraps the usage under its "usage: " prefix; re-wrap it for a page
    usage = " ".join(parser.format_usage().removeprefix("usage: ").split())
    usage = textwrap.fill(usage, width=96, subsequent_indent="    ", break_on_hyphens=False, break_long_words=False)
    lines += ["```text", usage, "```", ""]
    rows = _argument_rows(parser)
    if rows:
        lines += ["| argument | meaning |", "|---|---|", *rows, ""]
    if parser.epilog:
        lines += ["```text", parser.epilog.strip("\n"), "```", ""]
    for name, help_text, sub in _subcommands(parser):
        lines += _command_section([*path, name], sub, help_text)
    return lines


def cli_reference() -> str:
    from variational.cli import build_parser

    parser = build_parser()
    lines = [
        "# Command-line reference",
        "",
        "Generated from the argument parser (`variational.cli.build_parser()`) when the site is built,",
        "so it lists exactly the commands and options of this version. Every command also answers",
        "`--help`. Errors end with one line `variational: error: ...` and exit status 2 (see",
        "[Errors and exit statuses](../errors.md)).",
        "",
    ]
    lines += _command_section(["variational"], parser, "")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# API reference


def _identifier(package: str, name: str, obj: object) -> str:
    """The dotted path mkdocstrings should render for `package.name`."""
    if inspect.ismodule(obj):
        return obj.__name__
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and module and qualname and "<" not in qualname:
        return f"{module}.{qualname}"
    # a constant: the loaded submodule that assigns it at top level (getattr above imported it)
    assigns = re.compile(rf"^{re.escape(name)}\s*[:=]", re.M)
    for modname, mod in sorted(sys.modules.items()):
        if modname.startswith(package + ".") and getattr(mod, name, None) is obj:
            try:
                if assigns.search(inspect.getsource(mod)):
                    return f"{modname}.{name}"
            except (OSError, TypeError):
                continue
    return f"{package}.{name}"  # griffe follows the package's own import of it


def _owner(identifier: str) -> str | None:
    """The public package whose pages render `identifier` (the longest prefix)."""
    owners = [p for p in PACKAGES if identifier == p or identifier.startswith(p + ".")]
    return max(owners, key=len) if owners else None


def api_reference(package: str) -> str:
    pkg = importlib.import_module(package)
    short = package.split(".")[-1]
    lines = [f"# `{package}`", "", PACKAGES[package], "", f"```python\nfrom variational import {short}\n```", ""]
    doc = inspect.getdoc(pkg)
    if doc:
        # the package docstring's first paragraph; its examples belong to the guides and doctests
        lines += [doc.split("\n\n")[0], ""]
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        ident = _identifier(package, name, obj)
        owner = _owner(ident)
        if owner and owner != package and name in getattr(importlib.import_module(owner), "__all__", ()):
            lines += [f"## `{name}`", "", f"The same object as [`{owner}.{name}`][{ident}].", ""]
            continue
        options = [
            "    options:",
            "      show_root_heading: true",
            "      show_root_full_path: false",
            "      heading_level: 2",
        ]
        if inspect.ismodule(obj):
            options += ["      members: false"]
        lines += [f"::: {ident}", *options, ""]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Navigation: pages other work adds to docs/ are listed without editing mkdocs.yml


def _nav_paths(nav) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(_nav_paths(v) for v in nav.values()))
    if isinstance(nav, list):
        return set().union(set(), *(_nav_paths(v) for v in nav))
    return set()


def _section(nav: list, *titles: str) -> list:
    """The list of entries under the nested section `titles` of the nav (created if missing)."""
    for title in titles:
        for entry in nav:
            if isinstance(entry, dict) and title in entry:
                nav = entry[title]
                break
        else:
            nav.append({title: []})
            nav = nav[-1][title]
    return nav


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip().strip("`")
    return path.stem.replace("-", " ").capitalize()


def _place(uri: str) -> tuple[str, ...]:
    """Where in the nav an unlisted page goes, by its folder and name."""
    if uri.startswith("design/"):
        return ("Design notes",)
    if uri.startswith("benchmarks/"):
        return ("Benchmarks",)
    if uri.startswith("contributing"):
        return ()
    return ("User guide",)


def on_config(config):
    docs = Path(config["docs_dir"])
    nav = config["nav"]
    listed = _nav_paths(nav)
    for path in sorted(docs.rglob("*.md")):
        uri = path.relative_to(docs).as_posix()
        if uri not in listed:
            place = _place(uri)
            (_section(nav, *place) if place else nav).append({_title(path): uri})
    api = _section(nav, "Reference", "API")
    for package in _present_optional_packages():
        uri = f"reference/api/{package.split('.')[-1]}.md"
        if uri not in listed:  # `mkdocs serve` may hand the same config to a rebuild
            api.append({package: uri})
    return config


def _present_optional_packages() -> list[str]:
    return [p for p in OPTIONAL_PACKAGES if importlib.util.find_spec(p) is not None]


# ---------------------------------------------------------------------------------------------
# MkDocs events


def on_files(files, config):
    for package in _present_optional_packages():
        PACKAGES[package] = OPTIONAL_PACKAGES[package]
    pages = {"reference/cli.md": cli_reference()}
    for package in PACKAGES:
        pages[f"reference/api/{package.split('.')[-1]}.md"] = api_reference(package)
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files
