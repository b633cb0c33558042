"""The run folder during training: metrics, TensorBoard events, checkpoints, pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from genlab import checkpoint as ckpt
from genlab.config import RunConfig
from genlab.data import ImageData, crop_to
from genlab.errors import GenlabError
from genlab.io import save_grid
from genlab.latents import dim_inactive, traverse
from genlab.models import family
from genlab.train import Trainer
from genlab.train.resume import checkpoint_metadata


class RunFiles:
    """What rank 0 writes during training: metrics.jsonl, TensorBoard events, checkpoints."""

    def __init__(self, run_dir: Path, step: int) -> None:
        self.run_dir = run_dir
        (run_dir / "samples").mkdir(exist_ok=True)
        self.metrics = (run_dir / "metrics.jsonl").open("a")
        self.last: dict[str, Any] = {}
        self.writer = tensorboard_writer(run_dir, step)

    def log(self, record: dict[str, Any]) -> None:
        self.last = record
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, float):
                    self.writer.add_scalar(k, v, record["step"])

    def checkpoint(
        self, model, config: RunConfig, state: dict[str, Any], extra: dict | None = None, where: Path | None = None
    ) -> Path:
        """A checkpoint in the run folder (or a snapshot folder `where`), with extra modules beside the weights."""
        try:
            metadata = checkpoint_metadata(config)
            return ckpt.save_checkpoint(where or self.run_dir, model, config.to_dict(), state, metadata, extra)
        except OSError as e:
            raise GenlabError(
                f"cannot write a checkpoint in {self.run_dir} ({e.strerror or e}); the last complete one is kept: "
                f"free space, then resume with: genlab train {config.family} --resume {self.run_dir}"
            ) from None

    def close(self) -> None:
        self.metrics.close()
        if self.writer is not None:
            self.writer.close()


def write_pictures(path: Path, trainer: Trainer, model, test: ImageData, noise, device, config: RunConfig) -> None:
    """One PNG: the trainer's grids side by side, at the data's own size (padding cropped off); for a VAE
    also its traversal, which shows how each latent dimension is used (by KL)."""
    grids = [crop_to(g, test.original_size) for g in trainer.pictures(model, test, noise, device, config.data.binarize)]
    nrow = math.isqrt(noise.shape[0])
    images = _side_by_side(grids, nrow) if len(grids) > 1 else grids[0]
    save_grid(path, images, nrow=nrow * len(grids))
    record = family(config.family)
    if record.kind == "vae":
        labels = test.labels if record.conditional else None  # a conditional VAE: each seed image's class
        t = traverse(model, "vae", test.images[:500], config.data.binarize, labels=labels)
        save_grid(path.with_name(f"traverse_{path.name}"), crop_to(dim_inactive(t), test.original_size), nrow=t.steps)


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
