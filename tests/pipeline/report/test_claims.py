"""The claims table: verdicts on constructed runs, and README's findings block generated from the typed record."""

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.evaluate.record import GroupStats
from pipeline.report import claims as cl
from pipeline.report.collect import compared, find_group, group_runs

README = Path(__file__).resolve().parents[3] / "README.md"


def five_groups(rates, intensities):
    return [GroupStats(group=g + 1, features=2, live=2, active=2, token_rate=r, feature_density=r, intensity=i)
            for g, (r, i) in enumerate(zip(rates, intensities, strict=True))]


def test_verdicts_follow_the_figures(make_run):
    run = make_run
    rates, intensities = [0.9, 0.8, 0.5, 0.2, 0.1], [0.5, 0.5, 0.6, 0.4, 0.3]
    evals = [run("baseline", 500, 3.0 + s * 0.01, seed=s, seconds=10.0, explained_variance=0.9)
             for s in range(3)]
    evals += [run("hier", 300, 5.0 + s * 0.01, seed=s, seconds=11.5, explained_variance=0.8,
                  groups=five_groups(rates, intensities)) for s in range(3)]
    groups = group_runs(evals)
    rows = {c.claim: c for c in cl.claims(find_group(groups, variant="baseline"), find_group(groups, variant="hier"),
                                          {})}
    mse = rows["lower reconstruction loss (MSE)"]
    assert mse.verdict == "not held" and mse.reason.startswith("hier worse beyond the seed intervals")
    assert "L0 300 vs 500" in mse.reason
    assert rows["higher explained variance"].verdict == "not held"
    assert rows["lower KL divergence"].verdict == "not testable here"  # evaluated without the LM
    assert rows["early→late groups: activation rate falls"].verdict == "held"  # 0.85 -> 0.15
    assert rows["early→late groups: intensity rises"].verdict == "not held"  # 0.5 -> 0.35
    time = rows["training-time overhead of hier"]
    assert (time.ours, time.verdict) == ("+15%", "held")
    assert rows["less absorption of the LM's first letters (the title's claim)"].verdict == "not testable here"
    assert len(rows) == 8 and {c.verdict for c in rows.values()} <= set(cl.VERDICTS)
    with pytest.raises(ValueError, match="verdict"):
        cl.Claim("c", "p", "o", "maybe", "r")


def test_equal_figures_are_no_difference_and_a_small_loss_is_within_the_intervals(make_run):
    evals = [make_run("baseline", 500, 3.0 + s * 0.1, seed=s, active_features=600 + s) for s in range(3)]
    evals += [make_run("hier", 300, 3.05 + s * 0.1, seed=s, active_features=600 + s) for s in range(3)]
    groups = group_runs(evals)
    rows = {c.claim: c for c in cl.claims(find_group(groups, variant="baseline"), find_group(groups, variant="hier"),
                                          {})}
    active = rows["more active features"]
    assert (active.verdict, active.reason.split(",")[0]) == ("not held", "no difference")
    assert rows["lower reconstruction loss (MSE)"].reason.startswith("hier worse, within the seed intervals")


