"""Data-parallel training across processes (torchrun), on top of torch.distributed.

Rank r reads stream r of every global batch (see store.batches.BatchOrder), so G ranks together see exactly
the global batches one process with ``streams = G`` sees. Gradients are averaged by DistributedDataParallel;
every rank then takes the same constrained optimiser step, so the SAEs stay identical. Rank 0 alone writes
logs, checkpoints and the final artefacts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is True on any rank (so all ranks stop together)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def init_world(device: str) -> World:
    """Join the process group that torchrun describes in the environment (a single process otherwise)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return World(rank, size, local_rank)


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


class LossModule(nn.Module):
    """The SAE's training loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, sae: nn.Module) -> None:
        super().__init__()
        self.sae = sae

    def forward(self, x_n_BD: torch.Tensor, l1_scale: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from fit.sae import Normalised

        zero = x_n_BD.new_zeros(())
        return self.sae.loss(Normalised(x_n_BD, zero, zero + 1), l1_scale)


def wrap(sae: nn.Module, world: World, device: torch.device) -> nn.Module:
    module = LossModule(sae)
    if not world.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_mean(values: dict[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    if not world.distributed:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].float().reshape(()) for k in keys])
    dist.all_reduce(flat)
    flat /= world.size
    return dict(zip(keys, flat, strict=True))


def all_reduce_any(mask: torch.Tensor, world: World) -> torch.Tensor:
    if not world.distributed:
        return mask
    t = mask.to(torch.uint8)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.bool()
