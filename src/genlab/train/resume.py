"""Resuming a run: the config a resume command may give, and the checkpoint loaded back into the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genlab import checkpoint as ckpt
from genlab.config import RunConfig
from genlab.configfile import from_dict, load_config, read_file
from genlab.errors import GenlabError
from genlab.train.distributed import World, require_same_world

# train.* keys that a resume may change: limits and where to run, not what is computed.
RESUMABLE = {"train.epochs", "train.max_steps", "train.time_budget", "train.device", "train.log_every", "train.sample_every"}


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


def resumed_config(run_dir: Path, name: str, config_file: str | None, overrides: dict[str, Any]) -> RunConfig:
    """The config a resumed run continues with: the saved one, with only the RESUMABLE keys given now."""
    if not (run_dir / "config.json").is_file():
        raise GenlabError(f"--resume {run_dir}: no config.json there; pass the folder of a genlab training run")
    saved = from_dict(json.loads((run_dir / "config.json").read_text())).to_dict()
    if saved["family"] != name:
        raise GenlabError(f"{run_dir} is a {saved['family']} run; resume it with `genlab train {saved['family']} --resume`")
    changed, allowed = resume_changes(name, saved, config_file, overrides)
    if changed:
        raise GenlabError(f"cannot change {'; '.join(changed)} when resuming; only {', '.join(sorted(RESUMABLE))} may differ")
    # Stop conditions belong to an invocation: the resumed run gets only the ones given now.
    saved["train"].update(max_steps=None, time_budget=None)
    sections = {k: v for k, v in saved.items() if k != "family"}
    return load_config(name, None, {f"{s}.{k}": v for s, d in sections.items() for k, v in d.items()} | allowed)


def restore(
    run_dir: Path, config: RunConfig, model, optimizers, schedulers, device: torch.device, world: World
) -> dict[str, Any]:
    """Load the last checkpoint of run_dir into model/optimisers and this rank's RNG; cut metrics back to
    its step. Returns the checkpoint's state."""
    path = ckpt.find_checkpoint(run_dir)
    saved = from_dict(ckpt.load_config_json(path))
    expected, found = ({"family": c.family, **c.to_dict()["model"]} for c in (config, saved))
    diff = ckpt.config_mismatch(expected, found)
    if diff:
        raise ckpt.CheckpointError(f"{path}: checkpoint model does not match the config ({'; '.join(diff)})")
    ckpt.load_into(model, ckpt.load_weights(path), path)
    state = ckpt.load_state(path)
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
        kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= state["step"]]
        metrics.write_text("".join(line + "\n" for line in kept))
    return state
