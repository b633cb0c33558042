"""Factor data sets (dSprites from a small file in its layout, shapes generated), β-TCVAE, β scales,
and the commands that use them: eval's disentanglement part, traverse, sweep."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import logsumexp

from genlab.cli import main
from genlab.config import DataConfig
from genlab.configfile import load_config
from genlab.data import factors as factor_sets
from genlab.data import load_dataset
from genlab.errors import ConfigError, DataError
from genlab.losses import beta_conventions, tc_decomposition

from conftest import tiny_sets

TINY_SIZES = (3, 2, 4, 4, 4)  # shape, scale, orientation, posX, posY: 384 images
TINY_VAE = [*tiny_sets("vae"), "--set", "train.val_batches=2"]


def write_tiny_dsprites(folder: Path) -> Path:
    """An npz in dSprites' layout (every combination once, posY fastest; a pickled metadata entry)."""
    folder.mkdir(parents=True, exist_ok=True)
    classes = np.stack(np.unravel_index(np.arange(math.prod(TINY_SIZES)), TINY_SIZES), axis=1)
    imgs = np.zeros((len(classes), 64, 64), dtype=np.uint8)
    for i, (shape, scale, orient, px, py) in enumerate(classes):
        side = 6 + 4 * scale + 2 * shape
        top, left = 8 + 10 * py + orient, 8 + 10 * px
        imgs[i, top : top + side, left : left + side] = 1
    latents = np.concatenate([np.zeros((len(classes), 1), dtype=np.int64), classes], axis=1)
    path = folder / factor_sets.DSPRITES_FILE
    metadata = np.array({"description": "a pickle that must never be loaded"}, dtype=object)
    np.savez(path, imgs=imgs, latents_classes=latents, latents_values=latents.astype(np.float64), metadata=metadata)
    return path


@pytest.fixture
def dsprites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_tiny_dsprites(tmp_path / "dsprites")
    monkeypatch.setattr(factor_sets, "DSPRITES_MD5", hashlib.md5(path.read_bytes()).hexdigest())
    return path.parent


