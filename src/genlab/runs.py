"""Reading a finished or stopped run: its config, model, training state, data splits and second stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
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


def load_run(path: str, device: str = "auto") -> tuple[RunConfig, torch.nn.Module, dict[str, Any]]:
    """(config, model in eval mode, training state) from a run folder or checkpoint folder."""
    folder = ckpt.find_checkpoint(path)
    config = from_dict(ckpt.load_config_json(folder))
    model = family(config.family).build(config.model)
    ckpt.load_into(model, ckpt.load_weights(folder), folder)
    state = ckpt.load_state(folder)
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
    info = json.loads((folder / "stage2.json").read_text())
    stage2 = Stage2VAE(**info["config"])
    stage2.load_state_dict(load_file(str(folder / "model.safetensors")))
    device = next(vae.parameters()).device
    return TwoStage(vae, stage2.to(device).eval())
