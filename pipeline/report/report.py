"""Writing REPORT_DIR/report.md, results.json and the plots from evaluated runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.evaluate.record import (
    HEADLINE_METRICS,
    SCALAR_METRICS,
    EvalRecord,
    StoreRecord,
    absorption_caveat,
    metric_names,
)
from pipeline.presets import PRESETS
from pipeline.report import frontier, paper, plots
from pipeline.report.claims import (
    DIRECTIONS,
    Findings,
    claims,
    judge,
    table_lines,
    write_readme_block,
)
from pipeline.report.collect import Compared, Group, by_architecture, compared, find_group, group_runs, load_evaluations
from pipeline.report.matched import matched_section
from pipeline.report.text import fmt, fmt_paper
from pipeline.report.truth import truth_section
from store.format import dataset_label
from store.provenance import provenance

PAPER_ARCHITECTURE, PAPER_LAYER, PAPER_D = "Gemma2ForCausalLM", 19, 2304
RESULTS_SCHEMA = 2
"""results.json's schema version: 2 added ``schema_version``, ``provenance`` and ``config``."""

TABLE_1_METRICS = metric_names("mse", "kl", "explained_variance", "active_features")
"""Table 1's rows, in the paper's order (paper.TABLE_1 holds its figures under the same names)."""
TABLE_1_LABELS = ("Training loss (MSE)", "KL divergence", "Explained variance", "Active features")
EXTRA_METRICS = metric_names("l0", "dead_features", "ce_clean", "ce_spliced", "ce_zero_ablated", "ce_recovered",
                             "explained_variance_normalised")
"""Rows below Table 1's that the paper does not report."""
EXTRA_LABELS = ("L0", "Dead features", "CE loss, clean", "CE loss, SAE spliced in", "CE loss, zero-ablated",
                "CE loss recovered", "Explained variance (normalised space)")
ABLATION_METRICS = metric_names("mse", "explained_variance", "kl", "active_features", "l0")
"""The columns of the ablation tables."""


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _n(group: Group | None) -> str:
    return f"n={len(group.runs)}" if group else "not run"


def dataset_name(s: StoreRecord) -> str:
    """The data set as the user named it (a file or folder, or a hub id with its config); a version-1 record knows
    only the loader's name and the files."""
    return s.dataset_label or dataset_label(None, s.data_files, s.dataset, s.dataset_config)


def _store_section(evals: list[EvalRecord]) -> tuple[list[str], bool]:
    s = evals[0].store
    paper_setting = (s.d_model == PAPER_D and s.layer == PAPER_LAYER and "gemma-2-2b" in s.model.lower()
                     and s.architecture == PAPER_ARCHITECTURE)
    lines = [
        "## Store",
        "",
        f"- model: `{s.model}`, layer {s.layer}, d_model {s.d_model}",
        f"- data: {dataset_name(s)}",
        f"- tokens in the store: {s.tokens_total:,}; held-out rows evaluated: "
        f"{s.heldout_rows[1] - s.heldout_rows[0]:,} (the last contexts, never trained on)",
        f"- contexts of {s.context_length} tokens, BOS {'stored' if s.include_bos else 'not stored'}",
        "",
    ]
    if not paper_setting:
        lines[2:2] = [
            f"> **This is not the paper's setting.** These runs use `{s.model}` (layer {s.layer}, d_model "
            f"{s.d_model}), not Gemma-2-2B layer 19 (d_model 2304). The paper's figures are shown beside ours "
            "for reference only; they are not expected to match.",
            "",
        ]
    return lines, paper_setting


