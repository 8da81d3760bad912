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

    def earliest(self, value: torch.Tensor) -> int:
        """The smallest of every rank's ``value`` (a one-element tensor on the training device), read back on the
        host: every rank gets the same answer, so all ranks stop together."""
        return self.earliest_each(value.reshape(1))[0]

    def earliest_each(self, values: torch.Tensor) -> list[int]:
        """:meth:`earliest` of each element of ``values`` (a 1-d tensor), in one reduction and one read back."""
        if self.distributed:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.MIN)
        return [int(v) for v in values.tolist()]


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


def wrap(module: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The module as the step calls it: in DistributedDataParallel when training on several processes."""
    if not world.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    # The buffers (penalty weights, store statistics) are constants, identical on every rank: no broadcast needed.
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def all_reduce_mean(values: dict[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    if not world.distributed:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].float() for k in keys])  # values of one shape: one collective for all
    dist.all_reduce(flat)
    flat /= world.size
    return dict(zip(keys, flat, strict=True))


def all_reduce_any(mask: torch.Tensor, world: World) -> torch.Tensor:
    if not world.distributed:
        return mask
    t = mask.to(torch.uint8)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.bool()
