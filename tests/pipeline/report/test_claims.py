"""The claims table: verdicts on constructed runs, and README's findings block generated from the typed record."""

import dataclasses
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.evaluate.record import GroupStats
from pipeline.report import claims as cl
from pipeline.report.collect import find_group, group_runs

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
