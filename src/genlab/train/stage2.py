"""Fitting the 2-Stage VAE's second stage (Dai & Wipf 2019) on a trained VAE run: RUN/stage2/."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save

from genlab.errors import GenlabError
from genlab.io import atomic_write, atomic_write_bytes
from genlab.latents import encode
from genlab.models import family
from genlab.models.two_stage import Stage2VAE, stage2_loss
from genlab.runlock import run_lock
from genlab.runs import STAGE2, load_run, splits


def fit_stage2(
    run: str | Path,
    epochs: int = 30,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    hidden: int = 1024,
    depth: int = 3,
    codes: str = "sampled",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Encode the run's training images, fit a Stage2VAE to their codes, save it in RUN/stage2.
    log: called with one line per epoch (its loss, time and the time left).

    codes = "sampled": each batch draws u ~ q(z|x) afresh, as Dai & Wipf's demo.py does; "mean": the
    posterior means (genlab's first second stage).
    """
    if codes not in ("sampled", "mean"):
        raise GenlabError(f"the second stage fits sampled or mean codes, not {codes!r}")
    # The run is held while its checkpoint is read and its second stage written: a training in it
    # could prune the checkpoint being read.
    with run_lock(run, f"genlab stage2 {run}", create=False, fix="wait for it to finish"):
        return _fit(run, epochs, batch_size, lr, seed, hidden, depth, codes, log or (lambda _: None))


def _fit(
    run: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    hidden: int,
    depth: int,
    codes: str,
    log: Callable[[str], None],
) -> dict:
    config, model, _ = load_run(str(run), "cpu")
    record = family(config.family)
    if record.kind != "vae" or record.conditional:
        raise GenlabError(f"{run} is a {config.family} run; the 2-Stage VAE's second stage goes on a (unconditional) vae run")
    started, cpu_started = time.monotonic(), time.process_time()
    train, _ = splits(config)
    mu, logvar = encode(model, train.images, config.data.binarize)
    u, std = torch.from_numpy(mu).float(), torch.from_numpy(logvar).float().mul(0.5).exp()
    if codes == "mean":
        std.zero_()
    torch.manual_seed(seed)
    stage2 = Stage2VAE(u.shape[1], hidden, depth)
    opt = torch.optim.Adam(stage2.parameters(), lr=lr)
    steps_per_epoch = len(u) // batch_size
    # The paper halves the learning rate on a schedule; a cosine decay to 0 does the same job in one line.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    last: dict[str, float] = {}
    took = time.monotonic() - started
    log(f"stage2: encoded {len(u):,} training images ({took:.0f} s); {epochs} epochs of {steps_per_epoch} steps")
    fit_started = time.monotonic()
    for epoch in range(epochs):
        order = torch.randperm(len(u), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            out = stage2_loss(stage2, u[idx] + std[idx] * torch.randn(len(idx), u.shape[1], generator=gen))
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            sched.step()
        last = {k: float(v.detach()) for k, v in out.items()}
        spent = time.monotonic() - fit_started
        left = spent / (epoch + 1) * (epochs - epoch - 1)
        log(f"stage2: epoch {epoch + 1}/{epochs}, -ELBO {last['loss']:.2f} ({spent:.0f} s, ~{left:.0f} s left)")
    folder = Path(run) / STAGE2
    folder.mkdir(exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in stage2.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda f: f.write(save(weights, metadata={"format": "pt"})))
    info = {
        "config": stage2.config.__dict__,
        "codes": len(u),
        "code_kind": codes,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "last": last,
        "seconds": round(time.monotonic() - started, 1),
        "cpu_s": round(time.process_time() - cpu_started, 1),  # encoding the training set included
        "params": sum(p.numel() for p in stage2.parameters()),
    }
    atomic_write_bytes(folder / "stage2.json", (json.dumps(info, indent=2) + "\n").encode())
    return info
