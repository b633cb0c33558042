"""What a new user meets first: resuming with the same command, data-shaped models, the bar, grids, --version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genlab import checkpoint as ckpt
from genlab.cli import main
from genlab.configfile import load_config
from genlab.models import family
from genlab.train import loop
from genlab.train.common import first_step_compiles
from genlab.train.progress import Progress, planned_steps

from conftest import TINY, train_args


def test_resume_with_the_first_commands_own_flags(idx_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "R"
    first = train_args("gan", idx_data, run, "--max-steps", "6", "--seed", "1")
    assert main(first) == 0
    again = [a if a != "6" else "9" for a in first] + ["--resume", str(run)]  # the same command, --out included
    assert main(again) == 0, capsys.readouterr().err
    assert ckpt.load_state(ckpt.find_checkpoint(run))["step"] == 9

    changed = [a if a != "1" else "2" for a in again]  # --seed 2
    assert main(changed) == 2
    err = capsys.readouterr().err.strip()
    assert "train.seed: 1 in the run, 2 given" in err and "\n" not in err, err
    assert main([*again, "--batch-size", "32"]) == 2
    assert "train.batch_size: 16 in the run, 32 given" in capsys.readouterr().err

    same = tmp_path / "same.toml"
    same.write_text("[model]\nlatent_dim = 8\ng_hidden_dims = [16, 32]\n\n[train]\nbatch_size = 16\nseed = 1\nmax_steps = 12\n")
    assert main(["train", "gan", "--config", str(same), "--resume", str(run), "--quiet"]) == 0
    assert ckpt.load_state(ckpt.find_checkpoint(run))["step"] == 12
    other = tmp_path / "other.toml"
    other.write_text("[model]\nlatent_dim = 9\n")
    assert main(["train", "gan", "--config", str(other), "--resume", str(run), "--quiet"]) == 2
    assert "model.latent_dim: 8 in the run, 9 given" in capsys.readouterr().err
    assert main(["train", "gan", "--resume", str(run), "--out", str(tmp_path / "elsewhere"), "--quiet"]) == 2
    assert "drop --out" in capsys.readouterr().err

    # The folder knows its family: --resume alone continues it; a wrong family is named, and no family
    # without --resume is one line.
    assert main(["train", "--resume", str(run), "--max-steps", "14", "--quiet"]) == 0, capsys.readouterr().err
    assert ckpt.load_state(ckpt.find_checkpoint(run))["step"] == 14
    assert main(["train", "vae", "--resume", str(run), "--quiet"]) == 2
    assert "is a gan run" in capsys.readouterr().err
    assert main(["train", "--max-steps", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "name a model family" in err and "\n" not in err, err
    with pytest.raises(SystemExit):  # a misspelt flag is named, not its value taken for the family
        main(["train", "--resume", str(run), "--epoks", "3"])
    assert "unrecognized arguments: --epoks" in capsys.readouterr().err
    assert main(["train", "vea", "--max-steps", "3"]) == 2
    assert "no model family 'vea'; choose from vae, gan" in capsys.readouterr().err


def _folder(root: Path, mode: str, n: int = 40, size: int = 64) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (size, size, 3) if mode == "RGB" else (size, size)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_model_follows_the_data(family: str, tmp_path: Path, idx_data: Path, capsys) -> None:
    rgb, grey = _folder(tmp_path / "rgb", "RGB"), _folder(tmp_path / "grey", "L")
    run = tmp_path / "run"
    assert main(train_args(family, rgb, run, "--max-steps", "1", "--batch-size", "8")) == 0
    model = json.loads((run / "config.json").read_text())["model"]
    shape = (model["in_channels"], model["image_size"]) if family == "vae" else (model["img_shape"][0], model["img_shape"][2])
    assert shape == (3, 64)
    out = capsys.readouterr().out
    assert f"data: 40 images from {rgb} (RGB), resized to 3×64×64; 38 train / 2 validation" in out

    overrides = {"data.dataset": str(grey)}
    assert _shape(load_config(family, None, overrides)) == (1, 64)
    assert _shape(load_config(family, None, {"data.dataset": str(idx_data)})) == ((1, 32) if family == "vae" else (1, 28))
    assert _shape(load_config(family, None, {"data.dataset": "fashion-mnist"})) == ((1, 32) if family == "vae" else (1, 28))
    # What the config sets wins: an RGB folder into a grey 32x32 model, said so.
    fixed = {"vae": {"model.in_channels": 1, "model.image_size": 32}, "gan": {"model.img_shape": [1, 32, 32]}}[family]
    assert _shape(load_config(family, None, {"data.dataset": str(rgb), **fixed})) == (1, 32)


def _shape(config) -> tuple[int, int]:
    m = config.model
    return (m.in_channels, m.image_size) if config.family == "vae" else (m.img_shape[0], m.img_shape[-1])


def test_planned_steps() -> None:
    assert planned_steps(28110, 0, elapsed=10, budget=150, seconds_per_step=0.05) == 2800
    assert planned_steps(1000, 100, elapsed=10, budget=150, seconds_per_step=0.05) == 1000  # the step limit binds
    assert planned_steps(1000, 100, elapsed=200, budget=150, seconds_per_step=0.05) == 100  # over time: stop now


@pytest.mark.slow
def test_bar_counts_what_a_time_budget_will_run(idx_data: Path, tmp_path: Path, monkeypatch) -> None:
    bars: list[Progress] = []

    class Recorded(Progress):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(loop, "Progress", Recorded)
    args = train_args("gan", idx_data, tmp_path / "run", "--epochs", "100000", "--time-budget", "3")
    args.remove("--quiet")
    assert main(args) == 0
    step = ckpt.load_state(ckpt.find_checkpoint(tmp_path / "run"))["step"]
    totals = bars[0].totals
    assert totals[0] is None  # unknown before the speed is measured, not the 1.6M-step epoch limit
    estimates = totals[1:-1]
    assert estimates and all(step / 4 <= t <= step * 4 for t in estimates), (totals, step)
    assert totals[-1] == step  # closes at 100%


def test_first_step_compile_notice() -> None:
    big = load_config("vae", None, {"model.in_channels": 3, "model.image_size": 64})
    vae, gan = family("vae"), family("gan")
    assert "BatchNorm+LeakyReLU" in first_step_compiles(big, vae, fused=True)  # 64 x 32 x 64 x 64 >= 2**21
    assert first_step_compiles(big, vae, fused=False) == ""
    tiny = load_config("vae", None, TINY["vae"])
    assert first_step_compiles(tiny, vae, fused=True) == ""
    assert "train.compile" in first_step_compiles(load_config("gan", None, {"train.compile": True}), gan, fused=False)


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("genlab 0.1.0, torch ") and "device " in out
