"""The report's figures (PNG, matplotlib's non-interactive Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np

from fit.runs import RunDir
from pipeline.report.collect import Group, is_paper_setting, paper_setting
from pipeline.report.frontier import METRICS, Metric, Point, architecture_label

COLORS = {"baseline": "#4C72B0", "hier": "#DD8452"}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _color(group: Group, i: int) -> str:
    # The paper's two SAEs keep their colours in every figure; the paper has no setting of the other architectures
    # (TopK's default k is ours, not a paper's), so they take the palette.
    if group.sae["variant"] in COLORS and is_paper_setting(group):
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


def _log_l0_axis(ax: plt.Axes) -> None:
    """A log L0 axis labelled in plain numbers (10, 20, 30, 50, ...), readable over a narrow range too."""
    ax.set_xscale("log")
    plain = mticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_locator(mticker.LogLocator(subs=(2.0, 3.0, 5.0)))
    ax.xaxis.set_minor_formatter(plain)
    ax.grid(alpha=0.3, which="both")


def architecture_colors(labels: list[str]) -> dict[str, str]:
    """One colour per architecture, the paper's two in their usual colours."""
    paper = {architecture_label(paper_setting(v)): COLORS[v] for v in COLORS}
    others = [label for label in labels if label not in paper]
    cmap = plt.get_cmap("tab10")
    return {label: paper.get(label) or cmap((2 + others.index(label)) % 10) for label in labels}


def mse_vs_l0(architectures: dict[str, list], out: Path) -> Path:
    """Every run of the pass, coloured by architecture, each architecture's sparsity settings marked."""
    colors = architecture_colors(list(architectures))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, runs in architectures.items():
        ax.scatter([r.l0 for r in runs], [r.mse for r in runs], color=colors[label], label=f"{label} ({len(runs)})",
                   s=36, edgecolor="black", linewidth=0.4)
    _log_l0_axis(ax)
    ax.set_xlabel("L0 (active latents per held-out token, log scale)")
    ax.set_ylabel("MSE (held-out, normalised space)")
    ax.set_title("reconstruction against sparsity, every run, by architecture (runs)", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, out / "mse_vs_l0.png")


def frontiers(curves: dict[str, dict[str, list[Point]]], out: Path, caveats: dict[str, str] | None = None,
              metrics: tuple[Metric, ...] = METRICS, name: str = "frontiers.png") -> Path:
    """One panel per metric: each architecture's frontier (seed means, 95% CI bars, log L0); ``caveats`` (per
    metric key) go under a panel's title, so that a plot read alone says when it is not a verdict."""
    metrics = [m for m in metrics if any(curves.get(m.key, {}).values())]
    labels = list(dict.fromkeys(label for m in metrics for label in curves[m.key]))
    colors = architecture_colors(labels)
    cols = 3 if len(metrics) > 4 else min(2, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for label, pts in curves[metric.key].items():
            if not pts:
                continue
            x = [p.l0 for p in pts]
            y = [p.value for p in pts]
            yerr = [0 if np.isnan(p.half) else p.half for p in pts]
            xerr = [0 if np.isnan(p.l0_half) else p.l0_half for p in pts]
            ax.errorbar(x, y, yerr=yerr, xerr=xerr, color=colors[label], marker="o", ms=4, lw=1.3, capsize=2,
                        label=label)
        _log_l0_axis(ax)
        ax.set_xlabel("L0 (log scale)")
        title = f"{metric.title} ({'lower' if metric.lower_is_better else 'higher'} is better)"
        if caveats and metric.key in caveats:
            title += f"\n{caveats[metric.key]}"
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("frontiers: seed means and 95% CIs per sparsity setting", fontsize=10)
    return _save(fig, out / name)
