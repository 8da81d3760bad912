"""Run directories written by the version before records carried their schema version and provenance
(tests/data/v1-runs: a baseline, a hier and a topk run of the tiny Gemma-2, trained and evaluated by commit 84a8c93)
still load, compare equal on resume and report; a record from a newer version is refused naming its version."""

import json
import shutil
from pathlib import Path

import pytest

from fit.config import SAEConfig
from fit.errors import FitError
from fit.runs import RunDir, load_sae
from pipeline.errors import PipelineError
from pipeline.evaluate.record import EVAL_SCHEMA, EvalRecord
from pipeline.report.report import write_report

V1 = Path(__file__).resolve().parents[2] / "data" / "v1-runs"
RUNS = ("baseline-l0.04-s0", "hier-K5-g1.5-l0.04-s0", "topk-k8-s0")


@pytest.fixture
def old_runs(tmp_path):
    shutil.copytree(V1, tmp_path / "runs")
    return tmp_path / "runs"


@pytest.mark.parametrize("name", RUNS)
def test_an_old_run_loads_and_its_config_compares_equal_on_resume(old_runs, name):
    run = RunDir(old_runs / name)
    recorded = run.read_config()["sae"]
    cfg = SAEConfig.from_dict(recorded)
    assert cfg.to_dict() == recorded and cfg.name == name  # what check_config compares when the pass resumes
    sae, _ = load_sae(run)
    assert sae.n_latents == 64 and sae.cfg == cfg
    assert run.read_training()["steps"] == 10  # training.json of schema 1 (no schema_version)
    record = EvalRecord.read(run.eval_path)
    assert record.schema_version == 1 and record.provenance is None and record.evaluation is None


def test_old_records_report_with_the_data_set_named_by_its_file(old_runs, tmp_path):
    report = write_report([str(old_runs)], tmp_path / "report").read_text()
    assert "- data: " in report and "kjv_genesis.jsonl" in report.split("- data: ")[1].splitlines()[0]
    claims = json.loads((tmp_path / "report" / "claims.json").read_text())
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert claims["schema_version"] == 2 and claims["provenance"]["tool_version"]
    assert results["schema_version"] == 2 and results["config"]["runs"] == [str(old_runs)]
    assert len(results["runs"]) == 3 and {r["schema_version"] for r in results["runs"]} == {1}


def test_a_record_of_a_newer_schema_is_refused_naming_its_version(old_runs):
    path = old_runs / RUNS[0] / "eval.json"
    obj = json.loads(path.read_text())
    path.write_text(json.dumps({**obj, "schema_version": EVAL_SCHEMA + 1}))
    with pytest.raises(PipelineError, match=rf"has schema version {EVAL_SCHEMA + 1}; this version of the tool reads "
                                            r"versions 1, 2: use a newer release"):
        EvalRecord.read(path)
    training = old_runs / RUNS[0] / "training.json"
    training.write_text(json.dumps({**json.loads(training.read_text()), "schema_version": 9}))
    with pytest.raises(FitError, match="has schema version 9"):
        RunDir(old_runs / RUNS[0]).read_training()
