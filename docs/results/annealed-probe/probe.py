"""AnnealedVAE probe: configs/annealed_vae_shapes.toml's model and loss (genlab's VanillaVAE and vae_loss) in a
plain loop, logging every --every steps where the KL goes and whether the decoder still listens to z.

    .venv/bin/python docs/results/annealed-probe/probe.py --steps 3000 --every 250 > probe-seed0.jsonl

Logged: C and the batch's recon (nats) and KL; active (dimensions whose mean varies > 0.01 over the batch);
offset_kl (the KL a constant mean code would cost: 0.5 * |batch mean of mu|^2); alive_fc1 / alive_fc2 (share
of the decoder's first and second ReLU layers' units on for at least one image); dec_sens (the largest, over
the 10 dimensions, mean absolute change of the output logits when one coordinate of the mean code moves by 1).
"""

import argparse
import json
import time

import torch

from genlab.data.factors import shapes_images
from genlab.data.idx import default_root
from genlab.losses import vae_loss
from genlab.models.vae import VanillaVAE

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--batch", type=int, default=256)
p.add_argument("--gamma", type=float, default=1000.0)
p.add_argument("--cmax", type=float, default=25.0)
p.add_argument("--citer", type=int, default=12700)
p.add_argument("--steps", type=int, default=1000)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--every", type=int, default=100)
a = p.parse_args()

torch.manual_seed(a.seed)
images = shapes_images(32, default_root("shapes"))
model = VanillaVAE(in_channels=1, latent_dim=10, image_size=32, decoder="bernoulli", arch="standard")
opt = torch.optim.Adam(model.parameters(), lr=a.lr)
g = torch.Generator().manual_seed(a.seed)
fc1, fc2 = model.decoder_input[0], model.decoder_input[2]
t0 = time.time()
for step in range(a.steps + 1):
    x = images[torch.randint(0, images.shape[0], (a.batch,), generator=g)].float() / 255
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar)
    c = min(a.cmax, a.cmax * step / a.citer)
    out = vae_loss(model.decode(z), x, mu, logvar, 1.0, capacity=c, gamma=a.gamma, decoder="bernoulli", recon_sum=True)
    if step % a.every == 0:
        with torch.no_grad():
            h1 = fc1(z)
            h2 = fc2(torch.relu(h1))
            base = model.decode(mu[:32])
            sens = max((model.decode(mu[:32] + torch.eye(10)[d]) - base).abs().mean().item() for d in range(10))
        row = dict(step=step, C=round(c, 3), recon=round(out["recon"].item(), 2), kl=round(out["kl"].item(), 3),
                   active=int((mu.var(0) > 0.01).sum()), offset_kl=round(mu.mean(0).square().sum().item() / 2, 2),
                   alive_fc1=round((h1 > 0).any(0).float().mean().item(), 3),
                   alive_fc2=round((h2 > 0).any(0).float().mean().item(), 3), dec_sens=round(sens, 4),
                   s=round(time.time() - t0))  # fmt: skip
        print(json.dumps(row), flush=True)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
