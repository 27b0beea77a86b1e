"""What each rank runs in tests/vae/test_distributed.py (a script for torchrun, not a test module).

    torchrun ... ddp_worker.py runs A B C -- FLAGS   train A; B is stopped by a SIGTERM to rank 1
                                                     alone, copied to C, and resumed
    torchrun ... ddp_worker.py stall OUT -- FLAGS     rank 1 stalls in epoch 2; rank 0 must give up

All go through the `variational vae train` command, with only the vae front end registered so
the test does not depend on the other front ends. The faults are injected through `on_step`.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable

import variational.cli as cli
import variational.vae as vae
from variational.vae import distributed, pictures

cli.FRONT_ENDS = ("variational.vae.cli",)
pictures.save_all = lambda *args: []  # not what the test checks; drawing them costs seconds here
REAL_TRAIN = vae.train


def command(*args: str) -> int:
    return cli.main(["vae", "train", *args, "--no-progress"])


def on_rank_1(fault: Callable[[int, int, float], None]) -> None:
    """Make rank 1's `variational vae train` call `fault` after every optimiser step."""
    if int(os.environ["RANK"]) == 1:
        vae.train = lambda *args, **kwargs: REAL_TRAIN(*args, on_step=fault, **kwargs)  # looked up per command


def runs(a: str, b: str, c: str, flags: list[str]) -> None:
    # One process group for all the commands: each command's session joins it instead of making one.
    with distributed.session("cpu", timeout_s=60) as group:
        assert command(*flags, "--out", a, "--epochs", "2", "--eval-iw", "50") == 0

        def sigterm(epoch: int, step: int, loss: float) -> None:
            if (epoch, step) == (1, 4):  # epoch 2, step 5: rank 0 learns of it at the next step
                os.kill(os.getpid(), signal.SIGTERM)

        on_rank_1(sigterm)
        assert command(*flags, "--out", b, "--epochs", "2") == 130
        vae.train = REAL_TRAIN
        if group.is_main:
            shutil.copytree(b, c)  # a mid-epoch checkpoint written by 2 ranks, for a 1-process resume
        distributed.barrier(group, "test barrier")
        code = command("--resume", "--out", b)
    distributed.exit_process(code)  # as `variational` itself ends a rank


def stall(out: str, flags: list[str]) -> None:
    """Rank 1 hangs at epoch 2, step 3 (as a rank stuck in a deadlock or on a dead device would)."""

    def hang(epoch: int, step: int, loss: float) -> None:
        if (epoch, step) == (1, 2):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # so torchrun's clean-up ends it at once
            time.sleep(600)

    on_rank_1(hang)
    distributed.exit_process(command(*flags, "--out", out, "--epochs", "3"))


if __name__ == "__main__":
    sep = sys.argv.index("--")
    head, flags = sys.argv[1:sep], sys.argv[sep + 1 :]
    if head[0] == "runs":
        runs(*head[1:], flags=flags)
    else:
        stall(head[1], flags)
