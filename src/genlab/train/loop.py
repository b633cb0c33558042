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
from types import SimpleNamespace
from typing import Any

import torch
from tqdm import tqdm

from genlab import checkpoint as ckpt
from genlab.config import RunConfig, from_dict
from genlab.data import ImageData, crop_to, iterate_batches, load_dataset, to_float
from genlab.errors import ConfigError, GenlabError
from genlab.io import save_grid
from genlab.models import build_model
from genlab.runs import model_shape, resolve_device
from genlab.train import FAMILIES
from genlab.train.common import make_precision
from genlab.train.distributed import (
    World,
    any_rank,
    check_identical,
    gather_rng,
    mean_over_ranks,
    require_same_world,
    sync_batchnorm,
)
from genlab.train.distributed import cleanup as dist_cleanup
from genlab.train.distributed import setup as dist_setup
from genlab.train.distributed import wrap as dist_wrap


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    last: dict[str, float] = field(default_factory=dict)
    reason: str = "done"  # done | max_steps | time_budget | interrupted


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
    """Train config.family on config.data into run_dir; with resume, continue its last checkpoint.

    Under torchrun, each of WORLD_SIZE processes trains on its shard of every global batch of
    train.batch_size x WORLD_SIZE images; rank 0 alone writes the run folder.
    """
    run_dir, t = Path(run_dir), config.train
    family = FAMILIES[config.family]
    world, device = dist_setup(resolve_device(t.device))
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    channels, size = model_shape(config)
    train_data, test_data = load_dataset(config.data, channels, size)
    steps_per_epoch = len(train_data) // (t.batch_size * world.size)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train.batch_size={t.batch_size} x {world.size} process(es) is larger than the "
            f"{len(train_data)} training images; lower it"
        )
    model = sync_batchnorm(build_model(config.family, config.model), device).to(device)
    optimizers = family.make_optimizers(model, config)
    schedulers = {k: torch.optim.lr_scheduler.ExponentialLR(o, t.lr_decay) for k, o in optimizers.items()}
    if world.main:
        check_writable(run_dir, need_bytes=sum(p.numel() for p in model.parameters()) * 4 * 3 * (ckpt.KEEP + 1))

    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "window": {}, "window_steps": 0, "world_size": world.size}
    if resume:
        state = restore(run_dir, config, model, optimizers, schedulers, device, world)
    else:
        torch.manual_seed(t.seed + world.rank)  # each rank its own noise (z, eps) from here on
        if world.main:
            ckpt.save_json(run_dir / "config.json", config.to_dict())
            (run_dir / "metrics.jsonl").write_text("")
    amp = make_precision(t.precision, device, optimizers)
    for k, scaler in amp.scalers.items():
        if k in state.get("scalers", {}):
            scaler.load_state_dict(state["scalers"][k])
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and isinstance(train_data, ImageData):
        train_data.images = train_data.images.to(device)  # small data sets live on the GPU: no copies per step
    engine = dist_wrap(config.family, model, device) if world.distributed else model
    if t.compile:
        engine = compile_engine(engine)
    state["original_size"] = list(getattr(train_data, "original_size", (size, size)))
    noise = torch.randn(t.num_samples, config.model.latent_dim, generator=torch.Generator().manual_seed(t.seed))
    total = min(t.epochs * steps_per_epoch, t.max_steps or math.inf)
    out_files = RunFiles(run_dir, state["step"]) if world.main else None
    flag: dict[str, int] = {}
    started, window_start, reason, bad = time.monotonic(), time.monotonic(), "done", None
    bar = tqdm(
        total=total,
        initial=state["step"],
        disable=quiet or not world.main,
        unit="step",
        dynamic_ncols=True,
        desc=config.family,
        mininterval=0.1 if sys.stderr.isatty() else 10.0,  # logs get a line every 10 s, not a flood
    )

    def check_finite() -> None:
        if bad is not None and any_rank(int(bad) >= 0, world, device):
            first = int(bad) if int(bad) >= 0 else state["step"]  # another rank's first bad step: this rank's now
            raise GenlabError(
                f"non-finite loss at step {first}; weights not saved, last good checkpoint kept in "
                f'{run_dir}; lower train.lr or set train.nan_policy = "skip"'
            )

    def save() -> None:
        check_finite()
        state["rng"] = gather_rng(world)
        state["cuda_rng"] = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
        state["optimizers"] = {k: o.state_dict() for k, o in optimizers.items()}
        state["schedulers"] = {k: s.state_dict() for k, s in schedulers.items()}
        state["scalers"] = {k: sc.state_dict() for k, sc in amp.scalers.items()}
        if out_files:
            out_files.checkpoint(model, config, state)

    def pictures(name: str) -> None:
        if out_files:
            write_pictures(run_dir / "samples" / name, family, model, test_data, noise, device, config)

    model.train()
    with stop_on_signals(flag):
        while state["epoch"] < t.epochs and reason == "done":
            batches = iterate_batches(
                train_data, t.batch_size, t.seed, state["epoch"], state["batch"], config.data.workers, world.rank, world.size
            )
            for batch in batches:
                x = family.prepare(model, batch.to(device, non_blocking=True), config.data.binarize)
                if t.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                skip = t.nan_policy == "skip"
                out = family.step(engine, x, optimizers, config.loss, state["step"], skip_nonfinite=skip, amp=amp)
                finite = torch.stack([v.isfinite() for v in out.values()]).all()
                if skip and not finite:  # the step skipped its update; keep NaN out of the logs
                    state["skipped"] = state.get("skipped", 0) + 1
                else:
                    # Remember the first bad step on the device; checked at the next log or save (no sync here).
                    bad = bad if bad is not None else torch.tensor(-1, device=device)
                    bad = torch.where((bad < 0) & ~finite, state["step"] + 1, bad)
                    for k, v in out.items():
                        state["window"][k] = state["window"].get(k, 0.0) + v.double()
                    state["window_steps"] += 1
                state["step"] += 1
                state["batch"] += 1
                bar.update(1)
                if state["step"] % t.log_every == 0 and state["window_steps"]:
                    check_finite()
                    elapsed = time.monotonic() - window_start
                    window = mean_over_ranks(state["window"], world)  # the global batch's loss
                    means = {k: (v / state["window_steps"]).item() for k, v in window.items()}
                    ips = state["window_steps"] * t.batch_size * world.size / max(elapsed, 1e-9)
                    extra = {"skipped_steps": state["skipped"]} if state.get("skipped") else {}
                    if out_files:
                        out_files.log({"step": state["step"], "epoch": state["epoch"], **means, "images_per_s": ips, **extra})
                    bar.set_postfix({**{k: f"{v:.4g}" for k, v in means.items()}, "img/s": f"{ips:.0f}"})
                    family.health(means, state)
                    state["window"], state["window_steps"], window_start = {}, 0, time.monotonic()
                if state["step"] >= total:
                    reason = "max_steps" if t.max_steps and state["step"] >= t.max_steps else reason
                    break
                timed_out = bool(t.time_budget) and time.monotonic() - started >= t.time_budget
                if any_rank(bool(flag) or timed_out, world, device) if world.distributed else (flag or timed_out):
                    reason = "interrupted" if flag or not timed_out else "time_budget"
                    break
            if state["batch"] >= steps_per_epoch:  # the epoch is complete
                state["epoch"] += 1
                state["batch"] = 0
                for s in schedulers.values():
                    s.step()
                if out_files:
                    record = {
                        "step": state["step"],
                        "epoch": state["epoch"],
                        **family.validate(model, test_data, config, state["step"], device),
                    }
                    if t.eval_every and state["epoch"] % t.eval_every == 0:
                        record.update(quick_eval(config, model, test_data))
                    out_files.log(record)
                if state["epoch"] % t.sample_every == 0 or state["epoch"] == t.epochs:
                    pictures(f"epoch_{state['epoch']:04d}.png")
                save()
                if state["step"] >= total and reason == "done":
                    reason = "max_steps" if t.max_steps and state["step"] >= t.max_steps else "done"
    bar.close()
    if state["batch"] or reason != "done":
        pictures("last.png")
        save()
    identical = check_identical(model, world)
    if out_files:
        if world.distributed:
            out_files.log(
                {"step": state["step"], "epoch": state["epoch"], "world_size": world.size, "ranks_identical": identical}
            )
        out_files.close()
    dist_cleanup(world)
    if not identical:
        raise GenlabError("ranks ended with different weights; report this with the command that ran")
    last_line = _last_line(run_dir / "metrics.jsonl") if world.main else ""  # other ranks may have no run folder
    last = {k: v for k, v in json.loads(last_line or "{}").items() if isinstance(v, float)}
    result = TrainResult(run_dir, state["step"], state["epoch"], last, reason)
    if reason == "interrupted" and world.main:
        name = signal.Signals(flag.get("signal", signal.SIGTERM)).name
        print(
            f"genlab: stopped by {name} at step {state['step']}, checkpoint saved; "
            f"resume with: genlab train {config.family} --resume {run_dir}",
            file=sys.stderr,
        )
    return result


