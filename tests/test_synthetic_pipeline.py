"""The ground-truth pipeline end to end, as a user runs it: `pipeline synth`, a sweep with `pipeline experiment`
whose report gives the title's claim a verdict, the browser on a synthetic store, and `pipeline fit --synthetic`
streaming the rows a synthetic store of the same seed holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import call_cli
from synthetic_models import small_config, write_config

from harvest.synthetic.sampler import FastSampler, Stream
from pipeline.evaluate.record import EvalRecord
from store import dtypes
from store.reader import open_store

SAMPLES = 40_960


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic store of the small model, and a sweep of baseline and hier on it (2 seeds, 3 lambdas)."""
    root = tmp_path_factory.mktemp("synthetic-pipeline")
    config = write_config(root / "small.json", small_config())
    cache, store = root / "cache", root / "s.zarr"
    assert call_cli("synth", "--config", config, "--samples", SAMPLES, "--chunk-rows", 8192, "--store", store,
                    "--model-cache", cache, "--device", "cpu", "--seed", 5) == 0
    sweep = root / "sweep"
    assert call_cli("experiment", "--store", store, "--out", sweep, "--sweep", "--seeds", 2,
                    "--sweep-variant", "baseline", "--sweep-variant", "hier", "--sweep-l1", 0.5, "--sweep-l1", 1,
                    "--sweep-l1", 2, "--tokens", 131072, "--batch-size", 512, "--lr", "1e-3", "--expansion", 4,
                    "--no-stack", "--log-every", 64) == 0
    return {"root": root, "config": config, "cache": cache, "store": store, "sweep": sweep}


def test_the_sweeps_report_gives_the_title_claim_a_verdict_on_ground_truth(made):
    claims = json.loads((made["sweep"] / "report" / "claims.json").read_text())
    rows = {c["claim"]: c for c in claims["claims"]}
    title = rows["less absorption on the true hierarchy (the title's claim)"]
    assert title["verdict"] in ("held", "not held"), title
    assert "L0" in title["ours"] and "seed intervals" in title["reason"]
    assert rows["more live, unique true features"]["verdict"] in ("held", "not held")
    assert rows["later groups encode more specific true features"]["verdict"] in ("held", "not held")
    report = (made["sweep"] / "report" / "report.md").read_text()
    assert "## Ground truth" in report and "truth_frontiers.png" in report
    assert (made["sweep"] / "report" / "truth_frontiers.png").exists()


def test_the_browser_shows_a_synthetic_stores_rows_as_their_true_features(made, tmp_path: Path):
    run = next(p for p in made["sweep"].iterdir() if p.name.startswith("hier-"))
    assert call_cli("browse", run, "--out", tmp_path / "site") == 0
    site = (tmp_path / "site" / "data" / "site.js").read_text()
    assert "the true dictionary" in site and "Closest true features" in site
    contexts = "".join(p.read_text() for p in (tmp_path / "site" / "data" / "stores" / "s0" / "ctx").iterdir())
    assert "(root)" in contexts and "(in #" in contexts


def test_fit_synthetic_streams_the_rows_a_store_of_the_same_seed_holds(made, small_truth):
    cpu = torch.device("cpu")
    stream = Stream(FastSampler(small_truth, cpu), 5, cpu)
    store = open_store(str(made["store"]))
    rows = stream.rows(0, 10_000).x_BD
    stored = store.read_rows(0, 10_000)
    assert torch.equal(dtypes.decode(dtypes.encode(rows, "bfloat16"), "bfloat16"), stored)


@pytest.mark.parametrize("source", ["config", "store"])
def test_fit_synthetic_trains_on_the_stream_and_evaluates_on_its_held_out_store(made, tmp_path: Path, source):
    out = tmp_path / "runs"
    model = made["config"] if source == "config" else made["store"]
    assert call_cli("fit", "--synthetic", model, "--synthetic-seed", 5, "--model-cache", made["cache"],
                    "--heldout-samples", 8192, "--tokens", 16384, "--batch-size", 512, "--out", out, "--variant",
                    "topk", "--k", 4, "--expansion", 4, "--device", "cpu") == 0
    (run,) = [p for p in out.iterdir() if p.name.startswith("topk")]
    config = json.loads((run / "config.json").read_text())
    assert config["store_url"] == str(out / "heldout.zarr") and config["train"]["stream"]["rows"] == [0, 16384]
    assert call_cli("evaluate", out) == 0
    record = EvalRecord.read(run / "eval.json")
    assert record.ground_truth is not None and record.ground_truth.rows == 8192
    heldout = open_store(str(out / "heldout.zarr"))
    assert heldout.meta.synthetic.first_row == 2**40 and heldout.meta.synthetic.seed == 5
