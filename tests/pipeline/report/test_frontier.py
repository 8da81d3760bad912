"""The frontier interpolation and matched-L0 comparison against cases computed by hand."""

import dataclasses
import math

import pytest

from fit.config import SAEConfig
from pipeline.report import frontier as fr


def test_interpolation_is_linear_in_log_l0_between_the_seed_means(make_run):
    run = make_run
    # lambda 0.08: L0 10 and 30 over two seeds (mean 20), MSE 4 and 6 (mean 5); lambda 0.02: L0 200, MSE 1.
    runs = [run("baseline", 10, 4.0, seed=0, l1=0.08), run("baseline", 30, 6.0, seed=1, l1=0.08),
            run("baseline", 200, 1.0, l1=0.02)]
    pts = fr.points(runs, fr.METRIC["mse"])
    assert [(p.l0, p.value, p.n, p.setting) for p in pts] == [(20, 5.0, 2, "λ=0.08"), (200, 1.0, 1, "λ=0.02")]
    # two seeds 4 and 6: sd sqrt(2), t(0.975, 1) = 12.706, half-width 12.706 * sqrt(2) / sqrt(2) = 12.706
    assert pts[0].half == pytest.approx(12.7062, abs=1e-3)
    # L0 = sqrt(20 * 200) is halfway in log L0: MSE (5 + 1) / 2 = 3
    value, half = fr.interpolate(pts, math.sqrt(20 * 200))
    assert value == pytest.approx(3.0)
    assert math.isnan(half)  # one neighbour has one seed: no interval
    # L0 = 20 * 10**0.25 is a quarter of the way: 5 - 0.25 * 4 = 4
    assert fr.interpolate(pts, 20 * 10**0.25)[0] == pytest.approx(4.0)
    assert fr.interpolate(pts, 20)[0] == pytest.approx(5.0) and fr.interpolate(pts, 200)[0] == pytest.approx(1.0)


def test_no_extrapolation_beyond_the_measured_range():
    pts = [fr.Point(20, 0, 5.0, 0.5, 3, "a"), fr.Point(200, 0, 1.0, 0.1, 3, "b")]
    assert fr.interpolate(pts, 19.9) is None and fr.interpolate(pts, 201) is None
    assert fr.interpolate([], 50) is None
    value, half = fr.interpolate(pts, math.sqrt(20 * 200))
    assert (value, half) == (pytest.approx(3.0), pytest.approx(0.3))


def test_matched_comparison_names_the_winner_and_what_is_not_covered():
    topk = [fr.Point(10, 0, 4.0, 0.1, 3, "k=10"), fr.Point(100, 0, 1.0, 0.1, 3, "k=100")]
    base = [fr.Point(50, 0, 3.0, 0.1, 3, "λ=0.08"), fr.Point(500, 0, 0.5, 0.1, 3, "λ=0.01")]
    l0s = fr.common_l0s([topk, base])
    assert l0s == [50, 100]  # 1-2-5 steps covered by both; 10 and 20 only by topk, 200 and 500 only by baseline
    # ranges 27.5-34.1 and 31-34.2 hold no 1-2-5 step: the overlap's geometric middle, sqrt(31 * 34.1) = 32.5 -> 33
    narrow = [[fr.Point(27.5, 0, 1, 0, 1, "a"), fr.Point(34.1, 0, 1, 0, 1, "b")],
              [fr.Point(31, 0, 1, 0, 1, "c"), fr.Point(34.2, 0, 1, 0, 1, "d")]]
    assert fr.common_l0s(narrow) == [33.0]
    matched = fr.compare({"topk": topk, "baseline": base}, fr.METRIC["mse"], [20, 50, 100])
    at20, at50, at100 = matched
    assert at20.winner is None and [c.value is None for c in at20.cells] == [False, True]
    # topk at 50: 4 - log(5)/log(10) * 3 = 1.903; baseline at 50: 3.0
    assert at50.cells[0].value == pytest.approx(4 - 3 * math.log10(5))
    assert at50.winner == "topk" and at50.separated
    # baseline at 100: 3 - log(2)/log(10) * 2.5 = 2.247; topk 1.0
    assert at100.cells[1].value == pytest.approx(3 - 2.5 * math.log10(2)) and at100.winner == "topk"
    line = fr.verdict(matched, fr.METRIC["mse"])
    assert "L0 50: topk" in line and "L0 100: topk" in line and "L0 20" not in line


def test_higher_is_better_metrics_and_overlapping_intervals():
    a = [fr.Point(10, 0, 0.90, 0.05, 3, "x"), fr.Point(100, 0, 0.95, 0.05, 3, "y")]
    b = [fr.Point(10, 0, 0.92, 0.05, 3, "x"), fr.Point(100, 0, 0.99, 0.05, 3, "y")]
    [m] = fr.compare({"a": a, "b": b}, fr.METRIC["explained_variance"], [100])
    assert m.winner == "b" and not m.separated  # 0.04 apart, intervals 0.05 each
    assert "(within seed intervals)" in fr.verdict([m], fr.METRIC["explained_variance"])


def test_absorption_is_read_only_where_measured(make_run):
    run = make_run
    from pipeline.evaluate.record import AbsorptionRecord

    blank = {"list": [], "bool": True, "int": 1, "float": 0.5, "str": "x"}
    fields = {f.name: blank[str(f.type).split("[")[0]] for f in dataclasses.fields(AbsorptionRecord)
              if f.default is dataclasses.MISSING}
    measured = run("topk", 30, 1.0, k=30, absorption=AbsorptionRecord(
        **{**fields, "mean_full_absorption": 0.2, "mean_absorption_fraction": 0.3}))
    unmeasured = run("topk", 60, 0.5, k=60)
    pts = fr.points([measured, unmeasured], fr.METRIC["absorption"])
    assert [(p.l0, p.value, p.setting) for p in pts] == [(30, 0.2, "k=30")]


def test_architecture_labels():
    assert fr.architecture_label({"variant": "hier", "groups": 5, "gamma": 1.5, "l1": 0.04}) == "hier K=5 γ=1.5"
    assert fr.architecture_label({"variant": "baseline", "l1": 0.04, "norm": "none", "recon": "l2"}) == \
        "baseline none l2"
    assert fr.architecture_label(SAEConfig(variant="topk", k=32).to_dict()) == "topk"
    assert fr.setting_label(SAEConfig(variant="topk", k=32).to_dict()) == "k=32"
    assert fr.setting_label(SAEConfig(variant="baseline", l1=0.1).to_dict()) == "λ=0.1"
    matryoshka = SAEConfig(variant="matryoshka", k=16, prefixes=(8, 32)).to_dict()
    assert fr.architecture_label(matryoshka) == "matryoshka prefixes 8,32"


def test_runs_read_back_from_json_group_by_configuration_with_list_fields(make_run):
    """config.json gives Matryoshka's prefixes as a list; runs that differ only by seed are still one group."""
    from pipeline.report.collect import group_runs

    sae = SAEConfig(variant="matryoshka", k=16, prefixes=(8, 32)).to_dict()
    runs = [dataclasses.replace(make_run("matryoshka", 16, 2.0 + s, seed=s, k=16),
                                sae={**sae, "prefixes": [8, 32], "seed": s}) for s in range(2)]
    groups = group_runs(runs)
    assert len(groups) == 1 and len(groups[0].runs) == 2
