"""Drawing samples from a trained model, in chunks, from a seeded generator; and the classes to ask for."""

from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor, nn

from genlab.errors import GenlabError


@torch.no_grad()
def draw(
    model: nn.Module,
    n: int,
    generator: torch.Generator,
    labels: Tensor | None = None,
    chunk: int = 500,
    temperature: float = 1.0,
) -> Tensor:
    """n samples in [-1, 1] on the CPU, chunk at a time (memory stays bounded for any n).

    labels: the class of each sample for a conditional model; None lets the model choose (every class
    in turn, within each chunk). temperature: the prior's spread, z = mu + temperature * sigma * eps
    (below 1 trades diversity for typical samples, as Kingma & Dhariwal 2018 and Brock et al. 2019 sample).
    """
    device = next(model.parameters()).device
    hot = {}
    if temperature != 1:  # a family registered at run time may have a sample() without the keyword
        if "temperature" not in inspect.signature(model.sample).parameters:
            raise GenlabError(
                f"--temperature: {type(model).__name__}.sample() takes no temperature; drop --temperature "
                "or give it a `temperature: float = 1.0` keyword"
            )
        hot = {"temperature": temperature}
    out = []
    for i in range(0, n, chunk):
        kw = {} if labels is None else {"labels": labels[i : i + chunk].to(device)}
        out.append(model.sample(min(chunk, n - i), generator=generator, **kw, **hot).cpu())
    return torch.cat(out)


def generate(model: nn.Module, n: int, seed: int, batch_size: int = 500, temperature: float = 1.0) -> Tensor:
    """n samples in [-1, 1] from a fixed generator: the same run and seed give the same images."""
    device = next(model.parameters()).device
    model.eval()
    return draw(model, n, torch.Generator(device).manual_seed(seed), chunk=batch_size, temperature=temperature)


def check_temperature(value: float) -> float:
    """--temperature, refused unless a finite number >= 0 (0: every sample the prior's mean)."""
    if not math.isfinite(value) or value < 0:
        raise GenlabError(f"--temperature must be a finite number >= 0 (1: the prior itself), got {value}")
    return value


def generated_labels(model: nn.Module, n: int, batch_size: int = 500) -> Tensor | None:
    """The classes generate() asked a conditional model for (each chunk's classes in turn); None otherwise."""
    classes = getattr(model.config, "num_classes", None)
    if classes is None:
        return None
    return torch.cat([torch.arange(min(batch_size, n - i)) % classes for i in range(0, n, batch_size)])


BN_MODES = ("eval", "standing")


@torch.no_grad()
def standing_statistics(model: nn.Module, n: int = 10_000, batch_size: int = 500, seed: int = 0) -> nn.Module:
    """Recompute a GAN generator's BatchNorm statistics over n fresh samples ("standing statistics",
    Brock et al. 2019): each running mean and variance becomes the plain average over the batches,
    as a sampling-time generator sees them, instead of the training run's exponential average."""
    g = model.generator
    norms = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    device = next(g.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    g.train()
    classes = getattr(model.config, "num_classes", None)
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        z = torch.randn(b, model.config.latent_dim, device=device, generator=gen)
        g(z, *(() if classes is None else (torch.arange(b, device=device) % classes,)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    g.eval()
    return model


def class_labels(wanted: str | None, name: str, num_classes: int | None, n: int) -> tuple[Tensor | None, int | None]:
    """(the class of each of n samples, the grid's row length) for `--class K` or `--class all`."""
    if wanted is None:
        return None, None
    if num_classes is None:
        raise GenlabError(f"--class needs a class-conditional run (cgan, cvae); this is a {name} run: drop --class")
    if wanted == "all":
        per_class = max(1, n // num_classes)
        if n % num_classes:
            raise GenlabError(
                f"--class all draws a row per class: make --n a multiple of {num_classes} (e.g. {num_classes * per_class})"
            )
        return torch.arange(num_classes).repeat_interleave(per_class), per_class
    if not (wanted.isascii() and wanted.isdigit()) or int(wanted) >= num_classes:
        raise GenlabError(f"--class must be a class in 0..{num_classes - 1} or 'all', got {wanted}")
    return torch.full((n,), int(wanted)), None
