"""torchrun --standalone --nproc_per_node=2 on CPU (gloo) against single-process training on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genlab import checkpoint as ckpt
from genlab.configfile import load_config
from genlab.data import epoch_order, load_dataset, to_float
from genlab.losses import vae_loss
from genlab.models import build_model
from genlab.models import family as record_of
from genlab.runs import model_shape
from genlab.train import trainer_for

from conftest import NEW, TINY, assert_same_weights, tiny_sets, weights

WORLD, BATCH, STEPS, SEED = 2, 8, 5, 3

pytestmark = pytest.mark.slow  # multi-process / browser


def torchrun(family: str, data: Path, out: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", "-m", "genlab.cli"]
    args += ["train", family, "--data", str(data), "--out", str(out), "--batch-size", str(BATCH), "--max-steps", str(STEPS)]
    args += ["--seed", str(SEED), "--quiet", "--set", "data.workers=0", "--set", "train.log_every=1", *tiny_sets(family)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


def bn_momentum(model: torch.nn.Module, momentum: float) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def single_process(family: str, data: Path) -> dict[str, torch.Tensor]:
    """The same global batches in one process: BN per shard, rank r's noise stream for shard r, gradients averaged.

    DDP broadcasts rank 0's buffers before each forward, so only shard 0 moves the BN running
    statistics; momentum 0 leaves them alone for the other shards.
    """
    overrides = {"data.dataset": str(data), "train.batch_size": BATCH, "train.seed": SEED}
    overrides.update(TINY[family])
    config = load_config(family, None, overrides)
    torch.manual_seed(SEED)
    model = build_model(family, config.model)
    layout = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)  # as the default training path
    train, _ = load_dataset(config.data, *model_shape(config))
    opts = trainer_for(record_of(family)).make_optimizers(model, config)
    rng = []
    for r in range(WORLD):
        torch.manual_seed(SEED + r)
        rng.append(torch.get_rng_state())
    order = epoch_order(len(train), SEED, 0)
    for step in range(STEPS):
        glob = order[step * BATCH * WORLD : (step + 1) * BATCH * WORLD]
        shards = [to_float(train.images[glob[r * BATCH : (r + 1) * BATCH]]) for r in range(WORLD)]
        shards = [x.contiguous(memory_format=layout) for x in shards]
        if family == "vae":
            opts["opt"].zero_grad()
            for r, x in enumerate(shards):
                torch.set_rng_state(rng[r])
                bn_momentum(model, 0.1 if r == 0 else 0.0)
                recons, _, mu, logvar = model(x)
                loss = vae_loss(recons, x, mu, logvar, config.loss.kld_weight)["loss"]
                (loss / WORLD).backward()
                rng[r] = torch.get_rng_state()
            opts["opt"].step()
        else:
            g, d = model.generator, model.discriminator
            opts["opt_g"].zero_grad()
            fakes = []
            for r in range(WORLD):
                torch.set_rng_state(rng[r])
                bn_momentum(g, 0.1 if r == 0 else 0.0)
                fake = g(torch.randn(BATCH, config.model.latent_dim))
                scores = d.logits(fake)
                (F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores)) / WORLD).backward()
                fakes.append(fake.detach())
                rng[r] = torch.get_rng_state()
            opts["opt_g"].step()
            opts["opt_d"].zero_grad()
            for real, fake in zip(shards, fakes):
                real_s, fake_s = d.logits(real), d.logits(fake)
                loss = (
                    F.binary_cross_entropy_with_logits(real_s, torch.ones_like(real_s))
                    + F.binary_cross_entropy_with_logits(fake_s, torch.zeros_like(fake_s))
                ) / 2
                (loss / WORLD).backward()
            opts["opt_d"].step()
    return model.state_dict()


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_torchrun_two_ranks_equal_single_process(family: str, idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = torchrun(family, idx_data, run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["ranks_identical"] is True and rows[-1]["world_size"] == WORLD
    state = ckpt.load_state(ckpt.find_checkpoint(run))
    assert state["step"] == STEPS and state["world_size"] == WORLD and len(state["rng"]) == WORLD
    ddp = ckpt.load_weights(ckpt.find_checkpoint(run))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank (OMP_NUM_THREADS=1): oneDNN's reduction order depends on it
    try:
        ref = single_process(family, idx_data)
    finally:
        torch.set_num_threads(threads)
    lr = load_config(family).train.lr
    assert_same_weights(ref, ddp, noise_atol=2 * lr * STEPS)


def test_resume_with_another_world_size_is_refused(idx_data: Path, tmp_path: Path) -> None:
    from genlab.cli import main

    run = tmp_path / "run"
    assert torchrun("gan", idx_data, run).returncode == 0
    assert main(["train", "gan", "--resume", str(run), "--max-steps", "8", "--quiet"]) == 2


@pytest.mark.parametrize("family", [*NEW, "sigma-vae"])
def test_new_models_run_under_torchrun(family: str, idx_data: Path, tmp_path: Path) -> None:
    """Two CPU ranks (gloo) train and end with identical weights, as the notes' models do."""
    import os
    import subprocess
    import sys

    extra = ["--set", "model.decoder=sigma"] if family == "sigma-vae" else []
    family = "vae" if family == "sigma-vae" else family

    run = tmp_path / "run"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "genlab.cli"]
    args += ["train", family, "--data", str(idx_data), "--out", str(run), "--batch-size", "8", "--max-steps", "4", "--quiet"]
    args += [
        "--set",
        "data.workers=0",
        "--set",
        "train.report=false",
        *tiny_sets(family),
        *extra,
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if not trainer_for(record_of(family)).distributed:  # refused before any work, one line
        assert proc.returncode != 0 and f"{family} does not train under torchrun yet" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["ranks_identical"] is True and last["world_size"] == 2
    if extra:
        assert "log_sigma" in weights(run)  # the σ-VAE's calibrated sigma was trained and saved
