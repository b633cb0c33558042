"""The workloads `genlab bench` times: the notes' VAE and GAN and the models beyond them, genlab's paths
against the textbook loops (bench/textbook.py) of the same model and weights."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from genlab.bench.textbook import TEXTBOOK, PILDataset, notes_gan_step, notes_vae_step, reference_vae
from genlab.bench.timing import flops_of, timed, timed_in_turn
from genlab.config import GANLossConfig, VAELossConfig
from genlab.configfile import load_config
from genlab.data import ImageData, iterate_batches, to_float
from genlab.losses import gan_d_loss
from genlab.models import GAN, VanillaVAE, family
from genlab.train import trainer_for
from genlab.train.common import Precision, compile_engine, fuse_norm_act
from genlab.train.gan import gan_step
from genlab.train.vae import objective, vae_step


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


def bench_vae(
    device: torch.device,
    batch_size: int,
    steps: int,
    repeats: int,
    channels_last: bool,
    compile: bool = False,
    fuse: bool | str = "auto",
    eval_batch: int = 256,
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
    step_flops = flops_of(lambda: notes_vae_step(plain, x, plain_opt, loss.kld_weight))
    results = {
        "train": {
            "plain": timed(lambda: notes_vae_step(plain, x, plain_opt, loss.kld_weight), device, steps, repeats),
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
    big = torch.rand(eval_batch, 3, 64, 64, device=device) * 2 - 1
    fbig = big.contiguous(memory_format=torch.channels_last) if channels_last else big
    plain.eval()
    fast.eval()

    def encode_decode(model: VanillaVAE, inp: torch.Tensor) -> None:
        with torch.no_grad():
            model(inp)

    results["encode_decode"] = {
        "plain": timed(lambda: encode_decode(plain, big), device, max(1, steps // 4), repeats),
        "genlab": timed(lambda: encode_decode(fast, fbig), device, max(1, steps // 4), repeats),
        "flops_per_image": flops_of(lambda: encode_decode(plain, big)) / eval_batch,
        "batch": eval_batch,
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


def bench_gan(
    device: torch.device,
    batch_size: int,
    steps: int,
    repeats: int,
    channels_last: bool = False,  # the MLP has no convolutions: NHWC and fusion do not apply
    compile: bool = False,
    fuse: bool | str = False,
    eval_batch: int = 256,
) -> dict[str, Any]:
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
    step_flops = flops_of(lambda: notes_gan_step(plain, x, p_g, p_d))
    engine = fast
    if compile:
        engine = compile_engine(fast, device)
    results: dict[str, Any] = {
        "train": {
            "plain": timed(lambda: notes_gan_step(plain, x, p_g, p_d), device, steps, repeats),
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
        notes_gan_step(plain, batch.to(device), p_g, p_d)

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
            model.generator(torch.randn(eval_batch, 100, device=device))

    results["sample"] = {
        "plain": timed(lambda: sample(plain), device, steps, repeats),
        "genlab": timed(lambda: sample(fast), device, steps, repeats),
        "flops_per_image": flops_of(lambda: sample(plain)) / eval_batch,
        "batch": eval_batch,
    }
    return results


def bench_zoo(name: str, device: torch.device, batch_size: int, steps: int, repeats: int) -> dict[str, Any]:
    """A model beyond the notes at its shipped settings: genlab's step against its textbook step, same weights."""
    config = load_config(name, None, {})
    record, trainer = family(name), trainer_for(family(name))
    textbook = TEXTBOOK[record.trainer]
    torch.manual_seed(0)
    plain = record.build(config.model).to(device)
    fast = copy.deepcopy(plain)
    t, m = config.train, config.model
    adam = lambda module: torch.optim.Adam(module.parameters(), lr=t.lr, betas=t.betas, foreach=False)  # noqa: E731
    if record.kind == "vae":  # a FactorVAE's discriminator has an optimiser of its own
        vae_params = plain.vae_parameters() if hasattr(plain, "vae_parameters") else plain.parameters()
        p_g = torch.optim.Adam(vae_params, lr=t.lr, betas=t.betas, foreach=False)
        p_d = adam(plain.discriminator) if hasattr(plain, "discriminator") else None
    else:
        p_g, p_d = adam(plain.generator), adam(plain.discriminator)
    opts = trainer.make_optimizers(fast, config)
    shape = (m.in_channels, m.image_size, m.image_size) if record.kind == "vae" else m.img_shape
    x = torch.rand(batch_size, *shape, device=device) * 2 - 1
    labels = torch.arange(batch_size, device=device) % m.num_classes if record.conditional else None
    if t.channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    x_fast = x.contiguous(memory_format=torch.channels_last) if t.channels_last else x
    x_fast = (x_fast, labels) if labels is not None else x_fast
    counter = {"plain": 0, "genlab": 0}

    def plain_step() -> None:
        textbook(plain, x, p_g, p_d, counter["plain"], config.loss, labels)
        counter["plain"] += 1

    def fast_step() -> None:
        trainer.step(fast, x_fast, opts, config.loss, counter["genlab"])
        counter["genlab"] += 1

    # The flop counter cannot follow the gradient penalty's double backward: WGAN-GP's figure leaves it out.
    counted = replace(config.loss, gp_weight=0.0) if hasattr(config.loss, "gp_weight") else config.loss
    flops = flops_of(lambda: textbook(copy.deepcopy(plain), x, p_g, p_d, 0, counted, labels))
    # train.precision = "bf16": the same step under bfloat16 autocast, from the same starting weights.
    amp = Precision(device.type, torch.bfloat16)
    half = copy.deepcopy(plain)
    half_opts = trainer.make_optimizers(half, config)
    if t.channels_last:
        half = half.to(memory_format=torch.channels_last)
    counter["half"] = 0
    error = bf16_step_error(half, x_fast, config, trainer, amp)  # before the timed steps move its weights

    def half_step() -> None:
        trainer.step(half, x_fast, half_opts, config.loss, counter["half"], amp=amp)
        counter["half"] += 1

    times = timed_in_turn({"plain": plain_step, "genlab": fast_step, "bf16": half_step}, device, steps, repeats)
    train = {"plain": times["plain"], "genlab": times["genlab"], "flops_per_image": flops / batch_size, "batch": batch_size}
    bf16 = {**train, "plain_of": "train", "genlab": times["bf16"], "loss_rel_error": error}
    return {"train": train, "train_bf16": bf16}


def bf16_step_error(model: nn.Module, batch: Any, config: Any, trainer: Any, amp: Precision) -> float:
    """|loss_bf16 - loss_fp32| / |loss_fp32| of the first logged term of one step from the same weights, noise
    and batch: the opt-in's accuracy for a model beyond the notes."""
    terms = []
    for precision in (Precision(), amp):
        copy_ = copy.deepcopy(model)
        torch.manual_seed(0)
        out = trainer.step(copy_, batch, trainer.make_optimizers(copy_, config), config.loss, 0, amp=precision)
        terms.append(out[trainer.log_keys[0]].double())
    return (abs(terms[1] - terms[0]) / abs(terms[0])).item()
