"""Run folders: one writer at a time, no one else's files overwritten, checkpoints bound to their config,
torn files and damaged checkpoints met with one line (or the older checkpoint), sweep folders kept in --out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlab import checkpoint as ckpt
from genlab import sweep
from genlab.cli import main
from genlab.errors import GenlabError
from genlab.runlock import run_lock

from conftest import tiny_sets, train_args


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def quick_run(idx_data: Path, run: Path, *extra: str) -> Path:
    """A tiny VAE run of 2 steps an epoch (batch 128): a checkpoint at each of its epochs."""
    assert main(train_args("vae", idx_data, run, "--batch-size", "128", "--set", "train.report=false", *extra)) == 0
    return run


@pytest.fixture(scope="module")
def finished(idx_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs of 2 steps, a metrics line a step: checkpoints at steps 2 and 4. Tests train on copies."""
    return quick_run(idx_data, tmp_path_factory.mktemp("base") / "run", "--epochs", "2", "--set", "train.log_every=1")


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    return shutil.copytree(finished, tmp_path / "run", symlinks=True)


RESUME = ["train", "vae", "--quiet", "--epochs", "3", "--max-steps", "5", "--resume"]  # one more step


# Two writers, one folder


def test_a_held_run_refuses_a_second_training_naming_its_pid(idx_data: Path, run: Path, tmp_path: Path, capsys) -> None:
    new = tmp_path / "new"
    with run_lock(new, "genlab train vae --out new"):
        assert main(train_args("vae", idx_data, new, "--max-steps", "2")) == 2
        assert f"in use by PID {os.getpid()} (genlab train vae --out new)" in one_line_error(capsys)
        assert not (new / "config.json").exists()  # nothing of the holder's run was touched
    with run_lock(run, "genlab stage2"):
        assert main([*RESUME, str(run)]) == 2
        assert f"in use by PID {os.getpid()} (genlab stage2)" in one_line_error(capsys)
    with pytest.raises(GenlabError, match="typo is not a folder"), run_lock(tmp_path / "typo", "genlab stage2", create=False):
        pass
    assert not (tmp_path / "typo").exists()  # a command on an existing run never makes one
    # A killed holder leaves its PID in .lock but holds no flock: the file does not block.
    (run / ".lock").write_text("PID 999999 (genlab train vae, killed)\n")
    assert main([*RESUME, str(run)]) == 0
    assert (run / ".lock").read_text() == f"PID {os.getpid()} (genlab train vae --resume {run})\n"


def tiny_sweep(idx_data: Path, out: Path) -> list[str]:
    return ["sweep", "vae", "--values", "loss.beta=1,4", "--data", str(idx_data), "--out", str(out),
            *tiny_sets("vae"), "--set", "train.batch_size=128", "--set", "train.epochs=1"]  # fmt: skip


