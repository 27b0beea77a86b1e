"""Keep freed heap memory for reuse instead of handing it back to the kernel (Linux, glibc).

glibc gives a freed block of a few hundred KiB or more back to the kernel (munmap, or a trim of the
heap's top), so the next training step's tensors of the same sizes arrive as fresh pages, each
zeroed in a page fault. For the reference VAE that is about a hundred faults a step and 5-15% of
its step time on a 2-core machine (bench/vae_speed.py). PyTorch's CPU tuning guide answers this
with another allocator (jemalloc, tcmalloc) loaded before start; raising glibc's two thresholds has
the same effect from inside the process. The setting is process-wide: freed memory up to `retain`
bytes stays with the process rather than returning to the system.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for this parameter on 64-bit systems

_applied = False


def keep_freed_memory(retain: int = 256 << 20) -> bool:
    """Make glibc serve blocks below 32 MiB from its heap and keep up to `retain` bytes of freed heap.

    Returns whether the setting is in effect (False off Linux or with a C library without mallopt).
    Called by the VAE trainer and evaluator on CPU; calling it again does nothing.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):  # e.g. musl, which has no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, retain))
    return _applied
