"""Faults during training: bad losses, a winning discriminator, full or unwritable disks."""

from __future__ import annotations

import errno
import json
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from genlab import checkpoint as ckpt
from genlab.cli import main
from genlab.config import VAELossConfig
from genlab.models import VanillaVAE
from genlab.train import gan as gan_family
from genlab.train import vae as vae_family

from conftest import train_args, weights


def test_skip_nonfinite_leaves_weights_untouched() -> None:
    torch.manual_seed(0)
    model = VanillaVAE(1, 4, hidden_dims=(8,), image_size=8)
    opt = {"opt": torch.optim.Adam(model.parameters(), lr=1e-3)}
    x = torch.full((4, 1, 8, 8), float("nan"))
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    vae_family.vae_step(model, x, opt, VAELossConfig(), 0, skip_nonfinite=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items() if "running" not in k)
    vae_family.vae_step(model, x, opt, VAELossConfig(), 1, skip_nonfinite=False)
    assert not torch.isfinite(model.fc_mu.weight).all()


def test_skip_policy_runs_through_bad_steps(idx_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = vae_family.objective

    def sometimes_nan(model, x, loss, step):
        out = real(model, x, loss, step)
        if step in (2, 5):
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(vae_family, "objective", sometimes_nan)
    run = tmp_path / "run"
    assert main(train_args("vae", idx_data, run, "--max-steps", "9", "--set", 'train.nan_policy="skip"')) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped_steps"] == 2 and all(r["loss"] == r["loss"] for r in rows if "loss" in r)
    assert all(torch.isfinite(v).all() for v in weights(run).values() if v.is_floating_point())
    monkeypatch.setattr(vae_family, "objective", real)


def test_discriminator_win_warns_once() -> None:
    memory: dict = {}
    said = [gan_family.health({"d_fake": 0.001}, memory, 100) for _ in range(gan_family.D_WINS_WINDOWS + 5)]
    assert [i for i, w in enumerate(said) if w] == [gan_family.D_WINS_WINDOWS - 1]
    assert "discriminator wins completely" in said[gan_family.D_WINS_WINDOWS - 1]
    gan_family.health({"d_fake": 0.3}, memory, 101)
    assert memory["d_wins"] == 0


def test_posterior_collapse_warns_once() -> None:
    memory: dict = {}
    windows = vae_family.COLLAPSE_WINDOWS
    said = [vae_family.health({"active_dims": 0.0, "kl": 25.0}, memory, 50 * i) for i in range(windows + 5)]
    assert [i for i, w in enumerate(said) if w] == [windows - 1]
    assert "posterior collapse" in said[windows - 1] and "25 nats of KL" in said[windows - 1]
    vae_family.health({"active_dims": 3.0, "kl": 8.0}, memory, 9999)
    assert memory["collapsed"] == 0


def test_active_dims_counts_the_dimensions_whose_mean_varies() -> None:
    torch.manual_seed(0)
    mu = torch.zeros(64, 5)
    mu[:, 1] = torch.randn(64)  # varies over the batch
    mu[:, 3] = 2.0 + 0.01 * torch.randn(64)  # a constant offset: KL without information
    x = torch.rand(64, 1, 4, 4)
    out = vae_family.loss_terms(torch.zeros_like(x), x, mu, torch.zeros_like(mu), mu, VAELossConfig(), 0, "gaussian")
    assert out["active_dims"].item() == 1
    assert out["kl"].item() > 1.0  # the offset's KL is there, and is not counted as carrying anything


def test_a_vae_run_logs_its_active_dims(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(train_args("vae", idx_data, run, "--max-steps", "4", "--set", "train.log_every=2")) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["active_dims"] for r in rows if "active_dims" in r]
    assert len(logged) == 2 and all(0 <= v <= 16 for v in logged)


def test_checkpoint_write_failure_keeps_the_last_good_one(idx_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    real_save = ckpt.save_file
    calls = {"n": 0}

    def full_disk_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", full_disk_on_second)
    assert main(train_args("gan", idx_data, run, "--epochs", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and "last complete one is kept" in err and "\n" not in err
    folder = ckpt.find_checkpoint(run)
    assert ckpt.load_state(folder)["epoch"] == 1 and ckpt.load_weights(folder)
    assert not list((run / "checkpoints").glob(".ckpt-*"))


def test_full_disk_or_unwritable_folder_fails_before_training(idx_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "file").write_text("x")
    assert main(train_args("gan", idx_data, tmp_path / "file" / "run")) == 2
    assert "cannot write to" in capsys.readouterr().err
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("genlab.train.guards.shutil.disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    assert main(train_args("gan", idx_data, tmp_path / "run")) == 2
    assert "MiB free" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
