"""Synthetic rows: the fast sampler against SAELens's on the same model, generation against the training step it
feeds (the issue's target: at least 5x, so that generation never bounds a fit), and a fit on the generated stream
against the same fit on rows already in memory. The CPU preset, on the CPU."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import BenchReport, Figure
from benchmarks.fit_bench import _rates
from fit.config import SAEConfig, TrainConfig
from fit.trainer import fit
from harvest.synthetic.config import StreamConfig
from harvest.synthetic.model import load_or_build, spec_of
from harvest.synthetic.runner import synthetic_meta, write_stream
from harvest.synthetic.sampler import BLOCK_ROWS, FastSampler, SaeLensSampler, Stream
from pipeline.synthetic_source import synthetic_source
from store.location import StoreLocation

log = logging.getLogger(__name__)

PRESET = "synth-cpu"
SAE = SAEConfig(variant="hier", l1=3.0, expansion=4.0)
"""The demo's hierarchical SAE on the CPU preset (256 latents; Makefile DEMO_SYNTH_SWEEP)."""
BATCH, STEPS = 1024, 150


def _rows_per_second(sampler, blocks: int) -> float:
    gen = torch.Generator().manual_seed(0)
    sampler.sample(BLOCK_ROWS, gen)  # warm-up
    start = time.perf_counter()
    for _ in range(blocks):
        sampler.sample(BLOCK_ROWS, gen)
    return blocks * BLOCK_ROWS / (time.perf_counter() - start)


def _fit_rate(train: TrainConfig, source=None) -> float:
    (result,) = fit(train, [SAE], source=source)
    return _rates(result.run_dir)[1]


def run(report: BenchReport, workdir: str | None = None) -> None:
    cpu = torch.device("cpu")
    spec = spec_of(preset=PRESET)
    started = time.perf_counter()
    truth = load_or_build(spec, device=cpu)
    log.info("synthetic model %s ready in %.1f s (built or read from the cache)", PRESET, time.perf_counter() - started)
    fast = _rows_per_second(FastSampler(truth, cpu), 60)
    reference = _rows_per_second(SaeLensSampler(truth, cpu), 12)
    report.add(Figure(f"synthetic rows, fast sampler vs SAELens's ({PRESET})", fast, reference, "rows/s",
                      "SAELens's ActivationGenerator + FeatureDictionary, same model, same device"))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = f"{tmp}/synth.zarr"
        rows = BATCH * STEPS + 8192
        stream = Stream(FastSampler(truth, cpu), 0, cpu)
        meta = synthetic_meta(spec, truth, seed=0, first_row=0, n_rows=rows, slots=48, sampler="fast", device=cpu,
                              store_dtype="bfloat16", chunk_rows=16384, settings={})
        write_stream(StoreLocation(store), meta, truth, stream, time.monotonic())
        common = dict(tokens=BATCH * STEPS, batch_size=BATCH, log_every=50, checkpoint_every=0, holdout=0.05,
                      device="cpu")
        in_memory = _fit_rate(TrainConfig(store=store, out=f"{tmp}/memory", data="memory", **common))
        report.add(Figure(f"synthetic rows generated vs one SAE's training step on them ({PRESET})", fast, in_memory,
                          "rows/s", f"{SAE.name} step, batch {BATCH}, rows in memory", target=5.0))
        source = synthetic_source(StreamConfig(synthetic=PRESET, heldout_samples=4096), f"{tmp}/heldout.zarr", cpu)
        streamed = _fit_rate(TrainConfig(store=str(Path(tmp) / "heldout.zarr"), out=f"{tmp}/stream", **common),
                             source)
        report.add(Figure(f"fit --synthetic (rows generated each step) vs the same fit from memory ({PRESET})",
                          streamed, in_memory, "rows/s", "the fit on stored rows held in memory"))
