"""The conditional VAE gets every VAE setting: the defects of branching on the family name instead of its kind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from genlab.cli import main
from genlab.configfile import load_config
from genlab.models import build_model
from genlab.models.layers import ConvBlock, set_fused_norm_act

from conftest import train_args, weights


def test_beta_norm_is_resolved_for_the_conditional_vae() -> None:
    config = load_config("cvae", None, {"model.latent_dim": 4, "loss.beta_norm": 0.5})
    assert config.loss.beta == pytest.approx(0.5 / (4 * config.loss.kld_weight))


def test_tcvae_on_the_conditional_vae_knows_the_data_set_size(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(train_args("cvae", idx_data, run, "--max-steps", "4", "--set", 'loss.loss_type="tcvae"')) == 0
    assert json.loads((run / "config.json").read_text())["loss"]["dataset_size"] == 256  # the training images
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert rows and all(math.isfinite(r["loss"]) and "tc" in r for r in rows)


def test_sigma_decoder_on_the_conditional_vae_calibrates_its_sigma(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(train_args("cvae", idx_data, run, "--max-steps", "8", "--set", 'model.decoder="sigma"')) == 0
    assert -6 < weights(run)["vae.log_sigma"].item() < 0  # moved from 0 (sigma = 1) towards the RMS error


def test_fused_norm_act_is_accepted_for_the_conditional_vae() -> None:
    config = load_config("cvae", None, {"train.fuse_norm_act": True})
    model = set_fused_norm_act(build_model("cvae", config.model), True)
    blocks = [m for m in model.modules() if isinstance(m, ConvBlock)]
    assert blocks and all(b.fuse_min_elements == 0 for b in blocks)


def test_the_conditional_vae_draws_traversals_each_epoch(idx_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(train_args("cvae", idx_data, run, "--epochs", "1")) == 0
    assert (run / "samples" / "traverse_epoch_0001.png").exists()
    assert main(["traverse", str(run), "--out", str(tmp_path / "t.png"), "--dims", "3"]) == 0
    assert "rows by KL" in capsys.readouterr().out
