"""The report's figures: colours by architecture, whatever settings a run has."""

from fit.config import SAEConfig
from pipeline.report import plots
from pipeline.report.collect import Group


def test_every_architecture_at_its_default_setting_gets_a_colour():
    colours = {}
    for variant in ("baseline", "hier", "topk", "batchtopk", "matryoshka", "hier-matryoshka"):
        sae = SAEConfig(variant=variant).to_dict()
        del sae["seed"]
        colours[variant] = plots._color(Group(sae), 0)  # a TopK SAE at its default k is not the paper's setting
    assert (colours["baseline"], colours["hier"]) == (plots.COLORS["baseline"], plots.COLORS["hier"])


def test_absorption_panels_say_when_they_are_not_a_verdict(make_run):
    from pipeline.evaluate.record import AbsorptionRecord
    from pipeline.report.report import _absorption_caveats

    thin = AbsorptionRecord(
        mean_full_absorption=0.1, mean_absorption_fraction=0.1, letters=[], excluded_letters=[], enough_letters=False,
        min_letters=20, model="m", layer=2, words=100, train_words=80, test_words=20, vocabulary_words=100, seed=42,
        prompt_template="{word} has the first letter:", icl_examples=10, word_position=-6, probe_test_accuracy=0.3,
        cache="c", seconds=1.0, min_probe_f1=0.6, sae_l0=20.0)
    assert _absorption_caveats([make_run("topk", 20, 1.0, k=20)]) == {}
    caveats = _absorption_caveats([make_run("topk", 20, 1.0, k=20, absorption=thin)])
    assert set(caveats) == {"absorption", "absorption_fraction"} and "0 of 26 letters" in caveats["absorption"]
