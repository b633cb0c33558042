"""One FactorVAE update (Kim & Mnih 2018; disentanglement_lib's factor_vae.py): the VAE and the TC
discriminator each step from the same state.

VAE: the VAE loss + gamma_tc * TC, TC ~ mean(logit_0 - logit_1) of D on the batch's codes (the gradient
reaches the encoder through z, not D). D: BCE telling the batch's codes (class 0) from the same codes with
each dimension permuted across the batch (class 1), both detached. The permuted codes come from the same
batch, as disentanglement_lib does; the paper's Algorithm 1 draws a second batch for them.

loss.tc_warmup grows gamma_tc from 0 over that many steps: genlab's addition, as Chen et al. warm up
beta-TCVAE's beta. Kim & Mnih apply gamma from the first step, which on `shapes` leaves three active
dimensions by step ~650 even at gamma = 2.5, where gamma = 0 keeps six (docs/disentanglement.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Adam, Optimizer

from genlab.config import FactorVAELossConfig, RunConfig
from genlab.models.factorvae import permute_dims
from genlab.train import Trainer
from genlab.train.common import FP32, Precision, backward, unwrap
from genlab.train.common import step as optimizer_step
from genlab.train.vae import CHARTS, LOG_KEYS, health, loss_terms, pictures, prepare, validate, warmed_up


def make_optimizers(model, config: RunConfig) -> dict[str, Optimizer]:
    t, loss = config.train, config.loss
    vae = Adam(model.vae_parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, fused=True)
    return {"opt": vae, "opt_d": Adam(model.discriminator.parameters(), lr=loss.d_lr, betas=loss.d_betas, fused=True)}


def factorvae_step(
    model,
    x: Tensor,
    optimizers: dict[str, Optimizer],
    loss: FactorVAELossConfig,
    step: int,
    skip_nonfinite: bool = False,
    amp: Precision = FP32,
) -> dict[str, Tensor]:
    """Forward, the VAE loss + gamma_tc * TC and D's loss, both backward into their own networks, both Adam steps."""
    inner = unwrap(model)
    d = inner.discriminator
    with amp.autocast():
        recons, x, mu, log_var, z = model(x, return_z=True)
        out = loss_terms(recons, x, mu, log_var, z, loss, step, inner.config.decoder)
        logits = d(z).float()
        tc = (logits[:, 0] - logits[:, 1]).mean()
        vae_loss = out["loss"] + loss.kld_weight * warmed_up(loss.gamma_tc, loss, step) * tc
        z_fixed = z.detach()
        d_logits = torch.cat([d(z_fixed), d(permute_dims(z_fixed))]).float()
        targets = torch.cat([torch.zeros(len(z), dtype=torch.long), torch.ones(len(z), dtype=torch.long)]).to(z.device)
        d_loss = F.cross_entropy(d_logits, targets)  # 0.5 * (the two halves' mean BCEs)
    opt, opt_d = optimizers["opt"], optimizers["opt_d"]
    opt.zero_grad(set_to_none=True)
    opt_d.zero_grad(set_to_none=True)
    vae_ok = backward(vae_loss, inner.vae_parameters(), skip_nonfinite, amp.scaler("opt"), retain_graph=True)
    d_ok = backward(d_loss, list(d.parameters()), skip_nonfinite, amp.scaler("opt_d"))
    if vae_ok:
        optimizer_step(opt, amp.scaler("opt"))
    if d_ok:
        optimizer_step(opt_d, amp.scaler("opt_d"))
    detached = {k: v.detach().float() for k, v in out.items()}
    return {**detached, "loss": vae_loss.detach().float(), "tc": tc.detach(), "d_loss": d_loss.detach().float()}


LOG = (*LOG_KEYS, "tc", "d_loss")
# Not under torchrun yet: D is called outside the VAE's DDP wrapper, so its gradients would not be averaged.
CHARTS_FACTORVAE = {**CHARTS, "FactorVAE: TC estimate and D's loss": (("tc", "d_loss"), None)}
TRAINER = Trainer(factorvae_step, make_optimizers, prepare, validate, pictures, LOG, CHARTS_FACTORVAE, health,
                  distributed=False)  # fmt: skip
