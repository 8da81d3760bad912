"""Experiment tracking: every metric line an SAE writes to its metrics.jsonl, also sent to a tracker.

One tracker run per SAE, under the SAE's run directory where the backend writes locally; nothing leaves the
machine unless the user configured the backend to (wandb runs offline unless ``WANDB_MODE`` says otherwise;
trackio logs to its local database unless ``TRACKIO_SPACE_ID`` names a Space; tensorboard writes event files).
The backends are optional extras: a missing one is a :class:`FitError` naming the extra to install.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from typing import Any, Protocol

from fit.errors import FitError
from fit.runs import RunDir


class Tracker(Protocol):
    """One SAE's tracker run."""

    def log(self, record: dict[str, Any]) -> None:
        """Send one metrics.jsonl line (its ``step`` is the x axis)."""

    def close(self) -> None:
        """Flush and end the run."""


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The line's numbers by name; a list (live_per_group) becomes one scalar per group, ``name/1`` first."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, list):
            out.update({f"{key}/{g + 1}": float(v) for g, v in enumerate(value)})
        elif isinstance(value, int | float):
            out[key] = float(value)
    return out


def _require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FitError(f"--track {extra} needs the {extra} package: pip install 'hfg-sae[{extra}]'") from None


class TensorBoardTracker:
    """Event files in RUN/<name>/tensorboard/, read by ``tensorboard --logdir RUN``."""

    def __init__(self, run: RunDir, project: str, start_step: int) -> None:
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        logdir = run.path / "tensorboard"
        if start_step == 0:
            shutil.rmtree(logdir, ignore_errors=True)  # a pass that starts over: its earlier events are void
        # On resume, events after the checkpoint step are written again: purge_step hides the killed run's copies.
        self._writer = SummaryWriter(str(logdir), purge_step=start_step + 1 if start_step else None)

    def log(self, record: dict[str, Any]) -> None:
        for tag, value in scalars(record).items():
            self._writer.add_scalar(tag, value, global_step=record["step"])

    def close(self) -> None:
        self._writer.close()


class WandbTracker:
    """A wandb run in RUN/<name>/wandb/, offline unless WANDB_MODE is set; a resumed pass continues it."""

    def __init__(self, run: RunDir, project: str, start_step: int) -> None:
        wandb = _require("wandb", "wandb")
        run_id = hashlib.sha1(str(run.path.resolve()).encode()).hexdigest()[:16]
        self._run = wandb.init(project=project, name=run.name, id=run_id, dir=str(run.path),
                               mode=os.environ.get("WANDB_MODE", "offline"), resume="allow",
                               reinit="create_new")

    def log(self, record: dict[str, Any]) -> None:
        self._run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self._run.finish()


class TrackioTracker:
    """A trackio run in its local database (a Space only if TRACKIO_SPACE_ID names one); resumed on resume."""

    def __init__(self, run: RunDir, project: str, start_step: int) -> None:
        trackio = _require("trackio", "trackio")
        self._run = trackio.init(project=project, name=run.name, resume="allow")

    def log(self, record: dict[str, Any]) -> None:
        self._run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self._run.finish()


class NoTracker:
    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


_BACKENDS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "trackio": TrackioTracker}


def open_tracker(kind: str | None, run: RunDir, start_step: int) -> Tracker:
    """The SAE's tracker run; the project is the folder of runs (``--out``), the run name the SAE's name."""
    if kind is None:
        return NoTracker()
    return _BACKENDS[kind](run, run.path.parent.name, start_step)
