"""The 2-Stage VAE's second stage: its loss, fitting, sampling and evaluating through both stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.cli import main


def test_two_stage_vae_fits_samples_and_evaluates(tiny_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    import shutil

    from genlab.models.two_stage import Stage2VAE, stage2_loss

    stage2 = Stage2VAE(4, 16, 2)
    u = torch.randn(5, 4)
    torch.manual_seed(0)
    out = stage2_loss(stage2, u)
    torch.manual_seed(0)
    u_hat, mu, logvar = stage2(u)  # the same draw of z2
    gamma = torch.exp(stage2.log_gamma)
    nll = (u - u_hat).square().sum(1) / (2 * gamma) + 2 * torch.log(2 * torch.pi * gamma)
    kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
    assert out["loss"].item() == pytest.approx((nll + kl).mean().item(), rel=1e-5)

    run = tmp_path / "vae"
    shutil.copytree(tiny_runs["vae"], run)
    assert main(["sample", str(run), "--stage2", "--out", str(tmp_path / "x.png")]) == 2
    assert "genlab stage2" in capsys.readouterr().err
    assert main(["stage2", str(run), "--epochs", "2"]) == 0
    assert (run / "stage2" / "model.safetensors").exists() and "second stage fitted on 256 codes" in capsys.readouterr().out
    assert main(["sample", str(run), "--stage2", "--n", "8", "--out", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape[0] == 8 and np.abs(samples).max() <= 1
    assert main(["eval", str(run), "--stage2", "--n", "16", "--nll-n", "8", "--k", "2", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["sampler"].startswith("2-Stage VAE")
    assert main(["stage2", str(tiny_runs["gan"])]) == 2
    assert "goes on a (unconditional) vae run" in capsys.readouterr().err
