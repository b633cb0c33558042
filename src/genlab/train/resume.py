"""Resuming a run: the config a resume command may give, and the checkpoint loaded back into the run.

A checkpoint is bound to the config it was trained with: its weights' metadata holds a hash of the keys
that decide what is computed (bound_config), so an edited config.json, the run's or the checkpoint's,
is refused by name instead of silently changing the run.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from genlab import checkpoint as ckpt
from genlab.config import RunConfig
from genlab.configfile import from_dict, load_config, read_file
from genlab.data import BUILTIN, FACTOR_SETS
from genlab.errors import GenlabError
from genlab.io import atomic_write_bytes
from genlab.train.distributed import World, require_same_world

# train.* keys that a resume may change: limits and where to run, not what is computed.
RESUMABLE = {
    "train.epochs", "train.max_steps", "train.time_budget", "train.device", "train.log_every", "train.sample_every",
    "train.snapshots", "train.factor_metrics_every",
}  # fmt: skip
# Keys that say where the data lies, or how many processes read it: a run moved to another machine
# (or resumed with fewer loader workers) computes the same thing.
WHERE = {"data.root", "data.download", "data.workers"}
HASH_KEY = "genlab.config_sha256"  # in the weights' safetensors metadata, beside genlab's and torch's versions


def resume_changes(
    name: str, saved: dict[str, Any], config_file: str | None, overrides: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """What a resume command gives (config file and flags) against the saved run: the keys that would
    change what is computed, as "key: saved in the run, new given", and the RESUMABLE keys' values.

    Values are compared after the config's own type checks, so `--batch-size 64` equals a saved 64.
    """
    given = dict.fromkeys(overrides)
    if config_file:
        for section, values in read_file(config_file).items():
            if isinstance(values, dict):
                given.update(dict.fromkeys(f"{section}.{k}" for k in values))
    resolved = load_config(name, config_file, overrides).to_dict()
    changed, allowed = [], {}
    for key in given:
        section, _, leaf = key.partition(".")
        old, new = saved[section][leaf], resolved[section][leaf]
        if key in RESUMABLE:
            allowed[key] = new
        elif _plain(old) != _plain(new):
            changed.append(f"{key}: {_show(old)} in the run, {_show(new)} given")
    return changed, allowed


def _plain(value: Any) -> Any:
    return list(map(_plain, value)) if isinstance(value, (list, tuple)) else value


def _show(value: Any) -> str:
    return json.dumps(_plain(value))


def resumed_config(run_dir: Path, name: str | None, config_file: str | None, overrides: dict[str, Any]) -> RunConfig:
    """The config a resumed run continues with: the saved one, with only the RESUMABLE keys given now.
    name is the family the user named, checked against the run's; None takes the run's."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise GenlabError(f"--resume {run_dir}: no config.json there; pass the folder of a genlab training run")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raw, problem = None, str(e)
    else:
        problem = "not a JSON object"
    if not isinstance(raw, dict):
        raise GenlabError(f"{path} is damaged ({problem}); copy {_config_copy(run_dir)} over it, then resume")
    saved = from_dict(raw).to_dict()
    name = name or saved["family"]
    if saved["family"] != name:
        raise GenlabError(f"{run_dir} is a {saved['family']} run; resume it with `genlab train {saved['family']} --resume`")
    changed, allowed = resume_changes(name, saved, config_file, overrides)
    if changed:
        raise GenlabError(f"cannot change {'; '.join(changed)} when resuming; only {', '.join(sorted(RESUMABLE))} may differ")
    # Stop conditions belong to an invocation: the resumed run gets only the ones given now.
    saved["train"].update(max_steps=None, time_budget=None)
    sections = {k: v for k, v in saved.items() if k != "family"}
    return load_config(name, None, {f"{s}.{k}": v for s, d in sections.items() for k, v in d.items()} | allowed, resumed=True)


def _config_copy(run_dir: Path) -> str:
    """Where a damaged run config.json can be restored from: the newest checkpoint keeps a copy."""
    try:
        return str(ckpt.find_checkpoint(run_dir) / "config.json")
    except ckpt.CheckpointError:
        return "the config.json of its newest checkpoint (checkpoints/ckpt-*/config.json)"