def _table1(pair: Compared) -> tuple[list[str], dict]:
    base, hier = pair.base, pair.hier
    head = [
        "## Table 1",
        "",
        f"Ours at {pair.setting}: mean ± 95% CI (Student t) over seeds; baseline {_n(base)}, hierarchical "
        f"{_n(hier)}. Paper: {paper.SETTING}.",
        "",
        "| Metric | Baseline (ours) | Hierarchical (ours) | Baseline (paper) | Hierarchical (paper) |",
        "|---|---|---|---|---|",
    ]
    data: dict = {}
    for label, key in zip(TABLE_1_LABELS, TABLE_1_METRICS, strict=True):
        b = base.stat(key) if base else (float("nan"), float("nan"), 0)
        h = hier.stat(key) if hier else (float("nan"), float("nan"), 0)
        pb, ph = paper.TABLE_1[key]
        head.append(f"| {label} | {fmt(b)} | {fmt(h)} | {fmt_paper(pb)} | {fmt_paper(ph)} |")
        data[key] = {"baseline": b, "hier": h, "paper_baseline": pb, "paper_hier": ph}
    for label, key in zip(EXTRA_LABELS, EXTRA_METRICS, strict=True):
        b = base.stat(key) if base else (float("nan"), float("nan"), 0)
        h = hier.stat(key) if hier else (float("nan"), float("nan"), 0)
        head.append(f"| {label} | {fmt(b)} | {fmt(h)} | – | – |")
        data[key] = {"baseline": b, "hier": h}
    tb = base.training_seconds() if base else (float("nan"), float("nan"), 0)
    th = hier.training_seconds() if hier else (float("nan"), float("nan"), 0)
    stacked = any(r.train.stack_size > 1 for g in (base, hier) if g for r in g.runs)
    ratio = th[0] / tb[0] - 1 if tb[0] and not stacked else float("nan")
    if stacked:
        # A stack's members share one computation: their seconds are equal shares, and a ratio of them says nothing.
        head.append("| Training compute per SAE (s) | trained stacked | trained stacked | – | +15% |")
    else:
        head.append(f"| Training compute per SAE (s) | {fmt(tb)} | {fmt(th)} | – | +15% |")
    data["training_seconds"] = {"baseline": tb, "hier": th, "hier_vs_baseline": ratio, "stacked": stacked,
                                "paper_hier_vs_baseline": paper.TRAINING_TIME_CLAIM}
    head += [
        "",
        "MSE is the training objective's reconstruction term on held-out rows: squared error per token, summed "
        "over dimensions, in the SAE's normalised input space. KL is KL(clean ‖ spliced) of the next-token "
        "distribution per token with the SAE's reconstruction replacing the layer output; definitions in "
        "docs/metrics.md.",
        "",
    ]
    if not math.isnan(ratio):
        head.append(f"Hierarchical training took {ratio:+.0%} compute per SAE against the baseline "
                    f"(the paper: +15%).")
        head.append("")
    elif stacked:
        head.append("These SAEs were trained in stacks (one batched computation per shape), so their compute cannot "
                    "be told apart; train with `--no-stack` to compare the paper's +15% training-time claim.")
        head.append("")
    return head, data


def _directions(data: dict, paper_setting: bool) -> list[str]:
    """Table 1's directions, judged as the claims table judges them (:func:`claims.judge`)."""
    lines = ["## Does the paper's direction hold here?", "",
             "Hierarchical against baseline, on these runs (seed means and 95% intervals, judged as the claims "
             "table judges them):", ""]
    for key, claim, higher, _ in DIRECTIONS:
        (b, bh, _), (h, hh, _) = data[key]["baseline"], data[key]["hier"]
        if not (math.isnan(b) or math.isnan(h)):
            verdict, reason = judge((b, bh), (h, hh), higher)
            lines.append(f"- {claim}: {verdict}, {reason} ({fmt((h, hh))} vs {fmt((b, bh))})")
    if not paper_setting:
        lines += ["", "This answers the question for this store only, not for the paper's Gemma-2-2B setting."]
    return [*lines, ""]


