"""Run folders written before the registry (genlab at e5f5ec9, tests/fixtures/runs-e5f5ec9) still load,
sample, evaluate and resume: one tiny run of every family, stopped at step 5 of an epoch of 8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from genlab import checkpoint as ckpt
from genlab.cli import main

FIXTURES = Path(__file__).parents[1] / "fixtures"
RUNS = sorted(p.name for p in (FIXTURES / "runs-e5f5ec9").iterdir())


def legacy_run(name: str, tmp_path: Path) -> Path:
    """A copy of the fixture run whose data set points at the fixture's IDX files, copied alongside."""
    data = shutil.copytree(FIXTURES / "idx-e5f5ec9", tmp_path / "idx")
    run = shutil.copytree(FIXTURES / "runs-e5f5ec9" / name, tmp_path / name)
    for path in [run / "config.json", *run.glob("checkpoints/ckpt-*/config.json")]:
        config = json.loads(path.read_text())
        config["data"]["dataset"] = str(data)  # where the data lies on this machine
        path.write_text(json.dumps(config, indent=2))
    return run


@pytest.mark.parametrize("name", RUNS)
def test_a_run_of_e5f5ec9_samples_evaluates_and_resumes(name: str, tmp_path: Path) -> None:
    run = legacy_run(name, tmp_path)
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (4, 1, 28, 28) and np.abs(samples).max() <= 1
    assert main(["eval", str(run), "--n", "16", "--nll-n", "4", "--k", "2", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["run_step"] == 5
    family = json.loads((run / "config.json").read_text())["family"]
    assert main(["train", family, "--resume", str(run), "--max-steps", "10", "--quiet"]) == 0
    state = ckpt.load_state(ckpt.find_checkpoint(run))
    assert (state["step"], state["epoch"], state["batch"]) == (10, 1, 2)  # 8 steps an epoch: the epoch went on from 5
    if name == "vae":  # its second stage too
        assert main(["sample", str(run), "--stage2", "--n", "4", "--out", str(tmp_path / "two.npy")]) == 0
