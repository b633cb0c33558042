"""Peak memory of a training step, each path in a fresh process (one process's peak cannot be reset)."""

from __future__ import annotations

import statistics

import torch

from genlab.allocator import tune_cpu_allocator
from genlab.bench.textbook import notes_gan_step, notes_vae_step, reference_vae
from genlab.config import GANLossConfig, VAELossConfig
from genlab.models import GAN, VanillaVAE
from genlab.train.common import fuse_norm_act
from genlab.train.gan import gan_step
from genlab.train.vae import vae_step


def probe_memory(kind: str, path: str, batch_size: int, device: torch.device, steps: int = 5) -> int:
    """Peak memory (bytes) of `steps` training steps of one path: CUDA allocator peak, or this process's peak RSS."""
    if path == "genlab":
        tune_cpu_allocator()
    torch.manual_seed(0)
    if kind == "vae":
        model = reference_vae(device) if path == "plain" else VanillaVAE().to(device)
        x = torch.rand(batch_size, 3, 64, 64, device=device) * 2 - 1
        if path == "plain":
            opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=False)
            step = lambda: notes_vae_step(model, x, opt, VAELossConfig().kld_weight)  # noqa: E731
        else:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
            fuse_norm_act(model, "auto", device, "fp32")  # as `genlab train` runs it
            opts = {"opt": torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)}
            step = lambda: vae_step(model, x, opts, VAELossConfig(), 0)  # noqa: E731
    else:
        model = GAN().to(device)
        x = torch.rand(batch_size, 1, 28, 28, device=device) * 2 - 1
        kw = {"foreach": False} if path == "plain" else {"fused": True}
        o_g = torch.optim.Adam(model.generator.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
        o_d = torch.optim.Adam(model.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
        if path == "plain":
            step = lambda: notes_gan_step(model, x, o_g, o_d)  # noqa: E731
        else:
            step = lambda: gan_step(model, x, {"opt_g": o_g, "opt_d": o_d}, GANLossConfig(), 0)  # noqa: E731
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        step()
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    # VmHWM: this address space's peak RSS (ru_maxrss would carry the parent's peak across exec).
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def in_fresh_process(expression: str, default_malloc: bool) -> str:
    """The printed value of a genlab.bench expression evaluated in a new Python process."""
    import os
    import subprocess
    import sys

    code = f"import json, torch; from genlab.bench import probe_memory, raw_bench; print({expression})"
    env = {**os.environ, "GENLAB_MALLOC": "default" if default_malloc else ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return done.stdout.strip().splitlines()[-1]


PEAK_MEMORY_PROCESSES = 3


def peak_memory(kind: str, batch_size: int, device: torch.device, processes: int = PEAK_MEMORY_PROCESSES) -> dict[str, int]:
    """{path: peak bytes}; on CPU the median over `processes` fresh processes per path, taken in
    turn (one process's peak RSS varied by +-20 MiB from run to run), so the peaks do not mix."""
    if device.type == "cuda":
        return {path: probe_memory(kind, path, batch_size, device) for path in ("plain", "genlab")}
    samples: dict[str, list[int]] = {"plain": [], "genlab": []}
    for _ in range(processes):
        for path in samples:
            call = f"probe_memory({kind!r}, {path!r}, {batch_size}, torch.device('cpu'))"
            samples[path].append(int(in_fresh_process(call, default_malloc=path == "plain")))
    return {path: int(statistics.median(peaks)) for path, peaks in samples.items()}
