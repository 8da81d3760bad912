"""The claims table: one row per claim of the paper, its figure, ours on the store at hand, and a verdict.

The rows are typed (:class:`Claim`) and written into the report as Markdown and JSON. README.md's "What the demo
found" is this table, rendered by :func:`render_findings` into a marked block (:func:`write_readme_block`) from the
record embedded beside it, so a test can re-render it and catch a hand edit.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.evaluate.record import DENSE_L0, absorption_caveat
from pipeline.report import paper
from pipeline.report.collect import Group
from pipeline.report.frontier import METRIC, Matched
from pipeline.report.text import fmt
from store.provenance import Provenance

VERDICTS = ("held", "not held", "not testable here")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, checked on the store at hand."""

    claim: str
    """What the paper claims, in a few words."""
    paper: str
    """The paper's figure."""
    ours: str
    """Ours on this store (means over seeds, 95% CI where there are several)."""
    verdict: str
    """held, not held, or not testable here."""
    reason: str
    """Why: the comparison made, or what is missing."""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


CLAIMS_SCHEMA = 2
"""claims.json's schema version: 2 added ``schema_version``, ``provenance`` and ``config``."""
READABLE_CLAIMS_SCHEMAS = (1, 2)


@dataclass(frozen=True)
class Findings:
    """What a report found (claims.json, and the README's findings block): the setting it ran on, the claims table
    and the matched-L0 verdict lines."""

    setting: str
    """The store, runs and setting the claims were checked on, in prose."""
    claims: list[Claim]
    """One row per claim of the paper."""
    verdicts: list[str] = field(default_factory=list)
    """The matched-L0 verdict lines."""
    schema_version: int = CLAIMS_SCHEMA
    """This record's schema version; version 1 (before it was recorded) carried no provenance or config."""
    provenance: Provenance | None = None
    """The tool's version and commit and the libraries' versions that wrote the report, and when."""
    config: dict[str, Any] | None = None
    """What the report was asked for: the runs it read (``runs``) and where it wrote (``out``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Findings:
        version = obj.get("schema_version", 1)
        if version not in READABLE_CLAIMS_SCHEMAS:
            raise PipelineError(f"the claims record has schema version {version}; this version of the tool reads "
                                f"{', '.join(map(str, READABLE_CLAIMS_SCHEMAS))}: use a newer release, or rerun "
                                "`pipeline report`")
        prov = obj.get("provenance")
        return cls(setting=obj["setting"], claims=[Claim(**c) for c in obj["claims"]],
                   verdicts=list(obj.get("verdicts", [])), schema_version=version,
                   provenance=None if prov is None else Provenance.from_dict(prov), config=obj.get("config"))


def _fmt(mean: float, half: float = float("nan")) -> str:
    return fmt((mean, half))


def _stat(group: Group | None, metric: str) -> tuple[float, float]:
    if group is None:
        return float("nan"), float("nan")
    mean, half, _ = group.stat(metric)
    return mean, half


def judge(base: tuple[float, float], hier: tuple[float, float], higher_is_better: bool) -> tuple[str, str]:
    """Hierarchical against baseline on one metric, each as (seed mean, 95% half-width): held when hier is better by
    more than the two intervals together (or, with one seed each, better at all). The verdict and why; the claims
    table and the report's direction lines both say what this says."""
    (b, bh), (h, hh) = base, hier
    better = h > b if higher_is_better else h < b
    margin = abs(h - b)
    spread = (0 if math.isnan(bh) else bh) + (0 if math.isnan(hh) else hh)
    if better and margin > spread:
        return "held", "hier better beyond the seed intervals"
    if better:
        return "not held", "hier better only within the seed intervals"
    if margin == 0:
        return "not held", "no difference"
    if margin > spread:
        return "not held", "hier worse beyond the seed intervals"
    return "not held", "hier worse, within the seed intervals"


