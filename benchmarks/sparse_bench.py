"""The pair path (fit/sparse.py) against the dense step, and our dense step against a plain-PyTorch floor loop.

Every figure times whole training steps (encoder forward, decode, loss, backward, the constrained AdamW step) of
the trainer's own step (:class:`fit.trainee.StackTrainer`, one SAE) with ``--sparse on`` against ``--sparse off``
on the same batches, the two steps alternating so that a change in the machine's load falls on both. Each case
runs a warm-up step and then a few timed ones (at d=2304, n=9216 a dense step is seconds on 2 CPU cores: fewer
steps, never smaller shapes). ``python -m benchmarks.sparse_bench [--device cuda] [--quick]`` runs it alone.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import click
import torch

from benchmarks.common import BenchReport, Figure
from fit import functional as fn
from fit import sparse
from fit.config import SAEConfig, TrainConfig
from fit.distributed import World
from fit.sae import SAE
from fit.trainee import StackTrainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    d: int
    n: int
    batch: int
    steps: int
    """Timed steps of each path (after one warm-up step each)."""


TOPK_CASES = ((Case(2304, 9216, 2048, 2), 64), (Case(2304, 2304, 2048, 3), 32))
"""(size, k) of the TopK figures (the issue's two)."""
RELU_CASE = (Case(2304, 2304, 2048, 3), 64 / 2304)
"""(size, target L0 / F) of the ReLU-L1 figure: L0 <= 100 of 2304, set through the encoder bias."""
FLOOR_CASE = Case(2304, 2304, 2048, 3)
DENSITY_SIZES = (Case(2304, 2304, 2048, 2), Case(640, 640, 2048, 4))
DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
"""L0 / F at which the ReLU-L1 pair step is timed against the dense one (the crossing is the threshold)."""
QUICK = {"topk": ((Case(64, 256, 256, 1), 8),), "relu": (Case(64, 128, 256, 1), 0.05),
         "floor": Case(64, 128, 256, 1), "density": (Case(64, 128, 256, 1),), "densities": (0.05, 0.2)}


def _where(device: torch.device) -> str:
    return f"{device.type} float32" + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batches(case: Case, device: torch.device, count: int, seed: int = 0) -> list[torch.Tensor]:
    """Layer-normalised random rows (the SAEs use ``norm='none'``: every path gets the same normalised rows)."""
    g = torch.Generator().manual_seed(seed)
    return [fn.layer_norm(torch.randn(case.batch, case.d, generator=g) * 3)[0].to(device) for _ in range(count)]


def _trainer(cfg: SAEConfig, case: Case, mode: str, device: torch.device) -> StackTrainer:
    sae = SAE(cfg, case.d)
    train = TrainConfig(store="-", out="-", batch_size=case.batch, sparse=mode, log_every=10**9)
    return StackTrainer.create([sae], train, World(), device)


@torch.no_grad()
def _set_density(trainer: StackTrainer, x_n: torch.Tensor, density: float) -> None:
    """Encoder bias that lets each latent fire on about ``density`` of the rows (a ReLU-L1 SAE's measured L0 is then
    about density * F, as a trained sparse SAE's would be)."""
    stack = trainer.stack
    pre = x_n @ stack.W_enc[0]
    stack.b_enc[0].copy_(-torch.quantile(pre, 1 - density, dim=0))


def _alternating(steps: dict[str, Callable[[int], None]], n: int, device: torch.device) -> dict[str, float]:
    """Seconds per step of each path: one warm-up step each, then ``n`` rounds of one step of each in turn."""
    for run in steps.values():
        run(0)
    _sync(device)
    total = dict.fromkeys(steps, 0.0)
    for i in range(n):
        for name, run in steps.items():
            t = time.perf_counter()
            run(i + 1)
            _sync(device)
            total[name] += time.perf_counter() - t
    return {name: s / n for name, s in total.items()}


def _stepper(trainer: StackTrainer, batches: list[torch.Tensor]) -> Callable[[int], None]:
    return lambda i: trainer.update(i, batches[i % len(batches)], {})


def _l0(trainer: StackTrainer) -> float:
    """The SAE's L0 over the steps so far (its metrics window)."""
    return trainer.window.flush([trainer.stack.arch.group_bounds], World())[0]["l0"]


def sparse_vs_dense(cfg: SAEConfig, case: Case, device: torch.device, density: float | None = None,
                    ) -> tuple[float, float, float]:
    """tok/s of the pair step and of the dense step of the same SAE, and the pair step's measured L0."""
    batches = _batches(case, device, case.steps + 1)
    trainers = {mode: _trainer(cfg, case, mode, device) for mode in ("on", "off")}
    if density is not None:
        for t in trainers.values():
            _set_density(t, batches[0], density)
    secs = _alternating({m: _stepper(t, batches) for m, t in trainers.items()}, case.steps, device)
    l0 = _l0(trainers["on"])
    return case.batch / secs["on"], case.batch / secs["off"], l0


def floor_step(case: Case, device: torch.device, l1: float) -> Callable[[int], None]:
    """The plain-PyTorch loop our dense ReLU-L1 step is held to: nn.Linear encoder, ReLU, a decoder matmul, L1 on
    the latents, AdamW."""
    g = torch.Generator().manual_seed(0)
    enc = torch.nn.Linear(case.d, case.n).to(device)
    W_dec = torch.nn.Parameter(fn.unit_rows(torch.randn(case.n, case.d, generator=g)).to(device))
    b_dec = torch.nn.Parameter(torch.zeros(case.d, device=device))
    opt = torch.optim.AdamW([*enc.parameters(), W_dec, b_dec], lr=3e-4, weight_decay=1e-4)
    batches = _batches(case, device, case.steps + 1)

    def step(i: int) -> None:
        x = batches[i % len(batches)]
        z = torch.relu(enc(x))
        x_hat = z @ W_dec + b_dec
        loss = (x_hat - x).pow(2).sum(-1).mean() + l1 * z.sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def topk_figures(report: BenchReport, device: torch.device, cases=TOPK_CASES) -> None:
    for case, k in cases:
        ours, dense, l0 = sparse_vs_dense(SAEConfig(variant="topk", k=k, norm="none", expansion=case.n / case.d),
                                          case, device)
        report.add(Figure(f"TopK k={k} d={case.d} n={case.n}: pair step vs dense step", ours, dense, "tok/s",
                          "the same step with --sparse off (dense latents)",
                          note=f"{case.steps} steps of {case.batch} rows after a warm-up, {_where(device)}, steps "
                               f"alternating; L0 {l0:.1f}"))
        log.info("sparse bench topk k=%d n=%d: pairs %.0f tok/s, dense %.0f tok/s", k, case.n, ours, dense)


def relu_figure(report: BenchReport, device: torch.device, size=RELU_CASE) -> None:
    case, density = size
    ours, dense, l0 = sparse_vs_dense(SAEConfig(variant="baseline", norm="none", expansion=case.n / case.d),
                                      case, device, density)
    report.add(Figure(f"ReLU-L1 d=n={case.d} at L0 {l0:.0f}: pair step vs dense step", ours, dense, "tok/s",
                      "the same step with --sparse off", target=2.0,
                      note=f"measured L0 {l0:.1f} of {case.n} (encoder bias set for it); {case.steps} steps of "
                           f"{case.batch} rows, {_where(device)}"))
    log.info("sparse bench relu L0 %.1f: pairs %.0f tok/s, dense %.0f tok/s", l0, ours, dense)


def floor_figure(report: BenchReport, device: torch.device, case: Case = FLOOR_CASE) -> None:
    cfg = SAEConfig(variant="baseline", norm="none", expansion=case.n / case.d)
    ours = _trainer(cfg, case, "off", device)
    batches = _batches(case, device, case.steps + 1)
    secs = _alternating({"ours": _stepper(ours, batches), "floor": floor_step(case, device, cfg.l1)}, case.steps,
                        device)
    report.add(Figure(f"ReLU-L1 dense step vs a plain-PyTorch loop (d=n={case.d})", case.batch / secs["ours"],
                      case.batch / secs["floor"], "tok/s", "nn.Linear encoder, ReLU, decoder matmul, L1, AdamW",
                      target=0.95, note=f"ours: the trainer's step with --sparse off (constrained AdamW, unit-norm "
                                        f"decoder, metrics on the device); {case.steps} steps, {_where(device)}"))
    log.info("sparse bench floor: ours %.0f tok/s, floor %.0f tok/s", case.batch / secs["ours"],
             case.batch / secs["floor"])


def density_figures(report: BenchReport, device: torch.device, sizes=DENSITY_SIZES,
                    densities=DENSITIES) -> dict[int, float | None]:
    """The ReLU-L1 pair step against the dense one at several L0 / F; the crossing (interpolated) per size."""
    crossings: dict[int, float | None] = {}
    for case in sizes:
        cfg = SAEConfig(variant="baseline", norm="none", expansion=case.n / case.d)
        points = []
        for density in densities:
            ours, dense, l0 = sparse_vs_dense(cfg, case, device, density)
            points.append((l0 / case.n, ours / dense))
            report.add(Figure(f"ReLU-L1 d=n={case.d} at L0/F {l0 / case.n:.3f}: pair step vs dense step", ours,
                              dense, "tok/s", "the same step with --sparse off",
                              note=f"{case.steps} steps of {case.batch} rows, {_where(device)}"))
        crossings[case.d] = _crossing(points)
        log.info("sparse bench d=%d: (L0/F, pairs/dense) %s; crossing at L0/F %s", case.d,
                 [(round(a, 4), round(b, 2)) for a, b in points], crossings[case.d])
    return crossings


def _crossing(points: list[tuple[float, float]]) -> float | None:
    """The L0 / F at which the ratio falls through 1, interpolated in log density (None: it never does here)."""
    points = sorted(points)
    for (d0, r0), (d1, r1) in itertools.pairwise(points):
        if r0 >= 1 > r1:
            t = (r0 - 1) / (r0 - r1)
            return math.exp(math.log(d0) + t * (math.log(d1) - math.log(d0)))
    return None


def run(report: BenchReport, *, device: str = "cpu", quick: bool = False, threads: int | None = None,
        workdir: str | None = None) -> None:
    """Every figure; ``threads``: torch's CPU threads for the section (default: the process's). On a CPU shared
    with other work, one thread avoids parallel regions that wait for a descheduled partner (docs/fit.md)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        _run(report, torch.device(device), quick)
    finally:
        torch.set_num_threads(before)


def _run(report: BenchReport, dev: torch.device, quick: bool) -> None:
    if quick:
        topk_figures(report, dev, QUICK["topk"])
        relu_figure(report, dev, QUICK["relu"])
        floor_figure(report, dev, QUICK["floor"])
        density_figures(report, dev, QUICK["density"], QUICK["densities"])
        return
    topk_figures(report, dev)
    relu_figure(report, dev)
    floor_figure(report, dev)
    crossings = density_figures(report, dev)
    report.notes.append(f"ReLU-L1 pair step faster than dense below L0/F of {crossings} (d=n; None: at every or no "
                        f"density tried); fit.sparse.RELU_DENSITY_THRESHOLD = {sparse.RELU_DENSITY_THRESHOLD}")


@click.command()
@click.option("--device", default="cpu", show_default=True)
@click.option("--quick", is_flag=True, help="Tiny sizes (seconds), as the test runs it.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--out", default="bench-results.json", show_default=True)
def main(device: str, quick: bool, threads: int | None, out: str) -> None:
    from pathlib import Path

    from benchmarks.common import machine_info

    logging.basicConfig(level=logging.INFO)
    report = BenchReport(machine=machine_info())
    run(report, device=device, quick=quick, threads=threads)
    for f in report.figures:
        log.info("%s: ours %.4g %s, baseline %.4g, ratio %.2f (%s)", f.name, f.ours, f.unit, f.baseline, f.ratio,
                 f.note)
    for note in report.notes:
        log.info("%s", note)
    report.write(Path(out))


if __name__ == "__main__":
    main()
