"""How `variational` ends a process: a torchrun rank leaves with `os._exit` after flushing its output
(see `variational.training.process.exit_process`), with the status of the command or 1 on a crash."""

import os
import subprocess
import sys

import pytest

from variational.training import process


def _python(code: str, world_size: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORLD_SIZE": world_size}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_outside_torchrun_it_is_a_plain_exit(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(process, "_joined", False)
    with pytest.raises(SystemExit) as exit_:
        process.exit_process(4)
    assert exit_.value.code == 4


def test_a_rank_flushes_its_output_and_keeps_the_status():
    # stdout is a pipe here, so the text sits in Python's buffer until exit_process flushes it
    done = _python(
        "import sys, logging\n"
        "from variational.training import exit_process\n"
        "sys.stdout.write('last words')\n"
        "logging.basicConfig(stream=sys.stderr); logging.getLogger('x').warning('logged')\n"
        "exit_process(3)\n"
        "print('never')",
        world_size="2",
    )
    assert done.returncode == 3
    assert done.stdout == "last words"
    assert "logged" in done.stderr


def test_the_command_line_under_torchrun_exits_with_the_commands_status():
    version = _python(
        "from variational.cli import run; import sys; sys.argv = ['variational', '--version']; run()", "2"
    )
    assert version.returncode == 0 and version.stdout.startswith("variational ")
    usage = _python(
        "from variational.cli import run; import sys; sys.argv = ['variational', 'vae', 'train', '--bogus']; run()", "2"
    )
    assert usage.returncode == 2 and "unrecognized arguments: --bogus" in usage.stderr
    crash = _python(
        "import variational.cli as cli\n"
        "def broken(argv=None):\n    raise ZeroDivisionError('boom')\n"
        "cli.main = broken\ncli.run()",
        "2",
    )
    assert crash.returncode == 1 and "ZeroDivisionError: boom" in crash.stderr


def test_the_command_line_exits_without_importing_the_vae_package():
    # The rank's exit (os._exit) prints which variational.vae modules were loaded on the way out.
    done = _python(
        "import os, sys, variational.cli as cli\n"
        "cli.FRONT_ENDS = ()\n"
        "real_exit = os._exit\n"
        "def leave(code):\n"
        "    print(sorted(m for m in sys.modules if m.startswith('variational.vae')), flush=True)\n"
        "    real_exit(code)\n"
        "os._exit = leave\n"
        "sys.argv = ['variational', '--version']\n"
        "cli.run()",
        "2",
    )
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr
