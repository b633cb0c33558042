"""The training loop shared by both families: iterate, call the family's step, log, checkpoint.

Everything a resumed run needs to continue bit-identically (weights, optimiser state, step,
position in the epoch, RNG, the partial logging window) is in the checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from genlab import checkpoint as ckpt
from genlab.config import RunConfig, from_dict
from genlab.data import ImageData, crop_to, iterate_batches, load_dataset
from genlab.errors import ConfigError, GenlabError
from genlab.io import save_grid
from genlab.models import build_model
from genlab.train import FAMILIES


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    last: dict[str, float] = field(default_factory=dict)
    reason: str = "done"  # done | max_steps | time_budget | interrupted


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but this machine has no CUDA GPU; use --device cpu")
    return torch.device(name)


def model_shape(config: RunConfig) -> tuple[int, int]:
    m = config.model
    return (m.in_channels, m.image_size) if config.family == "vae" else (m.img_shape[0], m.img_shape[-1])


def check_writable(run_dir: Path, need_bytes: int) -> None:
    """Fail before training, not at the first checkpoint hours later."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as e:
        raise GenlabError(f"cannot write to {run_dir} ({e.strerror}); choose another --out") from None
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise GenlabError(
            f"{run_dir}: only {free >> 20} MiB free, checkpoints need ~{need_bytes >> 20} MiB; free space or choose another --out"
        )


