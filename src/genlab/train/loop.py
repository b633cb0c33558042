"""The training loop every family shares: iterate, call the trainer's step, log, checkpoint.

Everything a resumed run needs to continue bit-identically (weights, optimiser state, step,
position in the epoch, RNG, the partial logging window) is in the checkpoint (train/setup.py).
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genlab import checkpoint as ckpt
from genlab.checkpoint import EMA_FILE
from genlab.config import RunConfig
from genlab.data import iterate_batches
from genlab.errors import GenlabError
from genlab.eval.evaluate import quick_eval
from genlab.machine import flush_denormals
from genlab.train.distributed import any_rank, check_identical, gather_rng, mean_over_ranks
from genlab.train.distributed import cleanup as dist_cleanup
from genlab.train.guards import stop_on_signals
from genlab.train.outputs import write_pictures
from genlab.train.progress import Progress
from genlab.train.setup import Training, setup


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
    run = setup(config, Path(run_dir), resume)
    config, t, state, world = run.config, run.config.train, run.state, run.world
    flag: dict[str, int] = {}
    started, reason = time.monotonic(), "done"
    wall_before, cpu = state.wall_s, CPUClock(state.cpu_s, t.snapshots)
    bar = Progress(run.total, state.step, t.time_budget, quiet or not world.main, config.family)
    if run.compiling:
        bar.notice(f"genlab: the first step compiles {run.compiling}: ~15 s the first time, ~3 s once cached")
    bad = Watch(run)

    def save() -> None:
        bad.check()
        rng, cuda_rng = gather_rng(world, run.device)
        state.wall_s, state.cpu_s = wall_before + time.monotonic() - started, cpu.now()
        extra = {
            "rng": rng,
            "cuda_rng": cuda_rng,
            "optimizers": {k: o.state_dict() for k, o in run.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in run.schedulers.items()},
            "scalers": {k: sc.state_dict() for k, sc in run.amp.scalers.items()},
        }
        if run.files:
            run.files.checkpoint(run.model, config, state.to_checkpoint() | extra, modules(run))

    def snapshot(at: float) -> None:  # the weights alone, for scoring quality against CPU-seconds
        state.cpu_s = cpu.now()
        if run.files:
            kept = {k: getattr(state, k) for k in ("step", "epoch", "batch", "original_size", "cpu_s", "world_size")}
            run.files.checkpoint(run.model, config, kept, modules(run), where=run.run_dir / "snapshots" / f"cpu-{at:g}s")

    def pictures(name: str) -> None:
        if run.files:
            write_pictures(run.run_dir / "samples" / name, run.trainer, run.model, run.test_data, run.noise, run.device, config)

    run.model.train()
    # A resumed run's partial window holds steps from before the restart: they count in its means, not in its speed.
    window_start, untimed = time.monotonic(), state.window_steps
    with stop_on_signals(flag), flush_denormals(t.flush_denormal and run.device.type == "cpu"):
        while state.epoch < t.epochs and reason == "done":
            batches = iterate_batches(run.train_data, t.batch_size, t.seed, state.epoch, state.batch, config.data.workers,
                                      world.rank, world.size, labels=run.record.conditional)  # fmt: skip
            for batch in batches:
                out = run.trainer.step(run.engine, step_input(run, batch), run.optimizers, config.loss, state.step,
                                       skip_nonfinite=t.nan_policy == "skip", amp=run.amp)  # fmt: skip
                bad.add(out)
                if run.ema is not None:
                    run.ema.update_parameters(run.model.generator)
                state.step += 1
                state.batch += 1
                for at in cpu.passed():  # after the count, so that a snapshot's step is the steps its weights saw
                    snapshot(at)
                bar.update(state.step)
                if state.step % t.log_every == 0 and state.window_steps:
                    bad.check()
                    log_window(run, bar, time.monotonic() - window_start, state.window_steps - untimed)
                    window_start, untimed = time.monotonic(), 0
                if t.factor_metrics_every and state.step % t.factor_metrics_every == 0:
                    log_factor_metrics(run)
                if state.step >= run.total:
                    reason = "max_steps" if t.max_steps and state.step >= t.max_steps else reason
                    break
                timed_out = bool(t.time_budget) and time.monotonic() - started >= t.time_budget
                if any_rank(bool(flag) or timed_out, world, run.device) if world.distributed else (flag or timed_out):
                    reason = "interrupted" if flag or not timed_out else "time_budget"
                    break
            if state.batch >= run.steps_per_epoch:  # the epoch is complete
                end_epoch(run)
                if state.epoch % t.sample_every == 0 or state.epoch == t.epochs:
                    pictures(f"epoch_{state.epoch:04d}.png")
                save()
                if state.step >= run.total and reason == "done":
                    reason = "max_steps" if t.max_steps and state.step >= t.max_steps else "done"
    bar.close(state.step)
    if state.batch or reason != "done":
        pictures("last.png")
        save()
    result = finish(run, reason, wall_before)
    if reason == "interrupted" and world.main:
        name = signal.Signals(flag.get("signal", signal.SIGTERM)).name
        print(f"genlab: stopped by {name} at step {state.step}, checkpoint saved; "
              f"resume with: genlab train {config.family} --resume {run.run_dir}", file=sys.stderr)  # fmt: skip
    return result


class CPUClock:
    """CPU-seconds of training (this process, all threads), earlier invocations included; and the snapshot
    times (train.snapshots) passed since the last look."""

    def __init__(self, before: float, snapshots: tuple[float, ...]) -> None:
        self.before, self.started = before, time.process_time()
        self.pending = sorted(s for s in snapshots if s > before)

    def now(self) -> float:
        return self.before + time.process_time() - self.started

    def passed(self) -> list[float]:
        if not self.pending or self.now() < self.pending[0]:
            return []
        now = self.now()
        done = [s for s in self.pending if s <= now]
        self.pending = self.pending[len(done) :]
        return done


def modules(run: Training) -> dict:
    """What a checkpoint keeps beside the model's weights: the EMA generator, if any."""
    return {EMA_FILE: run.ema} if run.ema is not None else {}


