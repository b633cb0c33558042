"""What a run, a sample request or a picture would need in memory, refused before any work when the
machine cannot hold it: one line with the estimate instead of an allocator traceback minutes in.

Estimates are rough (exact parameter counts; activations as the sum of every layer's output, 0.5-0.9x a
real step's peak) and compared with all of the machine's memory: they refuse only what cannot fit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrize import ParametrizationList

from genlab.errors import ConfigError, GenlabError

FLOAT_BYTES = 4
# Weights, their gradients and Adam's two moments, all float32.
TRAIN_BYTES_PER_PARAMETER = 4 * FLOAT_BYTES
# The operating system, Python and torch's own libraries (CUDA's context, on a GPU).
RESERVE = 2**30
# Sizes a tensor dimension cannot reach: torch indexes with int64, and no machine holds 2**40 of anything.
ABSURD = 2**40


def memory_bytes() -> int:
    """What this machine can give a run: its physical memory, or its container's limit (cgroup v2 or v1)
    where that is lower, less RESERVE."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: nothing to compare with
        return 2**62
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return max(total - RESERVE, total // 2)


def device_memory_bytes(device: str) -> int | None:
    """Memory of the GPU train.device names ("cuda", "cuda:N", "auto" with a GPU); None for the CPU."""
    if device == "auto" and torch.cuda.is_available():
        device = "cuda"
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    try:
        index = int(device.partition(":")[2] or 0)
        return torch.cuda.get_device_properties(index).total_memory - RESERVE
    except (RuntimeError, ValueError, AssertionError):  # a bad index is the device check's to report
        return None


def size_text(n: float) -> str:
    """Bytes in the nearest binary unit: '7.5 GiB', '512 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            break
        n /= 1024
    return f"{n:.1f} {unit}" if n < 100 and unit != "B" else f"{n:.0f} {unit}" if n < 10_000 else f"{n:.3g} {unit}"


def require(need: float, what: str, fix: str, error: type[GenlabError] = GenlabError, available: int | None = None) -> None:
    """Raise error (one line: what needs how much, what the machine has, the fix) when need exceeds available
    (default: memory_bytes())."""
    have = memory_bytes() if available is None else available
    if need > have:
        raise error(f"{what} needs about {size_text(need)} of memory, more than the {size_text(have)} this machine "
                    f"can give; {fix}")  # fmt: skip


def image_shape(kind: str, model: Any) -> tuple[int, int, int]:
    """(channels, height, width) of a model config's images: a GAN's img_shape, a VAE's channels and square size."""
    if kind == "gan":
        return tuple(model.img_shape)
    return model.in_channels, model.image_size, model.image_size


def _sizes(value: Any) -> list[int]:
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _sizes(v)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def _count(tensors: Any) -> int:
    if isinstance(tensors, torch.Tensor):
        return tensors.numel()
    if isinstance(tensors, (list, tuple)):
        return sum(_count(t) for t in tensors)
    return 0


def per_image_activations(kind: str, conditional: bool, model: nn.Module, config: Any) -> int:
    """Floats the layers of a training step output for one image: the sum over every leaf layer's output.

    Runs the model on the meta device (shapes only, no memory): a VAE's encode and decode; a GAN's generator
    and three discriminator passes (real and fake for D's loss, fake again for G's).
    """
    c, h, w = image_shape(kind, config)
    total = [c * h * w]

    def count(module: nn.Module, args: Any, out: Any) -> None:
        total[0] += _count(out)

    # Leaf layers, not spectral norm's parametrizations (their output is a weight, not an activation).
    weights = {id(m) for p in model.modules() if isinstance(p, ParametrizationList) for m in p.modules()}
    leaves = [m for m in model.modules() if not list(m.children()) and id(m) not in weights]
    hooks = [m.register_forward_hook(count) for m in leaves]
    labels = (torch.zeros(1, dtype=torch.long, device="meta"),) if conditional else ()
    try:
        with torch.no_grad():
            model.eval()  # BatchNorm1d refuses a training batch of one; the shapes are the same
            x = torch.empty(1, c, h, w, device="meta")
            z = torch.empty(1, config.latent_dim, device="meta")
            if kind == "vae":
                model.encode(x, *labels)
                model.decode(z, *labels)
            else:
                model.generator(z, *labels)
                before = total[0]
                model.discriminator(x, *labels)
                total[0] += 2 * (total[0] - before)
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]


@contextmanager
def _meta_device() -> Iterator[None]:
    """Build on the meta device (shapes, no memory), skipping spectral norm's power iterations at
    construction: on meta they compute nothing, and torch's Python meta kernels make them cost ~1 s."""
    spectral = getattr(torch.nn.utils.parametrizations, "_SpectralNorm", None)
    power = getattr(spectral, "_power_method", None)
    if power is not None:
        spectral._power_method = lambda self, weight_mat, n_power_iterations: None
    try:
        with torch.device("meta"):
            yield
    finally:
        if power is not None:
            spectral._power_method = power


