"""What machine a figure came from: CPU model and the instruction sets that decide kernel speed."""

from __future__ import annotations

import os
import platform
from pathlib import Path

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
