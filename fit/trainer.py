"""One pass over a store that trains several SAEs on the same batches.

The batches are read (or gathered in memory) once per step and every SAE of the pass takes its own optimiser
step on them, so M SAEs cost one read of the store. Checkpoints hold every SAE's weights and optimiser state at
one step; a pass file records that step, so a killed pass resumes all its SAEs where they were and finishes
with the same weights as an uninterrupted pass (on CPU, fixed seeds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file

from fit.config import SAEConfig, TrainConfig
from fit.data import TrainingBatches
from fit.distributed import World, all_reduce_any, all_reduce_mean, init_world, shutdown, wrap
from fit.errors import FitError
from fit.export import export_saelens
from fit.optim import ConstrainedAdamW
from fit.runs import RunDir, check_config, save_weights, store_identity, write_json_atomic
from fit.sae import SAE, Normalised
from store.batches import BatchOrder
from store.device import resolve_device
from store.errors import StoreError
from store.reader import ActivationStore, open_store

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, str], None]
"""Called as (steps done, total steps, one-line status)."""


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
    fired: torch.Tensor | None = None

    def add(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], x_n_BD: torch.Tensor) -> None:
        z = parts["z"].detach()
        active = z > 0
        values = {
            "loss": loss.detach(),
            "recon": parts["recon"].detach(),
            "penalty": parts["penalty"].detach(),
            "l0": active.sum(dim=-1).float().mean(),
            "sse": (x_n_BD - parts["x_hat"].detach()).pow(2).sum(),
            "sst": (x_n_BD - x_n_BD.mean(dim=0)).pow(2).sum(),
        }
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0) + v.float()
        fired = active.any(dim=0)
        self.fired = fired if self.fired is None else self.fired | fired
        self.steps += 1

    def flush(self, bounds: list[tuple[int, int]], world: World) -> dict[str, float | list[int]]:
        """Means over the window (and over ranks), then reset."""
        n = max(self.steps, 1)
        sums = all_reduce_mean(self.sums, world)
        out: dict[str, float | list[int]] = {k: float(v) / n for k, v in sums.items() if k not in ("sse", "sst")}
        sse, sst = float(sums.get("sse", 0.0)), float(sums.get("sst", 0.0))
        out["explained_variance"] = 1 - sse / sst if sst else float("nan")
        fired = self.fired if self.fired is not None else torch.zeros(self.n_latents, dtype=torch.bool,
                                                                         device=self.device)
        fired = all_reduce_any(fired, world).cpu()
        out["live_per_group"] = [int(fired[a:b].sum()) for a, b in bounds]
        out["live"] = int(fired.sum())
        self.steps, self.sums, self.fired = 0, {}, None
        return out


@dataclass
class Member:
    """One SAE of a pass, with everything that trains and records it."""

    cfg: SAEConfig
    run: RunDir
    sae: SAE
    loss_fn: torch.nn.Module
    """The SAE's loss as a module (wrapped in DistributedDataParallel when training on several processes)."""
    opt: ConstrainedAdamW
    timer: StepTimer
    window: WindowStats

    def log_line(self, record: dict) -> None:
        with open(self.run.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


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


def _pass_id(names: list[str], identity: dict) -> str:
    blob = json.dumps({"saes": sorted(names), "train": identity}, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def _schedule(step: int, warmup: int) -> float:
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def _open_store(cfg: TrainConfig) -> ActivationStore:
    try:
        return open_store(cfg.store, storage_options=cfg.storage_options)
    except StoreError as exc:
        raise FitError(str(exc)) from exc


def fit(cfg: TrainConfig, saes: list[SAEConfig], on_step: StepCallback | None = None) -> list[FitResult]:
    """Train every SAE in ``saes`` on the same batches of ``cfg.store``; resumes a killed pass.

    Under torchrun every process calls this; rank r trains on stream r of each global batch, and only rank 0
    writes (and returns results).
    """
    if not saes:
        raise FitError("no SAE to train")
    names = [s.name for s in saes]
    if len(set(names)) != len(names):
        raise FitError(f"two SAEs of the pass share a name: {names}")
    world = init_world(cfg.device)
    try:
        return _fit(cfg, saes, world, on_step)
    finally:
        shutdown(world)


def _fit(cfg: TrainConfig, saes: list[SAEConfig], world: World, on_step: StepCallback | None) -> list[FitResult]:
    store = _open_store(cfg)
    device = resolve_device(cfg.device)
    streams = cfg.streams or world.size
    if world.distributed and streams != world.size:
        raise FitError(f"--streams {streams} must equal the number of processes ({world.size}) under torchrun")
    if cfg.batch_size % streams:
        raise FitError(f"--batch-size {cfg.batch_size} must be divisible by the {streams} processes")
    split = store.split(cfg.holdout)
    order = BatchOrder(store.n_rows, store.chunk_rows, split.train, cfg.batch_size, cfg.data_seed,
                       shuffle_rows=cfg.shuffle_rows, num_streams=streams)
    n_steps = order.batches_per_epoch if cfg.tokens is None else cfg.tokens // cfg.batch_size
    out = Path(cfg.out)
    store_id = store_identity(store.meta, store.n_rows)
    train_record = {**cfg.identity(), "streams": streams, "n_steps": n_steps, "train_rows": list(split.train),
                    "heldout_rows": list(split.heldout)}

    todo, done = [], []
    for sae_cfg in saes:
        run = RunDir(out / sae_cfg.name)
        expected = {"sae": sae_cfg.to_dict(), "train": train_record, "store": store_id}
        check_config(run, expected)
        (done if run.finished else todo).append((sae_cfg, run, expected))
    for _, run, _ in done:
        log.info("%s is already trained; skipping it", run.path)
    results = [_result_of(run) for _, run, _ in done]
    if not todo:
        return results

    moments = store.moments()
    mean = torch.from_numpy(moments.mean)
    std = torch.from_numpy(moments.var).sqrt()
    members = []
    for sae_cfg, run, expected in todo:
        sae = SAE(sae_cfg, store.d_model, store_mean=mean, store_std=std).to(device)
        opt = ConstrainedAdamW(sae.parameters(), [sae.W_dec], lr=cfg.lr, betas=cfg.adam_betas,
                               weight_decay=cfg.weight_decay)
        members.append(Member(sae_cfg, run, sae, wrap(sae, world, device), opt, StepTimer(device),
                              WindowStats(sae.n_latents, device)))
        if world.is_main and not run.config_path.exists():
            expected = {**expected, "store_url": _absolute(cfg.store), "n_latents": sae.n_latents,
                        "group_bounds": sae.group_bounds,
                        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            write_json_atomic(run.config_path, expected)

    # Named after every SAE of the command, finished or not: a pass that died while writing its results resumes.
    pass_file = out / "passes" / f"{_pass_id([s.name for s in saes], train_record)}.json"
    start = _resume(members, pass_file, world)
    world.barrier()  # rank 0 may have pruned logs; nobody trains before that
    batches = TrainingBatches(store, order, device=device, mode=cfg.data, start_step=start,
                              n_steps=max(n_steps - start, 0), verify_checksums=cfg.verify_checksums,
                              streams=[world.rank] if world.distributed else None)
    log.info(
        "training %d SAE(s) on %s (%s) for %d steps of %d rows (%s data, rows %d..%d; %d held out)%s%s",
        len(members), cfg.store, store.describe(), n_steps, cfg.batch_size, batches.mode, *split.train,
        split.n_heldout, f", resuming at step {start}" if start else "",
        f", rank {world.rank} of {world.size}" if world.distributed else "",
    )
    wall = time.perf_counter()
    _train(cfg, members, batches, n_steps, device, pass_file, world, on_step if world.is_main else None)
    wall = time.perf_counter() - wall
    world.barrier()
    if not world.is_main:
        return []
    for m in members:
        results.append(_finish(m, cfg, store, n_steps, wall))
    pass_file.unlink(missing_ok=True)
    return results


def _resume(members: list[Member], pass_file: Path, world: World) -> int:
    if not pass_file.exists():
        for m in members:
            if m.run.checkpoint_steps():
                raise FitError(
                    f"{m.run.path} holds checkpoints of another training pass (other SAEs trained with it): "
                    "rerun that exact command to finish it, or delete the directory"
                )
            if world.is_main:
                (m.run.path / "metrics.jsonl").unlink(missing_ok=True)
        return 0
    step = json.loads(pass_file.read_text())["step"]
    for m in members:
        ckpt = m.run.checkpoint_dir(step)
        if not ckpt.exists():
            raise FitError(
                f"checkpoint {ckpt} is missing, but {pass_file} says the pass reached step {step}: delete that "
                "file to train this pass from the start"
            )
        state = load_file(str(ckpt / "sae.safetensors"))
        if state["W_dec"].shape[1] != m.sae.d_model:
            raise FitError(
                f"{ckpt} holds an SAE for d_model {state['W_dec'].shape[1]}, but the store has d_model "
                f"{m.sae.d_model}: use the store it was trained on"
            )
        m.sae.load_state_dict(state)
        m.opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=m.sae.W_dec.device,
                                         weights_only=True))
        m.timer.seconds = json.loads((ckpt / "state.json").read_text())["seconds"]
        if world.is_main:
            _truncate_log(m.run.path / "metrics.jsonl", step)
    log.info("resuming %d SAE(s) from step %d", len(members), step)
    return step


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


def _train(cfg: TrainConfig, members: list[Member], batches: TrainingBatches, n_steps: int,
           device: torch.device, pass_file: Path, world: World, on_step: StepCallback | None) -> None:
    autocast = cfg.autocast_bf16 and device.type == "cuda"
    first_step, t0 = 0, None
    for step, x_BD in batches:
        if t0 is None:  # rates count from the first batch: loading rows into memory is not training
            first_step, t0 = step, time.perf_counter()
        if world.any(not bool(torch.isfinite(x_BD).all()), device):
            raise FitError(
                f"batch {step} holds NaN or Inf activations: the store is damaged (run `pipeline store verify`); "
                "checkpoints written so far are kept"
            )
        lr_scale = _schedule(step, cfg.lr_warmup_steps)
        l1_scale = _schedule(step, cfg.l1_warmup_steps)
        normalised: dict[str, Normalised] = {}
        for m in members:
            m.timer.start()
            if m.cfg.norm not in normalised:
                normalised[m.cfg.norm] = m.sae.normalise(x_BD)
            norm = normalised[m.cfg.norm]
            for group in m.opt.param_groups:
                group["lr"] = cfg.lr * lr_scale
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss, parts = m.loss_fn(norm.x_BD, l1_scale)
            m.opt.zero_grad(set_to_none=True)
            loss.backward()
            m.opt.step()
            m.timer.stop()
            m.window.add(loss, parts, norm.x_BD)
        done = step + 1
        if done % cfg.log_every == 0 or done == n_steps:
            elapsed = time.perf_counter() - t0
            rate = (done - first_step) * cfg.batch_size / elapsed if elapsed > 0 else 0.0
            status = []
            for m in members:
                record = {"step": done, "tokens": done * cfg.batch_size, "lr": cfg.lr * lr_scale,
                          "l1_scale": l1_scale, **m.window.flush(m.sae.group_bounds, world),
                          "tokens_per_second": rate, "sae_seconds": m.timer.collect()}
                if world.is_main:
                    m.log_line(record)
                status.append(f"{m.cfg.name}: loss {record['loss']:.4g} L0 {record['l0']:.1f} "
                              f"live {'/'.join(map(str, record['live_per_group']))}")
            if on_step is not None:
                on_step(done, n_steps, status[0] + (f" (+{len(status) - 1} more)" if len(status) > 1 else ""))
        elif on_step is not None:
            on_step(done, n_steps, "")
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < n_steps and world.is_main:
            _checkpoint(members, done, pass_file)


def _checkpoint(members: list[Member], step: int, pass_file: Path) -> None:
    """Write every SAE's state at ``step``, then commit the step in the pass file, then drop older ones."""
    for m in members:
        final = m.run.checkpoint_dir(step)
        tmp = final.with_name(final.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        save_weights(m.sae, tmp / "sae.safetensors")
        torch.save(m.opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "seconds": m.timer.collect()}))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    write_json_atomic(pass_file, {"step": step, "saes": [m.cfg.name for m in members]})
    for m in members:
        m.run.drop_checkpoints(keep=step)
    log.debug("checkpoint at step %d", step)