def test_dsprites_loads_the_arrays_and_never_unpickles(dsprites: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    train, test = load_dataset(DataConfig(dataset="dsprites", root=str(dsprites), image_size=32), 1, 32)
    assert train.images.shape == (384, 1, 32, 32) and train.factors.sizes == TINY_SIZES
    assert np.array_equal(train.factors.classes[77], np.unravel_index(77, TINY_SIZES))
    assert len(test) == 384 and test.factors.classes.shape == (384, 5)  # the validation sample: all of a small set


def test_dsprites_bad_files_are_refused(dsprites: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = dsprites / factor_sets.DSPRITES_FILE
    cfg = DataConfig(dataset="dsprites", root=str(dsprites), image_size=32)
    monkeypatch.setattr(factor_sets, "DSPRITES_MD5", "0" * 32)
    with pytest.raises(DataError, match="expected 0000"):
        load_dataset(cfg, 1, 32)
    path.write_bytes(path.read_bytes()[:1000])  # torn
    monkeypatch.setattr(factor_sets, "DSPRITES_MD5", hashlib.md5(path.read_bytes()).hexdigest())
    with pytest.raises(DataError, match="not a dSprites npz"):
        load_dataset(cfg, 1, 32)
    # Missing, and no network: where to put which file, and nothing half-written left behind.
    monkeypatch.setattr(factor_sets, "DSPRITES_URL", "http://127.0.0.1:9/dsprites.npz")
    empty = tmp_path / "empty"
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(dataset="dsprites", root=str(empty)), 1, 64)
    assert factor_sets.DSPRITES_FILE in str(err.value) and "MD5" in str(err.value) and str(empty) in str(err.value)
    assert not list(empty.glob("*"))


@pytest.mark.slow
def test_shapes_is_generated_once_and_follows_its_factors(tmp_path: Path) -> None:
    train, test = load_dataset(DataConfig(dataset="shapes", root=str(tmp_path), image_size=32), 1, 32)
    assert train.images.shape == (737_280, 1, 32, 32) and train.factors.sizes == factor_sets.FACTOR_SIZES
    assert (tmp_path / "shapes-32-v1.npy").is_file() and len(test) == factor_sets.VALIDATION_IMAGES

    def centre(*factors: int) -> np.ndarray:
        img = train.images[np.ravel_multi_index(factors, factor_sets.FACTOR_SIZES), 0].double()
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        return np.array([(img * xs).sum() / img.sum(), (img * ys).sum() / img.sum()])

    assert centre(0, 5, 0, 31, 16)[0] - centre(0, 5, 0, 0, 16)[0] == pytest.approx(15.5, abs=0.3)  # posX: right
    assert centre(0, 5, 0, 16, 31)[1] - centre(0, 5, 0, 16, 0)[1] == pytest.approx(15.5, abs=0.3)  # posY: down
    area = [train.images[np.ravel_multi_index((1, s, 0, 16, 16), factor_sets.FACTOR_SIZES)].double().sum() for s in range(6)]
    assert area == sorted(area) and area[0] < area[-1]
    assert torch.equal(
        train.images[np.ravel_multi_index((2, 3, 0, 9, 9), factor_sets.FACTOR_SIZES)],
        train.images[np.ravel_multi_index((2, 3, 39, 9, 9), factor_sets.FACTOR_SIZES)],
    )  # orientation 0 and 2*pi are both in the grid, as in dSprites


def test_tc_decomposition_against_brute_force() -> None:
    torch.manual_seed(0)
    m, d, n = 5, 3, 1000
    mu, logvar = torch.randn(m, d, dtype=torch.float64), torch.randn(m, d, dtype=torch.float64) * 0.3
    z = mu + torch.exp(0.5 * logvar) * torch.randn(m, d, dtype=torch.float64)
    got = tc_decomposition(z, mu, logvar, n)

    def log_normal(x: float, mean: float, lv: float) -> float:
        return -0.5 * (math.log(2 * math.pi) + lv + (x - mean) ** 2 / math.exp(lv))

    for i in range(m):
        dims = [[log_normal(z[i, k], mu[j, k], logvar[j, k]) for k in range(d)] for j in range(m)]  # q(z_ik | x_j)
        log_qz_x = sum(dims[i])
        log_qz = logsumexp([sum(row) for row in dims]) - math.log(m * n)
        log_prod = sum(logsumexp([dims[j][k] for j in range(m)]) - math.log(m * n) for k in range(d))
        log_pz = sum(log_normal(z[i, k], 0.0, 0.0) for k in range(d))
        assert got["mi"][i].item() == pytest.approx(log_qz_x - log_qz)
        assert got["tc"][i].item() == pytest.approx(log_qz - log_prod)
        assert got["dwkl"][i].item() == pytest.approx(log_prod - log_pz)
    total = sum(got[k] for k in ("mi", "tc", "dwkl"))
    assert torch.allclose(total, (-0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp())).sum(1)
                          - (-0.5 * (math.log(2 * math.pi) + z**2)).sum(1))  # fmt: skip


def test_beta_scales() -> None:
    config = load_config("vae", None, {"loss.beta_norm": 0.04, "loss.kld_weight": 0.001, "model.latent_dim": 10})
    assert config.loss.beta == pytest.approx(4.0)  # 0.04 / (10 * 0.001)
    assert beta_conventions(config.loss, 10, 1024) == pytest.approx({"beta": 4.0, "beta_sum": 4.096, "beta_norm": 0.04})
    with pytest.raises(ConfigError, match="not both"):
        load_config("vae", None, {"loss.beta_norm": 0.04, "loss.beta": 2.0, "model.latent_dim": 10})


