"""One SAE being trained: the SAE, its constrained optimiser and its loss module, which together own a step.

``update(step, x_BD)`` is one optimiser step on one batch (as dictionary_learning's trainers' ``update`` and
SAELens's ``_train_step``): loss, backward, the constrained AdamW step that keeps decoder rows at unit norm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fit.config import SAEConfig, TrainConfig
from fit.distributed import World, wrap
from fit.metrics import StepTimer, WindowStats
from fit.optim import ConstrainedAdamW
from fit.runs import RunDir
from fit.sae import SAE, Normalised
from fit.tracking import NoTracker, Tracker


def _ramp(step: int, warmup: int) -> float:
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


@dataclass(frozen=True)
class Schedule:
    """Learning rate and sparsity-penalty scale at each step (linear warm-ups from 0)."""

    lr: float
    """The learning rate after warm-up."""
    lr_warmup_steps: int
    """Steps of the learning-rate warm-up (0: none)."""
    l1_warmup_steps: int
    """Steps of the penalty warm-up (0: none)."""

    @classmethod
    def of(cls, cfg: TrainConfig) -> Schedule:
        return cls(cfg.lr, cfg.lr_warmup_steps, cfg.l1_warmup_steps)

    def lr_at(self, step: int) -> float:
        return self.lr * _ramp(step, self.lr_warmup_steps)

    def l1_scale_at(self, step: int) -> float:
        return _ramp(step, self.l1_warmup_steps)


SharedNorms = dict[str, Normalised]
"""One step's batch normalised once per normalisation, shared by the SAEs that use it."""


@dataclass
class Trainee:
    """One SAE of a pass, with everything that trains and records it."""

    cfg: SAEConfig
    run: RunDir
    sae: SAE
    loss_fn: torch.nn.Module
    """The SAE's loss as a module (wrapped in DistributedDataParallel when training on several processes)."""
    opt: ConstrainedAdamW
    schedule: Schedule
    autocast_bf16: bool
    """bf16 autocast of the forward pass (on CUDA only)."""
    timer: StepTimer
    window: WindowStats
    tracker: Tracker = field(default_factory=NoTracker)
    """Where its metric lines also go (set once the pass knows its start step)."""

    @classmethod
    def create(cls, sae_cfg: SAEConfig, run: RunDir, cfg: TrainConfig, d_model: int, mean_D: torch.Tensor,
               std_D: torch.Tensor, world: World, device: torch.device) -> Trainee:
        sae = SAE(sae_cfg, d_model, store_mean=mean_D, store_std=std_D).to(device)
        opt = ConstrainedAdamW(sae.parameters(), [sae.W_dec], lr=cfg.lr, betas=cfg.adam_betas,
                               weight_decay=cfg.weight_decay)
        return cls(sae_cfg, run, sae, wrap(sae, world, device), opt, Schedule.of(cfg),
                   cfg.autocast_bf16 and device.type == "cuda", StepTimer(device), WindowStats(sae.n_latents, device))

    def update(self, step: int, x_BD: torch.Tensor, norms: SharedNorms) -> None:
        """One optimiser step on the batch ``x_BD``; its metrics accumulate in ``window`` until the next log line."""
        self.timer.start()
        x_n = self._normalised(x_BD, norms)
        for group in self.opt.param_groups:
            group["lr"] = self.schedule.lr_at(step)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast_bf16):
            loss, parts = self.loss_fn(x_n.x_BD, self.schedule.l1_scale_at(step))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.timer.stop()
        self.window.add(loss, parts, x_n.x_BD)

    def _normalised(self, x_BD: torch.Tensor, norms: SharedNorms) -> Normalised:
        if self.cfg.norm not in norms:
            norms[self.cfg.norm] = self.sae.normalise(x_BD)
        return norms[self.cfg.norm]

    def metrics(self, step: int, world: World) -> dict:
        """Its part of the metrics.jsonl line written after step ``step`` (0-based), then a fresh window."""
        return {"lr": self.schedule.lr_at(step), "l1_scale": self.schedule.l1_scale_at(step),
                **self.window.flush(self.sae.group_bounds, world)}

    def log(self, record: dict) -> None:
        """Append one metric line to metrics.jsonl and send it to the tracker."""
        self.run.append_metrics(record)
        self.tracker.log(record)