def _ablations(groups: list[Group]) -> tuple[list[str], dict]:
    lines = ["## Ablations", ""]
    data: dict = {}
    cols = "| {} | MSE | Explained variance | KL | Active features | L0 | runs |"

    def row(label: str, g: Group | None, claim: str = "") -> str:
        if g is None:
            return f"| {label} | – | – | – | – | – | not run |" + (f" {claim} |" if claim else "")
        cells = [fmt(g.stat(k)) for k in ABLATION_METRICS]
        return f"| {label} | {' | '.join(cells)} | {len(g.runs)} |" + (f" {claim} |" if claim else "")

    k_groups = {k: find_group(groups, variant="hier", groups=k) for k in paper.ablation_axis("groups")}
    lines += [f"Group count K (hier, {paper.setting_text('groups')}). Paper: {paper.K_CLAIM}.", "",
              cols.format("K"), "|---|---|---|---|---|---|---|"]
    lines += [row(str(k), g) for k, g in k_groups.items()]
    g_groups = {gm: find_group(groups, variant="hier", gamma=gm) for gm in paper.ablation_axis("gamma")}
    lines += ["", f"Progression factor γ (hier, {paper.setting_text('gamma')}), with the paper's KL.", "",
              cols.format("γ") + " KL (paper) |", "|---|---|---|---|---|---|---|---|"]
    lines += [row(f"{gm:g}", g, fmt_paper(paper.GAMMA_KL[gm])) for gm, g in g_groups.items()]
    lams = paper.ablation_axis("l1")
    l_groups = {(v, lam): find_group(groups, variant=v, l1=lam) for v in ("baseline", "hier") for lam in lams}
    lines += ["", f"Base penalty λ. Paper: {paper.LAMBDA_CLAIM}.", "",
              cols.format("variant, λ"), "|---|---|---|---|---|---|---|"]
    lines += [row(f"{v}, {lam:g}", g) for (v, lam), g in l_groups.items()]
    base_lam, [lam] = paper.THE_SETTING.l1, paper.ABLATIONS["l1"]
    for v in ("baseline", "hier"):
        a, b = l_groups[(v, base_lam)], l_groups[(v, lam)]
        if a and b:
            change = b.stat("mse")[0] / a.stat("mse")[0] - 1
            lines.append(f"\n{v}: λ = {lam:g} changes held-out MSE by {change:+.0%} against λ = {base_lam:g} "
                         "(paper: +23%).")
            data[f"lambda_mse_change_{v}"] = change
    for name, gs in (("K", k_groups), ("gamma", g_groups), ("lambda", l_groups)):
        data[name] = {str(k): ({m: g.stat(m) for m in SCALAR_METRICS} if g else None) for k, g in gs.items()}
    return [*lines, ""], data


def _group_table(hier: Group | None) -> tuple[list[str], list]:
    if hier is None:
        return [], []
    rows = hier.groups_mean()
    lines = [
        "## Per-group analysis",
        "",
        f"{hier.label}, mean ± 95% CI over {len(hier.runs)} seed(s). Token rate: fraction of held-out tokens on "
        "which at least one feature of the group fires. Feature density: mean over the group's features of the "
        "fraction of tokens each fires on. Intensity: mean activation of the group's features when they fire.",
        "",
        "| Group | Features | Live | Active | Token rate | Feature density | Intensity |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['group']} | {r['features']} | {fmt(r['live'])} | {fmt(r['active'])} | "
                     f"{fmt(r['token_rate'], 3)} | {fmt(r['feature_density'], 3)} | {fmt(r['intensity'], 3)} |")
    lines += ["", "The paper's group analysis (activation rate and intensity):", "",
              "| Groups | Activation rate | Intensity |", "|---|---|---|"]
    for name, v in paper.GROUPS.items():
        lines.append(f"| {name} | {fmt_paper(v['activation_rate'])} | {fmt_paper(v['intensity'])} |")
    if len(rows) >= 4:
        early = [r for r in rows[:2]]
        late = [r for r in rows[-2:]]

        def avg(rs: list[dict], key: str) -> float:
            return sum(r[key][0] for r in rs) / len(rs)

        lines += ["", f"Ours, same grouping: early groups feature density {avg(early, 'feature_density'):.3f} "
                      f"(token rate {avg(early, 'token_rate'):.3f}), intensity {avg(early, 'intensity'):.3f}; late "
                      f"groups feature density {avg(late, 'feature_density'):.3f} (token rate "
                      f"{avg(late, 'token_rate'):.3f}), intensity {avg(late, 'intensity'):.3f}. The claims table "
                      "reads the paper's undefined activation rate as feature density."]
    return [*lines, ""], rows


