"""The SAEs of a pass in training: each SAE (:class:`Trainee`) trains in a slot of a stack (:class:`StackTrainer`)
of SAEs of its shape, which owns the step.

``StackTrainer.update(step, x_BD)`` is one optimiser step of every member on one batch (as dictionary_learning's
trainers' ``update`` and SAELens's ``_train_step``, for M SAEs at once): loss, backward, the constrained AdamW step
that keeps decoder rows at unit norm. Nothing in it reads a value back to the host, so on a GPU the steps queue
up; metrics are read back at log lines only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fit.config import SAEConfig, TrainConfig
from fit.distributed import World, wrap
from fit.metrics import StepTimer, WindowStats
from fit.optim import ConstrainedAdamW
from fit.runs import RunDir
from fit.sae import SAE
from fit.sparse import relu_density_threshold
from fit.stack import SAEStack, SharedNorms
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


@dataclass
class StackTrainer:
    """SAEs of one shape trained together: one stacked module, one optimiser, one step for all of them."""

    stack: SAEStack
    loss_fn: torch.nn.Module
    """The stack (its forward is the members' losses), wrapped in DistributedDataParallel when training on several
    processes and compiled with ``--compile``."""
    opt: ConstrainedAdamW
    schedule: Schedule
    autocast_bf16: bool
    """bf16 autocast of the forward pass (on CUDA only)."""
    timer: StepTimer
    window: WindowStats
    auto_sparse: bool = False
    """``--sparse auto``: a ReLU-L1 stack switches to the pair path at the log line its L0 falls low enough."""
    members: list[Trainee] = field(default_factory=list)
    """The SAE in each slot, in slot order."""
    first_bad_loss_M: torch.Tensor | None = None
    """Per member, the first step whose loss was NaN or Inf (``NO_STEP`` if none), kept on the device: read back
    only where the pass checks its health (:class:`fit.trainer.Health`)."""

    NO_STEP = 2**62

    @classmethod
    def create(cls, saes: list[SAE], cfg: TrainConfig, world: World, device: torch.device) -> StackTrainer:
        stack = SAEStack(saes).to(device)
        stack.sparse_mode = cfg.sparse
        opt = ConstrainedAdamW(stack.parameters(), [stack.W_dec], lr=cfg.lr, betas=cfg.adam_betas,
                               weight_decay=cfg.weight_decay)
        loss_fn = wrap(stack, world, device)
        if cfg.compile:
            loss_fn = torch.compile(loss_fn)
        return cls(stack, loss_fn, opt, Schedule.of(cfg), cfg.autocast_bf16 and device.type == "cuda",
                   StepTimer(device), WindowStats(len(stack), stack.n_latents, device),
                   cfg.sparse == "auto" and not stack.arch.sparse_latents)

    def update(self, step: int, x_BD: torch.Tensor, norms: SharedNorms) -> None:
        """One optimiser step of every member on the batch ``x_BD``; metrics accumulate in ``window`` on the device
        until the next log line."""
        self.timer.start()
        x_n = self.stack.inputs(x_BD, norms)
        for group in self.opt.param_groups:
            group["lr"] = self.schedule.lr_at(step)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast_bf16):
            loss_M, parts = self.loss_fn(x_n, self.schedule.l1_scale_at(step))
        self.opt.zero_grad(set_to_none=True)
        if self.first_bad_loss_M is None:
            self.first_bad_loss_M = torch.full(loss_M.shape, self.NO_STEP, dtype=torch.int64, device=loss_M.device)
        bad_M = ~torch.isfinite(loss_M.detach())
        self.first_bad_loss_M = torch.where(bad_M, self.first_bad_loss_M.clamp(max=step), self.first_bad_loss_M)
        loss_M.sum().backward()  # the members' losses share no parameter, so each gets its own gradient
        self.opt.step()
        self.timer.stop()
        sst_M = (x_n - x_n.mean(dim=-2, keepdim=True)).pow(2).sum(dim=(-2, -1)).expand(len(self.stack))
        self.window.add(loss_M, parts, sst_M)

    def metrics(self, step: int, world: World) -> list[dict]:
        """Each member's part of the metrics.jsonl line written after step ``step`` (0-based), then a fresh
        window."""
        sched = {"lr": self.schedule.lr_at(step), "l1_scale": self.schedule.l1_scale_at(step)}
        bounds = [t.group_bounds for t in self.members]
        windows = self.window.flush(bounds, world)
        if self.auto_sparse:
            # Read where the metrics already synchronised (never a per-step read-back); every rank sees the same
            # reduced L0, so all switch at the same step. The densest member decides for the stack.
            densest = max(w["l0"] for w in windows) / self.stack.n_latents
            self.stack.sparse = densest < relu_density_threshold(self.stack.W_enc.device)
        return [{**sched, "pairs": self.stack.uses_pairs, **window} for window in windows]

    def non_finite_members(self) -> torch.Tensor:
        """Per member, whether any of its weights is NaN or Inf (a boolean ``(M,)`` on the device)."""
        M = len(self.stack)
        finite_M = torch.stack([torch.isfinite(p.detach().reshape(M, -1)).all(dim=1)
                                for p in self.stack.parameters()]).all(dim=0)
        return ~finite_M

    def optimizer_state(self, m: int) -> dict:
        """Member ``m``'s optimiser state, as the optimiser of that SAE alone would hold it."""
        full = self.opt.state_dict()
        state = {i: {k: (v[m].clone() if torch.is_tensor(v) and v.dim() else v) for k, v in s.items()}
                 for i, s in full["state"].items()}
        return {"state": state, "param_groups": full["param_groups"]}

    def load(self, weights: list[dict[str, torch.Tensor]], optimizer_states: list[dict]) -> None:
        """Every member's state at one step (slot order), as :meth:`SAEStack.member_state` and
        :meth:`optimizer_state` gave them."""
        for m, state in enumerate(weights):
            self.stack.load_member(m, state)
        first = optimizer_states[0]
        state = {i: {k: (torch.stack([o["state"][i][k] for o in optimizer_states]) if torch.is_tensor(v) and v.dim()
                         else v) for k, v in s.items()}
                 for i, s in first["state"].items()}
        self.opt.load_state_dict({"state": state, "param_groups": first["param_groups"]})


@dataclass
class Trainee:
    """One SAE of a pass: its configuration and run directory, and the stack slot it trains in."""

    cfg: SAEConfig
    run: RunDir
    stack: StackTrainer
    slot: int
    group_bounds: list[tuple[int, int]]
    seconds_before: float = 0.0
    """Compute seconds of the runs before this one (from the checkpoint it resumed from)."""
    tracker: Tracker = field(default_factory=NoTracker)
    """Where its metric lines also go (set once the pass knows its start step)."""

    def seconds(self) -> float:
        """Its compute time: an equal share of its stack's (the members compute together), plus earlier runs'."""
        return self.seconds_before + self.stack.timer.collect() / len(self.stack.members)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.stack.stack.member_state(self.slot)

    def optimizer_state(self) -> dict:
        return self.stack.optimizer_state(self.slot)

    def sae(self) -> SAE:
        return self.stack.stack.member_sae(self.slot)

    def log(self, record: dict) -> None:
        """Append one metric line to metrics.jsonl and send it to the tracker."""
        self.run.append_metrics(record)
        self.tracker.log(record)


def stacks_of(trainees: list[Trainee]) -> list[StackTrainer]:
    """The stacks the trainees train in, each once, in the order of their first trainee."""
    return list({id(t.stack): t.stack for t in trainees}.values())