@contextmanager
def stop_on_signals(flag: dict[str, int]):
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary (it then checkpoints)."""

    def handler(signum: int, frame: Any) -> None:
        flag["signal"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train(config: RunConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> TrainResult:
    """Train config.family on config.data into run_dir; with resume, continue its last checkpoint."""
    run_dir, t = Path(run_dir), config.train
    family = FAMILIES[config.family]
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    channels, size = model_shape(config)
    train_data, test_data = load_dataset(config.data, channels, size)
    steps_per_epoch = len(train_data) // t.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"train.batch_size={t.batch_size} is larger than the {len(train_data)} training images; lower it")
    model = build_model(config.family, config.model).to(device)
    optimizers = family.make_optimizers(model, config)
    schedulers = {k: torch.optim.lr_scheduler.ExponentialLR(o, t.lr_decay) for k, o in optimizers.items()}
    n_params = sum(p.numel() for p in model.parameters())
    check_writable(run_dir, need_bytes=n_params * 4 * 3 * (ckpt.KEEP + 1))

    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "window": {}, "window_steps": 0}
    if resume:
        state = restore(run_dir, config, model, optimizers, schedulers, device)
    else:
        ckpt.save_json(run_dir / "config.json", config.to_dict())
        (run_dir / "metrics.jsonl").write_text("")
    (run_dir / "samples").mkdir(exist_ok=True)
    state["original_size"] = list(getattr(train_data, "original_size", (size, size)))
    noise = torch.randn(t.num_samples, config.model.latent_dim, generator=torch.Generator().manual_seed(t.seed))
    total = min(t.epochs * steps_per_epoch, t.max_steps or math.inf)
    metrics = (run_dir / "metrics.jsonl").open("a")
    writer = tensorboard_writer(run_dir, state["step"])
    flag: dict[str, int] = {}
    started, window_start, reason = time.monotonic(), time.monotonic(), "done"
    bar = tqdm(total=total, initial=state["step"], disable=quiet, unit="step", dynamic_ncols=True, desc=config.family)

    bad = None

    def check_finite(bad: torch.Tensor | None) -> None:
        if bad is not None and (step := int(bad)) >= 0:
            raise GenlabError(
                f"non-finite loss at step {step}; weights not saved, last good checkpoint kept in {run_dir}; "
                'lower train.lr or set train.nan_policy = "skip"'
            )

    def save() -> Path:
        check_finite(bad)
        state["rng"] = torch.get_rng_state()
        state["cuda_rng"] = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
        state["optimizers"] = {k: o.state_dict() for k, o in optimizers.items()}
        state["schedulers"] = {k: s.state_dict() for k, s in schedulers.items()}
        return ckpt.save_checkpoint(run_dir, model, config.to_dict(), state)

    def log(record: dict[str, Any]) -> None:
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, float):
                    writer.add_scalar(k, v, record["step"])

    model.train()
    with stop_on_signals(flag):
        while state["epoch"] < t.epochs and reason == "done":
            for batch in iterate_batches(train_data, t.batch_size, t.seed, state["epoch"], state["batch"], config.data.workers):
                x = family.prepare(model, batch.to(device, non_blocking=True), config.data.binarize)
                out = family.step(model, x, optimizers, config.loss, state["step"])
                finite = torch.stack([v.isfinite() for v in out.values()]).all()
                if t.nan_policy == "skip" and not finite:  # host sync each step: only with this opt-in
                    state["skipped"] = state.get("skipped", 0) + 1
                    continue
                # Remember the first bad step on the device; checked at the next log or save (no sync here).
                bad = bad if bad is not None else torch.tensor(-1, device=device)
                bad = torch.where((bad < 0) & ~finite, state["step"] + 1, bad)
                for k, v in out.items():
                    state["window"][k] = state["window"].get(k, 0.0) + v.double()
                state["window_steps"] += 1
                state["step"] += 1
                state["batch"] += 1
                bar.update(1)
                if state["step"] % t.log_every == 0:
                    check_finite(bad)
                    elapsed = time.monotonic() - window_start
                    means = {k: (v / state["window_steps"]).item() for k, v in state["window"].items()}
                    ips = state["window_steps"] * t.batch_size / max(elapsed, 1e-9)
                    log({"step": state["step"], "epoch": state["epoch"], **means, "images_per_s": ips})
                    bar.set_postfix({**{k: f"{v:.4g}" for k, v in means.items()}, "img/s": f"{ips:.0f}"})
                    family.health(means, state)
                    state["window"], state["window_steps"], window_start = {}, 0, time.monotonic()
                if state["step"] >= total:
                    reason = "max_steps" if t.max_steps and state["step"] >= t.max_steps else reason
                    break
                if flag:
                    reason = "interrupted"
                    break
                if t.time_budget and time.monotonic() - started >= t.time_budget:
                    reason = "time_budget"
                    break
            if state["batch"] >= steps_per_epoch:  # the epoch is complete
                state["epoch"] += 1
                state["batch"] = 0
                for s in schedulers.values():
                    s.step()
                record = {
                    "step": state["step"],
                    "epoch": state["epoch"],
                    **family.validate(model, test_data, config, state["step"], device),
                }
                log(record)
                if state["epoch"] % t.sample_every == 0 or state["epoch"] == t.epochs:
                    write_pictures(
                        run_dir / "samples" / f"epoch_{state['epoch']:04d}.png", family, model, test_data, noise, device, config
                    )
                save()
                if state["step"] >= total and reason == "done":
                    reason = "max_steps" if t.max_steps and state["step"] >= t.max_steps else "done"
    bar.close()
    if state["batch"] or reason != "done":
        write_pictures(run_dir / "samples" / "last.png", family, model, test_data, noise, device, config)
        save()
    metrics.close()
    if writer is not None:
        writer.close()
    last = {k: v for k, v in json.loads(_last_line(run_dir / "metrics.jsonl") or "{}").items() if isinstance(v, float)}
    result = TrainResult(run_dir, state["step"], state["epoch"], last, reason)
    if reason == "interrupted":
        name = signal.Signals(flag["signal"]).name
        print(
            f"genlab: stopped by {name} at step {state['step']}, checkpoint saved; "
            f"resume with: genlab train {config.family} --resume {run_dir}",
            file=sys.stderr,
        )
    return result


def restore(run_dir: Path, config: RunConfig, model, optimizers, schedulers, device: torch.device) -> dict[str, Any]:
    """Load the last checkpoint of run_dir into model/optimisers; cut metrics back to its step."""
    path = ckpt.find_checkpoint(run_dir)
    saved = from_dict(ckpt.load_config_json(path))
    diff = ckpt.config_mismatch(config.to_dict()["model"], saved.to_dict()["model"])
    if diff or saved.family != config.family:
        raise ckpt.CheckpointError(f"{path}: checkpoint model does not match the config ({'; '.join(diff) or saved.family})")
    ckpt.load_into(model, ckpt.load_weights(path), path)
    state = ckpt.load_state(path)
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    for k, s in schedulers.items():
        s.load_state_dict(state["schedulers"][k])
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng"):
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    state["window"] = {k: v.to(device) for k, v in state["window"].items()}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
    kept = [line for line in lines if json.loads(line)["step"] <= state["step"]]
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
    return state


def write_pictures(path: Path, family, model, test: ImageData, noise, device, config: RunConfig) -> None:
    """One PNG: the family's grids side by side, at the data's own size (padding cropped off)."""
    grids = [crop_to(g, test.original_size) for g in family.pictures(model, test, noise, device, config.data.binarize)]
    nrow = math.isqrt(noise.shape[0])
    images = _side_by_side(grids, nrow) if len(grids) > 1 else grids[0]
    save_grid(path, images, nrow=nrow * len(grids), scale=2)


def _side_by_side(grids: list[torch.Tensor], nrow: int) -> torch.Tensor:
    """Interleave rows of several (nrow*nrow) grids so they appear next to each other."""
    rows = []
    for r in range(nrow):
        for g in grids:
            chunk = g[r * nrow : (r + 1) * nrow]
            if len(chunk) < nrow:
                chunk = torch.cat([chunk, torch.full((nrow - len(chunk), *g.shape[1:]), -1.0, device=g.device)])
            rows.append(chunk)
    return torch.cat(rows)


def tensorboard_writer(run_dir: Path, step: int):
    """A SummaryWriter in run_dir/tb when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"), purge_step=step or None)


def _last_line(path: Path) -> str:
    lines = path.read_text().splitlines()
    return lines[-1] if lines else ""