def _absorption_caveats(evals: list[EvalRecord]) -> dict[str, str]:
    """Under the absorption panels: why they are not a verdict, when they are not."""
    caveat = absorption_caveat([e.absorption for e in evals if e.absorption is not None])
    if caveat is None:
        return {}
    return {key: f"not a verdict: {caveat[0]}" for key in ("absorption", "absorption_fraction")}


def _paper_code(groups: list[Group]) -> tuple[list[str], dict]:
    """The paper's code (preset paper-code: unsquared L2, no normalisation, no weight decay) beside the paper as
    written, where both were run."""
    preset = PRESETS["paper-code"]
    shape = {k: v for k, v in preset.sae.items() if k != "l1"}
    rows = []
    for setting, fields in (("as written", {}), ("paper-code", shape)):
        for variant in ("baseline", "hier"):
            rows.append((setting, variant, find_group(groups, variant=variant, **fields)))
    if not any(g for s, _, g in rows if s == "paper-code"):
        return [], {}
    lines = ["## The paper's code (`--preset paper-code`)", "",
             f"{preset.description}; beside the paper as written (squared error, layer-normed input, AdamW with "
             "weight decay 1e-4). The paper's baseline: 85 active features, explained variance 0.31.", "",
             "| Setting | SAE | Active features | Dead | L0 | Explained variance | KL | runs |",
             "|---|---|---|---|---|---|---|---|"]
    data: dict = {}
    for setting, variant, g in rows:
        if g is None:
            lines.append(f"| {setting} | {variant} | – | – | – | – | – | not run |")
            continue
        stats = {k: g.stat(k) for k in ("active_features", "dead_features", "l0", "explained_variance", "kl")}
        lines.append(f"| {setting} | {variant} | " + " | ".join(fmt(v) for v in stats.values()) +
                     f" | {len(g.runs)} |")
        data[f"{setting}/{variant}"] = stats
    code_base = data.get("paper-code/baseline")
    if code_base:
        active, ev = code_base["active_features"][0], code_base["explained_variance"][0]
        n = find_group(groups, variant="baseline", **shape).runs[0].n_latents
        # "Collapsed": at most a tenth of the latents active (the paper's 85 are 4% of 2304) and EV below 0.6.
        collapsed = active <= 0.1 * n and ev < 0.6
        lines += ["", "Does the paper-code baseline collapse to a few dozen live features with low explained variance, "
                      f"as the paper's 85 / 0.31 suggest? **{'Yes' if collapsed else 'No'}**: {active:.0f} active "
                      f"features of {n}, explained variance {ev:.3g}."]
        data["baseline_collapses"] = collapsed
    return [*lines, ""], data


def _split_stores(evals: list[EvalRecord]) -> tuple[list[EvalRecord], list[EvalRecord]]:
    """The runs on an LM's store and the runs on a synthetic store (at most one of each)."""
    synthetic = [e for e in evals if e.ground_truth is not None]
    lm = [e for e in evals if e.ground_truth is None]
    for runs, kind in ((lm, "an LM's store"), (synthetic, "a synthetic store")):
        if len({_store_key(e) for e in runs}) > 1:
            raise PipelineError(f"the runs come from more than one store ({kind} each): report at most one LM store "
                                "and one synthetic store together")
    return lm, synthetic


def _store_key(e: EvalRecord) -> tuple:
    s = e.store
    return s.model, s.layer, s.d_model, s.n_rows, s.dataset, s.synthetic_model


