"""Timing and reporting helpers for the benchmarks."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class Figure:
    """One benchmark result: ours against a baseline measured in the same run."""

    name: str
    ours: float
    baseline: float
    unit: str
    baseline_name: str
    target: float | None = None
    """The ratio the project aims at (from the issue), if any."""
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target


@dataclass
class BenchReport:
    figures: list[Figure] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What a section could not measure, and why (a peer that is not installed), so nothing is left out silently."""

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)

    def to_json(self) -> dict:
        return {
            "machine": self.machine,
            "figures": [{**asdict(f), "ratio": f.ratio, "meets_target": f.meets_target} for f in self.figures],
            "notes": self.notes,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))


def machine_info() -> dict:
    import os

    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result
