"""Where a pass's rows come from (:class:`Source`), and training batches from a store, as float32 on the training
device.

A pass reads a store (:class:`StoreSource`), or, for a synthetic model, rows generated on the training device from
a seeded stream (``pipeline/synthetic_source.py``, which implements the same protocol); either way the runs record a
store, whose held-out rows ``pipeline evaluate`` measures them on.

From a store, two modes give the very same batches (both follow :class:`store.batches.BatchOrder`):

- ``stream``: chunks are read in the background as training goes (pinned memory and non-blocking copies on
  CUDA), memory bounded by the shuffle window;
- ``memory``: the training rows are loaded once (16-bit, onto the GPU when they fit) and each batch is a
  gather there, which is what keeps a fast GPU busy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from fit.errors import FitError
from store import dtypes
from store.batches import BatchOrder, ShuffledBatches
from store.reader import ActivationStore
from store.stats import Moments

if TYPE_CHECKING:
    from fit.config import TrainConfig

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


@dataclass(frozen=True)
class Plan:
    """What a pass reads: its length, and the training record every run directory holds."""

    n_steps: int
    record: dict[str, Any]
    """The ``train`` section of config.json: the fields that decide the weights, the rows trained on, and the store's
    rows held out for evaluation (``heldout_rows``)."""
    summary: str
    """The rows it reads, in a few words (the start-of-pass log line)."""


class Batches(Protocol):
    mode: str
    """How the batches are made, in a few words (the start-of-pass log line)."""

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]: ...


class Source(Protocol):
    """Where a pass's rows come from, and the store its runs record."""

    store: ActivationStore
    """The store the runs record: its identity, its model for exports, its held-out rows for evaluation."""

    def plan(self, cfg: TrainConfig, streams: int) -> Plan: ...

    def moments(self) -> Moments:
        """Per-dimension count, mean and M2 of the training rows (``store_stats`` normalisation)."""

    def batches(self, cfg: TrainConfig, device: torch.device, start_step: int, n_steps: int,
                streams: list[int] | None) -> Batches:
        """Steps ``start_step ..`` of the plan as (step, x_BD float32 on ``device``); ``streams``: this process's
        streams of each global batch (None: all of it)."""


class StoreSource:
    """A store's rows: its training rows in a shuffled order, its last contexts held out."""

    def __init__(self, store: ActivationStore) -> None:
        self.store = store
        self.order: BatchOrder | None = None
        """Which rows make each batch: set by :meth:`plan`."""

    def plan(self, cfg: TrainConfig, streams: int) -> Plan:
        split = self.store.split(cfg.holdout)
        self.order = BatchOrder(self.store.n_rows, self.store.chunk_rows, split.train, cfg.batch_size,
                                 cfg.data_seed, shuffle_rows=cfg.shuffle_rows, num_streams=streams)
        n_steps = self.order.batches_per_epoch if cfg.tokens is None else cfg.tokens // cfg.batch_size
        record = {**cfg.identity(), "streams": streams, "n_steps": n_steps, "train_rows": list(split.train),
                  "heldout_rows": list(split.heldout)}
        summary = f"rows {split.train[0]}..{split.train[1]}; {split.n_heldout} held out"
        return Plan(n_steps, record, summary)

    def moments(self) -> Moments:
        return self.store.moments()

    def batches(self, cfg: TrainConfig, device: torch.device, start_step: int, n_steps: int,
                streams: list[int] | None) -> Iterable[tuple[int, torch.Tensor]]:
        if self.order is None:
            raise FitError("plan the pass before reading its batches")
        return TrainingBatches(self.store, self.order, device=device, mode=cfg.data, start_step=start_step,
                               n_steps=n_steps, verify_checksums=cfg.verify_checksums, streams=streams)
