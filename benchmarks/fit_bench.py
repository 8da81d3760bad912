"""Fit throughput: from the store against the same loop on rows already in memory; M SAEs in one pass against M
separate passes; M SAEs of one shape stacked (one batched computation) against the per-SAE loop; torch.compile
against eager."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import BenchReport, Figure
from benchmarks.store_bench import write_bench_store
from fit.config import SAEConfig, TrainConfig
from fit.runs import RunDir
from fit.trainer import fit

log = logging.getLogger(__name__)

STACK_SIZES = ((640, 6, 12), (256, 12, 20))
"""(d = n_latents, M SAEs, steps) of the stacked-against-looped figures (the issue's two shapes)."""
COMPILE_SIZE = (256, 12, 60)
"""(d, M, steps) of the compiled-against-eager figures: long enough for the compile warm-up to pay off or not."""


def _rates(run_dir: str) -> tuple[float, float]:
    """Training-loop tokens/s of a pass from its first batch to its last, and after its first log line (steady
    state: without the first steps, which carry any compile warm-up). A pass started at step 0 logs the tokens/s
    since its first batch, so each line gives the seconds since then."""
    lines = RunDir(Path(run_dir)).read_metrics()
    seconds = [line["tokens"] / line["tokens_per_second"] for line in lines]
    steady = (lines[-1]["tokens"] - lines[0]["tokens"]) / (seconds[-1] - seconds[0]) if len(lines) > 1 else 0.0
    return lines[-1]["tokens_per_second"], steady


def _cfg(store: str, out: str, data: str, steps: int, log_every: int | None = None, **kw) -> TrainConfig:
    return TrainConfig(store=store, out=out, tokens=steps * 2048, data=data, log_every=log_every or steps,
                       checkpoint_every=0, holdout=0.0, **kw)


def _train(store: str, out: str, saes: list[SAEConfig], data: str, steps: int, **kw) -> list:
    return fit(_cfg(store, out, data, steps, **kw), saes)


def _store(tmp: str, rows: int, d: int) -> str:
    store = f"{tmp}/s{d}.zarr"
    if not Path(store).exists():
        raw = (torch.randn(rows, d) * 3).to(torch.bfloat16).view(torch.uint16).numpy()
        write_bench_store(store, raw, chunk_rows=16384)
    return store


def _fit_process(store: str, out: str, m: int, steps: int, log_every: int, extra: list[str], env: dict) -> str:
    """A fresh `pipeline fit` process (so torch.compile starts with nothing compiled); its first SAE's run dir."""
    args = [sys.executable, "-m", "pipeline", "fit", "--store", store, "--out", out, "--variant", "hier",
            *[a for s in range(m) for a in ("--seed", str(s))], "--tokens", str(steps * 2048), "--data", "memory",
            "--log-every", str(log_every), "--checkpoint-every", "0", "--holdout", "0", *extra]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode:
        raise RuntimeError(f"fit failed: {done.stderr[-2000:]}")
    return f"{out}/{SAEConfig(variant='hier', seed=0).name}"


def stacked_vs_looped(report: BenchReport, tmp: str, sizes=STACK_SIZES, rows: int = 65536) -> None:
    for d, m, steps in sizes:
        store = _store(tmp, rows, d)
        saes = [SAEConfig(variant="hier", seed=s) for s in range(m)]
        rate = {}
        for stack in (False, True):  # the loop first: any warm-up of the machine favours the stack's rival
            [first, *_] = _train(store, f"{tmp}/stack-{stack}-{d}", saes, "memory", steps, stack=stack)
            rate[stack] = _rates(first.run_dir)[0]
        report.add(Figure(f"{m} SAEs of one shape, stacked vs the per-SAE loop (d=n={d})", rate[True], rate[False],
                          "tok/s", "the same pass with --no-stack (each SAE a step of its own)",
                          note=f"{steps} steps of 2048 rows, rows in memory, CPU float32; tok/s of the pass "
                               f"(x{m} SAE-tokens)"))
        log.info("fit bench d=%d M=%d: stacked %.0f tok/s, looped %.0f tok/s", d, m, rate[True], rate[False])


def compiled_vs_eager(report: BenchReport, tmp: str, size=COMPILE_SIZE, rows: int = 65536) -> None:
    d, m, steps = size
    store = _store(tmp, rows, d)
    log_every = max(steps // 6, 1)
    rates = {}
    for compiled in (False, True):
        # A fresh process and inductor cache: the compile warm-up a first run on a machine pays is counted.
        env = {"TORCHINDUCTOR_CACHE_DIR": f"{tmp}/inductor-{compiled}"}
        out = _fit_process(store, f"{tmp}/compile-{compiled}", m, steps, log_every,
                           ["--compile"] if compiled else [], env)
        rates[compiled] = _rates(out)
    note = f"{m} stacked hier SAEs, d=n={d}, {steps} steps of 2048 rows in memory, CPU float32"
    (whole_c, steady_c), (whole_e, steady_e) = rates[True], rates[False]
    # The compiled pass's seconds beyond its steady rate are the warm-up; the steps that pay it back follow.
    warmup = steps * 2048 * (1 / whole_c - 1 / steady_c)
    gain = 2048 * (1 / steady_e - 1 / steady_c)
    payback = f"its {warmup:.0f} s warm-up is paid back after ~{warmup / gain:.0f} steps" if gain > 0 else (
        f"its {warmup:.0f} s warm-up is never paid back")
    report.add(Figure(f"--compile vs eager, whole pass with compile warm-up (d={d}, M={m})", whole_c, whole_e,
                      "tok/s", "the same pass eager", note=f"{note}; empty inductor cache; {payback}"))
    report.add(Figure(f"--compile vs eager, after the first {log_every} steps (d={d}, M={m})", steady_c, steady_e,
                      "tok/s", "the same pass eager", note=note))
    log.info("fit bench compile: %s tok/s (whole, steady) vs eager %s; %s", rates[True], rates[False], payback)


def run(report: BenchReport, *, d: int = 640, rows: int = 262144, steps: int = 60, m: int = 4,
        workdir: str | None = None) -> None:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-fit-") as tmp:
        store = _store(tmp, rows, d)
        hier = SAEConfig(variant="hier")
        _train(store, f"{tmp}/warmup", [hier], "memory", steps)
        memory = _rates(_train(store, f"{tmp}/memory", [hier], "memory", steps)[0].run_dir)[0]
        stream = _rates(_train(store, f"{tmp}/stream", [hier], "stream", steps)[0].run_dir)[0]
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
                                   "normalising the batch, and stacks its SAEs"))
            log.info("fit bench d=%d: %d SAEs together %.1fs, apart %.1fs", width, m, together, alone)
        stacked_vs_looped(report, tmp)
        compiled_vs_eager(report, tmp)
