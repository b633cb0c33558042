"""Every registered model: build, shapes, one step, checkpoint, sample; and the CLI path of the new ones."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab import checkpoint as ckpt
from genlab.cli import main
from genlab.config import load_config
from genlab.errors import ConfigError
from genlab.losses import gradient_penalty, hinge_d_loss, hinge_g_loss
from genlab.models import KINDS, MODELS, build_model, is_conditional
from genlab.train import FAMILIES
from genlab.train.common import FP32

from test_cli import assert_same_state, weights

SMALL = {  # small widths, so every model builds and steps in a moment
    "vae": {"model.hidden_dims": [8, 16], "model.latent_dim": 4},
    "gan": {"model.g_hidden_dims": [16, 32], "model.d_hidden_dims": [16], "model.latent_dim": 8},
    "dcgan": {"model.width": 4, "model.latent_dim": 8},
    "sngan": {"model.width": 4, "model.latent_dim": 8},
    "wgan-gp": {"model.width": 4, "model.latent_dim": 8},
    "cgan": {"model.width": 4, "model.latent_dim": 8},
    "cvae": {"model.hidden_dims": [8, 16], "model.latent_dim": 4},
}
NEW = ["dcgan", "sngan", "wgan-gp", "cgan", "cvae"]


def small_config(family: str, size: int = 28, channels: int = 1, **extra):
    shape = {"model.in_channels": channels, "model.image_size": 32 if size == 28 else size}
    if KINDS[family] == "gan":
        shape = {"model.img_shape": [channels, size, size]}
    return load_config(family, None, {**SMALL[family], **shape, "train.batch_size": 8, **extra})


def test_every_model_has_small_settings_here() -> None:
    assert set(SMALL) == set(MODELS) == set(FAMILIES)


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3), (64, 3)])
def test_build_and_shapes(family: str, size: int, channels: int) -> None:
    config = small_config(family, size, channels)
    model = build_model(family, config.model)
    x = torch.rand(4, channels, *(2 * [config.model.image_size if KINDS[family] == "vae" else size])) * 2 - 1
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == x.shape and samples.min() >= -1 and samples.max() <= 1
    labels = (torch.tensor([0, 3, 9, 1]),) if is_conditional(family) else ()
    if KINDS[family] == "gan":
        assert model.discriminator(x, *labels).shape == (4, 1)
        assert model.generator.stem(torch.zeros(2, config.model.latent_dim)).dim() == 2  # the explorer's directions
    else:
        assert model(x, *labels)[0].shape == x.shape


@pytest.mark.parametrize("family", [f for f in MODELS if KINDS[f] == "gan"])
def test_one_step_moves_only_each_optimisers_own_network(family: str) -> None:
    """With D's learning rate at 0 only G may move, and with G's at 0 only D (G's steps every n_critic for WGAN)."""
    config = small_config(family, **({"loss.n_critic": 1} if family == "wgan-gp" else {}))
    torch.manual_seed(0)
    base = build_model(family, config.model)
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    if is_conditional(family):
        real = (real, torch.arange(8) % 10)
    for frozen in ("opt_d", "opt_g"):
        model = copy.deepcopy(base)
        optimizers = FAMILIES[family].make_optimizers(model, config)
        for group in optimizers[frozen].param_groups:
            group["lr"] = 0.0
        FAMILIES[family].step(model, real, optimizers, config.loss, 0, amp=FP32)
        moved = {
            name: any(not torch.equal(a, b) for a, b in zip(getattr(model, name).parameters(), getattr(base, name).parameters()))
            for name in ("generator", "discriminator")
        }
        assert moved == {"generator": frozen == "opt_d", "discriminator": frozen == "opt_g"}, frozen


@pytest.mark.parametrize("family", list(MODELS))
def test_checkpoint_round_trip(family: str, tmp_path: Path) -> None:
    config = small_config(family)
    model = build_model(family, config.model)
    ckpt.save_checkpoint(tmp_path, model, config.to_dict(), {"step": 0})
    again = build_model(family, config.model)
    ckpt.load_into(again, ckpt.load_weights(ckpt.find_checkpoint(tmp_path)), tmp_path)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    model.eval(), again.eval()
    assert torch.equal(model.sample(3, generator=gen()), again.sample(3, generator=gen()))


@pytest.mark.parametrize("family", NEW)
def test_new_models_train_resume_exactly_sample_and_evaluate(family: str, idx_data: Path, tmp_path: Path) -> None:
    args = ["--data", str(idx_data), "--batch-size", "16", "--quiet", "--set", "train.log_every=2", "--set", "train.report=false"]
    args += [a for k, v in SMALL[family].items() for a in ("--set", f"{k}={v}")]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train", family, "--out", str(whole), "--max-steps", "6", *args]) == 0
    assert main(["train", family, "--out", str(split), "--max-steps", "3", *args]) == 0
    assert main(["train", family, "--resume", str(split), "--max-steps", "6", "--quiet"]) == 0
    assert_same_state(whole, split)
    assert main(["sample", str(whole), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert main(["eval", str(whole), "--n", "32", "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    if KINDS[family] == "gan":
        assert ("w_estimate" in result["gan_health"]) == (family == "wgan-gp")
    assert set(weights(whole)) == set(build_model(family, load_config(family, None, {**SMALL[family]}).model).state_dict())


@pytest.mark.parametrize(
    ("family", "overrides", "message"),
    [
        ("wgan-gp", {"loss.n_critic": 0}, "loss.n_critic must be an integer >= 1"),
        ("sngan", {"loss.logits": False}, "set loss.logits = true"),
        ("dcgan", {"model.img_shape": [1, 30, 30]}, r"a DCGAN makes 28x28 or 4\*2\^k"),
        ("vae", {"model.spectral_norm": True}, "unknown key"),
    ],
)
def test_bad_settings_are_refused_by_name(family: str, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(family, None, overrides)


def test_hinge_losses() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_d_loss(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)


def test_gradient_penalty_of_a_linear_critic() -> None:
    """D(x) = <w, x> has gradient w everywhere: the penalty is (||w|| - 1)^2 whatever the points."""
    w = torch.tensor([3.0, 4.0, 0.0, 0.0]).view(1, 1, 2, 2)
    critic = lambda x: (x * w).flatten(1).sum(1, keepdim=True)  # noqa: E731
    gp = gradient_penalty(critic, torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2))
    assert gp.item() == pytest.approx((5.0 - 1.0) ** 2)


def test_wgan_generator_steps_every_n_critic(idx_data: Path) -> None:
    config = small_config("wgan-gp")
    config = replace(config, loss=replace(config.loss, n_critic=3))
    torch.manual_seed(0)
    model = build_model("wgan-gp", config.model)
    optimizers = FAMILIES["wgan-gp"].make_optimizers(model, config)
    g_moves = []
    for step in range(6):
        before = [p.clone() for p in model.generator.parameters()]
        FAMILIES["wgan-gp"].step(model, torch.rand(8, 1, 28, 28) * 2 - 1, optimizers, config.loss, step)
        g_moves.append(any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters())))
    assert g_moves == [False, False, True, False, False, True]


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
        *[a for k, v in SMALL[family].items() for a in ("--set", f"{k}={v}")],
        *extra,
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["ranks_identical"] is True and last["world_size"] == 2
    if extra:
        assert "log_sigma" in weights(run)  # the σ-VAE's calibrated sigma was trained and saved


def test_sigma_vae_uses_the_maximum_likelihood_sigma() -> None:
    from genlab.losses import gaussian_kl, gaussian_nll, optimal_log_sigma, sigma_vae_loss

    torch.manual_seed(0)
    x, recons = torch.rand(6, 1, 8, 8) * 2 - 1, torch.rand(6, 1, 8, 8) * 2 - 1
    mu, logvar = torch.randn(6, 4), torch.randn(6, 4) * 0.1
    out = sigma_vae_loss(recons, x, mu, logvar, beta=1.0)
    var = torch.exp(2 * optimal_log_sigma(recons, x)).item()
    expected = gaussian_nll(recons, x, var) + gaussian_kl(mu, logvar)
    assert out["loss"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert -out["elbo"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    for factor in (0.9, 1.1):  # any other shared variance gives a larger NLL
        assert gaussian_nll(recons, x, var * factor).mean() > gaussian_nll(recons, x, var).mean()


def test_sigma_vae_trains_and_calibrates_its_sigma(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "sigma"
    args = ["train", "vae", "--data", str(idx_data), "--out", str(run), "--max-steps", "8", "--batch-size", "16", "--quiet"]
    args += ["--set", "model.decoder=sigma", "--set", "train.report=false"]
    args += [a for k, v in SMALL["vae"].items() for a in ("--set", f"{k}={v}")]
    assert main(args) == 0
    log_sigma = weights(run)["log_sigma"].item()
    assert -6 < log_sigma < 0  # moved from its start (0: sigma = 1) towards the reconstructions' RMS error
    assert main(["eval", str(run), "--n", "32", "--nll-n", "16", "--k", "4", "--json", str(tmp_path / "e.json")]) == 0
    assert "learned (σ-VAE) variance" in json.loads((tmp_path / "e.json").read_text())["likelihood"]["likelihood"]
    with pytest.raises(ConfigError, match='set loss.loss_type = "beta"'):
        load_config("vae", None, {"model.decoder": "sigma", "loss.loss_type": "capacity"})


@pytest.mark.parametrize("family", NEW)
def test_bench_rows_of_the_new_models(family: str) -> None:
    from genlab.bench import bench_zoo

    row = bench_zoo(family, torch.device("cpu"), batch_size=4, steps=1, repeats=1)["train"]
    assert len(row["plain"]) == len(row["genlab"]) == 1 and min(row["plain"] + row["genlab"]) > 0
    assert row["flops_per_image"] > 1e6  # conv layers at their shipped width: millions of FLOPs per image


@pytest.mark.parametrize("family", ["cgan", "cvae"])
def test_class_conditional_sampling_from_the_command_line(family: str, idx_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", family, "--data", str(idx_data), "--out", str(run), "--max-steps", "2", "--batch-size", "16", "--quiet"]
    assert (
        main([*args, "--set", "train.report=false", *[a for k, v in SMALL[family].items() for a in ("--set", f"{k}={v}")]]) == 0
    )
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


def test_folder_classes_from_subfolders(tmp_path: Path) -> None:
    from genlab.data.folders import folder_classes

    files = [tmp_path / "cat" / "1.png", tmp_path / "dog" / "a" / "2.png", tmp_path / "cat" / "3.png"]
    assert folder_classes(tmp_path, files) == [0, 1, 0]
    assert folder_classes(tmp_path, [tmp_path / "x.png", tmp_path / "cat" / "1.png"]) is None
    assert folder_classes(tmp_path, [tmp_path / "cat" / "1.png"]) is None  # one class is no labelling


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
