"""The textbook training loops: each model's step as its reference code writes it, with nothing of genlab's.

One copy serves the bench (genlab's step against these, same weights) and the tests (genlab's step
held to these, gradient for gradient). What makes them textbook: NCHW, the loss written out, separate
D calls on the real and the fake batch, for-loop Adam as the caller builds it, a `.item()` every step.
`scripts/fidelity.py` keeps its own verbatim transcription of the notes' listings on purpose.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from genlab.models import GAN, VanillaVAE
from genlab.models.layers import set_fast_paths


def reference_vae(device: torch.device) -> VanillaVAE:
    """VanillaVAE as PyTorch-VAE computes it: direct convolution kernels, out-of-place LeakyReLU."""
    model = set_fast_paths(VanillaVAE().to(device), False)
    for m in model.modules():
        if isinstance(m, nn.LeakyReLU):
            m.inplace = False
    return model


def notes_vae_step(model: nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer, kld_weight: float,
                   beta: float = 1.0, labels: torch.Tensor | None = None) -> float:  # fmt: skip
    """The notes' Listings 4-5 (PyTorch-VAE's loss_function): MSE + kld_weight * mean KL; a cVAE gets its labels."""
    recons, _, mu, log_var = model(x) if labels is None else model(x, labels)
    recons_loss = F.mse_loss(recons, x)
    kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1), dim=0)
    loss = recons_loss + kld_weight * beta * kld_loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()  # the per-step host sync of a progress bar


def gan_step(model: nn.Module, imgs: torch.Tensor, opt_g, opt_d, hinge: bool = False,
             labels: torch.Tensor | None = None) -> tuple[float, float]:  # fmt: skip
    """The notes' loop (PyTorch-GAN's gan.py): G step, then D step on the real batch and the detached fakes,
    each in its own D call. BCE on D's Sigmoid output, or the hinge loss on its logits (SNGAN, the cGAN)."""
    cond = () if labels is None else (labels,)
    g, d = (lambda z: model.generator(z, *cond)), (lambda x, **kw: model.discriminator(x, *cond, **kw))
    bce = nn.BCELoss()
    valid = torch.ones(imgs.size(0), 1, device=imgs.device)
    fake = torch.zeros(imgs.size(0), 1, device=imgs.device)
    opt_g.zero_grad()
    z = torch.randn(imgs.size(0), model.config.latent_dim, device=imgs.device)
    gen_imgs = g(z)
    g_loss = -d(gen_imgs, logits=True).mean() if hinge else bce(d(gen_imgs), valid)
    g_loss.backward()
    opt_g.step()
    opt_d.zero_grad()
    if hinge:
        d_loss = F.relu(1 - d(imgs, logits=True)).mean() + F.relu(1 + d(gen_imgs.detach(), logits=True)).mean()
    else:
        d_loss = (bce(d(imgs), valid) + bce(d(gen_imgs.detach()), fake)) / 2
    d_loss.backward()
    opt_d.step()
    return g_loss.item(), d_loss.item()


def stdgan_step(
    model: nn.Module, imgs: torch.Tensor, opt_g, opt_d, hinge: bool = True, first: bool = True
) -> tuple[float, float]:
    """One iteration of Miyato et al.'s SN-DCGAN updater (chainer-gan-lib stdgan/updater.py): on the first
    of its n_dis iterations (first=True) G on fresh z, G steps; then D(x) and D(G(z')) on fresh z', in two
    calls (the fakes unchained), D steps."""
    n, latent = imgs.size(0), model.config.latent_dim
    loss_gen = torch.zeros(())
    if first:
        y_fake = model.discriminator(model.generator(torch.randn(n, latent, device=imgs.device)), logits=True)
        loss_gen = -y_fake.mean() if hinge else F.softplus(-y_fake).mean()  # their softplus form of BCE on logits
        model.generator.zero_grad()
        loss_gen.backward()
        opt_g.step()
    y_real = model.discriminator(imgs, logits=True)
    x_fake = model.generator(torch.randn(n, latent, device=imgs.device)).detach()
    y_fake = model.discriminator(x_fake, logits=True)
    if hinge:
        loss_dis = F.relu(1 - y_real).mean() + F.relu(1 + y_fake).mean()
    else:
        loss_dis = F.softplus(-y_real).mean() + F.softplus(y_fake).mean()
    model.discriminator.zero_grad()  # Chainer's cleargrads: what G's backward left in D is dropped
    loss_dis.backward()
    opt_d.step()
    return loss_gen.item(), loss_dis.item()


