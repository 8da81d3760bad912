"""Fit throughput: from the store against the same loop on rows already in memory; M SAEs in one pass
against M separate passes."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import BenchReport, Figure
from benchmarks.store_bench import write_bench_store
from fit.config import SAEConfig, TrainConfig
from fit.trainer import fit

log = logging.getLogger(__name__)


def _rate(run_dir: str) -> float:
    """Training-loop tokens/s, measured by the trainer from its first batch to its last."""
    last = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()[-1]
    return json.loads(last)["tokens_per_second"]


def _train(store: str, out: str, saes: list[SAEConfig], data: str, steps: int) -> list:
    cfg = TrainConfig(store=store, out=out, tokens=steps * 2048, data=data, log_every=steps, checkpoint_every=0,
                      holdout=0.0)
    return fit(cfg, saes)


def _store(tmp: str, rows: int, d: int) -> str:
    store = f"{tmp}/s{d}.zarr"
    raw = (torch.randn(rows, d) * 3).to(torch.bfloat16).view(torch.uint16).numpy()
    write_bench_store(store, raw, chunk_rows=16384)
    return store


def run(report: BenchReport, *, d: int = 640, rows: int = 262144, steps: int = 60, m: int = 4,
        workdir: str | None = None) -> None:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-fit-") as tmp:
        store = _store(tmp, rows, d)
        hier = SAEConfig(variant="hier")
        _train(store, f"{tmp}/warmup", [hier], "memory", steps)
        memory = _rate(_train(store, f"{tmp}/memory", [hier], "memory", steps)[0].run_dir)
        stream = _rate(_train(store, f"{tmp}/stream", [hier], "stream", steps)[0].run_dir)
        report.add(Figure(f"fit from the store (d={d}, streaming)", stream, memory, "tok/s",
                          "the same loop on rows already in memory", target=0.9,
                          note=f"one hier SAE n={d}, batch 2048, {steps} steps, CPU float32"))
        log.info("fit bench: memory %.0f tok/s, stream %.0f tok/s", memory, stream)
        # The saving of a shared pass is the data path's share of a step: small where the SAE step is large.
        for width in (d, 256):
            wstore = store if width == d else _store(tmp, rows, width)
            saes = [SAEConfig(variant="hier", seed=s) for s in range(m)]
            t = time.perf_counter()
            _train(wstore, f"{tmp}/together-{width}", saes, "stream", steps)
            together = time.perf_counter() - t
            t = time.perf_counter()
            for sae in saes:
                _train(wstore, f"{tmp}/alone-{width}-{sae.seed}", [sae], "stream", steps)
            alone = time.perf_counter() - t
            report.add(Figure(f"{m} SAEs in one pass vs {m} passes (d={width})", alone, together, "s",
                              f"{m} separate passes (ratio = separate / one pass: above 1 means the pass saves)",
                              note=f"{steps} steps each, streaming; a pass shares reading, decoding and "
                                   "normalising the batch"))
            log.info("fit bench d=%d: %d SAEs together %.1fs, apart %.1fs", width, m, together, alone)
