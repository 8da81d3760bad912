"""Activation dtypes on disk and in memory.

bfloat16 is the default on disk: it is the precision Gemma runs in on GPU (so storing it loses nothing of a
CUDA harvest), and it keeps float32's exponent range, which matters because residual streams carry outlier
dimensions far beyond float16's 65,504. Zarr 3 has no bfloat16, so the bits are stored as uint16 and the
store's ``dtype`` attribute names the logical type. Decoding is a 16-bit shift, done by torch on whatever
device the batch lands on.
"""

from __future__ import annotations

import numpy as np
import torch

from store.format import STORAGE_DTYPES

TORCH_DTYPES = {name: getattr(torch, name) for name in STORAGE_DTYPES}
"""The torch dtype of each activation dtype a store holds (store/format.py STORAGE_DTYPES names them)."""


def encode(acts_BD: torch.Tensor, dtype: str) -> np.ndarray:
    """Round activations to the store's dtype and return the array zarr writes (uint16 bits for bf16)."""
    low = acts_BD.detach().to(TORCH_DTYPES[dtype]).cpu()
    if dtype == "bfloat16":
        return low.view(torch.uint16).numpy()
    return low.numpy()


def decode(raw_BD: np.ndarray | torch.Tensor, dtype: str, device: torch.device | str | None = None) -> torch.Tensor:
    """Stored values -> float32 tensor (moved to ``device`` first, so only 16-bit data crosses the bus)."""
    t = torch.from_numpy(raw_BD) if isinstance(raw_BD, np.ndarray) else raw_BD
    if device is not None:
        t = t.to(device, non_blocking=True)
    if dtype == "bfloat16":
        return t.view(torch.bfloat16).float()
    return t.view(torch.float16).float()


def decode_numpy(raw_BD: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values -> float32 numpy array (for readers that do not want torch)."""
    if dtype == "bfloat16":
        return (raw_BD.astype(np.uint32) << 16).view(np.float32)
    return raw_BD.astype(np.float32)
