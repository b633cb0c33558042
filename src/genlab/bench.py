"""`genlab bench`: images/s of genlab's training and sampling paths against a plain PyTorch loop of the
same model, measured in the same process, with FLOPs per image and the share of the device's matmul rate.

The plain loop is the textbook way (as PyTorch-VAE / PyTorch-GAN train): NCHW, a `.item()` every
step, for-loop Adam, and for the GAN the notes' separate D calls and a per-item PIL data loader.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from genlab.allocator import tune_cpu_allocator
from genlab.config import GANLossConfig, VAELossConfig
from genlab.data import ImageData, iterate_batches, to_float
from genlab.losses import gan_d_loss
from genlab.machine import cpu_summary
from genlab.models import GAN, VanillaVAE
from genlab.models.layers import set_fast_paths
from genlab.train.common import Precision, fuse_norm_act, require_cpp_compiler
from genlab.train.gan import gan_step
from genlab.train.vae import objective, vae_step


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


# ---------------------------------------------------------------- the plain loops


def reference_vae(device: torch.device) -> VanillaVAE:
    """VanillaVAE as PyTorch-VAE computes it: direct convolution kernels, out-of-place LeakyReLU."""
    model = set_fast_paths(VanillaVAE().to(device), False)
    for m in model.modules():
        if isinstance(m, nn.LeakyReLU):
            m.inplace = False
    return model


def plain_vae_step(model: VanillaVAE, x: torch.Tensor, opt: torch.optim.Optimizer, kld_weight: float) -> float:
    recons, _, mu, log_var = model(x)
    recons_loss = F.mse_loss(recons, x)
    kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1))
    loss = recons_loss + kld_weight * kld_loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()  # the per-step host sync of a progress bar


def plain_gan_step(gan: GAN, imgs: torch.Tensor, opt_g, opt_d) -> tuple[float, float]:
    """The notes' loop: Sigmoid D, BCE on probabilities, D called separately on real and fake."""
    bce = nn.BCELoss()
    valid, fake = torch.ones(imgs.size(0), 1, device=imgs.device), torch.zeros(imgs.size(0), 1, device=imgs.device)
    opt_g.zero_grad()
    z = torch.randn(imgs.size(0), gan.config.latent_dim, device=imgs.device)
    gen_imgs = gan.generator(z)
    g_loss = bce(gan.discriminator(gen_imgs), valid)
    g_loss.backward()
    opt_g.step()
    opt_d.zero_grad()
    d_loss = (bce(gan.discriminator(imgs), valid) + bce(gan.discriminator(gen_imgs.detach()), fake)) / 2
    d_loss.backward()
    opt_d.step()
    return g_loss.item(), d_loss.item()


class PILDataset(torch.utils.data.Dataset):
    """Per-item PIL image -> tensor in [-1, 1], as a torchvision ToTensor + Normalize pipeline does."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images.numpy()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = Image.fromarray(self.images[i, 0])
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
        return (x - 0.5) / 0.5


def vae_loss_of(model: VanillaVAE, x: torch.Tensor, loss: VAELossConfig) -> torch.Tensor:
    torch.manual_seed(0)  # the same eps for both precisions
    return objective(model, x, loss, 0)["loss"]


def bf16_loss_error(loss_fn: Callable[[nn.Module], torch.Tensor], model: nn.Module, amp: Precision) -> float:
    """|loss_bf16 - loss_fp32| / |loss_fp32| for the same weights and batch: the opt-in's accuracy."""
    with torch.no_grad():
        ref = loss_fn(model).double()
        with amp.autocast():
            low = loss_fn(model).double()
    return (abs(low - ref) / abs(ref)).item()


# ---------------------------------------------------------------- benchmarks


