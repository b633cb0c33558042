"""Training: one module per algorithm (its step and what a run shows between epochs) and the shared loop.

Each algorithm module holds one `TRAINER` record; a family's record names its module (`Family.trainer`),
and a new family that trains as another does names that one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genlab.models import Family


def no_warning(means: dict[str, float], memory: dict[str, Any], step: int) -> str | None:
    """A health check that never warns (the loop's non-finite check covers every family)."""
    return None


@dataclass(frozen=True)
class Trainer:
    """How a family trains, and what the loop, the report and the bench ask of it."""

    step: Callable[..., dict]  # (model, batch, optimizers, loss, step, skip_nonfinite, amp) -> detached terms
    make_optimizers: Callable[..., dict]  # (model, config) -> {name: optimizer}
    prepare: Callable[..., Any]  # (model, uint8 batch or (images, labels), binarize) -> the step's input
    validate: Callable[..., dict[str, float]]  # (model, test, config, step, device) -> {"val_...": value}
    pictures: Callable[..., list]  # (model, test, noise, device, binarize) -> grids in [-1, 1]
    log_keys: tuple[str, ...]
    charts: dict[str, tuple[tuple[str, ...], float | None]] = field(default_factory=dict)  # report: title -> keys, line
    health: Callable[[dict[str, float], dict[str, Any], int], str | None] = no_warning  # a warning to print, or None
    distributed: bool = True  # whether its step runs under torchrun (DDP)


def trainer_for(record: Family) -> Trainer:
    """The Trainer of a family: the TRAINER of genlab.train.<record.trainer>."""
    return importlib.import_module(f"genlab.train.{record.trainer}").TRAINER
