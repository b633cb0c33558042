"""Reading a finished or stopped run: its config, model and training state."""

from __future__ import annotations

from typing import Any

import torch

from genlab import checkpoint as ckpt
from genlab.config import RunConfig, from_dict
from genlab.data import ImageData, load_dataset
from genlab.errors import ConfigError
from genlab.models import build_model, kind


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name} requested but this machine has no CUDA GPU; use --device cpu")
    return torch.device(name)


def model_shape(config: RunConfig) -> tuple[int, int]:
    """(channels, square size) of the model's images."""
    m = config.model
    return (m.in_channels, m.image_size) if kind(config.family) == "vae" else (m.img_shape[0], m.img_shape[-1])


def load_run(path: str, device: str = "auto") -> tuple[RunConfig, torch.nn.Module, dict[str, Any]]:
    """(config, model in eval mode, training state) from a run folder or checkpoint folder."""
    folder = ckpt.find_checkpoint(path)
    config = from_dict(ckpt.load_config_json(folder))
    model = build_model(config.family, config.model)
    ckpt.load_into(model, ckpt.load_weights(folder), folder)
    state = ckpt.load_state(folder)
    return config, model.to(resolve_device(device)).eval(), state


def splits(config: RunConfig) -> tuple[ImageData, ImageData]:
    """The run's (train, test) images, fitted to the model as in training."""
    channels, size = model_shape(config)
    return load_dataset(config.data, channels, size)


def test_split(config: RunConfig) -> ImageData:
    """The run's test images, fitted to the model as in training."""
    channels, size = model_shape(config)
    return load_dataset(config.data, channels, size)[1]
