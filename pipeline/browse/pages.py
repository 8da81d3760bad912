"""The site's data model: what each data file holds, built from the pass's statistics (docs/browser.md).

Numbers are rounded to a few significant digits and windows shaded with one character per token: the site's
size is dominated by these per-example records.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.browse.logit_lens import LensResult
from pipeline.browse.site import levels
from pipeline.browse.stats import FeatureStats
from pipeline.evaluate.metrics import ACTIVE_THRESHOLD
from pipeline.evaluate.record import HEADLINE_METRICS, EvalRecord, GroupStats, columns, metric_names

DENSITY_BINS = {"lo": -6.0, "step": 0.25, "n": 24}
"""log10 feature density histogram of the overview: [-6, 0] in quarter decades (lower densities clamp)."""
SEARCH_TOKENS = 5
GROUP_CARD_METRICS = metric_names("live", "token_rate", "feature_density", "intensity")
"""The per-group statistics a run's card shows."""
COMPARISON_DENSITY, COMPARISON_L0 = metric_names("feature_density", "l0")
"""The group statistic the comparison table shows, and the run metric its legend shows."""

TokenText = Callable[[int], str]
"""Global row -> the decoded text of that row's token in its context."""


def sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def density_histogram(density: np.ndarray) -> tuple[list[int], int]:
    """(counts of live features per log10-density bin, dead features)."""
    live = density[density > 0]
    bin_of = np.floor((np.log10(live) - DENSITY_BINS["lo"]) / DENSITY_BINS["step"]).astype(int)
    bin_of = np.clip(bin_of, 0, DENSITY_BINS["n"] - 1)
    return np.bincount(bin_of, minlength=DENSITY_BINS["n"]).tolist(), int((density == 0).sum())


def overview_columns() -> dict[str, Any]:
    """What the overview's tables show, from the evaluation record: {"run": the headline metrics, with the
    browser's own count of live features after L0; "group": a run card's group statistics}."""
    run = columns(EvalRecord, HEADLINE_METRICS)
    after_l0 = HEADLINE_METRICS.index("l0") + 1
    run[after_l0:after_l0] = [{"key": "live", "title": "live features"}]
    return {"run": run, "group": columns(GroupStats, GROUP_CARD_METRICS),
            "comparison": {"density": COMPARISON_DENSITY, "l0": COMPARISON_L0}}


def _rounded(values: dict) -> dict:
    return {k: sig(v) if isinstance(v, float) else v for k, v in values.items()}


def run_overview(stats: FeatureStats, evaluation: EvalRecord | None) -> dict:
    """Headline numbers and per-group statistics with their density histograms."""
    density = stats.density
    groups = []
    for g, (a, b) in zip(stats.groups(), stats.group_bounds, strict=True):
        hist, dead = density_histogram(density[a:b])
        groups.append({**_rounded(g.to_dict()), "start": a, "stop": b, "density_hist": hist, "dead": dead})
    mean_act = stats.sum_F.numpy() / max(stats.rows, 1)
    own = {"rows": stats.rows, "l0": sig(float(density.sum())), "live": int((density > 0).sum()),
           "dead_features": int((density == 0).sum()), "active_features": int((mean_act > ACTIVE_THRESHOLD).sum())}
    headline = None
    if evaluation is not None:
        headline = _rounded({k: evaluation.metric(k) for k in HEADLINE_METRICS if evaluation.metric(k) is not None})
    return {"groups": groups, "own": own, "eval": headline}


def feature_list(stats: FeatureStats, text_of: TokenText, lens: LensResult | None, lens_text: TokenText | None
                 ) -> dict:
    """The columns of a run's sortable, searchable feature table."""
    tokens = []
    for f in range(stats.n):
        seen: list[str] = []
        for row, _, _ in stats.topk.feature(f):
            t = text_of(row)
            if t.strip() and t not in seen:
                seen.append(t)
            if len(seen) == SEARCH_TOKENS:
                break
        tokens.append(seen)
    out = {
        "density": [sig(float(d)) for d in stats.density],
        "max": [sig(float(m)) for m in stats.max],
        "mean": [sig(float(m)) for m in stats.mean_when_active],
        "tokens": tokens,
    }
    if lens is not None and lens_text is not None:
        out["promoted"] = [[lens_text(int(i)) for i in lens.promoted_ids[f, :3]] for f in range(stats.n)]
    return out


def example(row: int, value: float, window: list[float], fmax: float, before: int) -> list:
    """[row, activation, tokens shown before it, shading]."""
    lo, shade = levels(window, fmax)
    return [row, sig(value), before - lo, shade]


def feature_detail(f: int, stats: FeatureStats, quantiles: tuple[float, ...], lens: LensResult | None,
                   lens_text: TokenText | None, similar: list[list]) -> dict:
    """A feature page's data: top-k and lower-quantile examples, histogram, logit lens, nearest features."""
    before = stats.cfg.window.before
    fmax = float(stats.max[f])
    top = stats.topk.feature(f)
    top_rows = {row for row, _, _ in top}
    samples = [[q, *example(row, v, w, fmax, before)]
               for q, row, v, w in stats.quantile_examples(f, quantiles) if row not in top_rows]
    counts = stats.histograms[f]
    nz = np.flatnonzero(counts)
    hist = [int(nz[0]), counts[nz[0] : nz[-1] + 1].tolist()] if len(nz) else [0, []]
    out = {"top": [example(row, v, w, fmax, before) for row, v, w in top], "samples": samples, "hist": hist,
           "similar": similar}
    if lens is not None and lens_text is not None:
        out["promoted"] = [[lens_text(int(i)), sig(float(v), 3)]
                           for i, v in zip(lens.promoted_ids[f], lens.promoted[f], strict=True)]
        out["suppressed"] = [[lens_text(int(i)), sig(float(v), 3)]
                             for i, v in zip(lens.suppressed_ids[f], lens.suppressed[f], strict=True)]
    return out


def referenced_rows(stats: FeatureStats, quantiles: tuple[float, ...]) -> set[int]:
    """Rows whose contexts the site must decode: every example shown."""
    rows = {int(r) for r in stats.topk.rows_kF.flatten().tolist() if r >= 0}
    for f in range(stats.n):
        rows.update(row for _, row, _, _ in stats.quantile_examples(f, quantiles))
    return rows