def step_input(run: Training, batch):
    """A uint8 batch (or images and labels) on the device, as the trainer's step takes it."""
    channels_last = run.config.train.channels_last
    if run.record.conditional:  # (images, labels)
        x = run.trainer.prepare(run.model, tuple(b.to(run.device, non_blocking=True) for b in batch), run.config.data.binarize)
        return (x[0].contiguous(memory_format=torch.channels_last), x[1]) if channels_last else x
    x = run.trainer.prepare(run.model, batch.to(run.device, non_blocking=True), run.config.data.binarize)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


class Watch:
    """The step outputs summed into the logging window, and the first non-finite step, kept on the
    device (no host sync per step) and checked at each log and save."""

    def __init__(self, run: Training) -> None:
        self.run, self.first_bad = run, None

    def add(self, out: dict[str, torch.Tensor]) -> None:
        state = self.run.state
        finite = torch.stack([v.isfinite() for v in out.values()]).all()
        if self.run.config.train.nan_policy == "skip" and not finite:  # the step skipped its update; no NaN in the logs
            state.skipped += 1
            return
        bad = self.first_bad if self.first_bad is not None else torch.tensor(-1, device=self.run.device)
        self.first_bad = torch.where((bad < 0) & ~finite, state.step + 1, bad)
        for k, v in out.items():
            state.window[k] = state.window.get(k, 0.0) + v.double()
        state.window_steps += 1

    def check(self) -> None:
        bad, run = self.first_bad, self.run
        if bad is not None and any_rank(int(bad) >= 0, run.world, run.device):
            first = int(bad) if int(bad) >= 0 else run.state.step  # another rank's first bad step: this rank's now
            raise GenlabError(
                f"non-finite loss at step {first}; weights not saved, last good checkpoint kept in "
                f'{run.run_dir}; lower train.lr or set train.nan_policy = "skip"'
            )


