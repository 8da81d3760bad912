"""One pass over a store that trains several SAEs on the same batches: the orchestration.

The batches are read (or gathered in memory) once per step and every SAE of the pass takes its optimiser step on
them, the SAEs of one shape together as one batched computation (:class:`fit.trainee.StackTrainer`), so M SAEs
cost one read of the store and, per shape, one set of batched matmuls. Nothing is read back from the device
between log lines: a batch holding NaN or Inf is noticed on the device and reported before the next log line or
checkpoint is written. Checkpoints (:mod:`fit.checkpoint`) hold every SAE's state at one step, so a killed pass
resumes all its SAEs where they were and finishes with the same weights as an uninterrupted pass (on CPU, fixed
seeds). Metric lines go to each SAE's metrics.jsonl and, with ``track``, to an experiment tracker
(:mod:`fit.tracking`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from fit import checkpoint
from fit.config import SAEConfig, TrainConfig
from fit.data import Batches, Plan, Source, StoreSource
from fit.distributed import World, init_world, shutdown
from fit.errors import FitError
from fit.export import export_saelens, saelens_metadata
from fit.metrics import Throughput, status_line
from fit.runs import TRAINING_SCHEMA, RunDir, check_config, save_weights
from fit.sae import SAE
from fit.stack import SharedNorms
from fit.tracking import open_tracker
from fit.trainee import StackTrainer, Trainee, stacks_of
from store.device import resolve_device
from store.errors import StoreLockedError
from store.files import write_json_atomic
from store.location import StoreLocation
from store.lock import WriterLock
from store.provenance import provenance
from store.reader import ActivationStore, open_store

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, str], None]
"""Called as (steps done, total steps, one-line status)."""


@dataclass
class FitResult:
    name: str
    run_dir: str
    steps: int
    tokens: int
    seconds: float
    """This SAE's own compute time (forward, backward, optimiser) over the whole run."""
    final: dict


def _absolute(url: str) -> str:
    """Local store paths are recorded absolute, so evaluate and browse find them from any directory."""
    return url if "://" in url else str(Path(url).resolve())


def _open_store(cfg: TrainConfig) -> ActivationStore:
    return open_store(cfg.store, storage_options=cfg.storage_options, allow_unsealed=cfg.allow_unsealed)


LOCK_FILE = "fit.lock"
"""In --out: held (an OS file lock, dropped by the kernel even on kill -9) by the fit writing there."""