def _compare(claim: str, paper_fig: str, base: Group | None, hier: Group | None, metric: str,
             higher_is_better: bool, matched: list[Matched] | None = None,
             setting: str = "the paper's setting") -> Claim:
    """Hierarchical against baseline at ``setting`` (:func:`judge`), with their L0s and the matched-L0 winners."""
    (b, bh), (h, hh) = _stat(base, metric), _stat(hier, metric)
    if math.isnan(b) or math.isnan(h):
        missing = [name for name, g in (("baseline", base), ("hier", hier)) if g is None]
        why = (f"no {' and no '.join(missing)} run at {setting}" if missing
               else f"{metric} not measured (evaluated without it)")
        return Claim(claim, paper_fig, "–", "not testable here", why)
    ours = f"hier {_fmt(h, hh)} vs baseline {_fmt(b, bh)}"
    verdict, reason = judge((b, bh), (h, hh), higher_is_better)
    lb, lh = _stat(base, "l0")[0], _stat(hier, "l0")[0]
    if not (math.isnan(lb) or math.isnan(lh)):
        reason += f", at L0 {lh:.0f} vs {lb:.0f} (same λ, not the same sparsity)"
    wins = [f"{m.l0:g} {m.winner}" for m in matched or [] if m.winner is not None]
    if wins:
        reason += "; better at matched L0: " + ", ".join(wins)
    elif matched is not None:
        reason += "; no L0 covered by both frontiers"
    return Claim(claim, paper_fig, ours, verdict, reason)


def _groups_claims(hier: Group | None) -> list[Claim]:
    early_p, late_p = paper.GROUPS["early (groups 1-2)"], paper.GROUPS["late (groups 4-5)"]
    out = []
    # The paper leaves "activation rate" undefined. Its late groups' 0.12 reads as a per-feature firing rate
    # (feature density): the rate at which any of a group's hundreds of features fires (token_rate) is near 1 for
    # any SAE of useful L0. The verdict reads feature density; the reason gives the token rate beside it.
    for key, word, paper_key, falls in (("feature_density", "activation rate falls", "activation_rate", True),
                                        ("intensity", "intensity rises", "intensity", False)):
        paper_fig = f"early {early_p[paper_key][0]:g}, late {late_p[paper_key][0]:g}"
        claim = f"early→late groups: {word}"
        if hier is None or len(hier.runs[0].groups) < 4:
            out.append(Claim(claim, paper_fig, "–", "not testable here",
                             "no hierarchical SAE with at least 4 groups"))
            continue
        rows = hier.groups_mean()
        early = sum(r[key][0] for r in rows[:2]) / 2
        late = sum(r[key][0] for r in rows[-2:]) / 2
        held = late < early if falls else late > early
        why = f"{hier.label}, groups 1-2 against the last two, seed means"
        if key == "feature_density":
            tr_early = sum(r["token_rate"][0] for r in rows[:2]) / 2
            tr_late = sum(r["token_rate"][0] for r in rows[-2:]) / 2
            why = (f"feature density (each feature's firing rate; the paper does not define its rate); the rate "
                   f"at which any feature of the group fires: early {tr_early:.3g}, late {tr_late:.3g}; " + why)
        out.append(Claim(claim, paper_fig, f"early {early:.3g}, late {late:.3g}", "held" if held else "not held", why))
    return out


def _time_claim(base: Group | None, hier: Group | None, setting: str = "the paper's setting") -> Claim:
    claim, paper_fig = "training-time overhead of hier", f"+{paper.TRAINING_TIME_CLAIM:.0%}"
    if base is None or hier is None:
        return Claim(claim, paper_fig, "–", "not testable here", f"needs both SAEs at {setting}")
    if any(r.train.stack_size > 1 for g in (base, hier) for r in g.runs):
        return Claim(claim, paper_fig, "trained stacked", "not testable here",
                     "stacked SAEs share one computation; train with --no-stack to time them apart")
    ratio = hier.training_seconds()[0] / base.training_seconds()[0] - 1
    # Both train the same ReLU SAE with a different penalty vector: any overhead is the penalty's arithmetic.
    held = abs(ratio - paper.TRAINING_TIME_CLAIM) <= 0.10
    return Claim(claim, paper_fig, f"{ratio:+.0%}", "held" if held else "not held",
                 "within 10 points of +15%" if held else "more than 10 points from +15% (seed-mean compute)")


