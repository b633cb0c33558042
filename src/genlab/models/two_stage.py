"""The second stage of the 2-Stage VAE (Dai & Wipf 2019): a small VAE fitted to a trained VAE's codes.

A VAE's aggregate posterior q(z) = E_x q(z|x) does not match its prior N(0, I), so decoding prior
draws lands where the decoder was never trained; that, more than the decoder, makes samples blurry.
The second stage learns q(z) itself: an MLP VAE on codes u ~ q(z|x) of the training images (drawn
afresh each batch), with a learned shared output variance gamma (the paper's key to letting it fit
the codes closely) and the input beside the last hidden layer of both MLPs (their encoder2 and
decoder2 concatenate it). Sampling goes through both, with the output noise the model learned:
z2 ~ N(0, I) -> u ~ N(decoder2(z2), gamma I) -> x = decoder1(u) (their generate()).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.losses import gaussian_kl


@dataclass(frozen=True)
class Stage2Config:
    latent_dim: int = 64  # the first stage's latent size: the codes u it models
    hidden_dim: int = 1024  # the paper's second stage: 3 layers of 1024 units
    depth: int = 3
    skip: bool = True  # the input beside the last hidden layer (False: genlab's first second stage)
    noise: bool = True  # sample u ~ N(decoder2(z2), gamma I), not its mean

    def validate(self) -> None:
        from genlab.errors import ConfigError

        if min(self.latent_dim, self.hidden_dim, self.depth) < 1:
            raise ConfigError("the second stage's latent_dim, hidden_dim and depth must all be >= 1")


def _mlp(inputs: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else hidden, hidden), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Stage2VAE(nn.Module):
    """u (B, d) -> MLP encoder -> mu2, logvar2 (B, d); z2 -> MLP decoder -> u_hat (B, d), N(u_hat, gamma I)."""

    def __init__(self, latent_dim: int = 64, hidden_dim: int = 1024, depth: int = 3, skip: bool = True, noise: bool = True):
        super().__init__()
        self.config = Stage2Config(latent_dim, hidden_dim, depth, skip, noise)
        self.config.validate()
        heads = hidden_dim + latent_dim if skip else hidden_dim
        self.encoder = _mlp(latent_dim, hidden_dim, depth)
        self.fc_mu, self.fc_var = nn.Linear(heads, latent_dim), nn.Linear(heads, latent_dim)
        self.decoder = nn.Sequential(_mlp(latent_dim, hidden_dim, depth), nn.Linear(heads, latent_dim))
        self.log_gamma = nn.Parameter(torch.zeros(()))  # learned: the decoder's shared log variance

    def _beside(self, h: Tensor, x: Tensor) -> Tensor:
        return torch.cat([x, h], dim=1) if self.config.skip else h

    def decode(self, z: Tensor) -> Tensor:
        mlp, out = self.decoder
        return out(self._beside(mlp(z), z))

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self._beside(self.encoder(u), u)
        mu, logvar = self.fc_mu(h), self.fc_var(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode(z), mu, logvar

    def sample_codes(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """First-stage codes u: temperature scales the second stage's prior draw z2, not the gamma_z noise."""
        z = torch.randn(n, self.config.latent_dim, device=self.log_gamma.device, generator=generator)
        u = self.decode(temperature * z)
        if self.config.noise:
            u = u + torch.exp(0.5 * self.log_gamma) * torch.randn(u.shape, device=u.device, generator=generator)
        return u


def stage2_loss(model: Stage2VAE, u: Tensor) -> dict[str, Tensor]:
    """-ELBO per code in nats: ||u - u_hat||^2 / (2 gamma) + d/2 log(2 pi gamma) + KL(q(z2|u) || N(0, I))."""
    u_hat, mu, logvar = model(u)
    d = u.shape[1]
    gamma = torch.exp(model.log_gamma)
    nll = (u - u_hat).square().sum(1) / (2 * gamma) + 0.5 * d * (math.log(2 * math.pi) + model.log_gamma)
    kl = gaussian_kl(mu, logvar)
    return {"loss": (nll + kl).mean(), "nll": nll.mean().detach(), "kl": kl.mean().detach(), "gamma": gamma.detach()}


class TwoStage(nn.Module):
    """The first stage's decoder fed the second stage's codes: what `sample --stage2` draws from."""

    def __init__(self, vae: nn.Module, stage2: Stage2VAE) -> None:
        super().__init__()
        self.vae, self.stage2, self.config = vae, stage2, vae.config

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, *, temperature: float = 1.0) -> Tensor:
        return self.vae.to_image(self.vae.decode(self.stage2.sample_codes(n, generator, temperature)))
