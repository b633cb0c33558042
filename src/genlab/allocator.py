"""glibc malloc settings for CPU training.

glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and unmaps it
on free, so each new tensor of that size is page-faulted in again. The notes' VAE at batch 64 has
64x32x64x64 float activations of 33.5 MiB, and every step allocates a dozen of them: on 2 cores a
BatchNorm + LeakyReLU forward/backward over one took 44 ms with the default allocator and 19 ms
with freed blocks kept for reuse (torch 2.13). PyTorch's CPU tuning guide recommends jemalloc or
tcmalloc through LD_PRELOAD for the same reason; mallopt gets the effect in-process, with no
extra library and nothing to set before Python starts.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Free memory at the top of the heap is handed back to the OS only past this much.
_TRIM_THRESHOLD = 1 << 30

_state = {"tuned": False}


def tune_cpu_allocator() -> bool:
    """Keep freed blocks for reuse (no mmap per large tensor). Returns whether it is in effect.

    Linux glibc only; elsewhere, or with GENLAB_MALLOC=default in the environment, nothing changes.
    Computations are unaffected: only where tensor memory comes from.
    """
    if _state["tuned"]:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("GENLAB_MALLOC", "") == "default":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _state["tuned"] = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    return _state["tuned"]
