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
