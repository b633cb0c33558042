"""The training loop shared by both families: iterate, call the family's step, log, checkpoint.

Everything a resumed run needs to continue bit-identically (weights, optimiser state, step,
position in the epoch, RNG, the partial logging window) is in the checkpoint.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from genlab import checkpoint as ckpt
from genlab.config import RunConfig
from genlab.data import ImageData, describe, iterate_batches, load_dataset
from genlab.errors import ConfigError, GenlabError
from genlab.eval.evaluate import quick_eval
from genlab.models import build_model
from genlab.runs import model_shape, resolve_device
from genlab.train import FAMILIES
from genlab.train.common import compile_engine, first_step_compiles, fuse_norm_act, make_precision
from genlab.train.distributed import (
    any_rank,
    check_identical,
    gather_rng,
    mean_over_ranks,
    sync_batchnorm,
)
from genlab.train.distributed import cleanup as dist_cleanup
from genlab.train.distributed import setup as dist_setup
from genlab.train.distributed import wrap as dist_wrap
from genlab.train.guards import check_writable, stop_on_signals
from genlab.train.outputs import RunFiles, restore, write_pictures
from genlab.train.progress import Progress


def check_labels(train_data, config: RunConfig) -> None:
    """A conditional model needs a label per image, and as many classes as the data has."""
    labels = getattr(train_data, "labels", None)
    if labels is None:
        raise ConfigError(
            f"{config.family} is class-conditional and {config.data.dataset} has no labels here; use IDX data with "
            "label files, or an image folder with one subfolder per class (held in memory)"
        )
    found = int(labels.max()) + 1
    if found > config.model.num_classes:
        raise ConfigError(f"the data has {found} classes and model.num_classes = {config.model.num_classes}; set it to {found}")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    last: dict[str, float] = field(default_factory=dict)
    reason: str = "done"  # done | max_steps | time_budget | interrupted


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
    if world.main:
        print(f"genlab: {describe(config.data, train_data, test_data, channels, size)}")
    if config.family == "vae" and config.loss.loss_type == "tcvae" and not config.loss.dataset_size:
        # β-TCVAE's minibatch-weighted sampling weighs the batch against the whole set: N, saved with the run.
        config = replace(config, loss=replace(config.loss, dataset_size=len(train_data)))
    if world.distributed and t.nan_policy == "skip":
        # A rank that skips its backward would leave the others waiting in DDP's all-reduce.
        raise ConfigError('train.nan_policy = "skip" does not work under torchrun; use "stop" (the default)')
    conditional = getattr(family, "CONDITIONAL", False)
    if conditional:
        check_labels(train_data, config)
    steps_per_epoch = len(train_data) // (t.batch_size * world.size)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train.batch_size={t.batch_size} x {world.size} process(es) is larger than the "
            f"{len(train_data)} training images; lower it"
        )
    model = build_model(config.family, config.model)
    model = (sync_batchnorm(model, device) if world.distributed else model).to(device)
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
    compiling = first_step_compiles(config, fuse_norm_act(model, t.fuse_norm_act, device, t.precision))
    if device.type == "cuda" and isinstance(train_data, ImageData):
        train_data.images = train_data.images.to(device)  # small data sets live on the GPU: no copies per step
    engine = dist_wrap(config.family, model, device) if world.distributed else model
    if t.compile:
        engine = compile_engine(engine, device)
    state["original_size"] = list(getattr(train_data, "original_size", (size, size)))
    noise = torch.randn(t.num_samples, config.model.latent_dim, generator=torch.Generator().manual_seed(t.seed))
    total = min(t.epochs * steps_per_epoch, t.max_steps or math.inf)
    out_files = RunFiles(run_dir, state["step"]) if world.main else None
    flag: dict[str, int] = {}
    started, window_start, reason, bad = time.monotonic(), time.monotonic(), "done", None
    wall_before = state.get("wall_s", 0.0)  # training time of earlier invocations of a resumed run
    if world.main:  # an earlier invocation's status no longer holds; written again at the end
        (run_dir / "status.json").unlink(missing_ok=True)
    bar = Progress(total, state["step"], t.time_budget, quiet or not world.main, config.family)
    if compiling:
        bar.notice(f"genlab: the first step compiles {compiling}: ~15 s the first time, ~3 s once cached")

    def check_finite() -> None:
        if bad is not None and any_rank(int(bad) >= 0, world, device):
            first = int(bad) if int(bad) >= 0 else state["step"]  # another rank's first bad step: this rank's now
            raise GenlabError(
                f"non-finite loss at step {first}; weights not saved, last good checkpoint kept in "
                f'{run_dir}; lower train.lr or set train.nan_policy = "skip"'
            )

    def save() -> None:
        check_finite()
        state["rng"], state["cuda_rng"] = gather_rng(world, device)
        state["optimizers"] = {k: o.state_dict() for k, o in optimizers.items()}
        state["schedulers"] = {k: s.state_dict() for k, s in schedulers.items()}
        state["scalers"] = {k: sc.state_dict() for k, sc in amp.scalers.items()}
        state["wall_s"] = wall_before + time.monotonic() - started
        if out_files:
            out_files.checkpoint(model, config, state)

    def pictures(name: str) -> None:
        if out_files:
            write_pictures(run_dir / "samples" / name, family, model, test_data, noise, device, config)

    model.train()
    with stop_on_signals(flag):
        while state["epoch"] < t.epochs and reason == "done":
            batches = iterate_batches(
                train_data,
                t.batch_size,
                t.seed,
                state["epoch"],
                state["batch"],
                config.data.workers,
                world.rank,
                world.size,
                labels=conditional,
            )
            for batch in batches:
                if conditional:  # (images, labels)
                    batch = tuple(b.to(device, non_blocking=True) for b in batch)
                    x = family.prepare(model, batch, config.data.binarize)
                    if t.channels_last:
                        x = (x[0].contiguous(memory_format=torch.channels_last), x[1])
                else:
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
                bar.update(state["step"])
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
                    warning = family.health(means, state)
                    if warning and world.main:
                        print(f"genlab: warning: {warning}", file=sys.stderr)
                        out_files.log({"step": state["step"], "epoch": state["epoch"], "warning": warning})
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
    bar.close(state["step"])
    if state["batch"] or reason != "done":
        pictures("last.png")
        save()
    identical = check_identical(model, world)
    if out_files:
        wall = round(state.get("wall_s", wall_before), 1)
        status = {"steps": state["step"], "epochs": state["epoch"], "reason": reason, "wall_s": wall}
        ckpt.save_json(run_dir / "status.json", status | {"finished": time.strftime("%Y-%m-%d %H:%M:%S %z")})
        if world.distributed:
            out_files.log(
                {"step": state["step"], "epoch": state["epoch"], "world_size": world.size, "ranks_identical": identical}
            )
        out_files.close()
    # DDP holds the process group: freed here, on every rank, before the group is destroyed (a rank
    # that freed it only on returning, after the other had exited, hung in gloo's teardown).
    del engine
    dist_cleanup(world)
    if not identical:
        raise GenlabError("ranks ended with different weights; report this with the command that ran")
    last = {k: v for k, v in (out_files.last if out_files else {}).items() if isinstance(v, float)}
    result = TrainResult(run_dir, state["step"], state["epoch"], last, reason)
    if out_files and t.report:
        from genlab.report import write_report

        write_report([run_dir], run_dir / "report.html")
    if reason == "interrupted" and world.main:
        name = signal.Signals(flag.get("signal", signal.SIGTERM)).name
        print(
            f"genlab: stopped by {name} at step {state['step']}, checkpoint saved; "
            f"resume with: genlab train {config.family} --resume {run_dir}",
            file=sys.stderr,
        )
    return result
