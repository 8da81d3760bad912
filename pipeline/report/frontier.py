"""Sparsity frontiers: each architecture's metric against L0, and architectures compared at matched L0.

Plain functions over plain numbers, so that the interpolation can be checked by hand (tests/pipeline/report/
test_frontier.py). An architecture's frontier is its configurations' seed-mean points (L0, metric), one per
sparsity setting (lambda for the L1 variants, k for the TopK family), ordered by L0. Comparing two SAEs at
different L0 says little, since every penalty moves an SAE along the sparsity-reconstruction trade-off; comparing
frontiers at the same L0 is the fair test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fit.config import SAEConfig
from pipeline.evaluate.metrics import t_interval

SWEEP_AXES = ("l1", "k", "seed")
"""The SAE fields that move an SAE along its architecture's frontier (and the seed, which repeats a point)."""


@dataclass(frozen=True)
class Point:
    """One configuration on a frontier: seed means and 95% CI half-widths (NaN with one seed)."""

    l0: float
    l0_half: float
    value: float
    half: float
    n: int
    setting: str
    """The sparsity setting that produced it, e.g. ``λ=0.04`` or ``k=32``."""


@dataclass(frozen=True)
class Metric:
    """A metric a frontier plots: how to read it from a run, and which direction is better."""

    key: str
    title: str
    lower_is_better: bool
    read: Callable[[Any], float | None]
    """Its value from an EvalRecord; None where the run did not measure it."""


def _field(name: str) -> Callable[[Any], float | None]:
    return lambda record: record.metric(name)


def _absorption(attr: str) -> Callable[[Any], float | None]:
    # Absorption is optional in eval.json (pipeline evaluate --absorption): absent means not measured.
    def read(record: Any) -> float | None:
        rec = getattr(record, "absorption", None)
        return None if rec is None else getattr(rec, attr)
    return read


METRICS = (
    Metric("mse", "MSE (held-out, normalised space)", True, _field("mse")),
    Metric("explained_variance", "explained variance", False, _field("explained_variance")),
    Metric("ce_recovered", "CE loss recovered", False, _field("ce_recovered")),
    Metric("kl", "KL(clean ‖ spliced), nats/token", True, _field("kl")),
    Metric("absorption", "mean full-absorption rate", True, _absorption("mean_full_absorption")),
    Metric("absorption_fraction", "mean absorption fraction", True, _absorption("mean_absorption_fraction")),
)
"""The frontier metrics, in the order the report shows them."""


def _truth(attr: str) -> Callable[[Any], float | None]:
    # Present only for runs on a synthetic store (the ground-truth evaluation).
    def read(record: Any) -> float | None:
        rec = getattr(record, "ground_truth", None)
        return None if rec is None else getattr(rec, attr)
    return read


TRUTH_METRICS = (
    Metric("truth_absorption", "absorption on the true hierarchy", True, _truth("absorption")),
    Metric("truth_partial_absorption", "partial absorption on the true hierarchy", True,
           _truth("partial_absorption")),
    Metric("unique_features", "live, unique true features", False, _truth("unique_features")),
    Metric("mcc", "MCC (decoder against true directions)", False, _truth("mcc")),
    Metric("f1", "F1 (latents as detectors of their true features)", False, _truth("f1")),
    METRICS[1],
    METRICS[0],
)
"""The frontier metrics of a synthetic store's runs (explained variance and MSE too: it has no LM for KL)."""
METRIC = {m.key: m for m in (*METRICS, *TRUTH_METRICS)}


def setting_label(sae: dict[str, Any]) -> str:
    """The sparsity setting of a recorded SAE configuration (:attr:`fit.config.SAEConfig.sparsity_label`)."""
    return SAEConfig.from_dict(sae).sparsity_label


def architecture_label(sae: dict[str, Any]) -> str:
    """The architecture of a recorded SAE configuration, in words (:attr:`fit.config.SAEConfig.label`)."""
    return SAEConfig.from_dict(sae).label


def describe(sae: dict[str, Any], group_bounds: list | None = None) -> str:
    """An SAE in a few words, for lists and pages: architecture, sparsity setting, and for the Matryoshka variants
    the latent counts where their nested prefixes end (the given ones, else the group ends they default to)."""
    cfg = SAEConfig.from_dict(sae)
    text = f"{cfg.label} {cfg.sparsity_label}"
    if "prefixes" in cfg.uses and not sae.get("prefixes") and group_bounds:
        text += " prefixes end at " + ",".join(str(b[1]) for b in group_bounds)
    return text


def architecture_key(sae: dict[str, Any]) -> tuple:
    """The SAE configuration without its sparsity setting and seed: the runs of one frontier share it."""
    return tuple(sorted((k, repr(v)) for k, v in sae.items() if k not in SWEEP_AXES))


def points(runs: Iterable[Any], metric: Metric) -> list[Point]:
    """The frontier of one architecture's runs: per sparsity setting, the seed means of L0 and the metric (runs
    without the metric left out), ordered by L0."""
    by_setting: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        value = metric.read(r)
        if value is None or math.isnan(value):
            continue
        by_setting.setdefault(setting_label(r.sae), []).append((r.l0, value))
    out = []
    for setting, pairs in by_setting.items():
        l0 = t_interval([p[0] for p in pairs])
        v = t_interval([p[1] for p in pairs])
        out.append(Point(l0[0], l0[1], v[0], v[1], len(pairs), setting))
    return sorted(out, key=lambda p: p.l0)