def dcgan_examples_step(model: nn.Module, imgs: torch.Tensor, opt_g, opt_d) -> tuple[float, float]:
    """pytorch/examples' dcgan/main.py: (1) D on a real batch, then on the detached fakes, D steps;
    (2) G through the updated D. BCELoss on the Sigmoid; D's loss the sum of the two."""
    criterion = nn.BCELoss()
    netG, netD = model.generator, model.discriminator  # noqa: N806 - the reference's names
    b = imgs.size(0)
    netD.zero_grad()
    label = torch.full((b, 1), 1.0, device=imgs.device)
    errD_real = criterion(netD(imgs), label)  # noqa: N806
    errD_real.backward()
    noise = torch.randn(b, model.config.latent_dim, device=imgs.device)
    fake = netG(noise)
    label.fill_(0.0)
    errD_fake = criterion(netD(fake.detach()), label)  # noqa: N806
    errD_fake.backward()
    opt_d.step()
    netG.zero_grad()
    label.fill_(1.0)
    errG = criterion(netD(fake), label)  # noqa: N806
    errG.backward()
    opt_g.step()
    return errG.item(), (errD_real + errD_fake).item()


def projection_step(model: nn.Module, imgs: torch.Tensor, labels: torch.Tensor, opt_g, opt_d) -> tuple[float, float]:
    """Miyato & Koyama's updater (sngan_projection updater.py, n_dis = 1), hinge loss: G on fresh z and
    classes drawn uniformly; then D on the real batch and on fresh fakes of freshly drawn classes."""
    n, classes, latent = imgs.size(0), model.config.num_classes, model.config.latent_dim

    def generate():
        z = torch.randn(n, latent, device=imgs.device)
        y = torch.randint(classes, (n,), device=imgs.device)
        return model.generator(z, y), y

    x_fake, y_fake = generate()
    loss_gen = -model.discriminator(x_fake, y_fake, logits=True).mean()
    model.generator.zero_grad()
    loss_gen.backward()
    opt_g.step()
    dis_real = model.discriminator(imgs, labels, logits=True)
    x_fake, y_fake = generate()
    dis_fake = model.discriminator(x_fake.detach(), y_fake, logits=True)
    loss_dis = F.relu(1.0 - dis_real).mean() + F.relu(1.0 + dis_fake).mean()
    model.discriminator.zero_grad()
    loss_dis.backward()
    opt_d.step()
    return loss_gen.item(), loss_dis.item()


def factorvae_step(model: nn.Module, imgs: torch.Tensor, opt_vae, opt_d, kld_weight: float, beta: float, gamma: float,
                   recon_sum: bool = False) -> float:  # fmt: skip
    """disentanglement_lib's factor_vae.py: the VAE loss + gamma * TC from D's logits, D's BCE on the batch's
    codes against the same codes permuted per dimension; both steps from one state. The Bernoulli NLL as
    the config weighs it (per-pixel mean unless recon_sum)."""
    recons, x, mu, logvar, z = model(imgs, return_z=True)
    recon = F.binary_cross_entropy_with_logits(recons, x, reduction="none").flatten(1).sum(1).mean()
    recon = recon if recon_sum else recon / x[0].numel()
    kl = torch.mean(0.5 * torch.sum(mu**2 + logvar.exp() - 1 - logvar, dim=1))
    logits = model.discriminator(z)
    tc = (logits[:, 0] - logits[:, 1]).mean()
    loss = recon + kld_weight * (beta * kl + gamma * tc)
    order = torch.argsort(torch.rand(z.shape), dim=0)
    shuffled = torch.gather(z.detach(), 0, order)
    d_loss = 0.5 * (
        F.cross_entropy(model.discriminator(z.detach()), torch.zeros(len(z), dtype=torch.long))
        + F.cross_entropy(model.discriminator(shuffled), torch.ones(len(z), dtype=torch.long))
    )
    opt_vae.zero_grad()
    opt_d.zero_grad()
    loss.backward(inputs=model.vae_parameters(), retain_graph=True)
    d_loss.backward(inputs=list(model.discriminator.parameters()))
    opt_vae.step()
    opt_d.step()
    return loss.item()


