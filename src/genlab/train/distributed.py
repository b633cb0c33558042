"""Data-parallel training on torch.distributed, launched by torchrun (gloo on CPU, NCCL on GPU).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous; genlab only reads them. Gradient
averaging is DistributedDataParallel's. Every rank takes its own shard of each global batch; only
rank 0 writes files.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from genlab.errors import GenlabError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes, if any; the device of this rank."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    return World(rank, size, local_rank), device


def cleanup(world: World) -> None:
    """Leave the process group together: every rank frees its DDP wrappers, then waits for the rest."""
    if world.distributed and dist.is_initialized():
        gc.collect()  # DDP's hooks form reference cycles
        dist.barrier()
        dist.destroy_process_group()


def wrap(kind: str, model: nn.Module, device: torch.device) -> nn.Module | SimpleNamespace:
    """What the step function drives under DDP: a VAE, or a GAN's G and D wrapped separately."""
    ids = [device.index] if device.type == "cuda" else None
    if kind == "vae":
        return DistributedDataParallel(model, device_ids=ids)
    return SimpleNamespace(
        generator=DistributedDataParallel(model.generator, device_ids=ids),
        discriminator=DistributedDataParallel(model.discriminator, device_ids=ids),
        config=model.config,
    )


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """On GPUs, BatchNorm over the global batch (SyncBatchNorm); PyTorch has no CPU version,
    so with gloo each rank normalises over its own shard, as plain DDP does."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model


def mean_over_ranks(values: dict[str, Tensor], world: World) -> dict[str, Tensor]:
    """Average scalar tensors over ranks (for logging the global-batch loss)."""
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].double() for k in keys])
    dist.all_reduce(stacked)
    return {k: v / world.size for k, v in zip(keys, stacked)}


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when flag is true on any: ranks must stop at the same step."""
    if not world.distributed:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_rng(world: World, device: torch.device) -> tuple[list[Tensor], list[Tensor]]:
    """Every rank's CPU RNG state, and its GPU's, for an exact resume at the same world size."""
    cpu = torch.get_rng_state()
    gpu = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8)
    if not world.distributed:
        return [cpu], [gpu]
    states: list = [None] * world.size
    dist.all_gather_object(states, (cpu, gpu))
    return [c for c, _ in states], [g for _, g in states]


def check_identical(model: nn.Module, world: World) -> bool:
    """Whether every rank holds bit-identical parameters (compared by a float64 checksum per tensor)."""
    if not world.distributed:
        return True
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
    gathered: list = [None] * world.size
    dist.all_gather_object(gathered, sums)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def require_same_world(saved: int, world: World) -> None:
    if saved != world.size:
        raise GenlabError(
            f"the checkpoint was written by {saved} process(es); resume it with the same --nproc_per_node x --nnodes"
        )
