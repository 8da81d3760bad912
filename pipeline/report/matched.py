"""The report's matched-sparsity section: every architecture's frontier read at common L0 values, per metric, and
the verdict line of each (the arithmetic is pipeline/report/frontier.py's)."""

from __future__ import annotations

from pipeline.evaluate.record import DENSE_L0, EvalRecord, absorption_caveat
from pipeline.report import frontier
from pipeline.report.text import fmt


def matched_section(architectures: dict[str, list[EvalRecord]], metrics: tuple[frontier.Metric, ...],
                    pair_labels: list[str], title: str = "## Matched sparsity"
                    ) -> tuple[list[str], dict, list[str], dict, dict]:
    """The frontiers section: per metric, every architecture read at common L0 values. Returns its lines, its JSON,
    the verdict lines, the frontiers (for the plot) and, when ``pair_labels`` names the baseline's and the
    hierarchical SAE's architectures, their comparison alone per metric (for the claims)."""
    curves = {m.key: {label: frontier.points(runs, m) for label, runs in architectures.items()}
              for m in metrics}
    lines = [title, "",
             "Each architecture's frontier is its sparsity settings' seed means (L0, metric); it is read at common L0 "
             "values by piecewise-linear interpolation in log L0 between the two settings around it, the 95% seed "
             "interval interpolated the same way, and never extrapolated: outside an architecture's measured L0 "
             "range it is *not covered*. A winner is *within seed intervals* when its interval overlaps the "
             "runner-up's (or either was measured with one seed).", ""]
    data: dict = {}
    verdicts: list[str] = []
    pair: dict = {}
    caveat = absorption_caveat([r.absorption for runs in architectures.values() for r in runs
                                if r.absorption is not None])
    for m in metrics:
        present = {label: pts for label, pts in curves[m.key].items() if pts}
        if not present:
            continue
        l0s = frontier.common_l0s(present.values())
        matched = frontier.compare(present, m, l0s)
        if len(pair_labels) == 2 and all(label in present for label in pair_labels):
            two = {label: present[label] for label in pair_labels}
            pair[m.key] = frontier.compare(two, m, frontier.common_l0s(two.values()))
        data[m.key] = {"frontiers": {label: [vars(p) for p in pts] for label, pts in present.items()},
                       "matched": [{"l0": x.l0, "winner": x.winner, "separated": x.separated,
                                    "cells": [vars(c) for c in x.cells]} for x in matched]}
        lines += [f"### {m.title} ({'lower' if m.lower_is_better else 'higher'} is better)", ""]
        if not matched:
            lines += ["No L0 value lies inside two architectures' measured ranges.", ""]
            continue
        labels = list(present)
        lines += ["| L0 | " + " | ".join(labels) + " | best |", "|---|" + "---|" * (len(labels) + 1)]
        for x in matched:
            cells = [fmt((c.value, c.half)) if c.value is not None else "not covered" for c in x.cells]
            best = (x.winner + ("" if x.separated else " (within seed intervals)")) if x.winner else "–"
            lines.append(f"| {x.l0:g} | " + " | ".join(cells) + f" | {best} |")
        line = frontier.verdict(matched, m)
        if m.key.startswith("absorption") and caveat is not None:
            line += f" Not a verdict: {caveat[0]}; {caveat[1]}."
        verdicts.append(line)
        lines += ["", f"**Verdict:** {line}", ""]
    weak = [f"{r.name} ({msg})" for runs in architectures.values() for r in runs
            if r.absorption is not None and (msg := r.absorption.weak_main_latents()) is not None]
    if weak:
        lines += ["Weak main latents (their k-sparse probes predict the first letter far worse than the residual's "
                  "probe does): " + "; ".join(weak) + ".", ""]
    if "absorption" in data:
        lines += [f"Absorption is meaningful only for sparse SAEs: above L0 ~{DENSE_L0} (dense SAEs, such as the "
                  "demo's λ = 0.04 ones at L0 in the hundreds) almost every latent fires on every word, so no latent "
                  "can be said to absorb another's feature; read its frontier at L0 of tens to a few hundred.", ""]
    ranges = [f"{label}: L0 {pts[0].l0:.3g}–{pts[-1].l0:.3g} ({len(pts)} settings)"
              for label, pts in curves[metrics[0].key].items() if pts]
    lines += ["Measured L0 range per architecture: " + "; ".join(ranges) + ".", ""]
    return lines, data, verdicts, curves, pair