def test_a_sweep_folder_is_locked_too(idx_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    with run_lock(out, "genlab sweep vae"):
        assert main(tiny_sweep(idx_data, out)) == 2
        assert "in use by PID" in one_line_error(capsys)


@pytest.mark.slow
def test_two_trainings_into_one_folder(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "genlab.cli", *train_args("gan", idx_data, run, "--epochs", "100000", "--batch-size", "128")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        while not (run / "checkpoints" / "latest").exists():
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "genlab.cli", "train", "gan", "--resume", str(run), "--quiet"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2 and f"in use by PID {first.pid}" in second.stderr, second.stderr
        assert second.stderr.count("\n") == 1
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert first.returncode == 130  # the holder went on undisturbed, and stopped cleanly


# --out of someone else's folder


def test_out_refuses_a_folder_that_is_not_a_run(idx_data: Path, run: Path, tmp_path: Path, capsys) -> None:
    from genlab.train.guards import check_new_run_folder

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"server": "prod"}')
    (theirs / "notes.txt").write_text("mine")
    assert main(train_args("vae", idx_data, theirs, "--max-steps", "2")) == 2
    assert "not a genlab run (config.json, notes.txt)" in one_line_error(capsys)
    assert (theirs / "config.json").read_text() == '{"server": "prod"}' and not (theirs / ".lock").exists()
    (tmp_path / "empty").mkdir()
    for fine in (tmp_path / "empty", tmp_path / "new", run):
        check_new_run_folder(fine)
    assert main(train_args("vae", idx_data, run, "--max-steps", "2")) == 2
    assert "already holds a run; continue it with --resume" in one_line_error(capsys)
    started = tmp_path / "started"  # a run stopped before its first checkpoint is trained again, as before
    started.mkdir()
    (started / "config.json").write_text('{"family": "vae"}')
    (started / "metrics.jsonl").write_text("")
    quick_run(idx_data, started, "--max-steps", "1")


def test_sweep_out_refuses_a_folder_that_is_not_a_sweep(idx_data: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "report.pdf").write_text("x")
    assert main(tiny_sweep(idx_data, tmp_path)) == 2
    assert "not a genlab sweep (report.pdf)" in one_line_error(capsys)


# A checkpoint bound to its config


def edit(path: Path, section: str, key: str, value) -> None:
    config = json.loads(path.read_text())
    config[section][key] = value
    path.write_text(json.dumps(config, indent=2))


def test_resume_refuses_an_edited_config_by_name(run: Path, capsys) -> None:
    newest = ckpt.find_checkpoint(run)
    metadata = ckpt.load_metadata(newest)
    assert len(metadata["genlab.config_sha256"]) == 64 and metadata["genlab.torch"] == torch.__version__
    original = (run / "config.json").read_text()
    resume = [*RESUME, str(run)]
    for section, key, value, shown in [
        ("loss", "beta", 4.0, "loss.beta: 1.0 != 4.0"),
        ("train", "lr", 0.1, "train.lr: 0.005 != 0.1"),
        ("data", "binarize", True, "data.binarize: False != True"),
        ("model", "decoder", "bernoulli", "model.decoder: 'gaussian' != 'bernoulli'"),  # the same shapes
    ]:
        edit(run / "config.json", section, key, value)
        assert main(resume) == 2
        assert shown in one_line_error(capsys)
        (run / "config.json").write_text(original)
    # Both copies edited alike: the hash in the weights still tells.
    for path in (run / "config.json", newest / "config.json"):
        edit(path, "loss", "beta", 4.0)
    assert main(resume) == 2
    assert "was edited after its checkpoint was written" in one_line_error(capsys)
    for path in (run / "config.json", newest / "config.json"):
        edit(path, "loss", "beta", 1.0)
        edit(path, "train", "epochs", 7)  # what a resume may change anyway
        edit(path, "data", "workers", 0)  # where and how fast, not what
    assert main(resume) == 0


def test_a_moved_run_and_another_torch_resume(idx_data: Path, run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    moved = shutil.copytree(idx_data, tmp_path / "elsewhere")  # the data on another machine
    for path in (run / "config.json", *run.glob("checkpoints/ckpt-*/config.json")):
        edit(path, "data", "dataset", str(moved))
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert main([*RESUME, str(run)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "torch" in line]
    assert len(warned) == 1 and "bit-identical results" in warned[0] and "9.9.9" in warned[0]


# Torn files


def test_resume_drops_a_torn_last_metrics_line(run: Path, capsys) -> None:
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "epoch": 2, "lo')  # what a kill in mid-write leaves
    assert main([*RESUME, str(run)]) == 0
    assert "dropped 1 line(s)" in capsys.readouterr().err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]


def test_torn_config_files_are_one_line(run: Path, capsys) -> None:
    (run / "config.json").write_text('{"family": "vae", "mod')
    assert main(["train", "vae", "--resume", str(run), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert f"{run / 'config.json'} is damaged" in err and str(ckpt.find_checkpoint(run) / "config.json") in err
    assert main(["report", str(run)]) == 2
    assert "config.json is damaged" in one_line_error(capsys)
    shutil.copy(ckpt.find_checkpoint(run) / "config.json", run / "config.json")  # the fix the message gives
    (run / "status.json").write_text('{"steps": 2, "rea')
    assert main(["report", str(run)]) == 0  # the end of the run's story is lost, not the page
    assert "unknown: " in (run / "report.html").read_text()


def write_stage2(run: Path) -> Path:
    from safetensors.torch import save_file

    from genlab.models.two_stage import Stage2VAE

    stage2 = Stage2VAE(4, 16, 2)
    (run / "stage2").mkdir()
    save_file({k: v.contiguous() for k, v in stage2.state_dict().items()}, str(run / "stage2" / "model.safetensors"))
    (run / "stage2" / "stage2.json").write_text(json.dumps({"config": stage2.config.__dict__}))
    return run / "stage2"


def test_torn_second_stage_is_one_line(run: Path, tmp_path: Path, capsys) -> None:
    folder = write_stage2(run)
    sample = ["sample", str(run), "--stage2", "--n", "4", "--out", str(tmp_path / "s.npy")]
    assert main(sample) == 0
    good = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(good[: len(good) // 2])
    assert main(sample) == 2
    assert "stage2/model.safetensors is damaged" in one_line_error(capsys)
    (folder / "model.safetensors").write_bytes(good)
    for torn in ('{"config": {"latent_dim": 4, "hid', '{"codes": 256}', "[]"):
        (folder / "stage2.json").write_text(torn)
        assert main(sample) == 2
        err = one_line_error(capsys)
        assert "stage2.json is damaged" in err and f"genlab stage2 {run}" in err


def fake_sweep_runs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """run_sweep without training or measuring: the run folders it would train, in order."""
    import genlab.train.loop

    trained = []

    def fake_train(config, run_dir, resume=False, quiet=False):
        trained.append(run_dir)
        return genlab.train.loop.TrainResult(run_dir, 2, 1)

    monkeypatch.setattr(genlab.train.loop, "train", fake_train)
    monkeypatch.setattr(sweep, "measure", lambda run_dir: {"neg_elbo": 1.0, "recon": 0.5, "kl": 0.1})
    monkeypatch.setattr(sweep, "draw", lambda summary, path: path)
    return trained


def test_a_torn_sweep_row_is_measured_again(tmp_path: Path, monkeypatch) -> None:
    fake_sweep_runs(monkeypatch)
    row = tmp_path / "loss.beta=1" / "seed0" / "sweep_row.json"
    row.parent.mkdir(parents=True)
    row.write_text('{"value": 1, "seed": 0, "neg_')
    summary = sweep.run_sweep("vae", "loss.beta", [1], [0], tmp_path, None, {"train.report": False}, None)
    assert summary["rows"][0]["neg_elbo"] == 1.0 and json.loads(row.read_text())["neg_elbo"] == 1.0


# A damaged checkpoint, and `latest` pointing elsewhere


def test_a_damaged_newest_checkpoint_gives_way_to_the_older_one(run: Path, tmp_path: Path, capsys) -> None:
    newest, older = ckpt.checkpoint_folders(run)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    said = capsys.readouterr().err
    assert f"genlab: {weights}: not a valid safetensors file" in said
    assert f"using the older checkpoint beside it, {older.name}" in said
    assert main(["eval", str(run), "--n", "16", "--nll-n", "4", "--k", "2", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["run_step"] == 2
    assert main(["train", "vae", "--resume", str(run), "--quiet", "--max-steps", "3"]) == 0
    assert "using the older checkpoint" in capsys.readouterr().err
    assert ckpt.load_state(ckpt.find_checkpoint(run))["step"] == 3
    assert not newest.exists()  # the damaged step 4 was a future the run went back from: pruned
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 3


def test_latest_naming_a_folder_outside_the_run_is_refused(run: Path, tmp_path: Path, capsys) -> None:
    outside = shutil.copytree(ckpt.find_checkpoint(run), tmp_path / "planted")
    sample = ["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.npy")]
    for name in ("../../planted", str(outside), "ckpt-99999999-0"):
        if name.startswith("ckpt-"):  # a link inside checkpoints/ that leads out of it
            (run / "checkpoints" / name).symlink_to(outside, target_is_directory=True)
        (run / "checkpoints" / "latest").write_text(name)
        assert main(sample) == 2
        assert "not a checkpoint folder inside" in one_line_error(capsys)
    (run / "checkpoints" / "latest").unlink()  # the fix the message gives: the newest folder there is used
    assert main(sample) == 0


# Sweep values that would name folders outside --out


def test_sweep_values_name_folders_inside_the_sweep_folder(tmp_path: Path, monkeypatch) -> None:
    trained = fake_sweep_runs(monkeypatch)
    out = tmp_path / "a" / "b" / "sweep"
    values = ["../../../escaped", "/abs/data", "..%2F", "a\\..\\b", "mnist"]  # none is a folder to look into
    sweep.run_sweep("vae", "data.dataset", values, [0], out, None, {"train.report": False}, None)
    assert [p.parent.parent for p in trained] == [out] * len(values)  # one folder each, right under --out
    assert [p.parent.name for p in trained] == [
        "data.dataset=..%2F..%2F..%2Fescaped", "data.dataset=%2Fabs%2Fdata", "data.dataset=..%252F",
        "data.dataset=a%5C..%5Cb", "data.dataset=mnist",
    ]  # fmt: skip
    assert sweep.run_folder(out, "loss.beta", 4.0, 1) == out / "loss.beta=4.0" / "seed1"  # plain values as before


def test_a_run_saved_with_a_setting_its_loss_ignores_still_resumes(idx_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """New runs refuse loss.tc_warmup on a plain beta-VAE (it would do nothing); a run saved before that
    refusal trained without it and must not be stranded."""
    from genlab.config import VAELossConfig

    out = tmp_path / "old"
    args = train_args("vae", idx_data, out, "--max-steps", "2", "--set", "loss.tc_warmup=100")
    assert main(args) == 2 and "loss.tc_warmup is read by" in capsys.readouterr().err
    with monkeypatch.context() as m:  # as an older genlab wrote it
        m.setattr(VAELossConfig, "ignored_settings", lambda self: None)
        assert main(args) == 0
    assert main(["train", "vae", "--resume", str(out), "--quiet", "--max-steps", "3"]) == 0
    assert ckpt.load_state(ckpt.find_checkpoint(out))["step"] == 3
