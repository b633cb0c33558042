from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genlab.bench.textbook import dcgan_examples_step, factorvae_step, notes_gan_step, projection_step, stdgan_step
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


def _pair(name: str, size: int = 28):
    """Two copies of a tiny model of family name, with genlab's optimisers on one and plain Adam on the other."""
    config = small_config(name, size=size)
    torch.manual_seed(0)
    ours = build_model(name, config.model)
    ref = copy.deepcopy(ours)
    opts = trainer_for(record_of(name)).make_optimizers(ours, config)
    t = config.train
    plain = [torch.optim.Adam(m.parameters(), lr=t.lr, betas=t.betas, foreach=False) for m in (ref.generator, ref.discriminator)]
    return config, ours, ref, opts, plain


@pytest.mark.parametrize(
    "name,textbook",
    [("dcgan", dcgan_examples_step), ("sngan", lambda m, x, og, od: stdgan_step(m, x, og, od, hinge=True))],
)
def test_conv_gan_steps_match_their_papers_code(name: str, textbook) -> None:
    """DCGAN against pytorch/examples' loop (D first, G through the updated D), SNGAN against Miyato et al.'s
    SN-DCGAN updater (G first, then D on fresh fakes of the updated G): the same weights after three steps."""
    config, ours, ref, opts, (opt_g, opt_d) = _pair(name)
    step = trainer_for(record_of(name)).step
    for i, imgs in enumerate(torch.rand(3, 8, 1, 28, 28) * 2 - 1):
        torch.manual_seed(10 + i)
        step(ours, imgs, opts, config.loss, i)
        torch.manual_seed(10 + i)
        textbook(ref, imgs, opt_g, opt_d)
    for (key, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=key)


def test_sngan_with_n_dis_matches_the_updaters_d_iterations() -> None:
    """n_dis = 3 (Miyato et al.'s settings A, D-F use 5): G steps on the first of every 3 D iterations only."""
    config, ours, ref, opts, (opt_g, opt_d) = _pair("sngan")
    config = replace(config, loss=replace(config.loss, n_dis=3))
    step = trainer_for(record_of("sngan")).step
    g_moves = []
    for i, imgs in enumerate(torch.rand(5, 8, 1, 28, 28) * 2 - 1):
        before = [p.clone() for p in ours.generator.parameters()]
        torch.manual_seed(10 + i)
        step(ours, imgs, opts, config.loss, i)
        torch.manual_seed(10 + i)
        stdgan_step(ref, imgs, opt_g, opt_d, hinge=True, first=i % 3 == 0)
        g_moves.append(any(not torch.equal(a, b) for a, b in zip(before, ours.generator.parameters())))
    assert g_moves == [True, False, False, True, False]
    for (key, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=key)


def test_cgan_step_matches_miyato_and_koyamas_updater() -> None:
    config, ours, ref, opts, (opt_g, opt_d) = _pair("cgan")
    for i, imgs in enumerate(torch.rand(3, 8, 1, 28, 28) * 2 - 1):
        labels = torch.arange(8) % 10
        torch.manual_seed(10 + i)
        trainer_for(record_of("cgan")).step(ours, (imgs, labels), opts, config.loss, i)
        torch.manual_seed(10 + i)
        projection_step(ref, imgs, labels, opt_g, opt_d)
    for (key, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=key)


