"""Fitting the 2-Stage VAE's second stage (Dai & Wipf 2019) on a trained VAE run: RUN/stage2/."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import save

from genlab.errors import GenlabError
from genlab.io import atomic_write, atomic_write_bytes
from genlab.latents import encode
from genlab.models import family
from genlab.models.two_stage import Stage2VAE, stage2_loss
from genlab.runs import STAGE2, load_run, splits


def fit_stage2(
    run: str | Path, epochs: int = 30, batch_size: int = 100, lr: float = 1e-3, seed: int = 0, hidden: int = 1024, depth: int = 3
) -> dict:
    """Encode the run's training images (posterior means), fit a Stage2VAE to them, save it in RUN/stage2."""
    config, model, _ = load_run(str(run), "cpu")
    record = family(config.family)
    if record.kind != "vae" or record.conditional:
        raise GenlabError(f"{run} is a {config.family} run; the 2-Stage VAE's second stage goes on a (unconditional) vae run")
    started = time.monotonic()
    train, _ = splits(config)
    mu, _ = encode(model, train.images, config.data.binarize)
    u = torch.from_numpy(mu).float()
    torch.manual_seed(seed)
    stage2 = Stage2VAE(u.shape[1], hidden, depth)
    opt = torch.optim.Adam(stage2.parameters(), lr=lr)
    steps_per_epoch = len(u) // batch_size
    # The paper halves the learning rate on a schedule; a cosine decay to 0 does the same job in one line.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    last: dict[str, float] = {}
    for _ in range(epochs):
        order = torch.randperm(len(u), generator=gen)
        for i in range(steps_per_epoch):
            out = stage2_loss(stage2, u[order[i * batch_size : (i + 1) * batch_size]])
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            sched.step()
        last = {k: float(v.detach()) for k, v in out.items()}
    folder = Path(run) / STAGE2
    folder.mkdir(exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in stage2.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda f: f.write(save(weights, metadata={"format": "pt"})))
    info = {
        "config": stage2.config.__dict__,
        "codes": len(u),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "last": last,
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_bytes(folder / "stage2.json", (json.dumps(info, indent=2) + "\n").encode())
    return info
