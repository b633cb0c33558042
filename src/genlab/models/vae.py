"""VanillaVAE of the course notes (section 1), after PyTorch-VAE's VanillaVAE.

Module names (encoder, fc_mu, fc_var, decoder_input, decoder, final_layer) match the reference
so that a state_dict can be held against it key for key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.models.layers import ConvBlock, Downsample2x, ToImage2d, Upsample2x
from genlab.models.vae_nets import ARCHS, input_multiple, mlp_nets, size_hint, standard_nets

DEFAULT_HIDDEN_DIMS = (32, 64, 128, 256, 512)


@dataclass(frozen=True)
class VAEConfig:
    """What a VAE run reads from its config and saves beside its weights."""

    in_channels: int = 3
    latent_dim: int = 128
    hidden_dims: tuple[int, ...] = DEFAULT_HIDDEN_DIMS
    image_size: int = 64
    # "gaussian": Tanh output in [-1, 1] and the notes' MSE; "bernoulli": logits over binarized pixels;
    # "sigma": the Tanh output as the mean of a Gaussian whose shared variance is learned (sigma-VAE).
    decoder: str = "gaussian"
    # "notes": the notes' BatchNorm conv net (hidden_dims); "standard": Burgess et al. / Locatello et al.'s
    # conv net; "mlp": Chen et al.'s MLP (models/vae_nets.py). hidden_dims belong to "notes" only.
    arch: str = "notes"

    @staticmethod
    def input_multiple(values: dict) -> int:
        """What the image size must be a multiple of, for the [model] values given: 2 per encoder block."""
        dims, arch = values.get("hidden_dims"), values.get("arch", "notes")
        dims = dims if isinstance(dims, (list, tuple)) else DEFAULT_HIDDEN_DIMS
        return input_multiple(arch if arch in ARCHS else "notes", dims)

    def validate(self) -> None:
        from genlab.errors import ConfigError

        if self.in_channels <= 0:
            raise ConfigError("model.in_channels must be >= 1")
        if self.latent_dim <= 0:
            raise ConfigError(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        if self.arch not in ARCHS:
            raise ConfigError(f"model.arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if not self.hidden_dims or any(h <= 0 for h in self.hidden_dims):
            raise ConfigError("model.hidden_dims must be a non-empty list of positive integers")
        if self.arch != "notes" and tuple(self.hidden_dims) != DEFAULT_HIDDEN_DIMS:
            raise ConfigError(f"model.hidden_dims sets the notes' network; model.arch = {self.arch!r} has its own: drop it")
        factor = input_multiple(self.arch, self.hidden_dims)
        if self.image_size <= 0 or self.image_size % factor:
            raise ConfigError(
                f"model.image_size={self.image_size} must be a positive multiple of {factor} "
                f"({size_hint(self.arch, self.hidden_dims, self.image_size)})"
            )
        if self.decoder not in ("gaussian", "bernoulli", "sigma"):
            raise ConfigError(f"model.decoder must be 'gaussian', 'bernoulli' or 'sigma', got {self.decoder!r}")


def _down_block(in_channels: int, out_channels: int) -> ConvBlock:
    # Listing 1: Conv(k3, s2, p1) halves H and W (rounding down), then BN and LeakyReLU(0.01).
    return ConvBlock(
        Downsample2x(in_channels, out_channels),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(inplace=True),  # BatchNorm keeps its input for backward, not its output
    )


def _up_block(in_channels: int, out_channels: int) -> ConvBlock:
    # ConvTranspose(k3, s2, p1, output_padding=1) exactly doubles H and W.
    return ConvBlock(Upsample2x(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.LeakyReLU(inplace=True))


@torch.compiler.disable
def standard_normal(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """N(0, I) noise shaped like `like`, drawn eagerly even inside torch.compile: inductor's own
    random stream would make compiled training differ from eager and break exact resume."""
    return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)


class VanillaVAE(nn.Module):
    """Conv VAE of the notes: diagonal-Gaussian q(z|x), N(0, I) prior, Tanh decoder in [-1, 1]."""

    def __init__(
        self,
        in_channels: int = 3,
        latent_dim: int = 128,
        hidden_dims: Sequence[int] | None = None,
        image_size: int = 64,
        decoder: str = "gaussian",
        arch: str = "notes",
    ) -> None:
        super().__init__()
        hidden = tuple(DEFAULT_HIDDEN_DIMS if hidden_dims is None else hidden_dims)  # never the caller's list
        self.config = VAEConfig(in_channels, latent_dim, hidden, image_size, decoder, arch)
        self.config.validate()
        self.latent_dim = latent_dim
        if decoder == "sigma":
            # sigma-VAE (Rybkin et al. 2021): log sigma of the decoder's shared Gaussian, a running mean of
            # each training batch's optimal value; saved with the weights, it is what likelihoods use.
            self.register_buffer("log_sigma", torch.zeros(()))
        if arch != "notes":
            build = standard_nets if arch == "standard" else mlp_nets
            modules, self.bottom = build(in_channels, latent_dim, image_size, tanh=decoder != "bernoulli")
            for name, module in modules.items():
                setattr(self, name, module)
            return
        # The notes hard-code 2x2 (64 / 2**5); derive it so 28->32, 32 and 128 pixel inputs work too.
        self.bottom_size = image_size // 2 ** len(hidden)
        self.bottom = (hidden[-1], self.bottom_size, self.bottom_size)  # what decoder_input's output is viewed as
        flat = hidden[-1] * self.bottom_size**2

        channels = (in_channels, *hidden)
        self.encoder = nn.Sequential(*(_down_block(a, b) for a, b in zip(channels, channels[1:])))
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_var = nn.Linear(flat, latent_dim)

        rev = hidden[::-1]
        self.decoder_input = nn.Linear(latent_dim, flat)
        self.decoder = nn.Sequential(*(_up_block(a, b) for a, b in zip(rev, rev[1:])))
        head: list[nn.Module] = [
            *_up_block(rev[-1], rev[-1]),
            ToImage2d(rev[-1], in_channels),  # Conv2d(k3, p1); output channels follow input
        ]
        if decoder != "bernoulli":
            head.append(nn.Tanh())  # pixels live in [-1, 1]
        self.final_layer = ConvBlock(*head)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> mu, log_var, each (B, latent_dim)."""
        h = self.encoder(x)  # (B, hidden[-1], H / 2**L, W / 2**L): [N, 512, 2, 2] for the notes' 64x64
        h = torch.flatten(h, start_dim=1)  # (B, 2048)
        return self.fc_mu(h), self.fc_var(h)

    def reparameterize(self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I): Listing 2, differentiable in mu and logvar."""
        std = torch.exp(0.5 * logvar)
        eps = standard_normal(std, generator)
        return eps * std + mu

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, C, H, W): pixels in [-1, 1], or Bernoulli logits for decoder='bernoulli'."""
        h = self.decoder_input(z).view(-1, *self.bottom)
        return self.final_layer(self.decoder(h))

    def forward(self, x: Tensor, return_z: bool = False) -> tuple[Tensor, ...]:
        """Listing 4: returns (recons, input, mu, log_var), and the sampled z after them if return_z
        (β-TCVAE's loss needs the z the decoder saw)."""
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var)
        return (self.decode(z), x, mu, log_var, z) if return_z else (self.decode(z), x, mu, log_var)

    def sample(self, n: int, generator: torch.Generator | None = None, *, temperature: float = 1.0) -> Tensor:
        """n decoded draws from the prior N(0, temperature^2 I), as images in [-1, 1]."""
        device = self.fc_mu.weight.device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        return self.to_image(self.decode(temperature * z))

    def generate(self, x: Tensor) -> Tensor:
        """Reconstruction of x through a sampled z, as the reference's generate()."""
        return self.to_image(self.forward(x)[0])

    def reconstruct(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction through the posterior mean, for pictures and metrics."""
        return self.to_image(self.decode(self.encode(x)[0]))

    def to_image(self, out: Tensor) -> Tensor:
        """Decoder output -> pixels in [-1, 1] (the Bernoulli decoder shows its mean)."""
        if self.config.decoder == "bernoulli":
            return torch.sigmoid(out) * 2 - 1
        return out