def _calls(d: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    d.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen


def _mixes(batch: torch.Tensor, real: torch.Tensor) -> bool:
    """Whether one D call held real images and others together."""
    is_real = (batch.flatten(1)[:, None, :] == real.flatten(1)[None]).all(-1).any(1)
    return bool(is_real.any()) and not bool(is_real.all())


@pytest.mark.parametrize("name", [f for f in FAMILIES if record_of(f).kind == "gan"] + ["gan-with-batchnorm-d"])
def test_no_d_with_batch_statistics_or_spectral_norm_sees_real_and_fake_in_one_batch(name: str) -> None:
    """The one-forward shortcut over [real; G(z)] is for Ds that keep nothing between calls (the notes' MLP):
    a D with BatchNorm would pool real and fake statistics, a spectral-norm D would run one power iteration
    for two. Every GAN step here, and the notes' step given a BatchNorm D, keeps the two batches apart."""
    family_name = "gan" if name == "gan-with-batchnorm-d" else name
    config = small_config(family_name, **({"loss.n_critic": 1} if family_name == "wgan-gp" else {}))
    torch.manual_seed(0)
    model = build_model(family_name, config.model)
    if name == "gan-with-batchnorm-d":
        model.discriminator.model.insert(1, torch.nn.BatchNorm1d(config.model.d_hidden_dims[0]))
    d = model.discriminator
    stateful = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules()) or any(
        torch.nn.utils.parametrize.is_parametrized(m) for m in d.modules()
    )
    seen = _calls(d)
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    batch = (real, torch.arange(8) % 10) if record_of(family_name).conditional else real
    trainer = trainer_for(record_of(family_name))
    trainer.step(model, batch, trainer.make_optimizers(model, config), config.loss, 0)
    assert seen
    if stateful:
        assert not any(_mixes(x, real) for x in seen), f"{name}: a D call held real and fake images together"
    elif family_name == "gan":  # the notes' MLP D: the shortcut, one call over both (exact: see above)
        assert any(_mixes(x, real) for x in seen)


def test_wgan_generator_update_leaves_the_critics_gradients_alone() -> None:
    config = small_config("wgan-gp", **{"loss.n_critic": 1})
    torch.manual_seed(0)
    model = build_model("wgan-gp", config.model)
    trainer = trainer_for(record_of("wgan-gp"))
    opts = trainer.make_optimizers(model, config)
    after_critic: dict = {}
    opts["opt_d"].register_step_post_hook(
        lambda *a: after_critic.update(grads=[p.grad.clone() for p in model.discriminator.parameters()])
    )
    trainer.step(model, torch.rand(8, 1, 28, 28) * 2 - 1, opts, config.loss, 0)  # a critic step, then G's
    for before, p in zip(after_critic["grads"], model.discriminator.parameters()):
        assert torch.equal(before, p.grad)  # G's loss put nothing into the critic's .grad


def test_factorvae_gamma_warmup_matches_the_textbook_step_at_each_steps_gamma() -> None:
    """loss.tc_warmup = 4 grows gamma_tc 0, 2.5, 5, 7.5, 10: genlab's step matches disentanglement_lib's
    step run with that gamma at every step, and differs from the un-warmed step. The standard net: conv biases
    before BatchNorm get ~0 gradients, which Adam turns into steps of chance sign (fused or not)."""
    from genlab.configfile import load_config

    net = {"model.arch": "standard", "model.decoder": "bernoulli", "model.image_size": 32, "model.in_channels": 1}
    net |= {"model.latent_dim": 4, "model.d_hidden": 16, "model.d_layers": 2, "train.batch_size": 8}
    sets = {"loss.recon_sum": True, "loss.kld_weight": 1.0, "loss.gamma_tc": 10.0, "loss.tc_warmup": 4}
    config = load_config("factorvae", None, {**net, **sets})
    torch.manual_seed(0)
    ours = build_model("factorvae", config.model)
    ref, unwarmed = copy.deepcopy(ours), copy.deepcopy(ours)
    make = trainer_for(record_of("factorvae")).make_optimizers
    opts, opts_unwarmed = make(ours, config), make(unwarmed, config)
    t, loss = config.train, config.loss
    opt_vae = torch.optim.Adam(ref.vae_parameters(), lr=t.lr, betas=t.betas, foreach=False)
    opt_d = torch.optim.Adam(ref.discriminator.parameters(), lr=loss.d_lr, betas=loss.d_betas, foreach=False)
    step = trainer_for(record_of("factorvae")).step
    for i, imgs in enumerate(torch.rand(5, 8, 1, 32, 32) * 2 - 1):
        for model, o, warmup in ((ours, opts, 4), (unwarmed, opts_unwarmed, 0)):
            torch.manual_seed(10 + i)
            step(model, imgs, o, replace(loss, tc_warmup=warmup), i)
        torch.manual_seed(10 + i)
        factorvae_step(ref, imgs, opt_vae, opt_d, 1.0, loss.beta, 10.0 * min(1.0, i / 4), recon_sum=True)
    for (key, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=key)
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(ours.vae_parameters(), unwarmed.vae_parameters()))