def test_the_readme_block_is_rewritten_between_its_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n\n{cl.BEGIN}\nold hand-written text\n{cl.END}\n\nafter\n")
    findings = cl.Findings(setting="On `m` layer 2:", claims=[cl.Claim("c --x", "1", "2", "held", "why | not")],
                           verdicts=["MSE: L0 20: topk"])
    cl.write_readme_block(readme, findings)
    text = readme.read_text()
    assert text.startswith("# T\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old hand-written" not in text
    assert "| c --x | 1 | 2 | **held** | why \\| not |" in text and "- MSE: L0 20: topk" in text
    data_line = next(line for line in text.splitlines() if line.startswith("<!-- findings-data:"))
    assert "--" not in data_line[len("<!-- findings-data:"):-len("-->")]  # an HTML comment may not hold "--"
    assert cl.read_readme_block(text)[0] == findings
    cl.write_readme_block(readme, findings)
    assert readme.read_text() == text  # the same findings give the same README
    (tmp_path / "bare.md").write_text("# no block\n")
    with pytest.raises(PipelineError, match="no findings block"):
        cl.write_readme_block(tmp_path / "bare.md", findings)


def test_the_committed_readme_block_is_generated_not_hand_edited():
    """README's "What the demo found" block must be exactly what its embedded record renders to: `pipeline report
    --readme README.md` (make demo) writes both; an edit by hand to the visible text breaks the equality."""
    findings, visible = cl.read_readme_block(README.read_text())
    assert visible == cl.render_findings(findings)


def test_absorption_on_too_few_qualifying_letters_is_not_testable(make_run, make_thin_absorption):
    """A matched-L0 winner on a handful of letters' probes is no test of the title's claim (SAEBench refuses
    below 20 letters), whatever the frontiers say."""
    from pipeline.report.frontier import Cell, Matched

    thin = make_thin_absorption()
    matched = [Matched(20.0, [Cell("baseline", 0.1, float("nan")), Cell("hier", 0.2, float("nan"))], "baseline",
                       False)]
    groups = group_runs([make_run("baseline", 20, 3.0, seed=0), make_run("hier", 20, 3.0, seed=0)])
    base, hier = find_group(groups, variant="baseline"), find_group(groups, variant="hier")
    row = cl._absorption_claim(base, hier, matched, [thin])
    assert row.verdict == "not testable here" and "fewer than the 20 letters" in row.reason
    assert cl._absorption_claim(base, hier, matched, []).verdict == "not held"  # enough letters: the frontier decides
    # enough letters, but main latents that do not predict them: a missing feature, not absorption
    from pipeline.evaluate.record import AbsorptionLetter

    letter = AbsorptionLetter(letter="a", test_words=10, probe_f1=0.7, probe_true_positives=8, main_latents=[3],
                              main_latents_f1=0.05, full_absorptions=8, full_absorption_rate=1.0,
                              absorption_fraction=0.0)
    featureless = dataclasses.replace(thin, enough_letters=True, letters=[letter], mean_main_latents_f1=0.05)
    row = cl._absorption_claim(base, hier, matched, [featureless])
    assert row.verdict == "not testable here" and "no first-letter latents" in row.reason


def test_the_activation_rate_claim_reads_feature_density_not_the_saturated_token_rate(make_run):
    """A dense hier SAE: some feature of every group fires on every token (token rate 1), while each feature's
    own firing rate falls from early to late groups, as the paper describes."""
    densities = [0.9, 0.7, 0.4, 0.2, 0.1]
    groups = [GroupStats(group=g + 1, features=2, live=2, active=2, token_rate=1.0, feature_density=d,
                         intensity=0.5) for g, d in enumerate(densities)]
    evals = [make_run("hier", 300, 5.0, seed=s, groups=groups) for s in range(2)]
    hier = find_group(group_runs(evals), variant="hier")
    rate = {c.claim: c for c in cl.claims(None, hier, {})}["early→late groups: activation rate falls"]
    assert (rate.verdict, rate.ours) == ("held", "early 0.8, late 0.15")
    assert "early 1, late 1" in rate.reason and "feature density" in rate.reason


def test_the_direction_lines_say_what_the_claims_table_says(make_run, tmp_path):
    """633.3 against 633 active features, within the seed intervals: the claims table's "not held" is the direction
    line's too (it said "yes (633.3 vs 633)" beside it)."""
    from pipeline.report.report import write_report

    evals = [make_run("baseline", 500, 3.0 + s * 0.1, seed=s, active_features=632 + s) for s in range(3)]
    evals += [make_run("hier", 300, 3.05 + s * 0.1, seed=s, active_features=[633, 633, 634][s]) for s in range(3)]
    runs = []
    for e in evals:
        folder = tmp_path / "runs" / f"{e.sae['variant']}-{e.sae['seed']}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        e.write(folder / "eval.json")
        runs.append(str(folder))
    report = write_report(runs, tmp_path / "report").read_text()
    findings = json.loads((tmp_path / "report" / "claims.json").read_text())
    active = next(c for c in findings["claims"] if c["claim"] == "more active features")
    line = next(x for x in report.splitlines() if x.startswith("- more active features:"))
    assert active["verdict"] == "not held" and active["reason"].startswith("hier better only within the seed")
    assert line.startswith("- more active features: not held, hier better only within the seed intervals (633.3 ±")
    for claim, _ in ((c["claim"], c) for c in findings["claims"] if c["verdict"] != "not testable here"):
        direction = [x for x in report.splitlines() if x.startswith(f"- {claim}:")]
        assert all(f": {next(c for c in findings['claims'] if c['claim'] == claim)['verdict']}," in d
                   for d in direction), (claim, direction)


def test_the_paper_code_presets_runs_are_compared_at_its_own_setting(make_run):
    """An experiment with --preset paper-code alone has no run at the paper's setting: its claims compare its own
    hier and baseline, and say at which setting (they were all "not testable here")."""
    code = {"recon": "l2", "norm": "none"}

    def at_code(e):
        return dataclasses.replace(e, sae={**e.sae, **code})

    evals = [at_code(make_run("baseline", 500, 3.0 + s * 0.01, seed=s)) for s in range(2)]
    evals += [at_code(make_run("hier", 300, 2.0 + s * 0.01, seed=s)) for s in range(2)]
    pair = compared(group_runs(evals))
    assert pair.base is not None and pair.hier is not None
    assert pair.setting.startswith("the `--preset paper-code` setting (the choices of the code")
    rows = {c.claim: c for c in cl.claims(pair.base, pair.hier, {}, setting=pair.setting)}
    assert rows["lower reconstruction loss (MSE)"].verdict == "held"
    # At the paper's setting, where both were run, that pair is the one compared.
    paper = [make_run(v, 400, 1.0, seed=0) for v in ("baseline", "hier")]
    assert compared(group_runs(evals + paper)).setting.startswith("the paper's setting (λ = 0.04, K = 5, γ = 1.5)")
    none = compared(group_runs([make_run("topk", 30, 1.0, k=30)]))
    assert (none.base, none.hier) == (None, None)
    missing = {c.claim: c for c in cl.claims(None, None, {}, setting=none.setting)}
    assert missing["more active features"].reason == "no baseline and no hier run at the paper's setting (λ = 0.04, " \
                                                     "K = 5, γ = 1.5)"