_FOOTPRINTS: dict[tuple[str, type, Any], tuple[int, int | None]] = {}


def footprint(record: Any, config: Any) -> tuple[int, int | None]:
    """(parameters and buffers, floats of activations per image, None where an op has no meta kernel) of the
    model record builds from config; remembered, as sweeps and resumes load the same model again."""
    key = (record.name, record.model, config)
    try:
        return _FOOTPRINTS[key]
    except KeyError:
        pass
    except TypeError:  # a config holding a list: counted every time
        key = None
    with _meta_device():
        model = record.build(config)
    parameters = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    try:
        per_image = per_image_activations(record.kind, record.conditional, model, config)
    except (RuntimeError, NotImplementedError, TypeError, ValueError, AttributeError):
        per_image = None
    if key is not None:
        if len(_FOOTPRINTS) >= 64:
            _FOOTPRINTS.clear()
        _FOOTPRINTS[key] = (parameters, per_image)
    return parameters, per_image


def check_training(record: Any, config: Any) -> None:
    """Refuse a config whose model and batch cannot fit in memory: one ConfigError line with the estimate."""
    fix = "lower model.latent_dim, the model's widths or model.image_size"
    sizes = {name: _sizes(getattr(config.model, name)) for name in config.model.__dataclass_fields__}
    for name, values in sizes.items():
        if any(n >= ABSURD for n in values):
            raise ConfigError(f"model.{name} holds {max(values):.3g}, more than any machine can build; lower it")
    c, h, w = image_shape(record.kind, config.model)
    t = config.train
    host = memory_bytes()
    available = device_memory_bytes(t.device) or host
    # The batch alone, before building anything: image sizes no model could take stop here.
    require(t.batch_size * c * h * w * FLOAT_BYTES, f"a batch of {t.batch_size:,} {c}x{h}x{w} images",
            "lower train.batch_size or model.image_size", ConfigError, available)  # fmt: skip
    try:
        parameters, per_image = footprint(record, config.model)
    except (RuntimeError, OverflowError, NotImplementedError, TypeError, ValueError) as e:
        if isinstance(e, OverflowError) or "overflow" in str(e).lower():
            cause = str(e).splitlines()[0][:120]
            raise ConfigError(f"the [model] sizes give tensors torch cannot make ({cause}); {fix}") from None
        return  # a model that cannot be built on the meta device: the real build shows any fault of its own
    weights = parameters * TRAIN_BYTES_PER_PARAMETER
    # Built on the CPU first and checkpointed from it, so the host must hold them too.
    what = f"{config.family} with {parameters:,} parameters (weights, gradients, Adam state)"
    require(weights, what, fix, ConfigError, min(available, host))
    if per_image is None:
        return
    batch = t.batch_size * per_image * FLOAT_BYTES  # what backward keeps; measured 0.5-0.9x a real step's peak
    pictures = t.num_samples * per_image * FLOAT_BYTES  # the per-epoch grid: one forward of every sample at once
    if batch >= pictures:
        what = f"training {config.family} at train.batch_size {t.batch_size:,} ({size_text(batch)} of activations)"
        require(weights + batch, what, "lower train.batch_size, model.image_size or the model's widths", ConfigError, available)
    else:
        what = f"drawing train.num_samples = {t.num_samples:,} pictures at once ({size_text(pictures)})"
        require(weights + pictures, what, "lower train.num_samples (64 makes an 8x8 grid)", ConfigError, available)


def check_output(n: int, shape: tuple[int, ...], suffix: str, nrow: int | None = None, scale: int | None = None,
                 frames: int = 1, count_flag: str = "--n") -> None:  # fmt: skip
    """Refuse n (C, H, W) images written as suffix (.npy array; .png/.gif grid enlarged scale times, None: auto)
    when the machine cannot hold them: one GenlabError line naming the flag to lower."""
    from genlab.io import auto_scale

    c, h, w = shape[-3:]
    floats = 2 * n * c * h * w * FLOAT_BYTES  # the drawn chunks and the batch they are joined into
    if suffix.lower() == ".npy":
        require(floats, f"{n:,} images of {c}x{h}x{w} as floats", f"lower {count_flag}")
        return
    nrow = nrow or math.ceil(math.sqrt(n))
    width, height = nrow * (w + 2) + 2, math.ceil(n / nrow) * (h + 2) + 2  # io.make_grid's layout
    factor = scale or auto_scale(width, height)
    pixels = frames * width * height * c * (1 + factor * factor)  # the uint8 grid and its enlargement
    what = f"a grid of {n:,} images of {c}x{h}x{w} enlarged {factor}x ({width * factor:,}x{height * factor:,} pixels)"
    require(floats + pixels, what, f"lower {'--scale' if pixels > floats else count_flag}")