def log_window(run: Training, bar: Progress, elapsed: float, timed_steps: int) -> None:
    """The logging window's means (over ranks: the global batch's loss) into metrics.jsonl and the bar;
    its speed from the timed_steps run in elapsed seconds."""
    state, t = run.state, run.config.train
    window = mean_over_ranks(state.window, run.world)
    means = {k: (v / state.window_steps).item() for k, v in window.items()}
    ips = timed_steps * t.batch_size * run.world.size / max(elapsed, 1e-9)
    extra = {"skipped_steps": state.skipped} if state.skipped else {}
    if run.files:
        run.files.log({"step": state.step, "epoch": state.epoch, **means, "images_per_s": ips, **extra})
    bar.set_postfix({**{k: f"{v:.4g}" for k, v in means.items()}, "img/s": f"{ips:.0f}"})
    warning = run.trainer.health(means, state.health, state.step)
    if warning and run.world.main:
        print(f"genlab: warning: {warning}", file=sys.stderr)
        run.files.log({"step": state.step, "epoch": state.epoch, "warning": warning})
    state.window, state.window_steps = {}, 0


def log_factor_metrics(run: Training) -> None:
    """Quick factor metrics (MIG, FactorVAE score, KL per dimension) of the model now, on factor data sets."""
    from genlab.eval.factor_report import quick_factor_scores

    if run.files and getattr(run.train_data, "factors", None) is not None:
        scores = quick_factor_scores(run.model, run.train_data, run.config.data.binarize)
        run.files.log({"step": run.state.step, "epoch": run.state.epoch, **scores})


def end_epoch(run: Training) -> None:
    """Count the epoch, decay the learning rates, log the validation losses (and a quick evaluation)."""
    state, t = run.state, run.config.train
    state.epoch += 1
    state.batch = 0
    with warnings.catch_warnings():
        # An epoch can end before one player's optimizer has stepped in this process (WGAN-GP's G, 1 step in
        # n_critic, after a resume mid-cycle or in an epoch shorter than n_critic). The decay is per epoch and
        # its count comes from the checkpoint, so torch's call-order check is a false alarm here.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
        for s in run.schedulers.values():
            s.step()
    if run.files:
        record = {"step": state.step, "epoch": state.epoch}
        record.update(run.trainer.validate(run.model, run.test_data, run.config, state.step, run.device))
        if t.eval_every and state.epoch % t.eval_every == 0:
            record.update(quick_eval(run.config, run.model, run.test_data))
        run.files.log(record)


def finish(run: Training, reason: str, wall_before: float) -> TrainResult:
    """status.json, the ranks' agreement, the process group closed; the run's result."""
    state, world = run.state, run.world
    identical = check_identical(run.model, world)
    if run.files:
        wall = round(state.wall_s or wall_before, 1)
        status = {"steps": state.step, "epochs": state.epoch, "reason": reason, "wall_s": wall, "cpu_s": round(state.cpu_s, 1)}
        ckpt.save_json(run.run_dir / "status.json", status | {"finished": time.strftime("%Y-%m-%d %H:%M:%S %z")})
        if world.distributed:
            run.files.log({"step": state.step, "epoch": state.epoch, "world_size": world.size, "ranks_identical": identical})
        run.files.close()
    # DDP holds the process group: freed here, on every rank, before the group is destroyed (a rank
    # that freed it only on returning, after the other had exited, hung in gloo's teardown).
    run.engine = None
    dist_cleanup(world)
    if not identical:
        raise GenlabError("ranks ended with different weights; report this with the command that ran")
    last = {k: v for k, v in (run.files.last if run.files else {}).items() if isinstance(v, float)}
    return TrainResult(run.run_dir, state.step, state.epoch, last, reason)
