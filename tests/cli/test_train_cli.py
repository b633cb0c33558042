"""End to end through the command line, on the tiny IDX data set that conftest writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab import checkpoint as ckpt
from genlab.cli import main

from conftest import assert_same_state, losses, train_args, weights


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_train_resume_sample(family: str, idx_data: Path, tmp_path: Path) -> None:
    data = idx_data
    one_go, split = tmp_path / "one_go", tmp_path / "split"
    assert main(train_args(family, data, one_go, "--epochs", "2")) == 0  # 16 steps an epoch
    # Stop mid-epoch at step 20 (epoch 1, batch 4; a logging window of 3 open), then resume to the end.
    assert main(train_args(family, data, split, "--epochs", "2", "--max-steps", "20")) == 0
    stopped = ckpt.load_state(ckpt.find_checkpoint(split))
    assert (stopped["step"], stopped["epoch"], stopped["batch"]) == (20, 1, 4)
    assert main(["train", family, "--resume", str(split), "--quiet"]) == 0
    assert_same_state(one_go, split)
    assert losses(one_go, family) == losses(split, family)

    config = json.loads((one_go / "config.json").read_text())
    assert config["family"] == family and config["train"]["batch_size"] == 16
    for png in ("epoch_0001.png", "epoch_0002.png"):
        assert Image.open(one_go / "samples" / png).size[0] > 28
    assert (one_go / "tb").is_dir()

    assert main(["sample", str(one_go), "--n", "10", "--out", str(tmp_path / "s.npy")]) == 0
    array = np.load(tmp_path / "s.npy")
    assert array.shape == (10, 1, 28, 28) and array.dtype == np.float32  # the data's own size, not the padded 32
    assert array.min() >= -1 and array.max() <= 1 and array.std() > 0
    assert main(["sample", str(one_go), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0
    img = Image.open(tmp_path / "s.png")
    assert img.size == (6 * 92, 6 * 92) and np.asarray(img).std() > 0  # a 92-pixel grid, enlarged to >= 512
    assert main(["sample", str(one_go), "--n", "9", "--scale", "1", "--out", str(tmp_path / "s1.png")]) == 0
    small = np.asarray(Image.open(tmp_path / "s1.png"))
    assert small.shape == (3 * 28 + 4 * 2, 3 * 28 + 4 * 2)
    assert np.array_equal(np.asarray(img)[::6, ::6], small)  # nearest-neighbour: the same pixels, repeated


def test_vae_reconstruct_and_interpolate(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(train_args("vae", idx_data, run, "--max-steps", "4")) == 0
    assert main(["reconstruct", str(run), "--n", "6", "--out", str(tmp_path / "r.png")]) == 0
    # 6 pairs = 12 images, 8 a row: 242 x 62 pixels, enlarged 3x to reach 512
    assert Image.open(tmp_path / "r.png").size == (3 * (8 * 28 + 9 * 2), 3 * (2 * 28 + 3 * 2))
    assert main(["interpolate", str(run), "--pairs", "2", "--steps", "5", "--out", str(tmp_path / "i.npy")]) == 0
    assert np.load(tmp_path / "i.npy").shape == (10, 1, 28, 28)
    assert main(["reconstruct", str(run), "--out", str(tmp_path / "r.gif")]) == 2
    assert main(["sample", str(run), "--out", str(tmp_path / "new" / "folder" / "s.png")]) == 0  # folders are made
    (tmp_path / "file").write_text("x")
    assert main(["sample", str(run), "--out", str(tmp_path / "file" / "s.png")]) == 2  # one line, no traceback


def test_same_seed_same_weights(idx_data: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(train_args("gan", idx_data, tmp_path / name, "--max-steps", "6", "--seed", "3")) == 0
    assert all(torch.equal(v, weights(tmp_path / "b")[k]) for k, v in weights(tmp_path / "a").items())
    assert main(train_args("gan", idx_data, tmp_path / "c", "--max-steps", "6", "--seed", "4")) == 0
    assert not torch.equal(
        weights(tmp_path / "a")["generator.model.0.weight"], weights(tmp_path / "c")["generator.model.0.weight"]
    )


def test_cli_errors_are_one_line(idx_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (train_args("vae", idx_data, tmp_path / "x", "--set", "train.lrr=1"), "did you mean train.lr"),
        (train_args("vae", idx_data, tmp_path / "x", "--batch-size", "1000"), "larger than the 256 training images"),
        (train_args("vae", tmp_path / "nowhere", tmp_path / "x"), "neither a built-in data set"),
        (["sample", str(tmp_path / "nothing"), "--out", str(tmp_path / "a.png")], "does not exist"),
        (["train", "vae", "--resume", str(tmp_path / "nothing")], "no config.json"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("genlab: error:") and message in err and "\n" not in err, err


def test_resume_refuses_model_changes_and_mismatched_checkpoints(idx_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(train_args("vae", idx_data, run, "--max-steps", "2")) == 0
    assert main(["train", "vae", "--resume", str(run), "--set", "model.latent_dim=5"]) == 2
    assert "cannot change model.latent_dim" in capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    config["model"]["latent_dim"] = 5
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "vae", "--resume", str(run), "--quiet"]) == 2
    assert "latent_dim: 4 != 5" in capsys.readouterr().err
    assert main(train_args("vae", idx_data, run)) == 2  # no silent overwrite of a run
    assert "--resume" in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(idx_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(train_args("vae", idx_data, run, "--epochs", "1")) == 0
    good = weights(run)
    # A learning rate this large sends the weights to inf/NaN within a few steps.
    bad_run = tmp_path / "bad"
    assert main(train_args("vae", idx_data, bad_run, "--lr", "1e30", "--epochs", "2")) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step" in err and "last good checkpoint" in err
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (bad_run / "checkpoints").exists() or all(
        torch.isfinite(v).all() for v in weights(bad_run).values() if v.is_floating_point()
    )


def run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "genlab.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for_checkpoint(run: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (run / "checkpoints" / "latest").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 130)])
def test_signals_checkpoint_and_say_how_to_resume(idx_data: Path, tmp_path: Path, sig: int, code: int) -> None:
    run = tmp_path / "run"
    proc = run_cli(train_args("gan", idx_data, run, "--epochs", "100000", "--batch-size", "128"))
    wait_for_checkpoint(run, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    last = [line for line in err.strip().splitlines() if line.startswith("genlab:")][-1]
    assert "checkpoint saved" in last and f"--resume {run}" in last
    state = ckpt.load_state(ckpt.find_checkpoint(run))
    assert state["step"] > 0


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_a_loadable_checkpoint(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    rng = random.Random(0)
    # 2 steps an epoch: a checkpoint every 2 steps, so kills land in the middle of writes too.
    args = train_args("gan", idx_data, run, "--epochs", "100000", "--batch-size", "128")
    steps = []
    for attempt in range(4):
        proc = run_cli(args if attempt == 0 else ["train", "gan", "--resume", str(run), "--quiet"])
        wait_for_checkpoint(run, proc)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.kill()
        proc.wait()
        folder = ckpt.find_checkpoint(run)
        ckpt.load_weights(folder)
        steps.append(ckpt.load_state(folder)["step"])
    assert steps == sorted(steps) and steps[-1] > 0