def compile_engine(engine):
    """torch.compile what the step drives: the VAE, or G and D separately (the GAN step calls each)."""
    if isinstance(engine, torch.nn.Module) and not hasattr(engine, "generator"):
        return torch.compile(engine)
    return SimpleNamespace(
        generator=torch.compile(engine.generator), discriminator=torch.compile(engine.discriminator), config=engine.config
    )


class RunFiles:
    """What rank 0 writes during training: metrics.jsonl, TensorBoard events, checkpoints."""

    def __init__(self, run_dir: Path, step: int) -> None:
        self.run_dir = run_dir
        (run_dir / "samples").mkdir(exist_ok=True)
        self.metrics = (run_dir / "metrics.jsonl").open("a")
        self.writer = tensorboard_writer(run_dir, step)

    def log(self, record: dict[str, Any]) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, float):
                    self.writer.add_scalar(k, v, record["step"])

    def checkpoint(self, model, config: RunConfig, state: dict[str, Any]) -> Path:
        try:
            return ckpt.save_checkpoint(self.run_dir, model, config.to_dict(), state)
        except OSError as e:
            raise GenlabError(
                f"cannot write a checkpoint in {self.run_dir} ({e.strerror or e}); the last complete one is kept: "
                f"free space, then resume with: genlab train {config.family} --resume {self.run_dir}"
            ) from None

    def close(self) -> None:
        self.metrics.close()
        if self.writer is not None:
            self.writer.close()


