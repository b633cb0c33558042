"""A family registered at run time, in one place, trains, resumes, samples and evaluates through the CLI.

The toy is an MLP VAE: it has no file in genlab, no shipped config and no branch anywhere in genlab's
code; its record says it trains like the notes' VAE ("vae"), and everything follows from that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from genlab.cli import main
from genlab.config import VAELossConfig
from genlab.models import FAMILIES, Family, register

from conftest import assert_same_state, losses, weights


@dataclass(frozen=True)
class ToyConfig:
    in_channels: int = 1
    image_size: int = 28
    latent_dim: int = 3
    hidden: int = 16
    decoder: str = "gaussian"

    def validate(self) -> None:
        pass


class ToyVAE(nn.Module):
    """x -> MLP -> (mu, logvar); z -> MLP -> Tanh image."""

    def __init__(
        self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 3, hidden: int = 16, decoder: str = "gaussian"
    ) -> None:
        super().__init__()
        self.config = ToyConfig(in_channels, image_size, latent_dim, hidden, decoder)
        self.latent_dim, pixels = latent_dim, in_channels * image_size**2
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, pixels), nn.Tanh())

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        c, s = self.config.in_channels, self.config.image_size
        return self.decoder(z).view(-1, c, s, s)

    def reparameterize(self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=mu.device)

    def forward(self, x: Tensor, return_z: bool = False):
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return (self.decode(z), x, mu, logvar, z) if return_z else (self.decode(z), x, mu, logvar)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(torch.randn(n, self.latent_dim, generator=generator))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)[0])

    def to_image(self, out: Tensor) -> Tensor:
        return out


@pytest.fixture
def toy() -> str:
    register(Family("toy-vae", ToyConfig, ToyVAE, "vae", VAELossConfig, "vae", lr=1e-3, betas=(0.9, 0.999), summary="a toy"))
    yield "toy-vae"
    FAMILIES.pop("toy-vae")


def test_a_family_registered_at_run_time_trains_resumes_samples_and_evaluates(
    toy: str, idx_data: Path, tmp_path: Path, capsys
) -> None:
    common = ["--data", str(idx_data), "--batch-size", "16", "--quiet", "--set", "train.log_every=2"]
    common += ["--set", "train.num_samples=4"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train", toy, "--out", str(whole), "--epochs", "2", *common]) == 0
    assert main(["train", toy, "--out", str(split), "--epochs", "2", "--max-steps", "20", *common]) == 0
    assert main(["train", toy, "--resume", str(split), "--quiet"]) == 0
    assert_same_state(whole, split)
    assert losses(whole, "vae") == losses(split, "vae")
    assert set(weights(whole)) == set(ToyVAE().state_dict())
    assert json.loads((whole / "config.json").read_text())["family"] == toy
    assert (whole / "samples" / "epoch_0002.png").exists() and (whole / "samples" / "traverse_epoch_0002.png").exists()
    assert (whole / "report.html").exists()

    assert main(["sample", str(whole), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (5, 1, 28, 28) and np.abs(samples).max() <= 1
    # a sample() without a temperature keeps working at T = 1, and is refused in one line below it
    assert main(["sample", str(whole), "--n", "2", "--temperature", "1", "--out", str(tmp_path / "t1.npy")]) == 0
    capsys.readouterr()
    assert main(["sample", str(whole), "--n", "2", "--temperature", "0.5", "--out", str(tmp_path / "t.npy")]) == 2
    assert "takes no temperature" in capsys.readouterr().err
    assert main(["interpolate", str(whole), "--pairs", "2", "--steps", "3", "--out", str(tmp_path / "i.npy")]) == 0
    assert main(["eval", str(whole), "--n", "32", "--nll-n", "8", "--k", "2", "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["family"] == toy and result["likelihood"]["neg_elbo"] > 0
    assert len(result["disentanglement"]["kl_per_dim"]) == 3
