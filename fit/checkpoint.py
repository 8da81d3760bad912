"""Checkpoints of a training pass, and resuming one.

Every SAE of a pass checkpoints at the same step; a pass file then commits that step, so a pass killed at any
moment resumes all its SAEs from one step and finishes with the weights of an uninterrupted pass.

```
RUN_DIR/<name>/checkpoints/step-NNNNNNN/{sae.safetensors, optimizer.pt, state.json}
RUN_DIR/passes/<id>.json     {"step": N, "saes": [...]}: the step every SAE of the pass has checkpointed
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from fit.distributed import World
from fit.errors import FitError
from fit.runs import WEIGHTS_FILE, save_weights, write_json_atomic
from fit.trainee import Trainee

log = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"


def pass_file(out: Path, names: list[str], identity: dict) -> Path:
    """The pass file of these SAEs trained with this configuration (named after all of them, finished or not,
    so a pass that died while writing its results resumes)."""
    blob = json.dumps({"saes": sorted(names), "train": identity}, sort_keys=True).encode()
    return out / "passes" / f"{hashlib.sha1(blob).hexdigest()[:12]}.json"


def save_checkpoint(trainees: list[Trainee], step: int, pass_path: Path) -> None:
    """Write every SAE's state at ``step``, then commit the step in the pass file, then drop older ones."""
    for t in trainees:
        _save(t, step)
    write_json_atomic(pass_path, {"step": step, "saes": [t.cfg.name for t in trainees]})
    for t in trainees:
        t.run.drop_checkpoints(keep=step)
    log.debug("checkpoint at step %d", step)


def _save(t: Trainee, step: int) -> None:
    final = t.run.checkpoint_dir(step)
    tmp = final.with_name(final.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_weights(t.sae, tmp / WEIGHTS_FILE)
    torch.save(t.opt.state_dict(), tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, "seconds": t.timer.collect()}))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def resume(trainees: list[Trainee], pass_path: Path, world: World) -> int:
    """The step the pass resumes at (0 for a fresh pass), with every SAE's state restored to it."""
    if not pass_path.exists():
        _start_fresh(trainees, world)
        return 0
    step = json.loads(pass_path.read_text())["step"]
    for t in trainees:
        _load(t, step, pass_path)
        if world.is_main:
            _truncate_log(t.run.metrics_path, step)
    log.info("resuming %d SAE(s) from step %d", len(trainees), step)
    return step


def _start_fresh(trainees: list[Trainee], world: World) -> None:
    for t in trainees:
        if t.run.checkpoint_steps():
            raise FitError(
                f"{t.run.path} holds checkpoints of another training pass (other SAEs trained with it): "
                "rerun that exact command to finish it, or delete the directory"
            )
        if world.is_main:
            t.run.metrics_path.unlink(missing_ok=True)


def _load(t: Trainee, step: int, pass_path: Path) -> None:
    ckpt = t.run.checkpoint_dir(step)
    if not ckpt.exists():
        raise FitError(
            f"checkpoint {ckpt} is missing, but {pass_path} says the pass reached step {step}: delete that "
            "file to train this pass from the start"
        )
    state = load_file(str(ckpt / WEIGHTS_FILE))
    if state["W_dec"].shape[1] != t.sae.d_model:
        raise FitError(
            f"{ckpt} holds an SAE for d_model {state['W_dec'].shape[1]}, but the store has d_model "
            f"{t.sae.d_model}: use the store it was trained on"
        )
    t.sae.load_state_dict(state)
    t.opt.load_state_dict(torch.load(ckpt / OPTIMIZER_FILE, map_location=t.sae.W_dec.device, weights_only=True))
    t.timer.seconds = json.loads((ckpt / STATE_FILE).read_text())["seconds"]


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):  # a line torn by the crash
            continue
    path.write_text("".join(line + "\n" for line in kept))
