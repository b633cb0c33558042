"""Everything a training run needs before its first step: data, model, optimisers, the state to resume.

The order matters for exact resume and for matching the references' initial weights: the seed is
set, the data loaded, the model built (its initial weights come from the seed), then each rank's
noise stream is seeded, or restored from the checkpoint.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genlab import checkpoint as ckpt
from genlab.checkpoint import EMA_FILE
from genlab.config import RunConfig
from genlab.data import ImageData, describe, load_dataset
from genlab.errors import ConfigError
from genlab.models import Family, family
from genlab.runs import model_shape, resolve_device
from genlab.train import Trainer, trainer_for
from genlab.train.common import Precision, compile_engine, first_step_compiles, fuse_norm_act, make_precision
from genlab.train.distributed import World, sync_batchnorm
from genlab.train.distributed import setup as dist_setup
from genlab.train.distributed import wrap as dist_wrap
from genlab.train.ema import make_ema
from genlab.train.guards import check_writable
from genlab.train.outputs import RunFiles
from genlab.train.resume import restore

# Keys of a checkpoint's state that are not TrainState fields: restored by resume.restore.
RESTORED_ELSEWHERE = {"rng", "cuda_rng", "optimizers", "schedulers", "scalers"}


@dataclass
class TrainState:
    """Where a run is: what a resumed run needs, beside the weights, optimiser states and RNG, to continue
    bit-identically (the step, the position in the epoch, the partial logging window)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches done in the current epoch
    window: dict[str, Tensor] = field(default_factory=dict)  # sums over the open logging window, on the device
    window_steps: int = 0
    world_size: int = 1
    skipped: int = 0  # steps skipped for a non-finite loss (train.nan_policy = "skip")
    wall_s: float = 0.0  # training time of this run's earlier invocations
    cpu_s: float = 0.0  # CPU-seconds (this process, all threads) of training, earlier invocations included
    original_size: list[int] = field(default_factory=list)  # the data's own image size, for outputs
    health: dict[str, Any] = field(default_factory=dict)  # the trainer's health memory, e.g. D's winning streak

    def to_checkpoint(self) -> dict[str, Any]:
        """Plain data for state.pt (read back with weights_only=True)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "skipped"}
        return out | ({"skipped": self.skipped} if self.skipped else {})

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any], device: torch.device) -> TrainState:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in saved.items() if k in names}
        # Earlier checkpoints kept the health memory at the top level (e.g. "d_wins").
        old_health = {k: v for k, v in saved.items() if k not in names and k not in RESTORED_ELSEWHERE}
        values["health"] = {**old_health, **saved.get("health", {})}
        values["window"] = {k: v.to(device) for k, v in saved.get("window", {}).items()}
        return cls(**values)


@dataclass
class Training:
    """A run set up to train: what the loop drives and where it writes."""

    config: RunConfig
    run_dir: Path
    record: Family
    trainer: Trainer
    world: World
    device: torch.device
    model: nn.Module  # what is checkpointed
    engine: Any  # what the step drives: the model, or its DDP / compiled wrappers
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    amp: Precision
    train_data: Any
    test_data: ImageData
    steps_per_epoch: int
    total: float  # the step the run stops at (epochs or max_steps)
    noise: Tensor  # the fixed z of the per-epoch pictures
    files: RunFiles | None  # rank 0 only
    state: TrainState
    compiling: str  # what the first step compiles, for a notice ("" for nothing)
    ema: nn.Module | None = None  # the EMA of a GAN's generator (train.ema)


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


def fill_from_data(config: RunConfig, train_data) -> RunConfig:
    """Settings that depend on the training set, saved with the run: β-TCVAE's N (minibatch-weighted
    sampling weighs the batch against the whole set) and the padding around the data's own pixels."""
    loss = config.loss
    if getattr(loss, "loss_type", None) == "tcvae" and not loss.dataset_size:
        loss = replace(loss, dataset_size=len(train_data))
    if getattr(loss, "margin", 0) == -1:
        size = getattr(config.model, "image_size", 0)
        own = min(getattr(train_data, "original_size", (size, size)))
        loss = replace(loss, margin=max(0, (size - own) // 2))
    return replace(config, loss=loss) if loss is not config.loss else config


def setup(config: RunConfig, run_dir: Path, resume: bool) -> Training:
    """Data, model, optimisers and state of a run; with resume, its last checkpoint restored."""
    t, record = config.train, family(config.family)
    trainer = trainer_for(record)
    world, device = dist_setup(resolve_device(t.device))
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    channels, size = model_shape(config)
    train_data, test_data = load_dataset(config.data, channels, size)
    if world.main:
        print(f"genlab: {describe(config.data, train_data, test_data, channels, size)}")
    config = fill_from_data(config, train_data)
    if world.distributed and not trainer.distributed:
        raise ConfigError(f"{config.family} does not train under torchrun yet; train it in one process")
    if world.distributed and t.nan_policy == "skip":
        # A rank that skips its backward would leave the others waiting in DDP's all-reduce.
        raise ConfigError('train.nan_policy = "skip" does not work under torchrun; use "stop" (the default)')
    if record.conditional:
        check_labels(train_data, config)
    steps_per_epoch = len(train_data) // (t.batch_size * world.size)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train.batch_size={t.batch_size} x {world.size} process(es) is larger than the "
            f"{len(train_data)} training images; lower it"
        )
    model = record.build(config.model)
    model = (sync_batchnorm(model, device) if world.distributed else model).to(device)
    optimizers = trainer.make_optimizers(model, config)
    schedulers = {k: torch.optim.lr_scheduler.ExponentialLR(o, t.lr_decay) for k, o in optimizers.items()}
    if world.main:
        check_writable(run_dir, need_bytes=sum(p.numel() for p in model.parameters()) * 4 * 3 * (ckpt.KEEP + 1))

    saved: dict[str, Any] = {}
    folder = None
    if resume:
        saved, folder = restore(run_dir, config, model, optimizers, schedulers, device, world)
        state = TrainState.from_checkpoint(saved, device)
    else:
        state = TrainState(world_size=world.size)
        torch.manual_seed(t.seed + world.rank)  # each rank its own noise (z, eps) from here on
        if world.main:
            ckpt.save_json(run_dir / "config.json", config.to_dict())
            (run_dir / "metrics.jsonl").write_text("")
    amp = make_precision(t.precision, device, optimizers)
    for k, scaler in amp.scalers.items():
        if k in saved.get("scalers", {}):
            scaler.load_state_dict(saved["scalers"][k])
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = make_ema(model, t.ema)
    if ema is not None and folder is not None:
        ckpt.load_into(ema, ckpt.load_weights(folder, EMA_FILE), folder / EMA_FILE)
    compiling = first_step_compiles(config, record, fuse_norm_act(model, t.fuse_norm_act, device, t.precision))
    if device.type == "cuda" and isinstance(train_data, ImageData):
        train_data.images = train_data.images.to(device)  # small data sets live on the GPU: no copies per step
    engine = dist_wrap(record.kind, model, device) if world.distributed else model
    if t.compile:
        engine = compile_engine(engine, device)
    state.original_size = list(getattr(train_data, "original_size", (size, size)))
    noise = torch.randn(t.num_samples, config.model.latent_dim, generator=torch.Generator().manual_seed(t.seed))
    total = min(t.epochs * steps_per_epoch, t.max_steps or math.inf)
    check_schedule(config, total)
    if world.main:
        for warning in warnings_before_training(config):
            print(f"genlab: warning: {warning}", file=sys.stderr)
    files = RunFiles(run_dir, state.step) if world.main else None
    if world.main:  # an earlier invocation's status no longer holds; written again at the end
        (run_dir / "status.json").unlink(missing_ok=True)
    return Training(
        config, run_dir, record, trainer, world, device, model, engine, optimizers, schedulers, amp, train_data,
        test_data, steps_per_epoch, total, noise, files, state, compiling, ema,
    )  # fmt: skip


# Minibatch-weighted sampling's overestimate of TC (sharp posteriors, an exactly factorised 3-d code):
# 2.3 nats at batch 64, 0.45 at 1024 in the simulation; Chen et al. train at 2048.
MWS_SMALL_BATCH = 1024


def warnings_before_training(config: RunConfig) -> list[str]:
    """Settings that run but whose figures will mislead, said once before training."""
    loss, out = config.loss, []
    if getattr(loss, "loss_type", None) == "tcvae" and loss.estimator == "mws" and config.train.batch_size < MWS_SMALL_BATCH:
        out.append(
            f"minibatch-weighted sampling at batch {config.train.batch_size} overestimates the total correlation as "
            f"posteriors sharpen (by up to (latent_dim - 1) log batch nats), so beta * TC also penalises the rate; "
            f'set loss.estimator = "mss" (stratified) or train.batch_size >= {MWS_SMALL_BATCH} (Chen et al.: 2048)'
        )
    return out


def check_schedule(config: RunConfig, total: float) -> None:
    """A capacity schedule must reach its target within the run (Burgess et al.'s C grows over capacity_max_iter)."""
    loss = config.loss
    if getattr(loss, "loss_type", None) == "capacity" and math.isfinite(total) and loss.capacity_max_iter > total:
        raise ConfigError(
            f"loss.capacity_max_iter = {loss.capacity_max_iter} is longer than the run's {int(total)} steps: C would never "
            f"reach loss.max_capacity; set loss.capacity_max_iter <= {int(total)} (~70% of the run, {int(0.7 * total)})"
        )
