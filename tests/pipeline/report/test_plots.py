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


def test_absorption_panels_say_when_they_are_not_a_verdict(make_run, make_thin_absorption):
    from pipeline.report.report import _absorption_caveats

    thin = make_thin_absorption()
    assert _absorption_caveats([make_run("topk", 20, 1.0, k=20)]) == {}
    caveats = _absorption_caveats([make_run("topk", 20, 1.0, k=20, absorption=thin)])
    assert set(caveats) == {"absorption", "absorption_fraction"} and "0 of 26 letters" in caveats["absorption"]
