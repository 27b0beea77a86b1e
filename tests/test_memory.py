"""keep_freed_memory: a block freed and allocated again comes back without page faults."""

import resource
import sys

import pytest
import torch

from variational.memory import keep_freed_memory


def faults_while_reallocating(n_bytes: int, rounds: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.empty(n_bytes // 4).fill_(1.0)  # allocated, touched, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_blocks_are_reused_without_faults():
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
    faults_while_reallocating(8 << 20, 10)  # the heap grows to hold the block (a few rounds)
    # 20 rounds of a fresh 8 MiB block would be 20 * 2048 faults of 4 KiB pages; reused, next to none.
    assert faults_while_reallocating(8 << 20, 20) < 200
