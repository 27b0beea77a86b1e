"""How `variational` ends a process: a torchrun rank leaves with `os._exit` after flushing its output
(see `variational.vae.distributed.exit_process`), with the status of the command or 1 on a crash."""

import os
import subprocess
import sys

import pytest

from variational.vae import distributed


def _python(code: str, world_size: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORLD_SIZE": world_size}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_outside_torchrun_it_is_a_plain_exit(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(distributed, "_joined", False)
    with pytest.raises(SystemExit) as exit_:
        distributed.exit_process(4)
    assert exit_.value.code == 4


def test_a_rank_flushes_its_output_and_keeps_the_status():
    # stdout is a pipe here, so the text sits in Python's buffer until exit_process flushes it
    done = _python("import sys, logging\n"
                   "from variational.vae.distributed import exit_process\n"
                   "sys.stdout.write('last words')\n"
                   "logging.basicConfig(stream=sys.stderr); logging.getLogger('x').warning('logged')\n"
                   "exit_process(3)\n"
                   "print('never')", world_size="2")
    assert done.returncode == 3
    assert done.stdout == "last words"
    assert "logged" in done.stderr


def test_the_command_line_under_torchrun_exits_with_the_commands_status():
    version = _python("from variational.cli import run; import sys; sys.argv = ['variational', '--version']; run()", "2")
    assert version.returncode == 0 and version.stdout.startswith("variational ")
    usage = _python("from variational.cli import run; import sys; sys.argv = ['variational', 'vae', 'train', '--bogus']; run()", "2")
    assert usage.returncode == 2 and "unrecognized arguments: --bogus" in usage.stderr
    crash = _python("import variational.cli as cli\n"
                    "def broken(argv=None):\n    raise ZeroDivisionError('boom')\n"
                    "cli.main = broken\ncli.run()", "2")
    assert crash.returncode == 1 and "ZeroDivisionError: boom" in crash.stderr