def _absorption_claim(base: Group | None, hier: Group | None, matched: list[Matched] | None,
                      measured: list[Any], setting: str = "the paper's setting") -> Claim:
    claim, paper_fig = "less absorption of the LM's first letters (the title's claim)", "not measured in the paper"
    read = METRIC["absorption"].read
    if (caveat := absorption_caveat(measured)) is not None:
        return Claim(claim, paper_fig, caveat[0], "not testable here", caveat[1])

    def values(g: Group | None) -> list[float]:
        return [v for v in (read(r) for r in g.runs) if v is not None] if g else []

    vb, vh = values(base), values(hier)
    if matched and any(m.winner for m in matched):
        wins = [(m.l0, m.winner) for m in matched if m.winner]
        hier_wins = sum(1 for _, w in wins if w.startswith("hier"))
        ours = ", ".join(f"L0 {l0:g}: {w} lower" for l0, w in wins)
        verdict = "held" if hier_wins == len(wins) else "not held"
        return Claim(claim, paper_fig, ours, verdict, "full-absorption rate at matched L0 on the frontiers")
    if not vb or not vh:
        scored = [r for g in (base, hier) if g for r in g.runs if getattr(r, "absorption", None) is not None]
        why = ("absorption was measured but no letter's probe qualified: use more words (--absorption-words) or "
               "another layer" if scored else
               "absorption not measured on both SAEs: run `pipeline evaluate --absorption`")
        return Claim(claim, paper_fig, "–", "not testable here", why)
    lb, lh = _stat(base, "l0")[0], _stat(hier, "l0")[0]
    b, h = sum(vb) / len(vb), sum(vh) / len(vh)
    ours = f"hier {h:.3g} vs baseline {b:.3g} at L0 {lh:.0f} vs {lb:.0f}"
    if max(lb, lh) > DENSE_L0:
        return Claim(claim, paper_fig, ours, "not testable here",
                     f"L0 above {DENSE_L0}: absorption is meaningless for dense SAEs")
    return Claim(claim, paper_fig, ours, "held" if h < b else "not held",
                 f"full-absorption rate at {setting}, not at matched L0")


def claims(base: Group | None, hier: Group | None, matched: dict[str, list[Matched]],
           absorption: list[Any] = (), lm: bool = True, setting: str = "the paper's setting") -> list[Claim]:
    """The paper's claims checked on these runs: ``base`` and ``hier`` at ``setting`` (the paper's, or a preset's
    where only it was run). ``matched``: per frontier metric key, the matched-L0 comparison of the baseline and
    hierarchical frontiers (empty where there is none). ``lm``: the runs are on an LM's store (else a synthetic one,
    where absorption is a ground-truth claim: :func:`truth_claims`)."""
    t1 = paper.TABLE_1

    def fig(key: str) -> str:
        (b, _), (h, _) = t1[key]
        return f"hier {h:,g} vs baseline {b:,g}"

    if not lm and base is None and hier is None:
        return []  # a sweep on a synthetic store: no run at the paper's setting, its claims are ground truth's
    return [
        *(_compare(claim, fig(key), base, hier, key, higher, matched.get(key) if at_matched else None, setting)
          for key, claim, higher, at_matched in DIRECTIONS),
        *_groups_claims(hier),
        _time_claim(base, hier, setting),
        *([_absorption_claim(base, hier, matched.get("absorption"), list(absorption), setting)] if lm else []),
    ]


