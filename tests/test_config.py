from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genlab.configfile import from_dict, load_config
from genlab.errors import ConfigError
from genlab.models import VanillaVAE, build_model

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize(
    "name,family", [("vae_fashion", "vae"), ("beta_vae_fashion", "vae"), ("gan_fashion", "gan"), ("vae_celeba64", "vae")]
)
def test_shipped_configs_load_and_round_trip(name: str, family: str) -> None:
    config = load_config(family, CONFIGS / f"{name}.toml")
    assert from_dict(config.to_dict()) == config


def test_yaml_config(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("model:\n  latent_dim: 7\ntrain:\n  lr: 0.001\n")
    config = load_config("vae", tmp_path / "c.yaml")
    assert config.model.latent_dim == 7 and config.train.lr == 0.001


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"train.lrr": 0.1}, "unknown key train.lrr; did you mean train.lr"),
        ({"model.latnet_dim": 3}, "did you mean model.latent_dim"),
        ({"train.lr": -1.0}, "train.lr must be > 0"),
        ({"train.batch_size": "big"}, "train.batch_size must be int"),
        ({"train.batch_size": 0}, "train.batch_size must be > 0"),
        ({"model.latent_dim": 0}, "model.latent_dim must be >= 1"),
        ({"model.image_size": 48}, "multiple of 32"),
        ({"train.betas": [0.5]}, "train.betas must be a list of 2"),
        ({"loss.loss_type": "H"}, "loss.loss_type must be one of beta, capacity"),
        ({"data.fit": "stretch"}, "data.fit must be one of pad, resize"),
        ({"train.device": "gpu"}, "train.device must be"),
        ({"train.fuse_norm_act": "yes"}, 'train.fuse_norm_act must be true, false or "auto"'),
        ({"train.fuse_norm_act": 1}, "train.fuse_norm_act must be bool or str"),
        ({"trainn.lr": 1.0}, r"unknown section \[trainn\]; did you mean \[train\]"),
    ],
)
def test_bad_values_are_refused_with_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("vae", None, overrides)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("vae", tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("[model\nlatent_dim = 3")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config("vae", tmp_path / "broken.toml")


def test_gan_defaults_are_the_references() -> None:
    config = load_config("gan")
    assert config.train.lr == 0.0002 and config.train.betas == (0.5, 0.999) and config.train.batch_size == 64
    assert config.model.latent_dim == 100 and config.model.img_shape == (1, 28, 28)


@settings(max_examples=25, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    depth=st.integers(1, 4),
    scale=st.integers(1, 3),
    latent=st.integers(1, 16),
    width=st.integers(1, 8),
)
def test_any_valid_vae_config_maps_input_shape_to_output_shape(
    channels: int, depth: int, scale: int, latent: int, width: int
) -> None:
    size = scale * 2**depth
    dims = [width * (i + 1) for i in range(depth)]
    config = load_config(
        "vae",
        None,
        {"model.in_channels": channels, "model.hidden_dims": dims, "model.image_size": size, "model.latent_dim": latent},
    )
    model = build_model("vae", config.model)
    assert isinstance(model, VanillaVAE)
    x = torch.rand(2, channels, size, size) * 2 - 1
    recons, _, mu, _ = model(x)
    assert recons.shape == x.shape and mu.shape == (2, latent)


@settings(max_examples=20, deadline=None)
@given(channels=st.sampled_from([1, 3]), size=st.integers(2, 20), latent=st.integers(1, 32))
def test_any_valid_gan_config_generates_its_image_shape(channels: int, size: int, latent: int) -> None:
    config = load_config(
        "gan", None, {"model.img_shape": [channels, size, size], "model.latent_dim": latent, "model.g_hidden_dims": [8, 16]}
    )
    gan = build_model("gan", config.model).eval()
    out = gan.sample(3)
    assert out.shape == (3, channels, size, size) and gan.discriminator(out).shape == (3, 1)


@pytest.mark.parametrize(
    ("family", "overrides", "message"),
    [
        ("wgan-gp", {"loss.n_critic": 0}, "loss.n_critic must be an integer >= 1"),
        ("sngan", {"loss.logits": False}, "set loss.logits = true"),
        ("sngan", {"loss.n_dis": 0}, "loss.n_dis must be an integer >= 1"),
        ("dcgan", {"loss.n_dis": 5}, "loss.n_dis is a setting of sngan"),
        ("dcgan", {"model.img_shape": [1, 30, 30]}, r"a DCGAN makes 28x28 or 4\*2\^k"),
        ("vae", {"model.spectral_norm": True}, "unknown key"),
        # a setting only another loss_type reads would be silently ignored
        ("vae", {"loss.tc_warmup": 100}, 'loss.tc_warmup is read by loss.loss_type = "tcvae" only.*set loss.loss_type = "tcvae"'),
        ("vae", {"loss.loss_type": "tcvae", "loss.max_capacity": 5.0}, 'loss.max_capacity is read by .* "capacity"'),
        ("vae", {"loss.loss_type": "capacity", "loss.estimator": "mss"}, 'loss.estimator is read by loss.loss_type = "tcvae"'),
        ("factorvae", {"loss.gamma": 5.0}, 'loss.gamma is read by .* "capacity" only .* under "beta": drop it$'),
    ],
)
def test_bad_settings_are_refused_by_name(family: str, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(family, None, overrides)


def test_settings_of_the_chosen_loss_type_are_accepted() -> None:
    """The refusal above is by loss_type, not by key: each setting is accepted where it is read."""
    assert load_config("vae", None, {"loss.loss_type": "tcvae", "loss.tc_warmup": 100}).loss.tc_warmup == 100
    assert load_config("vae", None, {"loss.loss_type": "capacity", "loss.gamma": 5.0}).loss.gamma == 5.0
    assert load_config("factorvae", None, {"loss.tc_warmup": 100}).loss.tc_warmup == 100  # warms gamma_tc
