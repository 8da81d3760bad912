"""`pipeline experiment --sweep` (every architecture at several sparsities, one pass) and `--preset paper-code`."""

import json

import pytest
from cli_helpers import run_cli

from fit.config import VARIANTS, SAEConfig, TrainConfig
from pipeline.errors import PipelineError
from pipeline.experiment import Grid
from pipeline.presets import PRESETS, SWEEP_K, SWEEP_L1, TOPK_FAMILY


def test_the_sweep_sets_lambda_for_l1_variants_and_k_for_the_topk_family():
    grid = Grid(sweep=True, seeds=2, sweep_variants=("baseline", "topk"), sweep_l1=(0.1, 0.2), sweep_k=(8, 16))
    assert [s.name for s in grid.saes()] == [
        "baseline-l0.1-s0", "baseline-l0.1-s1", "baseline-l0.2-s0", "baseline-l0.2-s1",
        "topk-k8-s0", "topk-k8-s1", "topk-k16-s0", "topk-k16-s1"]
    assert {s.k for s in grid.saes() if s.variant == "topk"} == {8, 16}
    # the default sweep: every registered architecture, each at five sparsities, one seed here
    default = Grid(sweep=True, seeds=1).saes()
    assert {s.variant for s in default} == set(VARIANTS)
    assert TOPK_FAMILY == ("topk", "batchtopk", "matryoshka")
    assert len(default) == len(VARIANTS) * 5 and len(SWEEP_L1) == len(SWEEP_K) == 5
    with pytest.raises(PipelineError, match="--sweep-l1 must be >= 0"):
        Grid(sweep=True, sweep_l1=(-1.0,))


def test_the_paper_code_preset_holds_the_paper_codes_choices():
    preset = PRESETS["paper-code"]
    assert preset.sae == {"recon": "l2", "norm": "none", "l1": 0.04}
    assert preset.train == {"weight_decay": 0.0, "batch_size": 2048}
    # the values are the configs' own (a renamed field would fail at import)
    assert SAEConfig(**preset.sae).name == "hier-K5-g1.5-l0.04-none-l2-s0"
    assert TrainConfig(store="s", out="o", **preset.train).weight_decay == 0.0
    sae, train = {"recon": "mse", "expansion": 2.0}, {"weight_decay": 1e-4, "batch_size": 512}
    preset.apply(sae, train, given={"batch_size"})  # typed on the command line: the preset leaves it alone
    assert sae == {"recon": "l2", "norm": "none", "l1": 0.04, "expansion": 2.0}
    assert train == {"weight_decay": 0.0, "batch_size": 512}


def test_sweep_trains_every_architecture_in_one_pass_and_compares_them_at_matched_l0(store, tmp_path, capsys):
    out = tmp_path / "sweep"
    result = run_cli(capsys, "experiment", "--store", store, "--out", out, "--sweep", "--seeds", 1,
                     "--sweep-variant", "baseline", "--sweep-variant", "topk", "--sweep-l1", 0.001,
                     "--sweep-l1", 1.0, "--sweep-k", 4, "--sweep-k", 32, "--tokens", 1024, "--batch-size", 128,
                     "--kl-contexts", 2, "--holdout", 0.1)
    assert result.code == 0, result.stderr
    assert "experiment: 4 SAEs in one pass" in result.stderr
    report = (out / "report" / "report.md").read_text()
    results = json.loads((out / "report" / "results.json").read_text())
    frontiers = results["matched"]["mse"]["frontiers"]
    assert set(frontiers) == {"baseline", "topk"}
    assert [p["setting"] for p in frontiers["topk"]] == ["k=4", "k=32"]
    # TopK's L0 is measured, not assumed: at most k (a kept latent can be zero after the ReLU)
    assert 0 < frontiers["topk"][0]["l0"] <= 4 < frontiers["topk"][1]["l0"] <= 32
    assert "## Matched sparsity" in report and "frontiers.png" in results["figures"]
    png = (out / "report" / "frontiers.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_preset_paper_code_trains_with_the_paper_codes_settings(store, tmp_path, capsys):
    out = tmp_path / "code"
    result = run_cli(capsys, "experiment", "--store", store, "--out", out, "--preset", "paper-code",
                     "--no-ablations", "--seeds", 1, "--tokens", 256, "--batch-size", 128, "--kl-contexts", 2,
                     "--holdout", 0.1)
    assert result.code == 0, result.stderr
    config = json.loads((out / "baseline-l0.04-none-l2-s0" / "config.json").read_text())
    assert config["sae"]["norm"] == "none" and config["sae"]["recon"] == "l2" and config["sae"]["l1"] == 0.04
    assert config["train"]["weight_decay"] == 0.0 and config["train"]["batch_size"] == 128  # typed: it wins
    report = (out / "report" / "report.md").read_text()
    assert "## The paper's code (`--preset paper-code`)" in report
    assert "Does the paper-code baseline collapse" in report
