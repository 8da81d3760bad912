"""Checkpoints of a training pass, and resuming one.

Every SAE of a pass checkpoints at the same step, into one step directory of the pass; the pass file then
commits that step, so a pass killed at any moment resumes all its SAEs from one step and finishes with the
weights of an uninterrupted pass.

```
RUN_DIR/passes/<id>.json                          {"step": N, "saes": [...]}: the committed step
RUN_DIR/passes/<id>/step-NNNNNNN/<name>/{sae.safetensors, optimizer.pt, state.json}
```

A checkpoint is written whole into ``step-N.tmp/``, renamed to ``step-N/``, and only then committed by rewriting
the pass file (an atomic replace); older step directories are dropped after that. So at every instant the pass
file names a complete step directory (or there is none yet), and anything else in the pass directory is a
checkpoint that was never committed: a rerun discards it and resumes from the committed step (or from the start).
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
from fit.runs import WEIGHTS_FILE, save_state
from fit.trainee import Trainee, stacks_of
from store.files import write_json_atomic, write_text_atomic
from store.killpoint import kill_point

log = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"



def pass_file(out: Path, names: list[str], identity: dict) -> Path:
    """The pass file of these SAEs trained with this configuration (named after all of them, finished or not,
    so a pass that died while writing its results resumes)."""
    blob = json.dumps({"saes": sorted(names), "train": identity}, sort_keys=True).encode()
    return out / "passes" / f"{hashlib.sha1(blob).hexdigest()[:12]}.json"


def pass_dir(pass_path: Path) -> Path:
    """The directory holding the pass's step directories (beside its pass file)."""
    return pass_path.with_suffix("")


def _step_dir(pass_path: Path, step: int) -> Path:
    return pass_dir(pass_path) / f"step-{step:07d}"


def save_checkpoint(trainees: list[Trainee], step: int, pass_path: Path) -> None:
    """Write every SAE's state at ``step`` into a new step directory, commit it in the pass file, drop older ones."""
    final = _step_dir(pass_path, step)
    staging = final.with_name(final.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)  # left by a kill before a rerun could discard it
    for i, t in enumerate(trainees):
        _save(t, step, staging / t.cfg.name)
        _kill_point(f"sae-{i}")
    _kill_point("staged")
    shutil.rmtree(final, ignore_errors=True)  # never committed (resume discards those), so nothing is lost
    staging.rename(final)
    _kill_point("renamed")
    write_json_atomic(pass_path, {"step": step, "saes": [t.cfg.name for t in trainees]})
    _kill_point("committed")
    _discard_uncommitted(pass_path, step)
    _kill_point("dropped")
    log.debug("checkpoint at step %d", step)


