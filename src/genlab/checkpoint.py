"""Checkpoints: safetensors weights + config JSON + training state, written atomically.

Layout of a run folder's checkpoints/:
    ckpt-00000150-<n>/model.safetensors   weights and buffers, nothing executable
    ckpt-00000150-<n>/config.json         the run config that builds the model
    ckpt-00000150-<n>/state.pt            optimiser, step, RNG: tensors and plain types only
    latest                                names the newest complete checkpoint folder

A folder is complete before `latest` is switched to it (temp file, fsync, rename), so a crash at
any moment leaves `latest` naming a loadable checkpoint. State is read with weights_only=True.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from genlab.errors import CheckpointError
from genlab.io import atomic_write, atomic_write_bytes, fsync_dir

KEEP = 2  # complete checkpoints kept; older ones are deleted after `latest` moves on


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(run_dir: str | Path, model: nn.Module, config: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write one checkpoint of model + config + state under run_dir/checkpoints; return its folder."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{state['step']:08d}-{time.time_ns()}"
    tmp = root / f".{name}.tmp"
    tmp.mkdir()
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        torch.save(state, tmp / "state.pt")
        for f in tmp.iterdir():
            _fsync_file(f)
        fsync_dir(tmp)
        final = root / name
        os.rename(tmp, final)
        fsync_dir(root)
        atomic_write_bytes(root / "latest", name.encode())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep=name)
    return final


def _prune(root: Path, keep: str) -> None:
    complete = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("ckpt-"))
    for old in complete[:-KEEP]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".ckpt-*.tmp"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run folder, its checkpoints/ folder, or the checkpoint folder itself."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = root / "latest"
    if latest.is_file():
        ckpt = root / latest.read_text().strip()
        if (ckpt / "model.safetensors").is_file():
            return ckpt
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a run folder made by `genlab train`")
    raise CheckpointError(f"{path} holds no complete checkpoint; train it first (or pass the right run folder)")


def load_config_json(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt / 'config.json'}: unreadable ({e}); the checkpoint is damaged") from None


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(ckpt / "model.safetensors"))
    except (OSError, SafetensorError, ValueError) as e:
        raise CheckpointError(f"{ckpt / 'model.safetensors'}: not a valid safetensors file ({e})") from None


def load_state(ckpt: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Training state, unpickled with weights_only=True: tensors and plain containers, never code."""
    path = ckpt / "state.pt"
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused, it holds objects other than tensors and plain data ({first}); "
            "only load checkpoints written by genlab from sources you trust"
        ) from None
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: unreadable ({e}); the checkpoint is damaged") from None


def load_into(model: nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Copy weights into model, naming the first key whose presence or shape does not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    if missing or extra:
        raise CheckpointError(f"{source}: weights do not fit this model (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, value in own.items():
        if value.shape != weights[key].shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(weights[key].shape)} but the model expects {tuple(value.shape)}; "
                "the checkpoint was trained with another model config"
            )
    model.load_state_dict(weights)


def config_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Keys of two model config dicts that differ, as 'key: found != expected'."""
    keys = sorted(set(expected) | set(found))
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731 - JSON turns tuples into lists
    return [f"{k}: {found.get(k)!r} != {expected.get(k)!r}" for k in keys if norm(expected.get(k)) != norm(found.get(k))]


def save_json(path: str | Path, data: dict[str, Any]) -> Path:
    text = json.dumps(data, indent=2).encode()
    return atomic_write(path, lambda f: f.write(text))