def bound_config(config: dict[str, Any]) -> dict[str, Any]:
    """The "section.key" values of a config (its to_dict() form) that a checkpoint is bound to."""
    flat = {"family": config.get("family")}
    for section, values in config.items():
        for key, value in values.items() if isinstance(values, dict) else ():
            if f"{section}.{key}" not in RESUMABLE | WHERE:
                flat[f"{section}.{key}"] = _plain(value)
    # A folder's path says where the images lie (a run moved to another machine rewrites it in both
    # config.json files); a built-in name says which images.
    if flat.get("data.dataset") not in (*BUILTIN, *FACTOR_SETS):
        flat["data.dataset"] = "a folder"
    return flat


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(bound_config(config), sort_keys=True).encode()).hexdigest()


def checkpoint_metadata(config: RunConfig) -> dict[str, str]:
    """What the weights' metadata holds of the run: its config's hash, genlab's and torch's versions."""
    from genlab import __version__

    return {HASH_KEY: config_hash(config.to_dict()), "genlab.version": __version__, "genlab.torch": torch.__version__}


def check_binding(path: Path, raw: dict[str, Any], metadata: dict[str, str], config: RunConfig, say: bool) -> None:
    """Refuse to continue checkpoint path (its config.json raw) under a config that computes something else."""
    expected, found = bound_config(config.to_dict()), bound_config(from_dict(raw).to_dict())
    if HASH_KEY not in metadata:  # written before checkpoints were bound: the weights' shapes are all it promises
        expected, found = ({k: v for k, v in d.items() if k == "family" or k.startswith("model.")} for d in (expected, found))
    elif config_hash(raw) != metadata[HASH_KEY]:
        raise ckpt.CheckpointError(
            f"{path / 'config.json'} was edited after its checkpoint was written: it is not the config the weights "
            "were trained with; put the original back, or start a new run with --out"
        )
    diff = ckpt.config_mismatch(expected, found)
    if diff:
        raise ckpt.CheckpointError(
            f"{path}: the run's config.json is not the config this checkpoint was trained with ({'; '.join(diff)}; "
            "checkpoint != config.json); put the checkpoint's values back, or start a new run with --out"
        )
    written = metadata.get("genlab.torch")
    if say and written and written != torch.__version__:
        print(f"genlab: warning: {path} was written under torch {written}, this is torch {torch.__version__}: the run "
              "continues, but bit-identical results to a run that never stopped are not promised", file=sys.stderr)  # fmt: skip


def restore(
    run_dir: Path, config: RunConfig, model, optimizers, schedulers, device: torch.device, world: World
) -> tuple[dict[str, Any], Path]:
    """Load the last readable checkpoint of run_dir into model/optimisers and this rank's RNG; cut metrics
    back to its step. Returns the checkpoint's state and folder."""

    def read(folder: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, torch.Tensor], dict[str, Any]]:
        return ckpt.load_config_json(folder), ckpt.load_metadata(folder), ckpt.load_weights(folder), ckpt.load_state(folder)

    path, (raw, metadata, weights, state) = ckpt.load_newest(run_dir, read, say=world.main)
    check_binding(path, raw, metadata, config, say=world.main)
    ckpt.load_into(model, weights, path)
    require_same_world(state.get("world_size", 1), world)
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    for k, s in schedulers.items():
        s.load_state_dict(state["schedulers"][k])
    torch.set_rng_state(state["rng"][world.rank])
    gpu_states = state.get("cuda_rng") or []
    if device.type == "cuda" and len(gpu_states) > world.rank and gpu_states[world.rank].numel():
        torch.cuda.set_rng_state(gpu_states[world.rank], device)
    metrics = run_dir / "metrics.jsonl"
    if world.main and metrics.exists():
        cut_metrics(metrics, state["step"])
    return state, path


def cut_metrics(path: Path, step: int) -> None:
    """Keep the records of metrics.jsonl up to step; drop lines cut short by a kill in mid-write."""
    kept, torn = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)) and record["step"] <= step:
            kept.append(line)
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
    if torn:
        print(f"genlab: {path}: dropped {torn} line(s) cut short by an earlier stop", file=sys.stderr)
