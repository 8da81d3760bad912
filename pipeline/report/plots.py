"""The report's figures (PNG, matplotlib's non-interactive Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fit.runs import RunDir
from pipeline.report.collect import Group, is_paper_setting

COLORS = {"baseline": "#4C72B0", "hier": "#DD8452"}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _color(group: Group, i: int) -> str:
    if is_paper_setting(group):
        return COLORS[group.sae["variant"]]
    return plt.get_cmap("tab10")(2 + i % 8)


def training_curves(groups: list[Group], out: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, g in enumerate(groups):
        for j, run in enumerate(g.runs):
            log = RunDir(Path(run.run_dir)).read_metrics()
            steps = [r["step"] for r in log]
            kw = {"color": _color(g, i), "alpha": 0.85, "lw": 1.2, "label": g.label if j == 0 else None}
            axes[0].plot(steps, [r["recon"] for r in log], **kw)
            axes[1].plot(steps, [r["l0"] for r in log], **kw)
            axes[2].plot(steps, [r["live"] for r in log], **kw)
    for ax, title in zip(axes, ("reconstruction loss (MSE, normalised space)", "L0 (active latents per token)",
                                "live latents (fired in the log window)"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    return _save(fig, out / "training_curves.png")


def group_density_histograms(hier: Group, baseline: Group | None, out: Path) -> Path:
    """Feature densities (log10 of the fraction of held-out tokens a feature fires on), per group."""
    run = hier.runs[0]
    density = np.asarray(run.feature_density)
    bounds = run.group_bounds
    n_groups = len(bounds)
    cols = n_groups + (1 if baseline is not None else 0)
    fig, axes = plt.subplots(1, cols, figsize=(3.0 * cols, 3.2), sharey=True)
    # The x range follows the live features' densities; dead features are counted in the titles.
    live = np.concatenate([density[density > 0]] + ([np.asarray(baseline.runs[0].feature_density)]
                                                    if baseline is not None else []))
    live = live[live > 0]
    lo = max(-6.0, np.floor(np.log10(live.min()) * 2) / 2) if len(live) else -6.0
    bins = np.linspace(lo, 0, 31)
    floor = 10**lo
    for g, (a, b) in enumerate(bounds):
        d = np.clip(density[a:b], floor, None)
        axes[g].hist(np.log10(d), bins=bins, color=COLORS["hier"], alpha=0.85)
        dead = int((density[a:b] == 0).sum())
        axes[g].set_title(f"hier group {g + 1}\n({b - a} features, {dead} dead)", fontsize=9)
        axes[g].set_xlabel("log10 feature density")
    if baseline is not None:
        d = np.asarray(baseline.runs[0].feature_density)
        axes[-1].hist(np.log10(np.clip(d, floor, None)), bins=bins, color=COLORS["baseline"], alpha=0.85)
        axes[-1].set_title(f"baseline\n({len(d)} features, {int((d == 0).sum())} dead)", fontsize=9)
        axes[-1].set_xlabel("log10 feature density")
    axes[0].set_ylabel("features")
    fig.suptitle(f"{hier.label}, seed {run.sae['seed']}: feature densities on held-out tokens", fontsize=10)
    return _save(fig, out / "group_density_histograms.png")


def live_per_group(groups: list[Group], out: Path) -> Path:
    hier = [g for g in groups if g.sae["variant"] == "hier"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(len(hier), 1)
    for i, g in enumerate(hier):
        rows = g.groups_mean()
        x = np.arange(len(rows)) + i * width
        means = [r["live"][0] / r["features"] for r in rows]
        errs = [0 if np.isnan(r["live"][1]) else r["live"][1] / r["features"] for r in rows]
        ax.bar(x, means, width, yerr=errs, label=f"{g.label} (n={len(g.runs)})", color=_color(g, i), capsize=2)
    ax.set_xlabel("group (penalty grows to the right)")
    ax.set_ylabel("fraction of the group's features live")
    ax.set_ylim(0, 1.05)
    n_groups = max((len(g.runs[0].groups) for g in hier), default=0)
    ax.set_xticks(np.arange(n_groups))
    ax.set_xticklabels([str(i + 1) for i in range(n_groups)])
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / "live_features_per_group.png")


def mse_vs_l0(groups: list[Group], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, g in enumerate(groups):
        ax.scatter([r.l0 for r in g.runs], [r.mse for r in g.runs], color=_color(g, i), label=g.label,
                   s=36, edgecolor="black", linewidth=0.4)
    ax.set_xlabel("L0 (active latents per held-out token)")
    ax.set_ylabel("MSE (held-out, normalised space)")
    ax.set_title("reconstruction against sparsity, every run", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "mse_vs_l0.png")