def _finish(m: Member, cfg: TrainConfig, store: ActivationStore, n_steps: int, wall: float) -> FitResult:
    save_weights(m.sae, m.run.path / "sae.safetensors")
    meta = store.meta
    export_saelens(m.sae, m.run.path / "saelens", {
        "model_name": meta.model.name,
        "hook_name": f"blocks.{meta.layer}.hook_resid_post",
        "hf_hook_point": meta.hook_point,
        "hook_layer": meta.layer,
        "context_size": meta.context.length,
        "prepend_bos": True,
        "dataset_path": meta.dataset.name,
        "sae_variant": m.cfg.variant,
        "penalty_groups": m.sae.group_bounds,
        "penalty_weights": sorted({round(float(w), 10) for w in m.sae.w_F}),
    })
    lines = (m.run.path / "metrics.jsonl").read_text().splitlines()
    final = json.loads(lines[-1]) if lines else {}
    summary = {
        "name": m.cfg.name,
        "steps": n_steps,
        "tokens": n_steps * cfg.batch_size,
        "sae_seconds": m.timer.collect(),
        "pass_wall_seconds_this_run": wall,
        "final": final,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(m.run.path / "training.json", summary)
    m.run.drop_checkpoints()
    log.info("%s: done (%d steps); %s", m.cfg.name, n_steps, m.run.path)
    return FitResult(m.cfg.name, str(m.run.path), n_steps, n_steps * cfg.batch_size, summary["sae_seconds"], final)


def _result_of(run: RunDir) -> FitResult:
    summary = json.loads((run.path / "training.json").read_text())
    return FitResult(summary["name"], str(run.path), summary["steps"], summary["tokens"], summary["sae_seconds"],
                     summary["final"])

