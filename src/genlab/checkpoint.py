"""Checkpoints: safetensors weights + config JSON + training state, written atomically.

Layout of a run folder's checkpoints/:
    ckpt-00000150-<n>/model.safetensors   weights and buffers, nothing executable
    ckpt-00000150-<n>/config.json         the run config that builds the model
    ckpt-00000150-<n>/state.pt            optimiser, step, RNG: tensors and plain types only
    latest                                names the newest complete checkpoint folder

A folder is complete before `latest` is switched to it (temp file, fsync, rename), so a crash at
any moment leaves `latest` naming a loadable checkpoint. State is read with weights_only=True.
A checkpoint damaged later (a disk error, a copy cut short) is passed over for the older one kept
beside it (load_newest). The weights' safetensors metadata binds them to their config (train/resume.py).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from genlab.errors import CheckpointError
from genlab.io import atomic_write, atomic_write_bytes, fsync_dir

KEEP = 2  # complete checkpoints kept; older ones are deleted after `latest` moves on
T = TypeVar("T")


class DamagedCheckpoint(CheckpointError):
    """A checkpoint file that cannot be read: cut short, overwritten or missing."""


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    config: dict[str, Any],
    state: dict[str, Any],
    metadata: dict[str, str] | None = None,
    extra: dict[str, nn.Module] | None = None,
) -> Path:
    """Write one checkpoint of model + config + state under run_dir/checkpoints, metadata into the weights'
    header, and each extra module (e.g. an EMA) as NAME.safetensors beside; return its folder."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{state['step']:08d}-{time.time_ns()}"
    tmp = root / f".{name}.tmp"
    tmp.mkdir()
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt", **(metadata or {})})
        for file, module in (extra or {}).items():
            tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(tensors, str(tmp / file), metadata={"format": "pt"})
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
    # A name after the one just written is a step the run went back from: a resume that passed over a
    # damaged checkpoint continues from the older one, and the damaged one would otherwise stay "newest".
    left = [p for p in complete if p.name > keep]
    for old in [*left, *[p for p in complete if p.name <= keep][:-KEEP]]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".ckpt-*.tmp"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run folder, its checkpoints/ folder, or the checkpoint folder itself."""
    return checkpoint_folders(path)[0]


def checkpoint_folders(path: str | Path) -> list[Path]:
    """The complete checkpoints of a run folder (or its checkpoints/ folder): the one `latest` names, then
    the others, newest first. A checkpoint folder given itself is the only one."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return [path]
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    named = _named_by_latest(root)
    kept = sorted((p for p in root.glob("ckpt-*") if p.is_dir() and not p.is_symlink()), reverse=True) if root.is_dir() else []
    found = [p for p in dict.fromkeys([*named, *kept]) if (p / "model.safetensors").is_file()]
    if found:
        return found
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a run folder made by `genlab train`")
    raise CheckpointError(f"{path} holds no complete checkpoint; train it first (or pass the right run folder)")


def _named_by_latest(root: Path) -> list[Path]:
    """The folder `latest` names, refused unless it lies in root itself: a run folder from elsewhere must
    not make genlab read (or, resuming, prune beside) files outside it."""
    latest = root / "latest"
    try:
        name = latest.read_text().strip()
    except (OSError, ValueError):  # absent (no checkpoint yet), or unreadable: the folders themselves say
        return []
    folder = root / name
    if name != Path(name).name or name in ("", ".", "..") or folder.resolve().parent != root.resolve():
        raise CheckpointError(
            f"{latest} names {name!r}, which is not a checkpoint folder inside {root}; refused: delete {latest} "
            "to use the newest checkpoint there"
        )
    return [folder]


def load_newest(path: str | Path, read: Callable[[Path], T], say: bool = True) -> tuple[Path, T]:
    """(checkpoint, read(checkpoint)) of the newest complete checkpoint or, when its files are damaged, of
    the older one kept beside it, saying so on stderr."""
    folders = checkpoint_folders(path)
    for i, folder in enumerate(folders):
        try:
            return folder, read(folder)
        except DamagedCheckpoint as e:
            if i + 1 == len(folders):
                raise
            if say:
                print(f"genlab: {e}; using the older checkpoint beside it, {folders[i + 1].name}", file=sys.stderr)
    raise AssertionError("unreachable: checkpoint_folders returns at least one folder")


def load_config_json(ckpt: Path) -> dict[str, Any]:
    try:
        config = json.loads((ckpt / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise DamagedCheckpoint(f"{ckpt / 'config.json'}: unreadable ({e}); the checkpoint is damaged") from None
    if not isinstance(config, dict):
        raise DamagedCheckpoint(f"{ckpt / 'config.json'}: not a config (a JSON object); the checkpoint is damaged")
    return config


EMA_FILE = "ema.safetensors"  # beside model.safetensors: the EMA of a GAN's generator (train.ema)


def ema_generator_weights(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An EMA's saved state (torch's AveragedModel) as its generator's: the "module." keys, unprefixed."""
    return {k.removeprefix("module."): v for k, v in ema_state.items() if k.startswith("module.")}


def load_weights(ckpt: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    """A checkpoint's weights (or the extra module saved beside them as `name`)."""
    try:
        return load_file(str(ckpt / name))
    except (OSError, SafetensorError, ValueError) as e:
        raise DamagedCheckpoint(f"{ckpt / name}: not a valid safetensors file ({e})") from None


def load_metadata(ckpt: Path) -> dict[str, str]:
    """The weights' safetensors header metadata (empty for checkpoints that wrote none)."""
    try:
        with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
            return dict(f.metadata() or {})
    except (OSError, SafetensorError, ValueError) as e:
        raise DamagedCheckpoint(f"{ckpt / 'model.safetensors'}: not a valid safetensors file ({e})") from None


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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DamagedCheckpoint(f"{path}: unreadable ({first}); the checkpoint is damaged") from None


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