def quick_eval(config: RunConfig, model, test: ImageData) -> dict[str, float]:
    """Sample-quality figures with cheap settings (train.eval_n samples, no likelihoods)."""
    from genlab.eval.evaluate import as_classifier_input, find_classifier, generate, sample_quality, summary

    classifier, _, _ = find_classifier(config, test)
    if classifier is None:
        return {}
    n = min(config.train.eval_n, len(test))
    fake = as_classifier_input(generate(model, n, config.train.seed), tuple(test.original_size))
    real = as_classifier_input(to_float(test.images[:n]), tuple(test.original_size))
    quality = sample_quality(fake, real, classifier)
    if quality["collapse_warning"]:
        print(f"genlab: warning: {quality['collapse_warning']}", file=sys.stderr)
    model.train()
    return summary({"sample_quality": quality})


def restore(
    run_dir: Path, config: RunConfig, model, optimizers, schedulers, device: torch.device, world: World
) -> dict[str, Any]:
    """Load the last checkpoint of run_dir into model/optimisers; cut metrics back to its step."""
    path = ckpt.find_checkpoint(run_dir)
    saved = from_dict(ckpt.load_config_json(path))
    diff = ckpt.config_mismatch(config.to_dict()["model"], saved.to_dict()["model"])
    if diff or saved.family != config.family:
        raise ckpt.CheckpointError(f"{path}: checkpoint model does not match the config ({'; '.join(diff) or saved.family})")
    ckpt.load_into(model, ckpt.load_weights(path), path)
    state = ckpt.load_state(path)
    require_same_world(state.get("world_size", 1), world)
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    for k, s in schedulers.items():
        s.load_state_dict(state["schedulers"][k])
    torch.set_rng_state(state["rng"][world.rank])
    if device.type == "cuda" and state.get("cuda_rng"):
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    state["window"] = {k: v.to(device) for k, v in state["window"].items()}
    metrics = run_dir / "metrics.jsonl"
    if world.main and metrics.exists():
        kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= state["step"]]
        metrics.write_text("".join(line + "\n" for line in kept))
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
