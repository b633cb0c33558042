"""The disentanglement literature's VAE networks, as `model.arch` settings of VanillaVAE.

- "standard": Burgess et al. 2018 / Locatello et al. 2019, as disentanglement_lib's conv_encoder and
  deconv_decoder write it: 4x4 stride-2 convolutions of 32, 32 channels, then 2x2 stride-2 ones of 64,
  64, ReLU, no BatchNorm, FC 256, the mean and log-variance heads; the decoder FC 256, FC to a 64-channel
  map of size/16, and 4x4 stride-2 transposed convolutions of 64, 32, 32 and the image's channels.
  Glorot-uniform weights and zero biases, TensorFlow's defaults that library ran with.
- "mlp": Chen et al. 2018's MLP (beta-tcvae's MLPEncoder/MLPDecoder): pixels -> 1200 -> 1200 (ReLU) ->
  heads; z -> 1200 -> 1200 -> 1200 (Tanh) -> pixels. PyTorch's default initialisation, as their code.

Each builder returns the modules VanillaVAE names (encoder, fc_mu, fc_var, decoder_input, decoder,
final_layer) and the shape decoder_input's output is viewed as.
"""

from __future__ import annotations

import math

from torch import nn

ARCHS = ("notes", "standard", "mlp")
STANDARD_DOWNSCALE = 16  # four stride-2 layers
MLP_WIDTH = 1200


def standard_nets(in_channels: int, latent_dim: int, image_size: int, tanh: bool) -> tuple[dict[str, nn.Module], tuple[int, ...]]:
    side = image_size // STANDARD_DOWNSCALE
    flat = 64 * side * side
    relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
    modules = {
        "encoder": nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, 2, 1), relu(),  # TensorFlow's "same" padding for 4x4, stride 2
            nn.Conv2d(32, 32, 4, 2, 1), relu(),
            nn.Conv2d(32, 64, 2, 2), relu(),
            nn.Conv2d(64, 64, 2, 2), relu(),
            nn.Flatten(), nn.Linear(flat, 256), relu(),
        ),
        "fc_mu": nn.Linear(256, latent_dim),
        "fc_var": nn.Linear(256, latent_dim),
        "decoder_input": nn.Sequential(nn.Linear(latent_dim, 256), relu(), nn.Linear(256, flat), relu()),
        "decoder": nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, 2, 1), relu(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), relu(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), relu(),
        ),
        "final_layer": nn.Sequential(nn.ConvTranspose2d(32, in_channels, 4, 2, 1), *([nn.Tanh()] if tanh else [])),
    }  # fmt: skip
    for module in modules.values():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    return modules, (64, side, side)


def mlp_nets(in_channels: int, latent_dim: int, image_size: int, tanh: bool) -> tuple[dict[str, nn.Module], tuple[int, ...]]:
    pixels, w = in_channels * image_size * image_size, MLP_WIDTH
    modules = {
        "encoder": nn.Sequential(nn.Flatten(), nn.Linear(pixels, w), nn.ReLU(True), nn.Linear(w, w), nn.ReLU(True)),
        "fc_mu": nn.Linear(w, latent_dim),
        "fc_var": nn.Linear(w, latent_dim),
        "decoder_input": nn.Sequential(
            nn.Linear(latent_dim, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh()
        ),
        "decoder": nn.Identity(),
        "final_layer": nn.Sequential(
            nn.Linear(w, pixels), nn.Unflatten(1, (in_channels, image_size, image_size)), *([nn.Tanh()] if tanh else [])
        ),
    }
    return modules, (w,)


def input_multiple(arch: str, hidden_dims) -> int:
    """What the image size must be a multiple of for an architecture."""
    if arch == "standard":
        return STANDARD_DOWNSCALE
    if arch == "mlp":
        return 1
    return 2 ** len(hidden_dims)


def size_hint(arch: str, hidden_dims, image_size: int) -> str:
    """The fix to name when image_size does not fit the architecture."""
    factor = input_multiple(arch, hidden_dims)
    nearest = max(factor, round(image_size / factor) * factor)
    if arch == "standard":
        return f"the standard network halves it 4 times; use e.g. {nearest} (32 or 64 as in the literature)"
    return f"the encoder halves it {len(hidden_dims)} times; use e.g. {nearest} or fewer hidden_dims"


def flat_features(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