@pytest.mark.slow
def test_factor_commands_end_to_end(dsprites: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    data = ["--data", "dsprites", "--set", f"data.root={json.dumps(str(dsprites))}", "--set", "data.image_size=32"]
    args = ["train", "vae", *data, "--out", str(run), "--batch-size", "32", "--max-steps", "24", "--quiet", *TINY_VAE]
    args += ["--set", "train.log_every=4"]
    assert main([*args, "--set", 'loss.loss_type="tcvae"', "--set", "loss.beta=6"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["loss"]["dataset_size"] == 384 and saved["model"]["image_size"] == 32
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(k in logged[0] for k in ("mi", "tc", "dwkl"))
    assert (run / "samples" / "traverse_last.png").is_file()

    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--n", "64", "--k", "2", "--nll-n", "16", "--json", str(out)]) == 0
    dis = json.loads(out.read_text())["disentanglement"]
    for key in ("mig", "sap", "beta_vae_score", "factor_vae_score"):
        assert 0.0 <= dis[key] <= 1.0, key
    assert set(dis["dci"]) >= {"disentanglement", "completeness", "informativeness"}
    assert len(dis["kl_per_dim"]) == 4 and dis["protocol"]["dci"]["n_estimators"] == 100

    assert main(["traverse", str(run), "--out", str(tmp_path / "t.png"), "--steps", "5"]) == 0
    assert Image.open(tmp_path / "t.png").size[0] >= 512
    assert main(["traverse", str(run), "--out", str(tmp_path / "t.gif"), "--dims", "2"]) == 0
    gif = Image.open(tmp_path / "t.gif")
    assert gif.n_frames == 2 * 9 - 2  # there and back
    assert "rows by KL" in capsys.readouterr().out

    sweep = tmp_path / "sweep"
    base = ["--set", f"data.root={json.dumps(str(dsprites))}", "--set", "data.image_size=32", "--set", "train.batch_size=32"]
    argv = ["sweep", "vae", "--data", "dsprites", "--values", "loss.beta=1,8", "--out", str(sweep), *base, *TINY_VAE]
    assert main([*argv, "--seeds", "2", "--set", "train.max_steps=12"]) == 0
    summary = json.loads((sweep / "sweep.json").read_text())
    assert [row["value"] for row in summary["by_value"]] == [1, 8]
    assert all("mig" in row and "neg_elbo" in row for row in summary["rows"])
    for agg in summary["by_value"]:  # every seed kept beside the median, and beta in each convention
        mine = [r["mig"] for r in summary["rows"] if r["value"] == agg["value"]]
        assert agg["mig_per_seed"] == mine and agg["seeds"] == [0, 1]
        assert agg["mig_median"] == pytest.approx(sum(mine) / 2)
        terms = [r["neg_elbo"] - r["kl"] for r in summary["rows"] if r["value"] == agg["value"]]
        assert agg["recon_nll_per_seed"] == pytest.approx(terms)  # the quality side: -ELBO less the KL
        assert agg["beta"] == agg["value"] and agg["beta_norm"] == pytest.approx(agg["beta_sum"] * 4 / 32**2)
    heat = summary["rows"][0]["mutual_information"]
    assert heat["factors"] == list(factor_sets.FACTOR_NAMES) and len(heat["normalised"]) == 4
    md = (sweep / "sweep.md").read_text()
    assert md.startswith("| loss.beta |") and md.count("\n| ") == 2 and "median" in md  # a row per value
    assert Image.open(sweep / "sweep.png").size[0] > 1000  # trade-off, heat map, labelled traversal


def test_factor_metrics_need_factor_data_and_traverse_needs_a_checkpoint(idx_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "vae", "--data", str(idx_data), "--out", str(run), "--max-steps", "3", "--quiet", *TINY_VAE]) == 0
    out = tmp_path / "e.json"
    assert main(["eval", str(run), "--n", "32", "--k", "2", "--nll-n", "8", "--json", str(out)]) == 0
    assert "unsupervised part only" in capsys.readouterr().out
    dis = json.loads(out.read_text())["disentanglement"]
    assert "skipped" in dis["factor_metrics"] and "total_correlation" in dis and "mig" not in dis
    assert main(["traverse", str(tmp_path / "nothing"), "--out", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err
    gan = tmp_path / "gan"
    args = ["train", "gan", "--data", str(idx_data), "--out", str(gan), "--max-steps", "2", "--quiet", *tiny_sets("gan")]
    assert main(args) == 0
    assert main(["traverse", str(gan), "--out", str(tmp_path / "g.npy"), "--steps", "5"]) == 0
    assert np.load(tmp_path / "g.npy").shape == (8 * 5, 1, 28, 28)  # a row per coordinate of z


@pytest.mark.parametrize("size", [64, 32])
def test_dsprites_stream_is_the_loaded_set_chunk_by_chunk(dsprites: Path, size: int) -> None:
    train, test = load_dataset(DataConfig(dataset="dsprites", root=str(dsprites), image_size=size), 1, size)
    stream = factor_sets.open_factor_stream("dsprites", str(dsprites), False, size)
    assert len(stream) == 384 and stream.factors.sizes == TINY_SIZES and stream.original_size == (size, size)
    chunks = list(stream.chunks(1, size, chunk=100))
    assert [len(c) for c in chunks] == [100, 100, 100, 84] and all(c.dtype == torch.uint8 for c in chunks)
    assert torch.equal(torch.cat(chunks), train.images)
    validation = stream.validation(1, size)
    assert torch.equal(validation.images, test.images) and np.array_equal(validation.factors.classes, test.factors.classes)


def test_shapes_stream_renders_in_index_order_without_a_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = []
    for i, block in enumerate(factor_sets.shapes_blocks(64)):
        blocks.append(block)
        if i == 2:
            break
    monkeypatch.setattr(factor_sets, "shapes_blocks", lambda size: iter(blocks))  # 3 of the 720 sprites
    stream = factor_sets.open_factor_stream("shapes", str(tmp_path), False, 64)
    got = torch.cat(list(stream.chunks(1, 32, chunk=1500)))
    assert got.shape == (3 * 1024, 1, 32, 32) and not list(tmp_path.iterdir())  # nothing cached at 64x64
    want = factor_sets.fit_images(torch.from_numpy(np.concatenate(blocks)).unsqueeze(1), 1, 32, "resize")
    assert torch.equal(got, want)


def test_resizing_in_chunks_is_resizing_at_once() -> None:
    images = torch.randint(0, 256, (300, 1, 64, 64), dtype=torch.uint8)
    assert torch.equal(factor_sets.resize_chunked(images, 32, chunk=128), factor_sets.fit_images(images, 1, 32, "resize"))


@pytest.mark.slow
def test_factor_eval_streams_reports_progress_and_the_new_fields(dsprites: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    data = ["--data", "dsprites", "--set", f"data.root={json.dumps(str(dsprites))}", "--set", "data.image_size=32"]
    assert main(["train", "vae", *data, "--out", str(run), "--batch-size", "32", "--max-steps", "4", "--quiet", *TINY_VAE]) == 0
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--n", "64", "--k", "2", "--nll-n", "16", "--chen-samples", "50", "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "genlab: eval: MIG (disentanglement_lib)" in printed.err and "genlab: eval: DCI" in printed.err
    assert "genlab: eval:" not in printed.out and "MIG, Chen et al." in printed.out  # progress apart from the table
    dis = json.loads(out.read_text())["disentanglement"]
    assert np.array(dis["mutual_information"]["normalised"]).shape == (4, 5) and len(dis["latent_factors"]) == 4
    assert 0.0 <= dis["mig_chen"] <= 1.0 and dis["mig_chen_detail"]["factors"] == ["scale", "orientation", "pos_x", "pos_y"]
    assert dis["encoder"]["dtype"] in ("float32", "bfloat16") and dis["protocol"]["mig_chen"]["samples"] == 50


def test_a_torn_or_foreign_shapes_cache_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "c.npy"
    np.save(path, np.zeros((6, 4, 4), dtype=np.uint8))
    offset = factor_sets._npy_data_offset(path, (6, 4, 4))
    assert offset is not None and path.stat().st_size == offset + 96
    assert factor_sets._npy_data_offset(path, (5, 4, 4)) is None  # another shape
    path.write_bytes(path.read_bytes()[:-1])
    assert factor_sets._npy_data_offset(path, (6, 4, 4)) is None  # torn
