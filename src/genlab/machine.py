"""What machine a figure came from: CPU model and the instruction sets that decide kernel speed."""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

# The flags that choose oneDNN's and OpenBLAS's kernels; the rest of /proc/cpuinfo does not move figures.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_fp16")


def cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def cpu_summary() -> str:
    """e.g. 'AMD EPYC (family 25, model 17), 2 cores, avx2 fma avx512f avx512_bf16'."""
    info = cpu_info()
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    flags = set(info.get("flags", "").split())
    kernel = " ".join(f for f in KERNEL_FLAGS if f in flags) or "no AVX2"
    return f"{name}, {os.cpu_count()} cores, {kernel}"


def flushing_denormals() -> bool:
    """Whether this thread's CPU float mode flushes subnormals to zero (FTZ/DAZ)."""
    return bool(torch.tensor(1e-39) * 1.0 == 0)  # a subnormal input reads as 0 under DAZ


def set_flush_denormal_all_threads(on: bool) -> bool:
    """torch.set_flush_denormal in this thread and in every thread of torch's OpenMP team.

    The mode is a per-thread register (MXCSR) and torch sets only the calling thread's, so without this
    the other cores keep computing subnormals slowly. Runs a parallel region of torch's own libgomp whose
    body sets each thread's mode. Returns False where that library is absent (then only this thread).
    """
    torch.set_flush_denormal(on)
    path = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    try:
        gomp = ctypes.CDLL(str(path)) if path.exists() else None
    except OSError:
        gomp = None
    if gomp is None or not hasattr(gomp, "GOMP_parallel"):
        return False
    body = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: torch.set_flush_denormal(on))
    gomp.GOMP_parallel.argtypes = [type(body), ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    gomp.GOMP_parallel(body, None, torch.get_num_threads(), 0)
    return True


@contextmanager
def flush_denormals(on: bool) -> Iterator[None]:
    """Flush subnormals to zero on every CPU thread inside the block, then restore this thread's mode."""
    was = flushing_denormals()
    if on:
        set_flush_denormal_all_threads(True)
    try:
        yield
    finally:
        if on:
            set_flush_denormal_all_threads(was)
