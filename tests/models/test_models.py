from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.models import FAMILIES, GAN, Discriminator, Generator, VanillaVAE, build_model
from genlab.models import family as record_of

from conftest import tiny_model


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_references() -> None:
    assert n_params(VanillaVAE(3, 128)) == 3_937_635  # PyTorch-VAE VanillaVAE(3, 128)
    assert n_params(Generator()) == 1_510_032  # PyTorch-GAN gan.py, latent 100, 1x28x28
    assert n_params(Discriminator()) == 533_505


def stage_shapes(model: VanillaVAE, x: torch.Tensor) -> tuple[list, list]:
    enc, h = [], x
    for block in model.encoder:
        h = block(h)
        enc.append(tuple(h.shape))
    mu, _ = model.encode(x)
    h = model.decoder_input(mu).view(-1, model.config.hidden_dims[-1], model.bottom_size, model.bottom_size)
    dec = [tuple(h.shape)]
    for block in model.decoder:
        h = block(h)
        dec.append(tuple(h.shape))
    dec.append(tuple(model.final_layer(h).shape))
    return enc, dec


def test_vae_shapes_at_every_stage_64x64x3() -> None:
    model = VanillaVAE()
    enc, dec = stage_shapes(model, torch.randn(2, 3, 64, 64))
    # The notes: [N,32,32,32] -> [N,64,16,16] -> [N,128,8,8] -> [N,256,4,4] -> [N,512,2,2]
    assert enc == [(2, 32, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]
    assert torch.flatten(model.encoder(torch.randn(2, 3, 64, 64)), 1).shape == (2, 2048)
    assert dec == [(2, 512, 2, 2), (2, 256, 4, 4), (2, 128, 8, 8), (2, 64, 16, 16), (2, 32, 32, 32), (2, 3, 64, 64)]
    recons, x, mu, log_var = model(torch.randn(2, 3, 64, 64))
    assert recons.shape == x.shape and mu.shape == log_var.shape == (2, 128)


def test_vae_shapes_at_every_stage_28x28x1() -> None:
    model = VanillaVAE(1, 16, hidden_dims=(32, 64), image_size=28)
    enc, dec = stage_shapes(model, torch.randn(2, 1, 28, 28))
    assert enc == [(2, 32, 14, 14), (2, 64, 7, 7)]
    assert model.fc_mu.in_features == 64 * 7 * 7
    assert dec == [(2, 64, 7, 7), (2, 32, 14, 14), (2, 1, 28, 28)]


def test_vae_fashion_default_pads_to_32_with_the_notes_encoder() -> None:
    model = VanillaVAE(1, 128, image_size=32)
    enc, dec = stage_shapes(model, torch.randn(2, 1, 32, 32))
    assert enc[-1] == (2, 512, 1, 1) and dec[-1] == (2, 1, 32, 32)


def test_vae_does_not_mutate_callers_hidden_dims() -> None:
    dims = [8, 16, 32]
    VanillaVAE(3, 4, hidden_dims=dims, image_size=32)
    assert dims == [8, 16, 32]


def test_vae_rejects_image_size_not_divisible() -> None:
    from genlab.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of 32"):
        VanillaVAE(3, 8, image_size=48)


def test_reparameterize_is_mu_plus_sigma_eps() -> None:
    model = VanillaVAE(1, 4, hidden_dims=(8,), image_size=8)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    z = model.reparameterize(mu, logvar, generator=g1)
    eps = torch.randn(3, 4, generator=g2)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)


def test_generator_batchnorm_eps_is_0_8_and_first_block_has_no_norm() -> None:
    g = Generator()
    norms = [m for m in g.model if isinstance(m, nn.BatchNorm1d)]
    assert [m.eps for m in norms] == [0.8, 0.8, 0.8] and [m.momentum for m in norms] == [0.1] * 3
    assert isinstance(g.model[1], nn.LeakyReLU)  # Linear(100, 128) -> LeakyReLU, no BatchNorm
    assert isinstance(g.model[-1], nn.Tanh) and g(torch.randn(4, 100)).shape == (4, 1, 28, 28)


