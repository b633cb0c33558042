"""The sampling rules the field uses: an EMA of G's weights, standing BatchNorm statistics, a sampling
temperature; and snapshots of a run at CPU-seconds of its training."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab import checkpoint as ckpt
from genlab.cli import main
from genlab.configfile import load_config
from genlab.errors import ConfigError
from genlab.models import FAMILIES, build_model
from genlab.models import family as record_of
from genlab.runs import load_run
from genlab.sampling import draw, standing_statistics

from conftest import assert_same_state, small_config, train_args


def test_the_ema_generator_is_the_running_average_saved_beside_g_and_resumes_exactly(idx_data: Path, tmp_path: Path) -> None:
    ema = ["--set", "train.ema=0.9"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(train_args("dcgan", idx_data, whole, "--max-steps", "6", *ema)) == 0
    assert main(train_args("dcgan", idx_data, split, "--max-steps", "3", *ema)) == 0
    assert main(["train", "dcgan", "--resume", str(split), "--max-steps", "6", "--quiet"]) == 0
    assert_same_state(whole, split)
    a, b = (ckpt.load_weights(ckpt.find_checkpoint(r), ckpt.EMA_FILE) for r in (whole, split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the EMA resumed exactly too
    assert a["n_averaged"].item() == 6
    _, raw, _ = load_run(str(whole), "cpu", "raw")
    _, averaged, state = load_run(str(whole), "cpu", "ema")
    assert state["weights"] == "ema"
    assert not torch.equal(raw.generator.model[0].weight, averaged.generator.model[0].weight)
    torch.testing.assert_close(averaged.generator.model[0].weight, ckpt.ema_generator_weights(a)["model.0.weight"])
    for weights in ("raw", "ema"):
        out = tmp_path / f"{weights}.npy"
        assert main(["sample", str(whole), "--n", "4", "--weights", weights, "--out", str(out)]) == 0
    assert not np.array_equal(np.load(tmp_path / "raw.npy"), np.load(tmp_path / "ema.npy"))


def test_ema_is_refused_where_there_is_no_generator_or_none_was_kept(tiny_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="averages a GAN generator"):
        load_config("vae", None, {"train.ema": 0.999})
    assert main(["sample", str(tiny_runs["gan"]), "--weights", "ema", "--out", str(tmp_path / "x.png")]) == 2
    assert "keeps no EMA generator" in capsys.readouterr().err
    assert main(["sample", str(tiny_runs["gan"]), "--out", str(tmp_path / "x.png")]) == 0  # auto: the raw G


@pytest.mark.parametrize("name", list(FAMILIES))
def test_temperature_scales_the_prior_draw_and_one_is_the_prior_itself(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, small_config(name).model).eval()
    conditional = record_of(name).conditional
    labels = torch.full((6,), 3) if conditional else None

    def sample(temperature: float | None, seed: int = 1) -> torch.Tensor:
        kw = {} if temperature is None else {"temperature": temperature}
        return draw(model, 6, torch.Generator().manual_seed(seed), labels, **kw)

    assert torch.equal(sample(1.0), sample(None))  # the default is the prior, bit for bit
    cold = sample(0.0)
    torch.testing.assert_close(cold, cold[:1].expand_as(cold))  # every draw the prior's mean (rows of a GEMM may round apart)
    assert torch.equal(cold, sample(0.0, seed=2))
    half, full = sample(0.5), sample(1.0)
    assert not torch.equal(half, full) and not torch.equal(half, cold)
    with torch.no_grad():  # T scales z itself: the same draw of eps, halved, through the same network
        z = 0.5 * torch.randn(6, model.config.latent_dim, generator=torch.Generator().manual_seed(1))
        cond = [labels] if conditional else []
        by_hand = model.generator(z, *cond) if record_of(name).kind == "gan" else model.to_image(model.decode(z, *cond))
    torch.testing.assert_close(half, by_hand)


def test_temperature_is_a_flag_of_sample_and_eval_with_a_one_line_refusal(
    tiny_runs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    import shutil

    run = shutil.copytree(tiny_runs["vae"], tmp_path / "vae")  # eval keeps its JSON in the run folder
    for bad in ("-1", "nan"):
        assert main(["sample", str(run), "--temperature", bad, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert "--temperature must be a finite number >= 0" in err and err.count("\n") == 1
    assert main(["sample", str(run), "--n", "4", "--temperature", "0", "--out", str(tmp_path / "cold.npy")]) == 0
    assert "at temperature 0" in capsys.readouterr().out
    cold = np.load(tmp_path / "cold.npy")
    np.testing.assert_allclose(cold, np.broadcast_to(cold[:1], cold.shape), atol=1e-6)  # rows of a GEMM may round apart
    out = tmp_path / "e.json"
    assert main(["eval", str(run), "--n", "16", "--nll-n", "8", "--k", "2", "--temperature", "0.5", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["temperature"] == 0.5
    assert list((run / "evals").glob("*-T0.5.json"))
    assert re.search(r"^temperature +0\.5 ", capsys.readouterr().out, re.M)  # the printed table says so too


def test_standing_statistics_are_the_plain_average_over_fresh_samples() -> None:
    config = load_config("dcgan", None, {"model.width": 4, "model.latent_dim": 8})
    torch.manual_seed(0)
    model = build_model("dcgan", config.model)
    norm = model.generator.model[1]
    norm.running_mean.fill_(5.0)  # statistics a training run left behind
    reference = copy.deepcopy(model)
    standing_statistics(model, n=64, batch_size=16, seed=3)
    assert not model.generator.training and norm.momentum == reference.generator.model[1].momentum
    # By hand: the same four batches of z, the first layer's per-channel means averaged.
    gen = torch.Generator().manual_seed(3)
    first = reference.generator.model[0]
    means = [first(torch.randn(16, 8, generator=gen).view(16, -1, 1, 1)).mean((0, 2, 3)) for _ in range(4)]
    torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)


def test_snapshots_are_kept_at_cpu_seconds_of_training_and_score_like_runs(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = train_args("gan", idx_data, run, "--epochs", "1000", "--max-steps", "400", "--set", "train.snapshots=[0.2, 0.5]")
    assert main(args) == 0
    status = json.loads((run / "status.json").read_text())
    snaps = sorted(p.name for p in (run / "snapshots").iterdir())
    assert snaps == ["cpu-0.2s", "cpu-0.5s"], snaps
    steps = []
    for name in snaps:
        config, _, state = load_run(str(run / "snapshots" / name), "cpu")
        assert config.family == "gan" and 0 < state["step"] < status["steps"]
        steps.append(state["step"])
    assert steps == sorted(steps) and status["cpu_s"] >= 0.5
    # a snapshot's step is the steps its weights have seen: a run stopped there holds the same weights
    short = tmp_path / "short"
    assert main(train_args("gan", idx_data, short, "--epochs", "1000", "--max-steps", str(steps[0]))) == 0
    snap, stopped = load_run(str(run / "snapshots" / snaps[0]), "cpu")[1], load_run(str(short), "cpu")[1]
    assert all(torch.equal(a, b) for a, b in zip(snap.state_dict().values(), stopped.state_dict().values(), strict=True))
    assert main(["eval", str(run / "snapshots" / snaps[0]), "--n", "32", "--json", str(tmp_path / "e.json")]) == 0