def notes_gan_step(gan: GAN, imgs: torch.Tensor, opt_g, opt_d) -> tuple[float, float]:
    """The notes' GAN iteration as written (BCE on the Sigmoid), torch.randn in place of np.random.normal."""
    return gan_step(gan, imgs, opt_g, opt_d)


def wgan_gp_step(model: nn.Module, imgs: torch.Tensor, opt_g, opt_d, step: int, gp_weight: float, n_critic: int) -> float:
    """Gulrajani et al.'s Algorithm 1: a critic step with its gradient penalty every step, G every n_critic."""
    z = torch.randn(imgs.size(0), model.config.latent_dim, device=imgs.device)
    fake = model.generator(z).detach()
    opt_d.zero_grad()
    d_loss = model.discriminator(fake).mean() - model.discriminator(imgs).mean()
    if gp_weight:
        eps = torch.rand(imgs.size(0), 1, 1, 1, device=imgs.device)
        x_hat = (eps * imgs + (1 - eps) * fake).requires_grad_(True)
        grad = torch.autograd.grad(model.discriminator(x_hat).sum(), x_hat, create_graph=True)[0]
        d_loss = d_loss + gp_weight * ((grad.view(grad.size(0), -1).norm(2, dim=1) - 1) ** 2).mean()
    d_loss.backward()
    opt_d.step()
    if (step + 1) % n_critic == 0:
        opt_g.zero_grad()
        g_loss = -model.discriminator(model.generator(z)).mean()
        g_loss.backward()
        opt_g.step()
    return d_loss.item()


def _vae(model, imgs, opt_g, opt_d, step, loss, labels) -> float:
    return notes_vae_step(model, imgs, opt_g, loss.kld_weight, loss.beta, labels)


def _gan(model, imgs, opt_g, opt_d, step, loss, labels) -> float:
    return gan_step(model, imgs, opt_g, opt_d, getattr(loss, "adversarial", "bce") == "hinge", labels)[1]


def _sngan(model, imgs, opt_g, opt_d, step, loss, labels) -> float:
    return stdgan_step(model, imgs, opt_g, opt_d, loss.adversarial == "hinge", step % loss.n_dis == 0)[1]


def _dcgan(model, imgs, opt_g, opt_d, step, loss, labels) -> float:
    return dcgan_examples_step(model, imgs, opt_g, opt_d)[1]


def _cgan(model, imgs, opt_g, opt_d, step, loss, labels) -> float:
    return projection_step(model, imgs, labels, opt_g, opt_d)[1]


def _wgan(model, imgs, opt_g, opt_d, step, loss, labels) -> float:
    return wgan_gp_step(model, imgs, opt_g, opt_d, step, loss.gp_weight, loss.n_critic)


# By training algorithm (a family record's `trainer`): (model, imgs, opt_g, opt_d, step, loss, labels) -> a loss;
# a VAE's optimiser is opt_g.
def _factorvae(model, imgs, opt_g, opt_d, step, loss, labels) -> float:
    gamma = loss.gamma_tc * min(1.0, step / loss.tc_warmup) if loss.tc_warmup else loss.gamma_tc
    return factorvae_step(model, imgs, opt_g, opt_d, loss.kld_weight, loss.beta, gamma, loss.recon_sum)


TEXTBOOK = {
    "vae": _vae,
    "cvae": _vae,
    "gan": _gan,
    "sngan": _sngan,
    "dcgan": _dcgan,
    "cgan": _cgan,
    "wgan": _wgan,
    "factorvae": _factorvae,
}


class PILDataset(torch.utils.data.Dataset):
    """Per-item PIL image -> tensor in [-1, 1], as a torchvision ToTensor + Normalize pipeline does."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images.numpy()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = Image.fromarray(self.images[i, 0])
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
        return (x - 0.5) / 0.5