def _prepare_out(out: Path) -> None:
    """Create --out, or refuse in one line when it cannot be a directory we write into."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FitError(f"--out {out} is (or lies under) a file, not a directory: choose a directory") from None
    except OSError as exc:
        raise FitError(f"cannot create --out {out} ({exc.strerror}): choose a directory you can write to") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise FitError(f"--out {out} is not writable: choose a directory you can write to")


@contextlib.contextmanager
def _out_lock(out: Path, world: World) -> Iterator[None]:
    """Hold --out for this fit (rank 0 writes for all ranks), so a second fit into it fails at once instead of
    interleaving its logs and checkpoints with ours."""
    if not world.is_main:
        yield
        return
    try:
        lock = WriterLock(StoreLocation(str(out.resolve())), LOCK_FILE).acquire()
    except StoreLockedError:
        raise FitError(
            f"another fit is writing to {out}: wait for it to finish or stop it, or choose another --out"
        ) from None
    except OSError as exc:
        raise FitError(f"cannot lock --out {out} ({exc.strerror}): choose a directory you can write to") from None
    try:
        yield
    finally:
        lock.release()


def fit(cfg: TrainConfig, saes: list[SAEConfig], on_step: StepCallback | None = None,
        source: Source | None = None) -> list[FitResult]:
    """Train every SAE in ``saes`` on the same batches of ``cfg.store`` (or of ``source``, whose store is
    ``cfg.store``); resumes a killed pass.

    Under torchrun every process calls this; rank r trains on stream r of each global batch, and only rank 0
    writes (and returns results).
    """
    if not saes:
        raise FitError("no SAE to train")
    names = [s.name for s in saes]
    if len(set(names)) != len(names):
        raise FitError(f"two SAEs of the pass share a name: {names}")
    out = Path(cfg.out)
    _prepare_out(out)
    world = init_world(cfg.device)
    try:
        with _out_lock(out, world):
            return _fit(cfg, saes, world, on_step, source)
    finally:
        shutdown(world)


def _fit(cfg: TrainConfig, saes: list[SAEConfig], world: World, on_step: StepCallback | None,
         source: Source | None) -> list[FitResult]:
    source = source or StoreSource(_open_store(cfg))
    store = source.store
    device = resolve_device(cfg.device)
    plan = _plan(cfg, source, world)
    todo, results = _sort_runs(cfg, saes, store, plan)
    pass_path = checkpoint.pass_file(Path(cfg.out), [s.name for s in saes], plan.record)
    if not todo:
        if world.is_main:
            checkpoint.end_pass(pass_path)  # a kill after the last results, before the pass was tidied
        return results
    trainees = _trainees(cfg, source, todo, world, device)
    start = checkpoint.resume(trainees, pass_path, world)
    world.barrier()  # rank 0 may have pruned logs; nobody trains before that
    batches = source.batches(cfg, device, start, max(plan.n_steps - start, 0),
                             [world.rank] if world.distributed else None)
    _log_start(cfg, store, plan, batches, trainees, start, world)
    with _tracking(cfg, trainees, start, world):
        wall = time.perf_counter()
        _train(cfg, trainees, batches, plan.n_steps, device, pass_path, world, on_step if world.is_main else None)
        wall = time.perf_counter() - wall
    world.barrier()
    if not world.is_main:
        return []
    for t in trainees:
        results.append(_finish(t, cfg, store, plan.n_steps, wall))
    checkpoint.end_pass(pass_path)
    return results


def _plan(cfg: TrainConfig, source: Source, world: World) -> Plan:
    streams = cfg.streams or world.size
    if world.distributed and streams != world.size:
        raise FitError(f"--streams {streams} must equal the number of processes ({world.size}) under torchrun")
    if cfg.batch_size % streams:
        raise FitError(f"--batch-size {cfg.batch_size} must be divisible by the {streams} processes")
    return source.plan(cfg, streams)


def _sort_runs(cfg: TrainConfig, saes: list[SAEConfig], store: ActivationStore,
               plan: Plan) -> tuple[list[tuple[SAEConfig, RunDir, dict]], list[FitResult]]:
    """The SAEs still to train (with the config.json each must hold), and the results of those already trained."""
    # The width first: of all the ways another store can differ, it is the one that makes the weights unusable.
    store_id = {"d_model": store.d_model, **store.identity(), "binding": store.binding()}
    todo, results = [], []
    for sae_cfg in saes:
        run = RunDir(Path(cfg.out) / sae_cfg.name)
        expected = {"sae": sae_cfg.to_dict(), "train": plan.record, "store": store_id}
        check_config(run, expected)
        if run.finished:
            log.info("%s is already trained; skipping it", run.path)
            results.append(_result_of(run))
        else:
            todo.append((sae_cfg, run, expected))
    return todo, results


def _trainees(cfg: TrainConfig, source: Source, todo: list[tuple[SAEConfig, RunDir, dict]],
              world: World, device: torch.device) -> list[Trainee]:
    """A fresh trainee per SAE (in the order asked for), in stacks of SAEs of one shape; rank 0 writes each run's
    config.json the first time."""
    moments = source.moments()
    mean_D = torch.from_numpy(moments.mean)
    std_D = torch.from_numpy(moments.var).sqrt()
    stacks: dict[object, list[tuple[SAEConfig, RunDir, SAE]]] = {}
    for sae_cfg, run, expected in todo:
        sae = SAE(sae_cfg, source.store.d_model, store_mean=mean_D, store_std=std_D)
        if world.is_main and not run.is_run:
            write_json_atomic(run.config_path, {
                **expected, "store_url": _absolute(cfg.store), "n_latents": sae.n_latents,
                "group_bounds": sae.group_bounds,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            })
        key = (sae.n_latents, sae.arch.key) if cfg.stack else sae_cfg.name
        stacks.setdefault(key, []).append((sae_cfg, run, sae))
    trainees = {}
    for members in stacks.values():
        stack = StackTrainer.create([sae for _, _, sae in members], cfg, world, device)
        stack.members = [Trainee(c, run, stack, m, sae.group_bounds) for m, (c, run, sae) in enumerate(members)]
        trainees.update({t.cfg.name: t for t in stack.members})
    return [trainees[sae_cfg.name] for sae_cfg, _, _ in todo]


def _log_start(cfg: TrainConfig, store: ActivationStore, plan: Plan, batches: Batches,
               trainees: list[Trainee], start: int, world: World) -> None:
    sizes = [len(s.members) for s in stacks_of(trainees)]
    log.info(
        "training %d SAE(s) in %d stack(s) of %s on %s (%s) for %d steps of %d rows (%s data, %s)%s%s", len(trainees),
        len(sizes), " + ".join(map(str, sizes)), cfg.store, store.describe(), plan.n_steps, cfg.batch_size,
        batches.mode, plan.summary, f", resuming at step {start}" if start else "",
        f", rank {world.rank} of {world.size}" if world.distributed else "",
    )


@contextlib.contextmanager
def _tracking(cfg: TrainConfig, trainees: list[Trainee], start: int, world: World) -> Iterator[None]:
    """Each SAE's tracker run (rank 0 only), open while the pass trains and closed however it ends."""
    with contextlib.ExitStack() as stack:
        for t in trainees if world.is_main else []:
            t.tracker = open_tracker(cfg.track, t.run, start)
            stack.callback(t.tracker.close)
        yield


