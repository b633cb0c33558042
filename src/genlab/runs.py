"""Reading a finished or stopped run: its config, model, training state, data splits and second stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from genlab import checkpoint as ckpt
from genlab.config import RunConfig
from genlab.configfile import from_dict
from genlab.data import ImageData, load_dataset
from genlab.errors import ConfigError, GenlabError
from genlab.models import family
from genlab.models.two_stage import Stage2VAE, TwoStage

STAGE2 = "stage2"  # RUN/stage2/: the 2-Stage VAE's second stage (genlab stage2)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name} requested but this machine has no CUDA GPU; use --device cpu")
    return torch.device(name)


def model_shape(config: RunConfig) -> tuple[int, int]:
    """(channels, square size) of the model's images."""
    m = config.model
    return (m.in_channels, m.image_size) if family(config.family).kind == "vae" else (m.img_shape[0], m.img_shape[-1])


WEIGHTS = ("raw", "ema", "auto")  # which generator a GAN run samples from: its own, the EMA, the EMA if kept


def load_run(path: str, device: str = "auto", weights: str = "raw") -> tuple[RunConfig, torch.nn.Module, dict[str, Any]]:
    """(config, model in eval mode, training state) from a run folder or checkpoint folder; a damaged newest
    checkpoint gives way to the older one kept beside it. weights = "ema" puts the exponential moving average
    of a GAN's generator (train.ema) in place of the generator."""

    def read(folder: Path) -> tuple[RunConfig, torch.nn.Module, dict[str, Any]]:
        config = from_dict(ckpt.load_config_json(folder))
        model = family(config.family).build(config.model)
        ckpt.load_into(model, ckpt.load_weights(folder), folder)
        kept = (folder / ckpt.EMA_FILE).exists()
        if weights == "ema" and not kept:
            raise GenlabError(f"{folder} keeps no EMA generator (train it with --set train.ema=0.999); drop --weights ema")
        if weights in ("ema", "auto") and kept:
            ema = ckpt.ema_generator_weights(ckpt.load_weights(folder, ckpt.EMA_FILE))
            ckpt.load_into(model.generator, ema, folder / ckpt.EMA_FILE)
        state = ckpt.load_state(folder)
        return config, model, state | {"weights": "ema" if weights in ("ema", "auto") and kept else "raw"}

    _, (config, model, state) = ckpt.load_newest(path, read)
    return config, model.to(resolve_device(device)).eval(), state


def splits(config: RunConfig) -> tuple[ImageData, ImageData]:
    """The run's (train, test) images, fitted to the model as in training."""
    channels, size = model_shape(config)
    return load_dataset(config.data, channels, size)


def test_split(config: RunConfig) -> ImageData:
    """The run's test images, fitted to the model as in training."""
    return splits(config)[1]


def load_stage2(run: str | Path, config: RunConfig, vae: torch.nn.Module) -> TwoStage:
    """The run's two stages together; a one-line error when the second one was never fitted."""
    folder = Path(run) / STAGE2
    record = family(config.family)
    if record.kind != "vae" or record.conditional:
        raise GenlabError(f"{run} is not an unconditional VAE run; --stage2 goes with genlab stage2 on a vae run")
    if not (folder / "model.safetensors").exists():
        raise GenlabError(f"{run} has no second stage; fit one with: genlab stage2 {run}")
    again = f"fit it again with: genlab stage2 {run}"
    try:
        # A second stage saved before skip and noise existed had neither: it loads as it was fitted.
        stage2 = Stage2VAE(**{"skip": False, "noise": False, **json.loads((folder / "stage2.json").read_text())["config"]})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GenlabError(f"{folder / 'stage2.json'} is damaged ({_first_line(e)}); {again}") from None
    try:
        stage2.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (OSError, SafetensorError, RuntimeError, ValueError) as e:
        raise GenlabError(f"{folder / 'model.safetensors'} is damaged ({_first_line(e)}); {again}") from None
    device = next(vae.parameters()).device
    return TwoStage(vae, stage2.to(device).eval())


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
