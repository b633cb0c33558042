from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from genlab import checkpoint as ckpt
from genlab.errors import CheckpointError
from genlab.models import VanillaVAE


def small_vae(latent: int = 4) -> VanillaVAE:
    return VanillaVAE(1, latent, hidden_dims=(8, 16), image_size=16)


def state(step: int) -> dict:
    return {
        "step": step,
        "rng": torch.get_rng_state(),
        "optimizers": {},
        "window": {"loss": torch.tensor(1.0, dtype=torch.float64)},
    }


def test_round_trip_and_latest(tmp_path: Path) -> None:
    model = small_vae()
    first = ckpt.save_checkpoint(tmp_path, model, {"family": "vae"}, state(1))
    torch.nn.init.zeros_(model.fc_mu.weight)
    second = ckpt.save_checkpoint(tmp_path, model, {"family": "vae"}, state(2))
    assert ckpt.find_checkpoint(tmp_path) == second and first.exists()
    other = small_vae()
    ckpt.load_into(other, ckpt.load_weights(second), second)
    assert torch.equal(other.fc_mu.weight, model.fc_mu.weight)
    assert ckpt.load_state(second)["step"] == 2


def test_only_the_last_checkpoints_are_kept(tmp_path: Path) -> None:
    model = small_vae()
    for step in range(5):
        ckpt.save_checkpoint(tmp_path, model, {}, state(step))
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert len(kept) == ckpt.KEEP and kept[-1].startswith("ckpt-00000004")


def test_interrupted_write_leaves_latest_loadable(tmp_path: Path) -> None:
    model = small_vae()
    good = ckpt.save_checkpoint(tmp_path, model, {}, state(1))
    # What a kill -9 in the middle of the next save leaves behind: a temp folder, half written.
    torn = tmp_path / "checkpoints" / ".ckpt-00000002-1.tmp"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\x00" * 10)
    assert ckpt.find_checkpoint(tmp_path) == good
    ckpt.load_weights(good)


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    model = small_vae()
    folder = ckpt.save_checkpoint(tmp_path, model, {}, state(1))
    target = tmp_path / "pwned"
    exploit = Exploit()
    exploit.target = target
    with (folder / "state.pt").open("wb") as f:
        pickle.dump({"step": 1, "x": exploit}, f)
    with pytest.raises(CheckpointError, match="refused"):
        ckpt.load_state(folder)
    assert not target.exists()


def test_mismatched_model_is_refused_naming_the_key(tmp_path: Path) -> None:
    folder = ckpt.save_checkpoint(tmp_path, small_vae(latent=4), {}, state(1))
    with pytest.raises(CheckpointError, match=r"fc_mu.weight has shape \(4, 256\) but the model expects \(5, 256\)"):
        ckpt.load_into(small_vae(latent=5), ckpt.load_weights(folder), folder)
    assert ckpt.config_mismatch({"latent_dim": 5, "hidden_dims": [8]}, {"latent_dim": 4, "hidden_dims": (8,)}) == [
        "latent_dim: 4 != 5"
    ]


def test_corrupt_weights_and_missing_runs(tmp_path: Path) -> None:
    folder = ckpt.save_checkpoint(tmp_path, small_vae(), {}, state(1))
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        ckpt.load_weights(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.find_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        ckpt.find_checkpoint(tmp_path / "empty")