class Health:
    """Whether the pass is still training on finite numbers: the first batch holding NaN or Inf, each member's first
    non-finite loss (both tracked on the device, no host synchronisation per step), and the weights themselves
    (a step can turn them NaN while its loss was finite), all read back only before the pass writes anything: a
    log line or a checkpoint. The first fault stops the pass on every rank alike."""

    NONE = StackTrainer.NO_STEP

    def __init__(self, device: torch.device, stacks: list[StackTrainer]) -> None:
        self.batch_step_t = torch.full((), self.NONE, dtype=torch.int64, device=device)
        self.stacks = stacks

    def see(self, step: int, x_BD: torch.Tensor) -> None:
        bad = ~torch.isfinite(x_BD).all()
        self.batch_step_t = torch.where(bad, self.batch_step_t.clamp(max=step), self.batch_step_t)

    def check(self, world: World, done: int) -> None:
        """Stop the pass if any rank has seen a bad batch or loss so far, or any weight is not finite after
        ``done`` steps."""
        kept = "checkpoints written before it are kept"
        step = world.earliest(self.batch_step_t)
        if step != self.NONE:
            raise FitError(f"batch {step} holds NaN or Inf activations: the store is damaged (run `pipeline store "
                           f"verify`); {kept}")
        for stack in self.stacks:
            if stack.first_bad_loss_M is None:
                continue
            for t, step in zip(stack.members, world.earliest_each(stack.first_bad_loss_M), strict=True):
                if step != self.NONE:
                    raise FitError(f"{t.cfg.name}: its loss became NaN or Inf at step {step}: training diverged "
                                   f"(try a lower --lr); {kept}")
            bad_M = world.earliest_each(torch.where(stack.non_finite_members(), 0, self.NONE))
            for t, bad in zip(stack.members, bad_M, strict=True):
                if bad == 0:
                    raise FitError(f"{t.cfg.name}: its weights hold NaN or Inf after step {done}: training diverged "
                                   f"(try a lower --lr); {kept}")


