"""Run directories: what a trained (or training) SAE leaves on disk, and loading it back.

```
RUN_DIR/<name>/config.json        the SAE and training configuration and the store it was trained on
RUN_DIR/<name>/metrics.jsonl      one line of training metrics every --log-every steps
RUN_DIR/<name>/sae.safetensors    final weights (W_enc, b_enc, W_dec, b_dec, w_F, normalisation buffers)
RUN_DIR/<name>/training.json      final summary: steps, tokens, wall-clock, tokens/s; its presence = finished
RUN_DIR/<name>/saelens/           cfg.json + sae_weights.safetensors, loadable with SAELens
RUN_DIR/<name>/checkpoints/       while training: step-NNNNNNN/ with weights, optimiser state, progress
RUN_DIR/passes/<id>.json          while training: the step every SAE of a pass has checkpointed
```
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fit.config import SAEConfig
from fit.errors import FitError
from fit.sae import SAE
from store.format import StoreMeta


def store_identity(meta: StoreMeta, n_rows: int) -> dict[str, Any]:
    """What a run records of its store, to refuse another store later."""
    return {
        "model": meta.model.name,
        "model_fingerprint": meta.model.fingerprint,
        "layer": meta.layer,
        "d_model": meta.d_model,
        "dataset": meta.dataset.name,
        "data_files": meta.dataset.data_files,
        "context_length": meta.context.length,
        "include_bos": meta.context.include_bos,
        "n_rows": n_rows,
    }


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


@dataclass
class RunDir:
    """One SAE's directory."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def finished(self) -> bool:
        return (self.path / "training.json").exists() and (self.path / "sae.safetensors").exists()

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise FitError(
                f"{self.path} is not a run directory (no config.json): train one with `pipeline fit`"
            ) from None

    def checkpoint_dir(self, step: int) -> Path:
        return self.path / "checkpoints" / f"step-{step:07d}"

    def checkpoint_steps(self) -> list[int]:
        root = self.path / "checkpoints"
        if not root.exists():
            return []
        return sorted(int(p.name.split("-")[1]) for p in root.iterdir() if p.name.startswith("step-")
                      and not p.name.endswith(".tmp"))

    def drop_checkpoints(self, keep: int | None = None) -> None:
        for step in self.checkpoint_steps():
            if step != keep:
                shutil.rmtree(self.checkpoint_dir(step), ignore_errors=True)
        root = self.path / "checkpoints"
        if keep is None and root.exists():
            shutil.rmtree(root, ignore_errors=True)


def check_config(run: RunDir, expected: dict[str, Any]) -> None:
    """Refuse a run directory that holds another configuration; name the first field that differs."""
    if not run.config_path.exists():
        return
    found = run.read_config()
    for section in ("store", "sae", "train"):
        mine, theirs = expected.get(section, {}), found.get(section, {})
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                raise FitError(
                    f"{run.path} holds a run with {section} {key} = {theirs.get(key)!r}, but this run asks for "
                    f"{mine.get(key)!r}: choose another --out, or delete that directory"
                )


def save_weights(sae: SAE, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"name": sae.cfg.name})
    os.replace(tmp, path)


def load_sae(run_path: str | Path, device: str | torch.device = "cpu") -> tuple[SAE, dict[str, Any]]:
    """A finished SAE from its run directory, and the directory's config.json."""
    run = RunDir(Path(run_path))
    config = run.read_config()
    weights = run.path / "sae.safetensors"
    if not weights.exists():
        raise FitError(f"{run.path} has not finished training (no sae.safetensors): rerun `pipeline fit` to finish")
    state = load_file(str(weights))
    cfg = SAEConfig(**config["sae"])
    d_model = config["store"]["d_model"]
    sae = SAE(cfg, d_model, store_mean=state.get("norm_mean"), store_std=state.get("norm_std"))
    sae.load_state_dict(state)
    return sae.to(device).eval(), config
