"""Training batches from a store, as float32 on the training device.

Two sources give the very same batches (both follow :class:`store.batches.BatchOrder`):

- ``stream``: chunks are read in the background as training goes (pinned memory and non-blocking copies on
  CUDA), memory bounded by the shuffle window;
- ``memory``: the training rows are loaded once (16-bit, onto the GPU when they fit) and each batch is a
  gather there, which is what keeps a fast GPU busy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import torch

from fit.errors import FitError
from store import dtypes
from store.batches import BatchOrder, ShuffledBatches
from store.reader import ActivationStore

log = logging.getLogger(__name__)

MEMORY_FRACTION = 0.5
"""``auto`` loads the rows into memory only if they take at most this fraction of what is free."""


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def choose_mode(mode: str, store: ActivationStore, order: BatchOrder, device: torch.device) -> str:
    if mode != "auto":
        return mode
    a, b = order.row_range
    need = (b - a) * store.d_model * 2
    return "memory" if need <= MEMORY_FRACTION * available_bytes(device) else "stream"


class TrainingBatches:
    """Iterate (step, x_BD float32 on ``device``) for steps ``start_step .. start_step + n_steps - 1``."""

    def __init__(self, store: ActivationStore, order: BatchOrder, *, device: torch.device, mode: str,
                 start_step: int, n_steps: int, streams: list[int] | None = None,
                 verify_checksums: bool = True) -> None:
        self.store, self.order, self.device = store, order, device
        self.mode = choose_mode(mode, store, order, device)
        self.start_step, self.n_steps = start_step, n_steps
        self.streams = streams
        self.verify_checksums = verify_checksums
        self._rows: torch.Tensor | None = None

    def _load(self) -> torch.Tensor:
        a, b = self.order.row_range
        log.info("loading training rows %d..%d (%.2f GB) into %s memory", a, b,
                 (b - a) * self.store.d_model * 2 / 1e9, self.device.type)
        raw = self.store.read_rows_raw(a, b)
        return torch.from_numpy(raw).to(self.device)

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        if not self.n_steps:
            return  # a pass resumed at its last step: nothing to load
        dtype = self.store.meta.dtype
        cuda = self.device.type == "cuda"
        if self.mode == "memory":
            if self._rows is None:
                self._rows = self._load()
            offset = self.order.row_range[0]
            for step in range(self.start_step, self.start_step + self.n_steps):
                idx = torch.from_numpy(self.order.batch_rows(step, self.streams) - offset)
                # From pinned memory the copy is queued behind the GPU's work instead of waiting for it.
                idx = (idx.pin_memory() if cuda else idx).to(self.device, non_blocking=True)
                yield step, dtypes.decode(self._rows.index_select(0, idx), dtype)
            return
        if self.mode != "stream":
            raise FitError(f"unknown data mode {self.mode!r}")
        # On CUDA, load ahead on a CPU thread while the GPU computes; from object storage, load ahead so network
        # waits overlap compute. From local disk on a CPU whose cores all run the training step, a loader thread
        # only preempts the matmuls (measured: store-fed/in-memory 0.91 with one, 0.96 without, on 2 cores), so
        # there batches are made in this thread, when asked for.
        spare_cores = (os.cpu_count() or 1) > torch.get_num_threads()
        remote = not self.store.location.is_local
        loader = ShuffledBatches(self.store, self.order, start_step=self.start_step, n_steps=self.n_steps,
                                 streams=self.streams, pin_memory=cuda, verify_checksums=self.verify_checksums,
                                 background=cuda or spare_cores or remote)
        for step, raw in loader:
            yield step, dtypes.decode(raw, dtype, self.device)
