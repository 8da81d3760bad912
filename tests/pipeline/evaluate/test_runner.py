"""Evaluation end to end on the tiny Gemma-2: real store, real SAEs, real spliced forward passes."""

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from fit.config import SAEConfig, TrainConfig
from fit.runs import LoadedRun, RunDir
from fit.sae import SAE
from fit.trainer import fit
from harvest.config import HarvestConfig
from harvest.runner import harvest
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.runner import _behaviour, evaluate
from store.reader import open_store


@pytest.fixture(scope="module")
def trained(tiny_model_dir, kjv_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    store = str(root / "s.zarr")
    harvest(HarvestConfig(store=store, model=str(tiny_model_dir), dataset=str(kjv_file), layers=(2,), tokens=4000,
                          context_length=32, batch_size=8, chunk_rows=1024))
    saes = [SAEConfig(variant="baseline"), SAEConfig(variant="hier", groups=4)]
    fit(TrainConfig(store=store, out=str(root / "runs"), batch_size=128, tokens=128 * 30, holdout=0.1,
                    log_every=10), saes)
    return store, root / "runs"


def test_evaluate_writes_every_metric(trained):
    _store, runs = trained
    results = [r.to_dict() for r in evaluate(EvaluateConfig(runs=(str(runs),), batch_contexts=4))]
    assert [r["name"] for r in results] == ["baseline-l0.04-s0", "hier-K4-g1.5-l0.04-s0"]
    for r in results:
        saved = json.loads((Path(r["run_dir"]) / "eval.json").read_text())
        assert saved["mse"] == r["mse"]
        assert r["rows"] == 4000 - r["store"]["heldout_rows"][0]
        assert 0 < r["explained_variance"] <= 1 and r["l0"] > 0 and r["kl"] >= 0
        assert r["ce_zero_ablated"] > r["ce_clean"] and r["kl_contexts"] == 13
        assert len(r["groups"]) == (1 if r["sae"]["variant"] == "baseline" else 4)
        assert r["train"]["sae_seconds"] > 0


def test_splicing_the_identity_changes_nothing(trained, tiny_model_dir):
    store_url, _ = trained
    st = open_store(store_url)
    # an SAE that is the identity on these activations (ReLU(x + c) - c with c above every |x|)
    sae = SAE(SAEConfig(variant="baseline", norm="none"), 64)
    c = 1 + float(st.read_rows(0, st.n_rows).abs().max()) * 2
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(64))
        sae.W_dec.copy_(torch.eye(64))
        sae.b_enc.fill_(c)
        sae.b_dec.fill_(-c)
    split = st.split(0.1)
    cfg = EvaluateConfig(runs=("identity",), batch_contexts=4)
    members = [LoadedRun(RunDir(Path("identity")), sae, {})]
    out = {name: b.to_dict() for name, b in _behaviour(st, split.heldout, members, cfg, torch.device("cpu"),
                                                        None).items()}
    assert out["identity"]["kl"] < 1e-6
    assert out["identity"]["ce_recovered"] == pytest.approx(1.0, abs=1e-4)


def test_another_model_is_refused(trained, tmp_path, capsys):
    from tiny_model import save_tiny_model

    other = save_tiny_model(tmp_path / "other", seed=1)
    _, runs = trained
    assert_one_line_error(run_cli(capsys, "evaluate", runs, "--model", other), "not the one the store was made from")


def test_a_store_of_another_layer_is_refused(trained, tiny_model_dir, kjv_file, tmp_path, capsys):
    _, runs = trained
    other = tmp_path / "layer1.zarr"
    harvest(HarvestConfig(store=str(other), model=str(tiny_model_dir), dataset=str(kjv_file), layers=(1,), tokens=4000,
                          context_length=32, batch_size=8, chunk_rows=1024))
    result = run_cli(capsys, "evaluate", runs, "--store", other, "--no-kl")
    assert_one_line_error(result, "trained on another store", "its layer is 2, this store's is 1")


def test_a_missing_held_out_tokens_chunk_is_one_line(trained, tmp_path, capsys):
    """Evaluate reads the held-out token ids to splice contexts; a deleted chunk there is named, not an IndexError
    from the fill value -1 fed to the embedding."""
    import shutil

    store_url, runs = trained
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(store_url, damaged)
    st = open_store(str(damaged))
    last = (st.n_rows - 1) // st.chunk_rows  # the held-out rows are the store's last contexts
    chunk = damaged / "tokens" / "c" / str(last)
    assert chunk.is_file(), sorted(p.name for p in (damaged / "tokens" / "c").iterdir())
    chunk.unlink()
    result = run_cli(capsys, "evaluate", runs, "--store", damaged)
    assert_one_line_error(result, "tokens", f"chunk {last}")