DIRECTIONS = (("active_features", "more active features", True, False),
              ("mse", "lower reconstruction loss (MSE)", False, True),
              ("explained_variance", "higher explained variance", True, True),
              ("kl", "lower KL divergence", False, True))
"""Table 1's claims, each a direction of hier against baseline: (metric, claim, higher is better, whether the
frontiers' matched-L0 comparison is quoted beside it)."""


# -- the claims on ground truth (a synthetic store's runs) ---------------------------------------------------------

TITLE_CLAIM = "less absorption on the true hierarchy (the title's claim)"


def _matched_claim(claim: str, matched: list[Matched] | None, labels: tuple[str, str], lower_is_better: bool,
                   what: str) -> Claim:
    """Hier against baseline at every L0 both frontiers cover: held when hier is better beyond the two seed intervals
    at each of them."""
    paper_fig = "not measured in the paper"
    base, hier = labels
    rows = [m for m in matched or [] if all(c.value is not None for c in m.cells)]
    if not rows:
        return Claim(claim, paper_fig, "–", "not testable here",
                     f"no L0 lies inside both {base}'s and {hier}'s measured {what} frontiers: widen the sweep "
                     "(--sweep-l1) so that their L0 ranges overlap")
    if any(math.isnan(c.half) for m in rows for c in m.cells):
        return Claim(claim, paper_fig, "one seed at a setting", "not testable here",
                     "a setting was measured on one seed only, which gives no interval (run with one seed, or its "
                     "other seeds scored no pair): sweep with --seeds 3, or train longer")
    parts, outcomes = [], []
    for m in rows:
        cell = {c.architecture: c for c in m.cells}
        h, b = cell[hier], cell[base]
        parts.append(f"L0 {m.l0:g}: hier {_fmt(h.value, h.half)} vs baseline {_fmt(b.value, b.half)}")
        better = h.value < b.value if lower_is_better else h.value > b.value
        apart = abs(h.value - b.value) > h.half + b.half
        outcomes.append(("better" if better else "worse" if h.value != b.value else "equal", apart))
    held = all(o == "better" and apart for o, apart in outcomes)
    words = [f"L0 {m.l0:g}: hier {o}" + (" beyond the seed intervals" if apart else ", within the seed intervals")
             for m, (o, apart) in zip(rows, outcomes, strict=True)]
    return Claim(claim, paper_fig, "; ".join(parts), "held" if held else "not held",
                 f"{what} at matched L0 ({hier} against {base}, seed means and 95% intervals): " + "; ".join(words))


def group_depth_correlation(groups: list[Any]) -> float | None:
    """Spearman's rank correlation between a latent's group (1 first) and the forest depth of the true feature it
    matches, over the latents that match one inside the forest (from each group's ``depth_counts``); None with fewer
    than 3 such latents or no spread in either."""
    import numpy as np
    from scipy.stats import spearmanr

    pairs = [(g.group, depth) for g in groups for depth, n in enumerate(g.depth_counts[1:]) for _ in range(n)]
    if len(pairs) < 3:
        return None
    x, y = np.array(pairs, dtype=float).T
    if x.std() == 0 or y.std() == 0:
        return None
    return float(spearmanr(x, y).statistic)


def _depth_claim(hier_settings: dict[str, list[Any]]) -> Claim:
    """Later groups on deeper (more specific) true features: per hier setting, the rank correlation between group
    and matched depth, over seeds."""
    from pipeline.evaluate.metrics import t_interval
    from pipeline.evaluate.truth.metrics import COSINE_BAR

    claim, paper_fig = "later groups encode more specific true features", "claimed, not measured"
    parts, held = [], []
    for setting, runs in hier_settings.items():
        rhos = [rho for r in runs if (rho := group_depth_correlation(r.ground_truth.groups)) is not None]
        if not rhos:
            continue
        mean, half, n = t_interval(rhos)
        l0 = t_interval([r.l0 for r in runs])[0]
        held.append(n > 1 and mean - half > 0)
        parts.append(f"{setting} (L0 {l0:.0f}): ρ = {_fmt(mean, half)}")
    if not parts:
        return Claim(claim, paper_fig, "–", "not testable here",
                     f"no hierarchical SAE whose latents match true features in the forest (|cos| >= {COSINE_BAR})")
    reason = (f"Spearman's ρ between a latent's group and the forest depth of the true feature it matches (|cos| >= "
              f"{COSINE_BAR}; 0 = roots), seed means and 95% intervals: held when ρ > 0 beyond the interval at every "
              "setting (with several seeds)")
    return Claim(claim, paper_fig, "; ".join(parts), "held" if all(held) else "not held", reason)


