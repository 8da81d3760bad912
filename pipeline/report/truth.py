"""The report's ground-truth section: a synthetic store's runs against its known features (frontiers of MCC, F1,
absorption on the true forest and the live unique features at matched L0; absorption per depth; which depths the
hierarchical SAE's groups match), and the claims that ground truth tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.evaluate.metrics import t_interval
from pipeline.evaluate.record import EvalRecord
from pipeline.evaluate.truth.metrics import ABSORBER_COS, ABSORPTION_SHARE, COSINE_BAR
from pipeline.report import frontier, plots
from pipeline.report.claims import Claim, truth_claims
from pipeline.report.collect import by_architecture
from pipeline.report.matched import matched_section
from pipeline.report.paper import THE_SETTING
from pipeline.report.text import fmt


@dataclass
class TruthSection:
    lines: list[str]
    data: dict
    claims: list[Claim]
    verdicts: list[str]
    figures: list[Path]
    setting: str
    """The store and runs, in a few words, for the claims table's setting line."""


def pair_labels(architectures: dict[str, list[EvalRecord]]) -> tuple[str, str] | None:
    """The baseline's and the hierarchical SAE's architecture labels (hier with the paper's K and gamma when it was
    run), or None when either is missing."""
    def first(variant: str, **want) -> str | None:
        for label, runs in architectures.items():
            sae = runs[0].sae
            if sae["variant"] == variant and all(sae.get(k) == v for k, v in want.items()):
                return label
        return None

    base, hier = first("baseline"), first("hier", groups=THE_SETTING.groups, gamma=THE_SETTING.gamma) or first("hier")
    return None if base is None or hier is None else (base, hier)


def truth_section(evals: list[EvalRecord], out: Path) -> TruthSection:
    store = evals[0].store
    gt0 = evals[0].ground_truth
    architectures = by_architecture(evals)
    labels = pair_labels(architectures)
    heldout = store.heldout_rows[1] - store.heldout_rows[0]
    lines, data, verdicts, curves, pair = matched_section(
        architectures, frontier.TRUTH_METRICS, list(labels or ()), title="### Matched sparsity on ground truth")
    intro = [
        f"## Ground truth: `{store.model}`",
        "",
        f"{len(evals)} SAEs on a synthetic store ({store.tokens_total:,} rows, {heldout:,} held out; true L0 "
        f"{gt0.true_l0:.2f}), measured against the features the rows were made of (docs/metrics.md). "
        f"A latent represents a true feature at |cos| >= {COSINE_BAR}; {gt0.directions}. A parent's latent is absorbed "
        f"in a row when it is silent while latents pointing towards the parent (cos > {ABSORBER_COS}) carry at least "
        f"{ABSORPTION_SHARE:.0%} of its coefficient; absorption is that rate with a child on minus the rate with none.",
        "",
    ]
    figures = [plots.frontiers(curves, out, metrics=frontier.TRUTH_METRICS, name="truth_frontiers.png")]
    depth_lines, depth_data = _by_depth(architectures)
    hier_settings = {setting: runs for label, runs in architectures.items() if runs[0].sae["variant"] == "hier"
                     for setting, runs in _settings(runs).items()}
    group_lines, group_data = _groups(hier_settings)
    claims = truth_claims(pair, labels, hier_settings)
    setting = (f"ground truth on `{store.model}` ({store.tokens_total:,} rows; {len(evals)} SAEs, "
               f"{len(architectures)} architecture(s)), compared at matched L0")
    return TruthSection([*intro, *lines, *depth_lines, *group_lines], {"matched": data, "by_depth": depth_data,
                        "groups": group_data}, claims, verdicts, figures, setting)


def _settings(runs: list[EvalRecord]) -> dict[str, list[EvalRecord]]:
    out: dict[str, list[EvalRecord]] = {}
    for r in runs:
        out.setdefault(f"{frontier.architecture_label(r.sae)} {frontier.setting_label(r.sae)}", []).append(r)
    return out


def _by_depth(architectures: dict[str, list[EvalRecord]]) -> tuple[list[str], dict]:
    """Absorption per depth of the parent, per architecture and setting (seed means)."""
    depths = sorted({d.depth for runs in architectures.values() for r in runs for d in r.ground_truth.by_depth})
    if not depths:
        return [], {}
    lines = ["### Absorption by the parent's depth", "",
             "| SAE | L0 | " + " | ".join(f"depth {d}" for d in depths) + " | all |",
             "|---|---|" + "---|" * (len(depths) + 1)]
    data = {}
    for runs in architectures.values():
        for setting, rs in _settings(runs).items():
            cells = []
            for d in depths:
                values = [x.absorption for r in rs for x in r.ground_truth.by_depth if x.depth == d]
                cells.append(fmt(t_interval(values)) if values else "–")
            overall = [r.ground_truth.absorption for r in rs if r.ground_truth.absorption is not None]
            l0 = t_interval([r.l0 for r in rs])
            lines.append(f"| {setting} | {l0[0]:.1f} | " + " | ".join(cells) + f" | {fmt(t_interval(overall))} |")
            data[setting] = {"l0": l0, "cells": cells}
    return [*lines, ""], data


def _groups(hier_settings: dict[str, list[EvalRecord]]) -> tuple[list[str], dict]:
    """Which depths each group of the hierarchical SAEs matches (the paper's general-to-specific claim)."""
    if not hier_settings:
        return [], {}
    lines = ["### Hierarchical groups against the true forest", "",
             f"Per group: latents matching a true feature at |cos| >= {COSINE_BAR}, how many of those features lie "
             "outside the forest / at depth 0 (roots) / 1 / ..., the mean depth of those inside it, and their mean "
             "true firing rate (seed means).", "",
             "| SAE | group | matched | features by depth (outside, 0, 1, ...) | mean depth | mean firing rate |",
             "|---|---|---|---|---|---|"]
    data = {}
    for setting, runs in hier_settings.items():
        rows = []
        for k in range(len(runs[0].ground_truth.groups)):
            gs = [r.ground_truth.groups[k] for r in runs]
            counts = [sum(c) / len(gs) for c in zip(*(g.depth_counts for g in gs), strict=True)]
            depth = t_interval([g.mean_depth for g in gs if g.mean_depth is not None])
            rate = t_interval([g.mean_firing_rate for g in gs if g.mean_firing_rate is not None])
            matched = t_interval([g.matched for g in gs])
            lines.append(f"| {setting} | {k + 1} | {fmt(matched)} | {', '.join(f'{c:.1f}' for c in counts)} | "
                         f"{fmt(depth, 3)} | {fmt(rate, 3)} |")
            rows.append({"group": k + 1, "matched": matched, "depth_counts": counts, "mean_depth": depth,
                         "mean_firing_rate": rate})
        data[setting] = rows
    return [*lines, ""], data