def _save(t: Trainee, step: int, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    save_state(t.weights(), t.cfg.name, into / WEIGHTS_FILE)
    torch.save(t.optimizer_state(), into / OPTIMIZER_FILE)
    # The stack's choice of the pair path (--sparse auto) is part of how later steps round: resumed with it.
    state = {"step": step, "seconds": t.seconds(), "pairs": t.stack.stack.sparse}
    (into / STATE_FILE).write_text(json.dumps(state))


def _kill_point(point: str) -> None:
    # The points of save_checkpoint a test may kill at (``checkpoint:<point>[@<n>]``, store/killpoint.py): sae-<i>,
    # staged, renamed, committed, dropped; a rerun must resume from every one.
    kill_point("checkpoint", point)


def _committed_step(pass_path: Path) -> int | None:
    try:
        return int(json.loads(pass_path.read_text())["step"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # Written by an atomic replace, so only a hand edit or a disk fault gets here.
        raise FitError(f"{pass_path} is damaged: delete it to train this pass from the start") from None


def _discard_uncommitted(pass_path: Path, keep: int | None) -> None:
    """Remove every step directory of the pass but the committed one (staging and uncommitted steps)."""
    root = pass_dir(pass_path)
    if not root.exists():
        return
    kept = _step_dir(pass_path, keep).name if keep is not None else None
    for p in root.iterdir():
        if p.name != kept:
            log.debug("discarding uncommitted checkpoint %s", p)
            shutil.rmtree(p, ignore_errors=True)


def end_pass(pass_path: Path) -> None:
    """Remove the pass's file and checkpoints once every SAE's results are written (a kill in between leaves a
    pass directory without its file, which is uncommitted and which the next run of the pass removes)."""
    pass_path.unlink(missing_ok=True)
    shutil.rmtree(pass_dir(pass_path), ignore_errors=True)


def resume(trainees: list[Trainee], pass_path: Path, world: World) -> int:
    """The step the pass resumes at (0 for a fresh pass), with every SAE's state restored to it."""
    step = _committed_step(pass_path)
    if world.is_main:
        _discard_uncommitted(pass_path, step)
    if step is None:
        _start_fresh(trainees, pass_path, world)
        return 0
    loaded = {t.cfg.name: _load(t, step, pass_path) for t in trainees}
    for stack in stacks_of(trainees):  # with all its members
        stack.load(*zip(*(loaded[t.cfg.name][:2] for t in stack.members), strict=True))
        stack.stack.sparse = bool(loaded[stack.members[0].cfg.name][2].get("pairs", False))
    for t in trainees:
        t.seconds_before = loaded[t.cfg.name][2]["seconds"]
        if world.is_main:
            _truncate_log(t.run.metrics_path, step)
    log.info("resuming %d SAE(s) from step %d", len(trainees), step)
    return step


def _start_fresh(trainees: list[Trainee], pass_path: Path, world: World) -> None:
    mine = {t.cfg.name for t in trainees}
    for other in sorted(pass_path.parent.glob("*.json")) if pass_path.parent.exists() else []:
        if other == pass_path:
            continue
        try:
            theirs = set(json.loads(other.read_text())["saes"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a pass file we can read, so not one whose work we could lose
        if shared := sorted(mine & theirs):
            raise FitError(
                f"{Path(pass_path.parent.parent) / shared[0]} is being trained by another training pass ({other}, "
                "with other SAEs): rerun that exact command to finish it, or delete that file and the directory"
            )
    for t in trainees:
        if world.is_main:
            # Checkpoints inside the run directory (the layout before passes/<id>/) that no pass file commits.
            if t.run.checkpoint_steps():
                log.warning("discarding uncommitted checkpoints in %s", t.run.checkpoints_dir)
                t.run.drop_checkpoints()
            t.run.metrics_path.unlink(missing_ok=True)


def _load(t: Trainee, step: int, pass_path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """The SAE's weights (with its architecture's training state, e.g. AuxK's counters), optimiser state and progress
    (state.json: compute seconds, the pair-path choice) at ``step``, from its checkpoint."""
    ckpt = _step_dir(pass_path, step) / t.cfg.name
    if not ckpt.exists() and t.run.checkpoint_dir(step).exists():
        ckpt = t.run.checkpoint_dir(step)  # a pass started before checkpoints moved under passes/<id>/
    if not ckpt.exists():
        raise FitError(
            f"checkpoint {ckpt} is missing, but {pass_path} says the pass reached step {step}: delete that "
            "file to train this pass from the start"
        )
    device = t.stack.stack.W_dec.device
    state = load_file(str(ckpt / WEIGHTS_FILE), device=str(device))
    if state["W_dec"].shape[1] != t.stack.stack.d_model:
        raise FitError(
            f"{ckpt} holds an SAE for d_model {state['W_dec'].shape[1]}, but the store has d_model "
            f"{t.stack.stack.d_model}: use the store it was trained on"
        )
    optimizer = torch.load(ckpt / OPTIMIZER_FILE, map_location=device, weights_only=True)
    return state, optimizer, json.loads((ckpt / STATE_FILE).read_text())


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
    # Replaced whole, so a kill while truncating cannot lose the lines up to the step we resume from.
    write_text_atomic(path, "".join(line + "\n" for line in kept))