def bench_vae(
    device: torch.device,
    batch_size: int,
    steps: int,
    repeats: int,
    channels_last: bool,
    compile: bool = False,
    fuse: bool | str = "auto",
) -> dict[str, Any]:
    torch.manual_seed(0)
    loss = VAELossConfig()
    x = torch.rand(batch_size, 3, 64, 64, device=device) * 2 - 1
    plain = reference_vae(device)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-4, foreach=False)

    def genlab_vae(fuse_setting: bool | str) -> tuple[VanillaVAE, dict[str, torch.optim.Optimizer], bool]:
        """genlab's model as `genlab train` sets it up, with train.fuse_norm_act = fuse_setting."""
        model = VanillaVAE().to(device)
        model.load_state_dict(plain.state_dict())
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        fused = fuse_norm_act(model, fuse_setting, device, "fp32")
        return model, {"opt": torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)}, fused

    fast, fast_opt, fused = genlab_vae(fuse)
    fx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    engine = torch.compile(fast) if compile else fast  # compiled during the warm-up steps
    step_flops = flops_of(lambda: plain_vae_step(plain, x, plain_opt, loss.kld_weight))
    results = {
        "train": {
            "plain": timed(lambda: plain_vae_step(plain, x, plain_opt, loss.kld_weight), device, steps, repeats),
            # The first step pays any compiling (fused pairs, --compile): reported, not timed.
            "first_step_s": timed(lambda: vae_step(engine, fx, fast_opt, loss, 0), device, 1, 1, warmup=0)[0],
            "genlab": timed(lambda: vae_step(engine, fx, fast_opt, loss, 0), device, steps, repeats),
            "flops_per_image": step_flops / batch_size,
            "batch": batch_size,
        }
    }
    if fused:  # the same model with its BatchNorm + LeakyReLU pairs unfused, for comparison
        unfused, unfused_opt, _ = genlab_vae(False)
        results["train_unfused"] = {
            **{k: v for k, v in results["train"].items() if k != "first_step_s"},
            "plain_of": "train",  # the same plain loop; not timed again in a default-allocator process
            "genlab": timed(lambda: vae_step(unfused, fx, unfused_opt, loss, 0), device, steps, repeats),
        }
    amp = Precision(device.type, torch.bfloat16)
    half, half_opt, _ = genlab_vae(False)  # fusion is fp32-only under auto
    results["train_bf16"] = {
        "plain": results["train"]["plain"],
        "genlab": timed(lambda: vae_step(half, fx, half_opt, loss, 0, amp=amp), device, steps, repeats),
        "flops_per_image": step_flops / batch_size,
        "batch": batch_size,
        "loss_rel_error": bf16_loss_error(lambda m: vae_loss_of(m, x, loss), plain, amp),
    }
    big = torch.rand(256, 3, 64, 64, device=device) * 2 - 1
    fbig = big.contiguous(memory_format=torch.channels_last) if channels_last else big
    plain.eval()
    fast.eval()

    def encode_decode(model: VanillaVAE, inp: torch.Tensor) -> None:
        with torch.no_grad():
            model(inp)

    results["encode_decode"] = {
        "plain": timed(lambda: encode_decode(plain, big), device, max(1, steps // 4), repeats),
        "genlab": timed(lambda: encode_decode(fast, fbig), device, max(1, steps // 4), repeats),
        "flops_per_image": flops_of(lambda: encode_decode(plain, big)) / 256,
        "batch": 256,
    }

    def encode_decode_bf16() -> None:
        with torch.no_grad(), amp.autocast():
            half(fbig)

    half.eval()
    results["encode_decode_bf16"] = {
        **results["encode_decode"],
        "genlab": timed(encode_decode_bf16, device, max(1, steps // 4), repeats),
    }
    return results


def bench_gan(device: torch.device, batch_size: int, steps: int, repeats: int, compile: bool = False) -> dict[str, Any]:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (max(20 * batch_size, 4096), 1, 28, 28), dtype=torch.uint8)
    plain, fast = GAN().to(device), GAN().to(device)
    fast.load_state_dict(plain.state_dict())
    p_g = torch.optim.Adam(plain.generator.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=False)
    p_d = torch.optim.Adam(plain.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=False)
    opts = {
        "opt_g": torch.optim.Adam(fast.generator.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True),
        "opt_d": torch.optim.Adam(fast.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True),
    }
    x = torch.rand(batch_size, 1, 28, 28, device=device) * 2 - 1
    step_flops = flops_of(lambda: plain_gan_step(plain, x, p_g, p_d))
    engine = fast
    if compile:
        from genlab.train.loop import compile_engine

        engine = compile_engine(fast, device)
    results: dict[str, Any] = {
        "train": {
            "plain": timed(lambda: plain_gan_step(plain, x, p_g, p_d), device, steps, repeats),
            "genlab": timed(lambda: gan_step(engine, x, opts, GANLossConfig(), 0), device, steps, repeats),
            "flops_per_image": step_flops / batch_size,
            "batch": batch_size,
        }
    }

    amp = Precision(device.type, torch.bfloat16)
    half = GAN().to(device)
    half.load_state_dict(plain.state_dict())
    half_opts = {
        "opt_g": torch.optim.Adam(half.generator.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True),
        "opt_d": torch.optim.Adam(half.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True),
    }

    def d_loss_of(model: GAN) -> torch.Tensor:
        torch.manual_seed(0)
        fake = model.generator(torch.randn(batch_size, 100, device=device))
        return gan_d_loss(model.discriminator.logits(x), model.discriminator.logits(fake))

    results["train_bf16"] = {
        **results["train"],
        "genlab": timed(lambda: gan_step(half, x, half_opts, GANLossConfig(), 0, amp=amp), device, steps, repeats),
        "loss_rel_error": bf16_loss_error(d_loss_of, plain, amp),
    }

    # End to end: the data path too. Plain: a per-item PIL Dataset in a DataLoader (num_workers=0).
    loader = torch.utils.data.DataLoader(PILDataset(images), batch_size=batch_size, shuffle=True, drop_last=True)
    plain_batches = iter([])
    data = ImageData(images, None, "bench", (28, 28))
    fast_batches = iter([])
    epoch = {"plain": 0, "fast": 0}

    def plain_e2e() -> None:
        nonlocal plain_batches
        batch = next(plain_batches, None)
        if batch is None:
            plain_batches = iter(loader)
            batch = next(plain_batches)
        plain_gan_step(plain, batch.to(device), p_g, p_d)

    def fast_e2e() -> None:
        nonlocal fast_batches
        batch = next(fast_batches, None)
        if batch is None:
            epoch["fast"] += 1
            fast_batches = iterate_batches(data, batch_size, 0, epoch["fast"])
            batch = next(fast_batches)
        gan_step(fast, to_float(batch.to(device)), opts, GANLossConfig(), 0)

    results["train_end_to_end"] = {
        "plain": timed(plain_e2e, device, steps, repeats),
        "genlab": timed(fast_e2e, device, steps, repeats),
        "flops_per_image": step_flops / batch_size,
        "batch": batch_size,
    }
    fast.eval()
    plain.eval()

    def sample(model: GAN) -> None:
        with torch.no_grad():
            model.generator(torch.randn(256, 100, device=device))

    results["sample"] = {
        "plain": timed(lambda: sample(plain), device, steps, repeats),
        "genlab": timed(lambda: sample(fast), device, steps, repeats),
        "flops_per_image": flops_of(lambda: sample(plain)) / 256,
        "batch": 256,
    }
    return results


def plain_zoo_step(
    family: str, model: nn.Module, imgs: torch.Tensor, opt_g, opt_d, step: int, loss, labels: torch.Tensor | None = None
) -> float:
    """The textbook loop of a model beyond the notes: separate D calls, the loss written out, a host sync.

    DCGAN: BCE on the Sigmoid (pytorch/examples' dcgan); SNGAN and the conditional GAN: the hinge loss;
    WGAN-GP: Gulrajani et al.'s Algorithm 1, a critic step with its gradient penalty every step, G
    every n_critic steps; the conditional VAE: the notes' loss with the labels (opt_g its optimiser).
    """
    if family == "cvae":
        recons, _, mu, logvar = model(imgs, labels)
        kld = torch.mean(-0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1), dim=0)
        vae_loss = F.mse_loss(recons, imgs) + loss.kld_weight * loss.beta * kld
        opt_g.zero_grad()
        vae_loss.backward()
        opt_g.step()
        return vae_loss.item()
    cond = () if labels is None else (labels,)
    g, d = (lambda z: model.generator(z, *cond)), (lambda x, **kw: model.discriminator(x, *cond, **kw))
    z = torch.randn(imgs.size(0), model.config.latent_dim, device=imgs.device)
    if family == "wgan-gp":
        fake = g(z).detach()
        opt_d.zero_grad()
        d_loss = d(fake).mean() - d(imgs).mean()
        if loss.gp_weight:
            eps = torch.rand(imgs.size(0), 1, 1, 1, device=imgs.device)
            x_hat = (eps * imgs + (1 - eps) * fake).requires_grad_(True)
            grad = torch.autograd.grad(d(x_hat).sum(), x_hat, create_graph=True)[0]
            d_loss = d_loss + loss.gp_weight * ((grad.view(grad.size(0), -1).norm(2, dim=1) - 1) ** 2).mean()
        d_loss.backward()
        opt_d.step()
        if (step + 1) % loss.n_critic == 0:
            opt_g.zero_grad()
            g_loss = -d(g(z)).mean()
            g_loss.backward()
            opt_g.step()
        return d_loss.item()
    hinge = getattr(loss, "adversarial", "bce") == "hinge"
    bce = nn.BCELoss()
    ones, zeros = torch.ones(imgs.size(0), 1, device=imgs.device), torch.zeros(imgs.size(0), 1, device=imgs.device)
    opt_g.zero_grad()
    fake = g(z)
    g_loss = -d(fake, logits=True).mean() if hinge else bce(d(fake), ones)
    g_loss.backward()
    opt_g.step()
    opt_d.zero_grad()
    if hinge:
        d_loss = F.relu(1 - d(imgs, logits=True)).mean() + F.relu(1 + d(fake.detach(), logits=True)).mean()
    else:
        d_loss = (bce(d(imgs), ones) + bce(d(fake.detach()), zeros)) / 2
    d_loss.backward()
    opt_d.step()
    return d_loss.item()


def bench_zoo(family: str, device: torch.device, batch_size: int, steps: int, repeats: int) -> dict[str, Any]:
    """A model beyond the notes at its shipped settings: genlab's step against plain_zoo_step, same weights."""
    import copy
    from dataclasses import replace

    from genlab.config import load_config
    from genlab.models import build_model, is_conditional, kind
    from genlab.train import FAMILIES

    config = load_config(family, None, {})
    torch.manual_seed(0)
    plain = build_model(family, config.model).to(device)
    fast = copy.deepcopy(plain)
    t, m = config.train, config.model
    adam = lambda module: torch.optim.Adam(module.parameters(), lr=t.lr, betas=t.betas, foreach=False)  # noqa: E731
    p_g, p_d = (adam(plain), None) if kind(family) == "vae" else (adam(plain.generator), adam(plain.discriminator))
    opts = FAMILIES[family].make_optimizers(fast, config)
    shape = (m.in_channels, m.image_size, m.image_size) if kind(family) == "vae" else m.img_shape
    x = torch.rand(batch_size, *shape, device=device) * 2 - 1
    labels = torch.arange(batch_size, device=device) % m.num_classes if is_conditional(family) else None
    if t.channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    x_fast = x.contiguous(memory_format=torch.channels_last) if t.channels_last else x
    x_fast = (x_fast, labels) if labels is not None else x_fast
    counter = {"plain": 0, "genlab": 0}

    def plain_step() -> None:
        plain_zoo_step(family, plain, x, p_g, p_d, counter["plain"], config.loss, labels)
        counter["plain"] += 1

    def fast_step() -> None:
        FAMILIES[family].step(fast, x_fast, opts, config.loss, counter["genlab"])
        counter["genlab"] += 1

    # The flop counter cannot follow the gradient penalty's double backward: WGAN-GP's figure leaves it out.
    counted = replace(config.loss, gp_weight=0.0) if family == "wgan-gp" else config.loss
    flops = flops_of(lambda: plain_zoo_step(family, copy.deepcopy(plain), x, p_g, p_d, 0, counted, labels))
    return {
        "train": {
            "plain": timed(plain_step, device, steps, repeats),
            "genlab": timed(fast_step, device, steps, repeats),
            "flops_per_image": flops / batch_size,
            "batch": batch_size,
        }
    }


def probe_memory(family: str, path: str, batch_size: int, device: torch.device, steps: int = 5) -> int:
    """Peak memory (bytes) of `steps` training steps of one path: CUDA allocator peak, or this process's peak RSS."""
    if path == "genlab":
        tune_cpu_allocator()
    torch.manual_seed(0)
    if family == "vae":
        model = reference_vae(device) if path == "plain" else VanillaVAE().to(device)
        x = torch.rand(batch_size, 3, 64, 64, device=device) * 2 - 1
        if path == "plain":
            opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=False)
            step = lambda: plain_vae_step(model, x, opt, VAELossConfig().kld_weight)  # noqa: E731
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
            step = lambda: plain_gan_step(model, x, o_g, o_d)  # noqa: E731
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


def peak_memory(family: str, batch_size: int, device: torch.device, processes: int = PEAK_MEMORY_PROCESSES) -> dict[str, int]:
    """{path: peak bytes}; on CPU the median over `processes` fresh processes per path, taken in
    turn (one process's peak RSS varied by +-20 MiB from run to run), so the peaks do not mix."""
    if device.type == "cuda":
        return {path: probe_memory(family, path, batch_size, device) for path in ("plain", "genlab")}
    samples: dict[str, list[int]] = {"plain": [], "genlab": []}
    for _ in range(processes):
        for path in samples:
            call = f"probe_memory({family!r}, {path!r}, {batch_size}, torch.device('cpu'))"
            samples[path].append(int(in_fresh_process(call, default_malloc=path == "plain")))
    return {path: int(statistics.median(peaks)) for path, peaks in samples.items()}


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
    family: str,
    device: torch.device,
    batch_size: int,
    steps: int,
    repeats: int,
    channels_last: bool,
    compile: bool,
    fuse: bool | str = "auto",
) -> dict[str, Any]:
    if family == "vae":
        return bench_vae(device, batch_size, steps, repeats, channels_last, compile, fuse)
    if family == "gan":
        return bench_gan(device, batch_size, steps, repeats, compile)
    return bench_zoo(family, device, batch_size, steps, repeats)


def plain_in_default_process(family: str, batch_size: int, steps: int, repeats: int) -> dict[str, list[float]]:
    """{workload: seconds per step} of the plain loops in a fresh process with glibc's default malloc:
    the reference as its users run it (this process has genlab's allocator setting)."""
    import json

    call = f"json.dumps(raw_bench({family!r}, torch.device('cpu'), {batch_size}, {steps}, {repeats}, False, False, False))"
    raw = json.loads(in_fresh_process(call, default_malloc=True))
    return {name: row["plain"] for name, row in raw.items()}


def run_bench(
    family: str,
    device: torch.device,
    batch_size: int = 64,
    steps: int = 20,
    repeats: int = 5,
    channels_last: bool = True,
    compile: bool = False,
    fuse: bool | str = "auto",
) -> dict[str, Any]:
    if fuse is True:
        require_cpp_compiler("--fuse-norm-act=true", device, fix="use --fuse-norm-act=auto")
    tuned = device.type == "cpu" and tune_cpu_allocator()
    rate = matmul_rate(device)
    raw = raw_bench(family, device, batch_size, steps, repeats, channels_last, compile, fuse)
    if tuned:
        # Ratios are against the reference as users run it; the same-allocator ratio is kept beside them.
        default = plain_in_default_process(family, batch_size, steps, repeats)
        for name, row in raw.items():
            row["plain_same_allocator"], row["plain"] = row["plain"], default[row.get("plain_of", name)]
    memory = peak_memory(family, batch_size, device) if family in ("vae", "gan") else None
    return {
        "family": family,
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
        what = f"peak RSS of the train step (median of {PEAK_MEMORY_PROCESSES} processes)"
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
