"""What training measures: per-SAE compute time and the metrics of one metrics.jsonl line.

Metrics are summed on the device between two log lines and read back once per line, so logging does not
synchronise the GPU every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from fit.distributed import World, all_reduce_any, all_reduce_mean


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


@dataclass
class WindowStats:
    """Metrics accumulated on the device between two log lines (read back once per log line)."""

    n_latents: int
    device: torch.device
    steps: int = 0
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    fired_F: torch.Tensor | None = None

    def add(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], x_n_BD: torch.Tensor) -> None:
        active_BF = parts["z"].detach() > 0
        values = {
            "loss": loss.detach(),
            "recon": parts["recon"].detach(),
            "penalty": parts["penalty"].detach(),
            "l0": active_BF.sum(dim=-1).float().mean(),
            "sse": (x_n_BD - parts["x_hat"].detach()).pow(2).sum(),
            "sst": (x_n_BD - x_n_BD.mean(dim=0)).pow(2).sum(),
        }
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0) + v.float()
        fired_F = active_BF.any(dim=0)
        self.fired_F = fired_F if self.fired_F is None else self.fired_F | fired_F
        self.steps += 1

    def flush(self, bounds: list[tuple[int, int]], world: World) -> dict[str, float | list[int]]:
        """Means over the window (and over ranks), then reset."""
        n = max(self.steps, 1)
        sums = all_reduce_mean(self.sums, world)
        out: dict[str, float | list[int]] = {k: float(v) / n for k, v in sums.items() if k not in ("sse", "sst")}
        sse, sst = float(sums.get("sse", 0.0)), float(sums.get("sst", 0.0))
        out["explained_variance"] = 1 - sse / sst if sst else float("nan")
        fired_F = self.fired_F if self.fired_F is not None else torch.zeros(self.n_latents, dtype=torch.bool,
                                                                               device=self.device)
        fired_F = all_reduce_any(fired_F, world).cpu()
        out["live_per_group"] = [int(fired_F[a:b].sum()) for a, b in bounds]
        out["live"] = int(fired_F.sum())
        self.steps, self.sums, self.fired_F = 0, {}, None
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
