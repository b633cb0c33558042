"""`genlab bench`: images/s of genlab's training and sampling paths against the textbook loop of the same
model, measured in the same process, with FLOPs per image and the share of the device's matmul rate.

The textbook loop (bench/textbook.py) is the way the references train: NCHW, a `.item()` every step,
for-loop Adam, and for the GAN the notes' separate D calls and a per-item PIL data loader.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from genlab.allocator import tune_cpu_allocator
from genlab.bench.memory import PEAK_MEMORY_PROCESSES, in_fresh_process, peak_memory, probe_memory
from genlab.bench.textbook import notes_gan_step, notes_vae_step
from genlab.bench.timing import matmul_rate
from genlab.bench.workloads import bench_gan, bench_vae, bench_zoo
from genlab.machine import cpu_summary
from genlab.train.common import require_cpp_compiler

NOTES_BENCHES = {"vae": bench_vae, "gan": bench_gan}


def summarise(results: dict[str, Any], rate: float) -> dict[str, Any]:
    """Medians, images/s, ratio and share of the matmul rate for each workload."""
    out = {}
    for name, r in results.items():
        plain, fast = statistics.median(r["plain"]), statistics.median(r["genlab"])
        row = {"batch": r["batch"], "flops_per_image": r["flops_per_image"]}
        for label, sec in (("plain", plain), ("genlab", fast)):
            ips = r["batch"] / sec
            row[label] = {
                "ms_per_step": sec * 1e3,
                "images_per_s": ips,
                "share_of_matmul_rate": ips * r["flops_per_image"] / rate,
            }
        row["speedup"] = plain / fast
        if "plain_same_allocator" in r:
            row["speedup_same_allocator"] = statistics.median(r["plain_same_allocator"]) / fast
        for key in ("loss_rel_error", "first_step_s"):
            if key in r:
                row[key] = r[key]
        out[name] = row
    return out


def raw_bench(
    name: str,
    device: torch.device,
    batch_size: int,
    steps: int,
    repeats: int,
    channels_last: bool,
    compile: bool,
    fuse: bool | str = "auto",
    eval_batch: int = 256,
) -> dict[str, Any]:
    """The raw timings of one family's workloads: the notes' two have benches of their own (end to end,
    sampling or encode + decode at `eval_batch`, bf16, peak memory), the rest share bench_zoo."""
    if name in NOTES_BENCHES:
        options = {"channels_last": channels_last, "compile": compile, "fuse": fuse, "eval_batch": eval_batch}
        return NOTES_BENCHES[name](device, batch_size, steps, repeats, **options)
    return bench_zoo(name, device, batch_size, steps, repeats)


def plain_in_default_process(name: str, batch_size: int, steps: int, repeats: int, eval_batch: int) -> dict[str, list[float]]:
    """{workload: seconds per step} of the plain loops in a fresh process with glibc's default malloc:
    the reference as its users run it (this process has genlab's allocator setting)."""
    import json

    args = f"{name!r}, torch.device('cpu'), {batch_size}, {steps}, {repeats}, False, False, False, {eval_batch}"
    call = f"json.dumps(raw_bench({args}))"
    raw = json.loads(in_fresh_process(call, default_malloc=True))
    return {name: row["plain"] for name, row in raw.items()}


def run_bench(
    name: str,
    device: torch.device,
    batch_size: int = 64,
    steps: int = 20,
    repeats: int = 5,
    channels_last: bool = True,
    compile: bool = False,
    fuse: bool | str = "auto",
    eval_batch: int = 256,
    memory_processes: int = PEAK_MEMORY_PROCESSES,
) -> dict[str, Any]:
    if fuse is True:
        require_cpp_compiler("--fuse-norm-act=true", device, fix="use --fuse-norm-act=auto")
    tuned = device.type == "cpu" and tune_cpu_allocator()
    rate = matmul_rate(device)
    raw = raw_bench(name, device, batch_size, steps, repeats, channels_last, compile, fuse, eval_batch)
    if tuned:
        # Ratios are against the reference as users run it; the same-allocator ratio is kept beside them.
        default = plain_in_default_process(name, batch_size, steps, repeats, eval_batch)
        for workload, row in raw.items():
            row["plain_same_allocator"], row["plain"] = row["plain"], default[row.get("plain_of", workload)]
    memory = peak_memory(name, batch_size, device, memory_processes) if name in NOTES_BENCHES else None
    return {
        "family": name,
        "device": str(device),
        # Ratios move with the CPU (its kernels, its allocator costs): every figure carries the machine.
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_summary(),
        "peak_memory_bytes": memory,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_gflops": rate / 1e9,
        "repeats": repeats,
        "steps": steps,
        "allocator": "genlab (glibc mallopt) vs default for the plain loop" if tuned else "default for both",
        "options": {
            "channels_last": channels_last,
            "compile": compile,
            "fuse_norm_act": fuse,
            "batch_size": batch_size,
            "eval_batch": eval_batch,
            "memory_processes": memory_processes,
        },
        "workloads": summarise(raw, rate),
    }


def format_bench(result: dict[str, Any]) -> str:
    lines = [
        f"{result['family']} on {result['device']} ({result['threads']} threads, torch {result['torch']}), "
        f"matmul {result['matmul_gflops']:.0f} GFLOP/s; medians of {result['repeats']} x {result['steps']} steps",
        f"{'workload':<18}{'batch':>6}{'MFLOP/img':>10}{'plain img/s':>13}{'genlab img/s':>14}"
        f"{'ms/step':>9}{'share':>7}{'speedup':>9}{'same alloc.':>12}",
    ]
    lines.insert(1, f"machine: {result.get('machine', 'not recorded')}")
    lines.insert(2, f"allocator: {result.get('allocator', 'default for both')}")
    mem = result.get("peak_memory_bytes")
    if mem:
        processes = result["options"].get("memory_processes", PEAK_MEMORY_PROCESSES)
        what = f"peak RSS of the train step (median of {processes} processes)"
        if result["device"].startswith("cuda"):
            what = "peak CUDA memory"
        lines.append(f"{what}: plain {mem['plain'] / 2**20:.0f} MiB, genlab {mem['genlab'] / 2**20:.0f} MiB")
    for name, r in result["workloads"].items():
        g, p = r["genlab"], r["plain"]
        lines.append(
            f"{name:<18}{r['batch']:>6}{r['flops_per_image'] / 1e6:>10.1f}{p['images_per_s']:>13.0f}{g['images_per_s']:>14.0f}"
            f"{g['ms_per_step']:>9.2f}{g['share_of_matmul_rate']:>7.0%}{r['speedup']:>8.2f}x"
            + (f"{r['speedup_same_allocator']:>11.2f}x" if "speedup_same_allocator" in r else "")
            + (f"  (loss rel. error vs fp32 {r['loss_rel_error']:.1e})" if "loss_rel_error" in r else "")
            + (f"  (first step {r['first_step_s']:.1f} s)" if r.get("first_step_s", 0) > 1 else "")
        )
    return "\n".join(lines)


__all__ = ["bench_zoo", "format_bench", "notes_gan_step", "notes_vae_step", "probe_memory", "raw_bench", "run_bench"]
