"""Keep freed heap memory for reuse instead of handing it back to the kernel (Linux, glibc).

glibc gives a freed block of a few hundred KiB or more back to the kernel (munmap, or a trim of the
heap's top), so the next training step's tensors of the same sizes arrive as fresh pages, each
zeroed in a page fault: hundreds of faults a step for the reference VAE
(tests/vae/test_fastpath_memory.py; docs/design/cpu-fast-path.md for what they cost). PyTorch's CPU tuning guide answers this with another
allocator (jemalloc, tcmalloc) loaded before start; raising glibc's two thresholds has the same
effect from inside the process.

The setting is process-wide and stays: blocks below 32 MiB come from glibc's heaps, and each heap
keeps up to 256 MiB of freed memory at its top rather than returning it to the system. The VAE
trainer and evaluator apply it on CPU; `VARIATIONAL_KEEP_FREED_MEMORY=0` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for this parameter on 64-bit systems
_RETAIN = 256 << 20
OPT_OUT = "VARIATIONAL_KEEP_FREED_MEMORY"

_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); True when glibc accepted both.

    False off Linux, with a C library without mallopt (musl), or when the environment variable
    VARIATIONAL_KEEP_FREED_MEMORY is 0. A preloaded allocator such as jemalloc ignores the setting,
    which is then harmless. Calling it again does nothing.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(OPT_OUT, "1").strip() == "0":
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _RETAIN))
    return _applied


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt(param, value) -> 1 on success, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt
