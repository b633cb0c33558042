from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genlab.bench.textbook import notes_gan_step
from genlab.config import GANLossConfig, VAELossConfig
from genlab.models import FAMILIES, GAN, VanillaVAE, build_model
from genlab.models import family as record_of
from genlab.train import trainer_for
from genlab.train.common import FP32
from genlab.train.gan import gan_step
from genlab.train.vae import capacity, vae_step

from conftest import assert_same_weights, small_config


def small_gan() -> GAN:
    torch.manual_seed(0)
    return GAN(latent_dim=8, img_shape=(1, 8, 8), g_hidden_dims=(16, 32), d_hidden_dims=(16,))


def adam(params) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def test_gan_step_matches_the_notes_loop() -> None:
    ours, ref = small_gan(), small_gan()
    ref.load_state_dict(ours.state_dict())
    opts = {"opt_g": adam(ours.generator.parameters()), "opt_d": adam(ours.discriminator.parameters())}
    ref_g, ref_d = adam(ref.generator.parameters()), adam(ref.discriminator.parameters())
    data = torch.rand(5, 16, 1, 8, 8) * 2 - 1
    for logits in (True, False):
        for imgs in data:
            torch.manual_seed(1)
            gan_step(ours, imgs, opts, GANLossConfig(logits=logits), 0)
            torch.manual_seed(1)
            notes_gan_step(ref, imgs, ref_g, ref_d)
        assert_same_weights(ours.state_dict(), ref.state_dict(), noise_atol=2e-4 * 2 * len(data), atol=1e-6)


def test_each_optimiser_updates_only_its_own_network_and_d_sees_detached_fakes() -> None:
    gan = small_gan()
    before = copy.deepcopy(gan)
    opts = {"opt_g": adam(gan.generator.parameters()), "opt_d": adam(gan.discriminator.parameters())}
    seen = {}

    def grads(net: torch.nn.Module) -> list[torch.Tensor]:
        return [p.grad.clone() for p in net.parameters()]

    def weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
        return copy.deepcopy(net.state_dict())

    opts["opt_g"].register_step_pre_hook(lambda *a: seen.update(g_grads=grads(gan.generator), d=weights(gan.discriminator)))
    opts["opt_g"].register_step_post_hook(lambda *a: seen.update(d_after_g=weights(gan.discriminator)))
    opts["opt_d"].register_step_pre_hook(lambda *a: seen.update(d_grads=grads(gan.discriminator), g=weights(gan.generator)))
    opts["opt_d"].register_step_post_hook(lambda *a: seen.update(g_after_d=weights(gan.generator)))
    real = torch.rand(16, 1, 8, 8) * 2 - 1
    torch.manual_seed(5)
    gan_step(gan, real, opts, GANLossConfig(), 0)

    # The notes' two steps by hand from the same start and noise: G's gradient of the G loss, then
    # D's gradient of the D loss on the detached fakes, before any update.
    torch.manual_seed(5)
    fake = before.generator(torch.randn(16, 8))
    g_loss = F.binary_cross_entropy_with_logits(before.discriminator.logits(fake), torch.ones(16, 1))
    want_g = torch.autograd.grad(g_loss, list(before.generator.parameters()))
    real_loss = F.binary_cross_entropy_with_logits(before.discriminator.logits(real), torch.ones(16, 1))
    fake_loss = F.binary_cross_entropy_with_logits(before.discriminator.logits(fake.detach()), torch.zeros(16, 1))
    want_d = torch.autograd.grad((real_loss + fake_loss) / 2, list(before.discriminator.parameters()))
    for got, want in [*zip(seen["g_grads"], want_g), *zip(seen["d_grads"], want_d)]:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # Each optimiser moves its own network only.
    for k, v in seen["d"].items():
        torch.testing.assert_close(seen["d_after_g"][k], v, rtol=0, atol=0)
    for k, v in seen["g"].items():
        torch.testing.assert_close(seen["g_after_d"][k], v, rtol=0, atol=0)
    moved = [not torch.equal(a, b) for a, b in zip(gan.state_dict().values(), before.state_dict().values())]
    assert any(moved[: len(gan.generator.state_dict())]) and any(moved[len(gan.generator.state_dict()) :])


def test_vae_step_lowers_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = VanillaVAE(1, 4, hidden_dims=(8, 16), image_size=16)
    opt = {"opt": torch.optim.Adam(model.parameters(), lr=5e-3)}
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    losses = [vae_step(model, x, opt, VAELossConfig(), i)["loss"].item() for i in range(30)]
    assert losses[-1] < 0.7 * losses[0]


def test_capacity_grows_linearly_then_stays() -> None:
    cfg = VAELossConfig(loss_type="capacity", max_capacity=25.0, capacity_max_iter=100)
    assert capacity(cfg, 0) == 0 and capacity(cfg, 50) == 12.5 and capacity(cfg, 1000) == 25.0
    assert capacity(VAELossConfig(), 50) is None


def test_reference_bce_on_probabilities_equals_logits_path() -> None:
    x = torch.randn(4, 1)
    assert torch.allclose(
        F.binary_cross_entropy_with_logits(x, torch.ones_like(x)), F.binary_cross_entropy(torch.sigmoid(x), torch.ones_like(x))
    )


@pytest.mark.parametrize("family", [f for f in FAMILIES if record_of(f).kind == "gan"])
def test_one_step_moves_only_each_optimisers_own_network(family: str) -> None:
    """With D's learning rate at 0 only G may move, and with G's at 0 only D (G's steps every n_critic for WGAN)."""
    config = small_config(family, **({"loss.n_critic": 1} if family == "wgan-gp" else {}))
    torch.manual_seed(0)
    base = build_model(family, config.model)
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    if record_of(family).conditional:
        real = (real, torch.arange(8) % 10)
    for frozen in ("opt_d", "opt_g"):
        model = copy.deepcopy(base)
        optimizers = trainer_for(record_of(family)).make_optimizers(model, config)
        for group in optimizers[frozen].param_groups:
            group["lr"] = 0.0
        trainer_for(record_of(family)).step(model, real, optimizers, config.loss, 0, amp=FP32)
        moved = {
            name: any(not torch.equal(a, b) for a, b in zip(getattr(model, name).parameters(), getattr(base, name).parameters()))
            for name in ("generator", "discriminator")
        }
        assert moved == {"generator": frozen == "opt_d", "discriminator": frozen == "opt_g"}, frozen


def test_wgan_generator_steps_every_n_critic(idx_data: Path) -> None:
    config = small_config("wgan-gp")
    config = replace(config, loss=replace(config.loss, n_critic=3))
    torch.manual_seed(0)
    model = build_model("wgan-gp", config.model)
    optimizers = trainer_for(record_of("wgan-gp")).make_optimizers(model, config)
    g_moves = []
    for step in range(6):
        before = [p.clone() for p in model.generator.parameters()]
        trainer_for(record_of("wgan-gp")).step(model, torch.rand(8, 1, 28, 28) * 2 - 1, optimizers, config.loss, step)
        g_moves.append(any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters())))
    assert g_moves == [False, False, True, False, False, True]
