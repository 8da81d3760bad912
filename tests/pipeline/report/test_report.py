"""`pipeline experiment` and `pipeline report` end to end on the tiny Gemma-2 store."""

import json
from importlib.metadata import version

from cli_helpers import assert_one_line_error, run_cli

from store.reader import open_store


def test_experiment_trains_the_grid_in_one_pass_and_reports(store, tmp_path, capsys):
    out = tmp_path / "exp"
    result = run_cli(capsys, "experiment", "--store", store, "--out", out, "--seeds", 2, "--tokens", 2048 * 3,
                     "--kl-contexts", 4, "--holdout", 0.1)
    assert result.code == 0, result.stderr
    assert "experiment: 10 SAEs in one pass" in result.stderr  # 2x2 main + K3, K7, γ1.25, γ2, λ.06 x 2
    report = (out / "report" / "report.md").read_text()
    results = json.loads((out / "report" / "results.json").read_text())
    assert "This is not the paper's setting" in report and results["paper_setting"] is False
    t1 = results["table_1"]
    assert t1["mse"]["baseline"][2] == 2 and t1["mse"]["hier"][2] == 2  # n seeds
    assert t1["kl"]["paper_hier"] == [0.047, 0.008]
    assert t1["kl"]["hier"][0] >= 0 and t1["explained_variance"]["hier"][0] <= 1  # 3 steps: barely trained
    assert "| Training loss (MSE) |" in report and "| 1.25 |" in report and "| 7 |" in report
    assert len(results["groups"]) == 5 and len(results["runs"]) == 10
    # the experiment trains its SAEs stacked: their seconds are shares, so no training-time ratio is claimed
    assert results["table_1"]["training_seconds"]["stacked"] is True
    assert "| trained stacked | trained stacked |" in report and "--no-stack" in report
    for name in results["figures"]:
        png = (out / "report" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
    assert set(results["figures"]) == {"training_curves.png", "mse_vs_l0.png", "frontiers.png",
                                       "group_density_histograms.png", "live_features_per_group.png"}
    # the claims table: one row per claim, each with a verdict, in the report and as JSON
    claims = json.loads((out / "report" / "claims.json").read_text())
    assert claims == results["findings"] and len(claims["claims"]) == 8
    # every record says what made it: schema version, tool and commit, libraries, device, time, config
    for record in (claims, results, *results["runs"]):
        assert record["schema_version"] == 2 and record["provenance"]["tool_version"] == version("hfg-sae")
        assert record["provenance"]["libraries"]["torch"] == version("torch") and record["provenance"]["created_at"]
    assert {r["provenance"]["device"] for r in results["runs"]} == {"cpu"} and results["config"]["runs"]
    assert results["runs"][0]["evaluation"]["kl_contexts"] == 4
    training = json.loads((out / results["runs"][0]["name"] / "training.json").read_text())
    assert training["schema_version"] == 2 and training["config"]["sae"] == results["runs"][0]["sae"]
    assert training["provenance"]["git_commit"] == results["runs"][0]["provenance"]["git_commit"]
    assert open_store(store).meta.provenance.tool_version == version("hfg-sae")
    assert "by hfg-sae " in report
    assert {c["verdict"] for c in claims["claims"]} <= {"held", "not held", "not testable here"}
    time_row = next(c for c in claims["claims"] if c["claim"].startswith("training-time"))
    assert time_row["verdict"] == "not testable here" and "stacked" in time_row["reason"]
    assert "| Claim | Paper | Ours | Verdict | Why |" in report
    # baseline and hier each ran at lambda 0.04 and 0.06: two-point frontiers, compared where both cover an L0
    assert "## Matched sparsity" in report and set(results["matched"]["mse"]["frontiers"]) >= {
        "baseline", "hier K=5 γ=1.5"}


def test_report_needs_evaluated_runs(store, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_cli(capsys, "fit", "--store", store, "--out", out, "--batch-size", 128, "--tokens", 256).code == 0
    assert_one_line_error(run_cli(capsys, "report", out, "--out", tmp_path / "r"), "has not been evaluated",
                          "pipeline evaluate")
