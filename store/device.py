"""Choosing the torch device: the one resolver that harvest, fit, evaluation and the browser share.

It lives in ``store`` because every stage depends on ``store``; the store itself reads rows onto a device.
"""

from __future__ import annotations

import os

import torch

from store.errors import UserError


class DeviceError(UserError):
    """A device that this machine does not have, or a name torch does not know."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is this process's GPU when CUDA is present (torchrun's LOCAL_RANK picks it), else the CPU.

    An explicit ``cuda`` without an index also takes LOCAL_RANK's GPU, so each process of a node gets its own.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {device!r} is not a device name: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device} asked for, but this machine has no CUDA GPU: use --device cpu")
        if dev.index is None:
            return torch.device(f"cuda:{local_rank}")
    return dev
