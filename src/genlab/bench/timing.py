"""Timing and counting: seconds per call, the device's matmul rate, FLOPs of a step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, steps: int, repeats: int, warmup: int = 3) -> list[float]:
    """Seconds per call of fn, one figure per repeat of `steps` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        out.append((time.perf_counter() - t0) / steps)
    return out


def timed_in_turn(
    fns: dict[str, Callable[[], Any]], device: torch.device, steps: int, repeats: int, warmup: int = 3
) -> dict[str, list[float]]:
    """timed() of several workloads, their repeats taken in turn: a machine whose speed drifts during the
    bench (a neighbour's load, clocks) moves all of them alike instead of the one timed last."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name] += timed(fn, device, steps, 1, warmup=0)
    return out


def matmul_rate(device: torch.device, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    """Measured FLOP/s of a large square matmul: the device's practical ceiling."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    per = statistics.median(timed(lambda: a @ b, device, steps=5, repeats=3))
    return 2 * n**3 / per


def flops_of(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()