def interpolate(frontier: list[Point], l0: float) -> tuple[float, float] | None:
    """The frontier's (value, CI half-width) at ``l0``: piecewise linear in log L0 between the two measured
    points around it, the half-width interpolated the same way (NaN where a neighbour has one seed). None where
    ``l0`` lies outside the measured L0 range: a frontier is never extrapolated."""
    if not frontier or l0 <= 0:
        return None
    pts = sorted(frontier, key=lambda p: p.l0)
    lo, hi = pts[0].l0, pts[-1].l0
    # A relative tolerance, so that an L0 equal to a measured one up to rounding counts as covered.
    if l0 < lo * (1 - 1e-9) or l0 > hi * (1 + 1e-9) or lo <= 0:
        return None
    for a, b in itertools.pairwise(pts):
        if a.l0 <= l0 <= b.l0:
            if b.l0 == a.l0:
                return (a.value + b.value) / 2, max(a.half, b.half)
            t = (math.log(l0) - math.log(a.l0)) / (math.log(b.l0) - math.log(a.l0))
            return a.value + t * (b.value - a.value), a.half + t * (b.half - a.half)
    p = pts[0] if abs(l0 - lo) <= abs(l0 - hi) else pts[-1]
    return p.value, p.half


def common_l0s(frontiers: Iterable[list[Point]]) -> list[float]:
    """The L0 values to compare at: the 1-2-5 steps (10, 20, 50, 100, ...) inside the measured L0 range of at
    least two frontiers (of the one frontier when there is only one); where two ranges overlap but hold no such
    step, the overlap's geometric middle, to two significant digits."""
    ranges = [(f[0].l0, f[-1].l0) for f in frontiers if f]
    if not ranges:
        return []
    need = min(2, len(ranges))
    lo = min(r[0] for r in ranges)
    hi = max(r[1] for r in ranges)
    steps = []
    decade = 10.0 ** math.floor(math.log10(max(lo, 1e-3)))
    while decade <= hi:
        for m in (1, 2, 5):
            v = m * decade
            if lo <= v <= hi and sum(a <= v <= b for a, b in ranges) >= need:
                steps.append(v)
        decade *= 10
    if steps or need < 2:
        return steps
    overlaps = [(max(a[0], b[0]), min(a[1], b[1])) for a, b in itertools.combinations(ranges, 2)]
    overlaps = [(a, b) for a, b in overlaps if 0 < a <= b]
    if not overlaps:
        return []
    a, b = max(overlaps, key=lambda o: o[1] / o[0])
    mid = float(f"{math.sqrt(a * b):.2g}")
    return [mid] if a <= mid <= b else [math.sqrt(a * b)]


@dataclass(frozen=True)
class Cell:
    """One architecture at one matched L0: (value, half-width), or None where not covered."""

    architecture: str
    value: float | None
    half: float | None


@dataclass(frozen=True)
class Matched:
    """Every architecture's frontier read at one L0, and which wins."""

    l0: float
    cells: list[Cell]
    winner: str | None
    """The best architecture among those covering this L0 (None when fewer than two cover it)."""
    separated: bool
    """The winner's seed interval does not overlap the runner-up's (both measured with several seeds)."""


def compare(frontiers: dict[str, list[Point]], metric: Metric, l0s: list[float]) -> list[Matched]:
    """Architectures at matched L0: each frontier interpolated at each of ``l0s``, the best one named."""
    out = []
    for l0 in l0s:
        cells = []
        for name, frontier in frontiers.items():
            got = interpolate(frontier, l0)
            cells.append(Cell(name, *(got if got else (None, None))))
        covered = sorted((c for c in cells if c.value is not None),
                         key=lambda c: c.value if metric.lower_is_better else -c.value)
        winner, separated = None, False
        if len(covered) >= 2:
            best, second = covered[0], covered[1]
            winner = best.architecture
            if not (math.isnan(best.half) or math.isnan(second.half)):
                gap = abs(best.value - second.value)
                separated = gap > best.half + second.half
        out.append(Matched(l0, cells, winner, separated))
    return out


def _single_seed(m: Matched) -> bool:
    """Some covering architecture has one seed here, so no interval says whether the winner is ahead."""
    return any(c.value is not None and math.isnan(c.half) for c in m.cells)


def verdict(matched: list[Matched], metric: Metric) -> str:
    """One line: which architecture wins on ``metric`` at which L0."""
    parts = []
    for m in matched:
        if m.winner is None:
            continue
        how = "" if m.separated else (" (one seed: no interval)" if _single_seed(m) else " (within seed intervals)")
        parts.append(f"L0 {m.l0:g}: {m.winner}{how}")
    if not parts:
        return f"{metric.title}: no L0 covered by two architectures."
    better = "lower" if metric.lower_is_better else "higher"
    return f"{metric.title} ({better} is better) — " + "; ".join(parts) + "."
