"""The models beyond the notes from the command line: train, resume exactly, sample, evaluate; classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main
from genlab.configfile import load_config
from genlab.errors import ConfigError
from genlab.models import build_model
from genlab.models import family as record_of

from conftest import NEW, TINY, assert_same_state, tiny_sets, weights


@pytest.mark.parametrize("family", NEW)
def test_new_models_train_resume_exactly_sample_and_evaluate(family: str, idx_data: Path, tmp_path: Path) -> None:
    args = ["--data", str(idx_data), "--batch-size", "16", "--quiet", "--set", "train.log_every=2", "--set", "train.report=false"]
    args += tiny_sets(family)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train", family, "--out", str(whole), "--max-steps", "6", *args]) == 0
    assert main(["train", family, "--out", str(split), "--max-steps", "3", *args]) == 0
    assert main(["train", family, "--resume", str(split), "--max-steps", "6", "--quiet"]) == 0
    assert_same_state(whole, split)
    assert main(["sample", str(whole), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert main(["eval", str(whole), "--n", "32", "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    if record_of(family).kind == "gan":
        assert ("w_estimate" in result["gan_health"]) == (family == "wgan-gp")
    assert set(weights(whole)) == set(build_model(family, load_config(family, None, {**TINY[family]}).model).state_dict())


def test_sigma_vae_trains_and_calibrates_its_sigma(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "sigma"
    args = ["train", "vae", "--data", str(idx_data), "--out", str(run), "--max-steps", "8", "--batch-size", "16", "--quiet"]
    args += ["--set", "model.decoder=sigma", "--set", "train.report=false"]
    args += tiny_sets("vae")
    assert main(args) == 0
    log_sigma = weights(run)["log_sigma"].item()
    assert -6 < log_sigma < 0  # moved from its start (0: sigma = 1) towards the reconstructions' RMS error
    assert main(["eval", str(run), "--n", "32", "--nll-n", "16", "--k", "4", "--json", str(tmp_path / "e.json")]) == 0
    assert "learned (σ-VAE) variance" in json.loads((tmp_path / "e.json").read_text())["likelihood"]["likelihood"]
    with pytest.raises(ConfigError, match='set loss.loss_type = "beta"'):
        load_config("vae", None, {"model.decoder": "sigma", "loss.loss_type": "capacity"})


@pytest.mark.parametrize("family", ["cgan", "cvae"])
def test_class_conditional_sampling_from_the_command_line(family: str, idx_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", family, "--data", str(idx_data), "--out", str(run), "--max-steps", "2", "--batch-size", "16", "--quiet"]
    assert main([*args, "--set", "train.report=false", *tiny_sets(family)]) == 0
    size = 28
    assert main(["sample", str(run), "--class", "7", "--n", "6", "--out", str(tmp_path / "seven.npy")]) == 0
    assert np.load(tmp_path / "seven.npy").shape[0] == 6
    assert main(["sample", str(run), "--class", "all", "--n", "30", "--out", str(tmp_path / "all.png")]) == 0
    width, height = Image.open(tmp_path / "all.png").size
    pad = 2  # the grid's padding: 3 columns of 28 px and 10 rows, each with padding, enlarged alike
    assert width * (10 * (size + pad) + pad) == height * (3 * (size + pad) + pad)
    capsys.readouterr()
    for bad, message in (
        (["--class", "10"], "--class must be a class in 0..9"),
        (["--class", "all", "--n", "15"], "multiple of 10"),
    ):
        assert main(["sample", str(run), *bad, "--out", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err


def test_class_on_an_unconditional_run_and_labels_missing(tiny_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(["sample", str(tiny_runs["gan"]), "--class", "3", "--out", str(tmp_path / "x.png")]) == 2
    assert "--class needs a class-conditional run" in capsys.readouterr().err
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(8):  # images straight in the folder: no class subfolders, no labels
        Image.fromarray(np.full((64, 64), i * 30, dtype=np.uint8)).save(folder / f"{i}.png")
    assert main(["train", "cgan", "--data", str(folder), "--out", str(tmp_path / "r"), "--max-steps", "1", "--quiet"]) == 2
    assert "has no labels here" in capsys.readouterr().err
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(folder / "small.png")
    assert main(["train", "gan", "--data", str(folder), "--out", str(tmp_path / "r2"), "--max-steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()  # raised in a DataLoader worker, still one line
    assert "small.png: 40x40 is smaller than the model's 64x64" in err and "\n" not in err and "Traceback" not in err
