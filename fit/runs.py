"""Run directories: what a trained (or training) SAE leaves on disk, finding them, and loading them back.

```
RUN_DIR/<name>/config.json        the SAE and training configuration and the store it was trained on
RUN_DIR/<name>/metrics.jsonl      one line of training metrics every --log-every steps
RUN_DIR/<name>/sae.safetensors    final weights (W_enc, b_enc, W_dec, b_dec, w_F, normalisation buffers)
RUN_DIR/<name>/training.json      final summary: steps, tokens, wall-clock, tokens/s; its presence = finished
RUN_DIR/<name>/eval.json          written by `pipeline evaluate` (fit only names the file)
RUN_DIR/<name>/saelens/           cfg.json + sae_weights.safetensors, loadable with SAELens
RUN_DIR/<name>/checkpoints/       only from passes started before checkpoints moved under RUN_DIR/passes/<id>/
RUN_DIR/<name>/tensorboard/       with --track tensorboard: the SAE's event files (wandb/, trackio/ likewise)
RUN_DIR/passes/<id>.json          while training: the step every SAE of a pass has checkpointed (committed)
RUN_DIR/passes/<id>/step-NNNNNNN/<name>/   that step's weights, optimiser state, progress (fit/checkpoint.py)
RUN_DIR/fit.lock                  held by the fit writing into RUN_DIR (an OS lock: gone when it dies)
```
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fit.config import SAEConfig
from fit.errors import FitError
from fit.sae import SAE
from store.files import replace_atomically

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "sae.safetensors"
METRICS_FILE = "metrics.jsonl"
TRAINING_FILE = "training.json"
EVAL_FILE = "eval.json"
EXPORT_DIR = "saelens"
CHECKPOINTS_DIR = "checkpoints"
TRAINING_SCHEMA = 2
"""training.json's schema version: 2 added ``schema_version``, ``config`` and ``provenance``."""
READABLE_TRAINING_SCHEMAS = (1, 2)


@dataclass(frozen=True)
class RunDir:
    """One SAE's directory, and the one place that knows the names of its files.

    ``str(run)`` and ``os.fspath(run)`` are its path, so it goes wherever a path does (messages included).
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def training_path(self) -> Path:
        return self.path / TRAINING_FILE

    @property
    def eval_path(self) -> Path:
        return self.path / EVAL_FILE

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def is_run(self) -> bool:
        """Whether the directory holds a run (its config.json is written before training starts)."""
        return self.config_path.exists()

    @property
    def finished(self) -> bool:
        return self.training_path.exists() and self.weights_path.exists()

    @property
    def evaluated(self) -> bool:
        return self.eval_path.exists()

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise FitError(
                f"{self.path} is not a run directory (no config.json): train one with `pipeline fit`"
            ) from None

    def read_training(self) -> dict[str, Any]:
        """The final summary training.json (present once the run has finished), of any schema version this
        version reads (1: before it carried its schema version, config and provenance)."""
        summary = json.loads(self.training_path.read_text())
        version = summary.get("schema_version", 1)
        if version not in READABLE_TRAINING_SCHEMAS:
            raise FitError(f"{self.training_path} has schema version {version}; this version of the tool reads "
                           f"{', '.join(map(str, READABLE_TRAINING_SCHEMAS))}: use a newer release, or train again")
        return summary

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metric lines of metrics.jsonl, in order ([] before the first line is written)."""
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines()]

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:07d}"

    def checkpoint_steps(self) -> list[int]:
        root = self.checkpoints_dir
        if not root.exists():
            return []
        return sorted(int(p.name.split("-")[1]) for p in root.iterdir() if p.name.startswith("step-")
                      and not p.name.endswith(".tmp"))

    def drop_checkpoints(self, keep: int | None = None) -> None:
        for step in self.checkpoint_steps():
            if step != keep:
                shutil.rmtree(self.checkpoint_dir(step), ignore_errors=True)
        root = self.checkpoints_dir
        if keep is None and root.exists():
            shutil.rmtree(root, ignore_errors=True)


def find_runs(paths: list[str | Path]) -> list[RunDir]:
    """Run directories named directly, or found one level below a directory of runs."""
    runs: list[RunDir] = []
    for p in map(Path, paths):
        if RunDir(p).is_run:
            runs.append(RunDir(p))
        elif p.is_dir():
            runs += [RunDir(q) for q in sorted(p.iterdir()) if RunDir(q).is_run]
        else:
            raise FitError(f"{p} is neither a run directory nor a folder of runs")
    if not runs:
        raise FitError(f"no run directories found in {', '.join(map(str, paths))}: train some with `pipeline fit`")
    return runs


def check_config(run: RunDir, expected: dict[str, Any]) -> None:
    """Refuse a run directory that holds another configuration; name the first field that differs, in the
    order of ``expected`` (so its author decides which difference is named first)."""
    if not run.is_run:
        return
    found = run.read_config()
    for section in ("store", "sae", "train"):
        mine, theirs = expected.get(section, {}), found.get(section, {})
        for key in [*mine, *(k for k in theirs if k not in mine)]:
            if mine.get(key) != theirs.get(key):
                raise FitError(
                    f"{run.path} holds a run with {section} {key} = {theirs.get(key)!r}, but this run asks for "
                    f"{mine.get(key)!r}: choose another --out, or delete that directory"
                )


def save_weights(sae: SAE, path: Path) -> None:
    save_state(sae.state_dict(), sae.cfg.name, path)


def save_state(state: dict[str, torch.Tensor], name: str, path: Path) -> None:
    """An SAE's state dict as safetensors (replaced whole, so a kill leaves the old file or the new one)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata={"name": name}))


def load_sae(run_path: str | Path | RunDir, device: str | torch.device = "cpu") -> tuple[SAE, dict[str, Any]]:
    """A finished SAE from its run directory, and the directory's config.json."""
    run = RunDir(Path(run_path))
    config = run.read_config()
    if not run.weights_path.exists():
        raise FitError(f"{run.path} has not finished training (no sae.safetensors): rerun `pipeline fit` to finish")
    state = load_file(str(run.weights_path))
    cfg = SAEConfig.from_dict(config["sae"])
    d_model = config["store"]["d_model"]
    sae = SAE(cfg, d_model, store_mean=state.get("norm_mean"), store_std=state.get("norm_std"))
    sae.load_state_dict(state)
    return sae.to(device).eval(), config


@dataclass(frozen=True)
class LoadedRun:
    """A finished run loaded to be measured or shown: its directory, its SAE and its config.json."""

    run: RunDir
    sae: SAE
    config: dict[str, Any]


def runs_by_store(paths: list[str | Path], device: str | torch.device,
                  store_url: str | None = None) -> dict[tuple[str, tuple[int, int]], list[LoadedRun]]:
    """The finished runs under ``paths``, grouped by the store they are read on (``store_url``, else the one each
    was trained on) and their held-out rows: the runs of one group share one read of those rows."""
    groups: dict[tuple[str, tuple[int, int]], list[LoadedRun]] = {}
    for run in find_runs(list(paths)):
        if not run.finished:
            raise FitError(f"{run} has not finished training: rerun its `pipeline fit` command to finish it")
        sae, config = load_sae(run, device)
        url = store_url or config.get("store_url")
        if url is None:
            raise FitError(f"{run} does not record its store: pass --store")
        start, stop = config["train"]["heldout_rows"]
        groups.setdefault((url, (start, stop)), []).append(LoadedRun(run, sae, config))
    return groups
