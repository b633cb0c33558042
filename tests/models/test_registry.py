"""The registry: every family has a complete record; every model builds, samples and saves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from genlab import checkpoint as ckpt
from genlab.configfile import load_config
from genlab.models import FAMILIES, KINDS, Family, build_model
from genlab.models import family as record_of
from genlab.train import Trainer, trainer_for

from conftest import TINY, small_config

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_has_a_complete_record(name: str) -> None:
    """The one place a family is described: every field of its record and of its trainer's record set,
    its loss and model configs dataclasses with defaults, tiny settings here and a shipped config."""
    record = FAMILIES[name]
    assert isinstance(record, Family) and record.name == name
    for f in dataclasses.fields(Family):
        value = getattr(record, f.name)
        assert value is not None and (value != "" or f.name == "summary"), f.name
    assert record.summary, "a one-line summary for the README table and --help"
    assert record.kind in KINDS and isinstance(record.conditional, bool)
    assert dataclasses.is_dataclass(record.config) and dataclasses.is_dataclass(record.loss)
    record.config().validate()  # every model field has a default
    record.loss().validate()
    assert 0 < record.lr < 1 and len(record.betas) == 2
    trainer = trainer_for(record)
    assert isinstance(trainer, Trainer)
    for f in dataclasses.fields(Trainer):
        assert getattr(trainer, f.name) is not None, f.name
    functions = ("step", "make_optimizers", "prepare", "validate", "pictures", "health")
    assert trainer.log_keys and all(callable(getattr(trainer, k)) for k in functions)
    assert name in TINY, "tests/conftest.py's TINY table needs tiny settings for every family"
    shipped = sorted(CONFIGS.glob(f"{name.replace('-', '_')}_*.toml"))
    assert shipped, f"configs/ ships no {name.replace('-', '_')}_DATA.toml"
    for path in shipped:
        load_config(name, path)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3), (64, 3)])
def test_build_and_shapes(family: str, size: int, channels: int) -> None:
    config = small_config(family, size, channels)
    model = build_model(family, config.model)
    x = torch.rand(4, channels, *(2 * [config.model.image_size if record_of(family).kind == "vae" else size])) * 2 - 1
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == x.shape and samples.min() >= -1 and samples.max() <= 1
    labels = (torch.tensor([0, 3, 9, 1]),) if record_of(family).conditional else ()
    if record_of(family).kind == "gan":
        assert model.discriminator(x, *labels).shape == (4, 1)
        assert model.generator.stem(torch.zeros(2, config.model.latent_dim)).dim() == 2  # the explorer's directions
    else:
        assert model(x, *labels)[0].shape == x.shape


@pytest.mark.parametrize("family", list(FAMILIES))
def test_checkpoint_round_trip(family: str, tmp_path: Path) -> None:
    config = small_config(family)
    model = build_model(family, config.model)
    ckpt.save_checkpoint(tmp_path, model, config.to_dict(), {"step": 0})
    again = build_model(family, config.model)
    ckpt.load_into(again, ckpt.load_weights(ckpt.find_checkpoint(tmp_path)), tmp_path)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    model.eval(), again.eval()
    assert torch.equal(model.sample(3, generator=gen()), again.sample(3, generator=gen()))