def write_report(run_paths: list[str], out: str | Path, readme: str | Path | None = None) -> Path:
    """The report of these runs in ``out``; with ``readme``, also rewrite that README's findings block. The runs
    may come from one LM store and one synthetic store: the paper's claims are checked on the first (on the
    synthetic one when there is no other), and ground truth adds the claims only it can test."""
    lm_evals, synthetic_evals = _split_stores(load_evaluations(run_paths))
    evals = lm_evals or synthetic_evals
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth = truth_section(synthetic_evals, out) if synthetic_evals else None
    groups = group_runs(evals)
    store_lines, paper_setting = _store_section(evals)
    pair = compared(groups)
    t1, t1_data = _table1(pair)
    abl, abl_data = _ablations(groups)
    base, hier = pair.base, pair.hier
    grp, grp_rows = _group_table(hier)
    architectures = by_architecture(evals)
    pair_labels = [frontier.architecture_label(g.sae) for g in (base, hier) if g is not None]
    matched_lines, matched_data, verdicts, curves, matched_pair = matched_section(architectures, frontier.METRICS,
                                                                          pair_labels)
    code_lines, code_data = _paper_code(groups)
    store = evals[0].store
    if lm_evals:
        data = Path(dataset_name(store)).name if store.data_files else dataset_name(store)
        setting = (f"On `{Path(store.model).name}` layer {store.layer} ({store.tokens_total:,} tokens of {data}; "
                   f"{len(evals)} SAEs, {len(architectures)} architecture(s)), the paper's claims at {pair.setting} "
                   "(means over seeds)")
    else:
        setting = (f"On the synthetic store `{store.model}`, the paper's claims at {pair.setting} where it was "
                   "run")
    made = provenance()
    findings = Findings(
        provenance=made, config={"runs": list(run_paths), "out": str(out)},
        setting=setting + (f"; {truth.setting}:" if truth else ":"),
        claims=[*claims(base, hier, matched_pair, [e.absorption for e in evals if e.absorption is not None],
                        lm=bool(lm_evals), setting=pair.setting), *(truth.claims if truth else [])],
        verdicts=[*verdicts, *(truth.verdicts if truth else [])])
    figures = [plots.training_curves(groups, out), plots.mse_vs_l0(architectures, out),
               plots.frontiers(curves, out, _absorption_caveats(evals)), *(truth.figures if truth else [])]
    if hier is not None:
        figures += [plots.group_density_histograms(hier, base, out), plots.live_per_group(groups, out)]
    per_run = ["## Every run", "",
               "| Run | MSE | Explained variance | L0 | Active | Dead | KL | CE recovered | Compute (s) |",
               "|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(evals, key=lambda e: e.name):
        cells = [fmt((_or_nan(e.metric(k)), float("nan"))) for k in HEADLINE_METRICS]
        per_run.append(f"| {e.name} | {' | '.join(cells)} | {e.train.sae_seconds:.0f} |")
    lines = [
        "# Hierarchical feature groups: our measurements beside the paper's",
        "",
        f"Generated from {len(evals)} evaluated runs ({len(groups)} configurations) by {made.describe()}.",
        "",
        *store_lines,
        "## The paper's claims",
        "",
        findings.setting,
        "",
        *table_lines(findings.claims),
        "",
        *t1,
        *_directions(t1_data, paper_setting),
        *matched_lines,
        *(truth.lines if truth else []),
        *code_lines,
        *grp,
        *abl,
        "## Figures",
        "",
        *[f"![{p.stem}]({p.name})" for p in figures],
        "",
        *per_run,
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    results = {
        "schema_version": RESULTS_SCHEMA,
        "provenance": made.to_dict(),
        "config": findings.config,
        "store": evals[0].store.to_dict(),
        "paper_setting": paper_setting,
        "table_1": t1_data,
        "ablations": abl_data,
        "groups": grp_rows,
        "findings": findings.to_dict(),
        "matched": matched_data,
        "ground_truth": truth.data if truth else None,
        "paper_code": code_data,
        "runs": [{k: v for k, v in e.to_dict().items() if not k.startswith("feature_")}
                 for e in [*lm_evals, *synthetic_evals]],
        "figures": [p.name for p in figures],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "claims.json").write_text(json.dumps(findings.to_dict(), indent=2, ensure_ascii=False))
    if readme is not None:
        write_readme_block(Path(readme), findings)
    return report