def truth_claims(pair: dict[str, list[Matched]], labels: tuple[str, str] | None,
                 hier_settings: dict[str, list[Any]]) -> list[Claim]:
    """The paper's claims that ground truth can test: less absorption (measured on the true forest), more live
    unique features (the paper's own meaning of absorption), and groups from general to specific."""
    if labels is None:
        why = "needs a baseline and a hierarchical SAE swept on the synthetic store"
        return [Claim(c, "not measured in the paper", "–", "not testable here", why)
                for c in (TITLE_CLAIM, "more live, unique true features")] + [_depth_claim(hier_settings)]
    return [
        _matched_claim(TITLE_CLAIM, pair.get("truth_absorption"), labels, True, "absorption on the true hierarchy"),
        _matched_claim("more live, unique true features", pair.get("unique_features"), labels, False,
                       "live, unique true features"),
        _depth_claim(hier_settings),
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table_lines(rows: list[Claim]) -> list[str]:
    lines = ["| Claim | Paper | Ours | Verdict | Why |", "|---|---|---|---|---|"]
    lines += [f"| {_cell(c.claim)} | {_cell(c.paper)} | {_cell(c.ours)} | **{c.verdict}** | {_cell(c.reason)} |"
              for c in rows]
    return lines


def render_findings(findings: Findings) -> str:
    """The README block's visible text."""
    lines = [findings.setting, *(["", *table_lines(findings.claims)] if findings.claims else [])]
    if findings.verdicts:
        lines += ["", "At matched sparsity (each architecture's frontier interpolated in log L0; "
                      "`pipeline report` draws them):", ""]
        lines += [f"- {v}" for v in findings.verdicts]
    return "\n".join(lines)


BEGIN, END = "<!-- findings:begin (generated by `pipeline report --readme`; do not edit) -->", "<!-- findings:end -->"
DATA = re.compile(r"<!-- findings-data: (.*?) -->")


def readme_block(findings: Findings) -> str:
    # "--" may not appear inside an HTML comment: JSON spells the second hyphen as an escape instead.
    data = json.dumps(findings.to_dict(), ensure_ascii=False, separators=(",", ":")).replace("--", "-\\u002d")
    return f"{BEGIN}\n<!-- findings-data: {data} -->\n{render_findings(findings)}\n{END}"


def read_readme_block(text: str) -> tuple[Findings, str]:
    """The findings a README's block was generated from, and the block's visible text."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise PipelineError("the README has no findings block: add the two marker lines "
                            f"{BEGIN!r} and {END!r} where it should go")
    block = text[start + len(BEGIN):stop].strip("\n")
    m = DATA.search(block)
    if m is None:
        raise PipelineError("the README's findings block has no data line: rerun `pipeline report --readme`")
    findings = Findings.from_dict(json.loads(m.group(1)))
    return findings, block[m.end():].strip("\n")


def write_readme_block(readme: Path, findings: Findings) -> None:
    """Rewrite the README's findings block (between its markers) from ``findings``; the rest stays as it is."""
    text = readme.read_text()
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise PipelineError(f"{readme} has no findings block: add the two marker lines {BEGIN!r} and {END!r}")
    readme.write_text(text[:start] + readme_block(findings) + text[stop + len(END):])
