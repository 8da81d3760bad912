"""What training measures: per-SAE compute time and the metrics of one metrics.jsonl line.

Metrics are summed on the device between two log lines and read back once per line, so logging does not
synchronise the GPU every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from fit.architectures.base import fires
from fit.distributed import World, all_reduce_any, all_reduce_mean
from fit.sparse import Pairs


class StepTimer:
    """Per-SAE compute time; CUDA events on GPU so timing does not synchronise every step."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._start: torch.cuda.Event | float = 0.0

    def start(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._start, end))
        else:
            self.seconds += time.perf_counter() - self._start

    def collect(self) -> float:
        """Total seconds so far (waits for the GPU to reach the last recorded event)."""
        if self._events:
            self._events[-1][1].synchronize()
            self.seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000
            self._events.clear()
        return self.seconds


RATIO_KEYS = ("sse", "sst")
"""Summed per member and step to become the explained variance (not written themselves)."""


@dataclass
class WindowStats:
    """A stack's metrics, per member, accumulated on the device between two log lines (read back once per line):
    the loss, every loss term its architecture reports (``recon``, ``penalty``, and e.g. ``aux``, ``dead``,
    ``prefix_recon``), the explained variance, L0 and live latents."""

    n_members: int
    n_latents: int
    device: torch.device
    steps: int = 0
    rows: int = 0
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    fires_MF: torch.Tensor | None = None
    """Rows each latent was active in (non-zero), over the window: the L0 and the live latents in one pass."""

    def add(self, loss_M: torch.Tensor, parts: dict, sst_M: torch.Tensor) -> None:
        """One step: the members' losses and loss parts (as :class:`fit.stack.SAEStack` gives them), and the total
        sum of squares of each member's normalised batch."""
        z = parts["z"]
        values = {"loss": loss_M, **{k: v for k, v in parts.items() if k not in ("z", "sq")},
                  "sse": parts["sq"].sum(dim=-1), "sst": sst_M}
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        fires_MF = fires(z, self.n_latents)
        self.fires_MF = fires_MF if self.fires_MF is None else self.fires_MF + fires_MF
        self.steps += 1
        self.rows += (z.vals if isinstance(z, Pairs) else z).shape[-2]

    def flush(self, bounds: list[list[tuple[int, int]]], world: World) -> list[dict[str, float | list[int]]]:
        """Each member's means over the window (and over ranks), given each member's group bounds; then reset."""
        n = max(self.steps, 1)
        zeros = torch.zeros(self.n_members, device=self.device)
        fires_MF = self.fires_MF if self.fires_MF is not None else torch.zeros(
            self.n_members, self.n_latents, dtype=torch.int64, device=self.device)
        sums = {k: self.sums.get(k, zeros) for k in ("loss", "recon", "penalty", *RATIO_KEYS)}
        sums.update(self.sums)
        sums["l0"] = fires_MF.sum(dim=-1).double() / max(self.rows, 1)
        sums = all_reduce_mean(sums, world)
        keys = list(sums)
        table = dict(zip(keys, torch.stack([sums[k].double() for k in keys]).cpu().tolist(), strict=True))  # one read
        fired_MF = all_reduce_any(fires_MF > 0, world).cpu()
        out = []
        for m, member_bounds in enumerate(bounds):
            line: dict[str, float | list[int]] = {k: table[k][m] / n for k in keys
                                                  if k not in ("l0", *RATIO_KEYS)}
            line["l0"] = table["l0"][m]
            sse, sst = table["sse"][m], table["sst"][m]
            line["explained_variance"] = 1 - sse / sst if sst else float("nan")
            line["live_per_group"] = [int(fired_MF[m, a:b].sum()) for a, b in member_bounds]
            line["live"] = int(fired_MF[m].sum())
            out.append(line)
        self.steps, self.rows, self.sums, self.fires_MF = 0, 0, {}, None
        return out


class Throughput:
    """Tokens per second of the pass, counted from its first batch (loading rows into memory is not training)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._first_step: int | None = None
        self._t0 = 0.0

    def tick(self, step: int) -> None:
        """Called with every step; the first call starts the clock."""
        if self._first_step is None:
            self._first_step, self._t0 = step, time.perf_counter()

    def rate(self, done: int) -> float:
        elapsed = time.perf_counter() - self._t0
        return (done - self._first_step) * self.batch_size / elapsed if elapsed > 0 else 0.0


def status_line(name: str, record: dict) -> str:
    """One SAE's part of the progress bar's status."""
    live = "/".join(map(str, record["live_per_group"]))
    return f"{name}: loss {record['loss']:.4g} L0 {record['l0']:.1f} live {live}"