def _train(cfg: TrainConfig, trainees: list[Trainee], batches: Batches, n_steps: int,
           device: torch.device, pass_path: Path, world: World, on_step: StepCallback | None) -> None:
    stacks = stacks_of(trainees)
    throughput = Throughput(cfg.batch_size)
    health = Health(device, stacks)
    for step, x_BD in batches:
        throughput.tick(step)
        health.see(step, x_BD)
        norms: SharedNorms = {}
        for stack in stacks:
            stack.update(step, x_BD, norms)
        done = step + 1
        if done % cfg.log_every == 0 or done == n_steps:
            health.check(world, done)
            status = _log_metrics(cfg, trainees, step, throughput, world)
            if on_step is not None:
                on_step(done, n_steps, status[0] + (f" (+{len(status) - 1} more)" if len(status) > 1 else ""))
        elif on_step is not None:
            on_step(done, n_steps, "")
        if _checkpoint_due(cfg, done, n_steps, len(trainees)):
            health.check(world, done)  # no checkpoint holds a step taken on a bad batch or diverged weights
            if world.is_main:
                checkpoint.save_checkpoint(trainees, done, pass_path)


def _checkpoint_due(cfg: TrainConfig, done: int, n_steps: int, n_saes: int) -> bool:
    if done == n_steps:
        # Several SAEs' results are written one after another: a pass killed in between finishes the rest from
        # this checkpoint instead of training them again in a stack of other members (not bit for bit the same).
        return n_saes > 1
    return cfg.checkpoint_every > 0 and done % cfg.checkpoint_every == 0


def _log_metrics(cfg: TrainConfig, trainees: list[Trainee], step: int, throughput: Throughput,
                 world: World) -> list[str]:
    """Every SAE's metric line after step ``step`` (0-based), written by rank 0; returns their status lines."""
    done = step + 1
    stacks = stacks_of(trainees)
    metrics = {t.cfg.name: m for s in stacks for t, m in zip(s.members, s.metrics(step, world), strict=True)}
    rate = throughput.rate(done)  # after the metrics' read-back, which waited for the device's queued steps
    status = []
    for t in trainees:
        record = {"step": done, "tokens": done * cfg.batch_size, **metrics[t.cfg.name], "tokens_per_second": rate,
                  "sae_seconds": t.seconds()}
        if world.is_main:
            t.log(record)
        status.append(status_line(t.cfg.name, record))
    return status


def _finish(t: Trainee, cfg: TrainConfig, store: ActivationStore, n_steps: int, wall: float) -> FitResult:
    sae = t.sae()
    save_weights(sae, t.run.weights_path)
    export_saelens(sae, t.run.export_dir, saelens_metadata(sae, store.meta))
    metrics = t.run.read_metrics()
    final = metrics[-1] if metrics else {}
    summary = {
        "schema_version": TRAINING_SCHEMA,
        "name": t.cfg.name,
        "architecture": sae.arch.name,
        "sae": t.cfg.to_dict(),
        "steps": n_steps,
        "tokens": n_steps * cfg.batch_size,
        "sae_seconds": t.seconds(),
        # Members of a stack compute together, so each one's seconds are an equal share, not its own cost.
        "stack_size": len(t.stack.members),
        "pass_wall_seconds_this_run": wall,
        "final": final,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": t.run.read_config(),
        "provenance": provenance(t.stack.stack.W_enc.device).to_dict(),
    }
    write_json_atomic(t.run.training_path, summary)
    t.run.drop_checkpoints()
    log.info("%s: done (%d steps); %s", t.cfg.name, n_steps, t.run.path)
    return FitResult(t.cfg.name, str(t.run.path), n_steps, n_steps * cfg.batch_size, summary["sae_seconds"], final)


def _result_of(run: RunDir) -> FitResult:
    summary = run.read_training()
    return FitResult(summary["name"], str(run.path), summary["steps"], summary["tokens"], summary["sae_seconds"],
                     summary["final"])
