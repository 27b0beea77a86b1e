"""Every code example in README.md and docs/ runs, so the documentation cannot drift from the code.

Per page, in a fresh temporary directory holding a copy of examples/:
- ```python blocks run in order in one namespace;
- shell blocks (bash, sh, shell) run each `variational ...` line through `variational.cli.main`,
  which must return 0; console blocks run each `$ variational ...` line the same way, and where
  the output shown starts with `variational: error:`, the command must fail with status 2 and
  that one line, naming the same subject;
- any other shell line must match an entry of NOT_RUN, which says why it is not run;
- a block with a title (```toml title="run.toml") is written to that file for later blocks;
- text, toml, json and yaml blocks are not run. A block in any other language fails the test,
  so a new kind of example gets a decision rather than being skipped silently.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

from variational.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# Shell lines shown but not run, by prefix, with the reason.
NOT_RUN = {
    "make ": "builds the virtual environment, the demo or the site; CI runs `make test` and `make docs` itself",
    "pip install": "installs packages; the test environment is already installed",
    ".venv/bin/pip install": "installs packages; the test environment is already installed",
    ".venv/bin/mkdocs serve": "serves the site until interrupted; `make docs` builds it",
    "torchrun ": "starts several processes; tests/vae/test_distributed.py runs the torchrun path",
    "python examples/calculus_problems.py": "solves every problem both ways (20 s); the guide runs each method",
    "python bench/": "benchmarks take minutes and need data sets not installed on CI; they print tables, not tests",
    ".venv/bin/python bench/": "benchmarks take minutes and need data sets not installed on CI",
    "mutmut ": "mutation testing takes most of an hour; `make mutate` runs it, not CI",
}
SHELLS = {"bash", "sh", "shell"}
NOT_RUN_LANGUAGES = {"text", "toml", "json", "yaml"}

FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.M | re.S)


def _blocks(text: str) -> list[tuple[int, str, str | None, str]]:
    """(line number, language, title, body) of each fenced block of a Markdown page."""
    out = []
    for m in FENCE.finditer(text):
        words = m["info"].strip().split(maxsplit=1)
        language = words[0] if words else ""
        title = re.search(r'title="([^"]+)"', m["info"])
        body = "\n".join(line.removeprefix(m["indent"]) for line in m["body"].splitlines())
        out.append((text.count("\n", 0, m.start()) + 1, language, title[1] if title else None, body))
    return out


def _logical_lines(body: str) -> list[str]:
    """Shell lines with backslash continuations joined."""
    return [line.strip() for line in body.replace("\\\n", " ").splitlines()]


def _run_cli(command: str) -> tuple[int, str, str]:
    argv = shlex.split(command, comments=True)
    assert argv[0] == "variational", command
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv[1:])
        except SystemExit as e:  # argparse: --help, or a usage error
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _run_shell(where: str, command: str, expected_error: str | None = None) -> None:
    if not command or command.startswith("#"):
        return
    if not command.startswith("variational "):
        assert any(command.startswith(prefix) for prefix in NOT_RUN), (
            f"{where}: `{command}` is neither a `variational` command nor in NOT_RUN"
        )
        return
    code, out, err = _run_cli(command)
    if expected_error is None:
        assert code == 0, f"{where}: `{command}` exited with {code}:\n{err[-3000:]}"
        return
    assert code == 2, f"{where}: `{command}` should fail with status 2, got {code}:\n{err[-3000:]}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("variational: error: "), f"{where}: {err[-3000:]}"
    # the subject the page names (the text before the first colon) is the one the error names
    subject = expected_error.removeprefix("variational: error: ").split(":")[0]
    assert lines[0].removeprefix("variational: error: ").startswith(subject), f"{where}: {lines[0]}"


def _run_console(where: str, body: str) -> None:
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("$ "):
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        expected = following if following.startswith("variational: error:") else None
        _run_shell(where, line[2:].strip(), expected)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__docs__"}
    for line, language, title, body in _blocks(page.read_text(encoding="utf-8")):
        where = f"{page.relative_to(ROOT)}:{line}"
        if title:
            (tmp_path / title).write_text(body + "\n", encoding="utf-8")
        if language == "python":
            exec(compile(body, where, "exec"), namespace)  # noqa: S102 - the page's own example
        elif language in SHELLS:
            for command in _logical_lines(body):
                _run_shell(where, command)
        elif language == "console":
            _run_console(where, body)
        else:
            assert language in NOT_RUN_LANGUAGES or title, f"{where}: ```{language}: run it or list the language"


def test_readme_shows_the_quick_start() -> None:
    shell = [body for _, language, _, body in _blocks((ROOT / "README.md").read_text()) if language in SHELLS]
    commands = {c.split("#")[0].strip() for body in shell for c in _logical_lines(body)}
    assert {"make demo", "make test"} <= commands


def test_the_block_reader_sees_every_fence() -> None:
    page = 'intro\n```python\nx = 1\n```\n- item\n  ```toml title="a.toml"\n  k = 1\n  ```\n```text\nout\n```\n'
    assert _blocks(page) == [(2, "python", None, "x = 1"), (6, "toml", "a.toml", "k = 1"), (9, "text", None, "out")]