def test_discriminator_logits_are_the_pre_sigmoid_of_forward() -> None:
    d = Discriminator((3, 8, 8))
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(torch.sigmoid(d.logits(x)), d(x))
    assert isinstance(d.model[-1], nn.Sigmoid)


def forward_loss(family: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    labels = (torch.arange(len(x)) % 10,) if record_of(family).conditional else ()
    if record_of(family).kind == "vae":
        recons, _, mu, logvar = model(x, *labels)
        extra = model.discriminator(mu).square().mean() if hasattr(model, "discriminator") else 0  # FactorVAE's TC critic
        return recons.square().mean() + mu.square().mean() + logvar.square().mean() + extra
    return model.sample(4).square().mean() + model.discriminator(x, *labels).mean()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_model_builds_trains_and_samples_in_range(family: str) -> None:
    torch.manual_seed(0)
    model = build_model(family, record_of(family).config(**tiny_model(family)))
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    loss = forward_loss(family, model, x)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    s = model.sample(6)
    assert s.shape == (6, 1, 16, 16) and s.min() >= -1 and s.max() <= 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_state_dict_round_trip_gives_equal_outputs(family: str) -> None:
    config_cls = record_of(family).config
    a = build_model(family, config_cls(**tiny_model(family))).eval()
    b = build_model(family, config_cls(**tiny_model(family))).eval()
    b.load_state_dict(a.state_dict())
    z = torch.Generator().manual_seed(1)
    out_a = a.sample(3, generator=z)
    out_b = b.sample(3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out_a, out_b)


def test_vae_bernoulli_decoder_outputs_logits() -> None:
    model = VanillaVAE(1, 4, hidden_dims=(8,), image_size=8, decoder="bernoulli")
    assert not isinstance(model.final_layer[-1], nn.Tanh)
    s = model.eval().sample(3)
    assert s.min() >= -1 and s.max() <= 1


def test_vae_state_dict_keys_match_plain_convolutions() -> None:
    keys = set(VanillaVAE(1, 8, hidden_dims=(8, 16), image_size=16).state_dict())
    assert {"encoder.0.0.weight", "decoder.0.0.weight", "final_layer.0.weight", "final_layer.3.bias"} <= keys
    assert all(k.endswith(("weight", "bias", "running_mean", "running_var", "num_batches_tracked")) for k in keys)


def test_gan_wrapper_holds_config() -> None:
    gan = GAN()
    assert gan.config.img_shape == (1, 28, 28) and gan.config.bn_eps == 0.8


def test_cgan_generators_take_the_class_where_their_setting_says() -> None:
    """ "both" feeds the class at G's input (so it matters from the first step) and to every class BatchNorm;
    the linear stem's bias per unit is a z-independent first map; bad settings are one-line ConfigErrors."""
    from genlab.errors import ConfigError
    from genlab.models.cgan import CGAN, ClassBatchNorm2d, LinearStem

    torch.manual_seed(0)
    z = torch.randn(4, 8).repeat(2, 1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    for generator, stem, sees_label in [("both", "linear", True), ("onehot", "conv", True), ("cbn", "linear", False)]:
        model = CGAN(latent_dim=8, width=4, generator=generator, stem=stem).eval()
        first = model.generator.net.model[0]
        assert isinstance(first, LinearStem) == (stem == "linear" and generator != "onehot")
        assert any(isinstance(m, ClassBatchNorm2d) for m in model.generator.modules()) == (generator != "onehot")
        with torch.no_grad():
            out = model.generator(z, labels)
        differs = not torch.allclose(out[:4], out[4:])
        assert differs == sees_label, generator  # CBN alone starts label-blind: gains 1, biases 0
    with pytest.raises(ConfigError, match="model.stem"):
        CGAN(latent_dim=8, width=4, stem="dense")
