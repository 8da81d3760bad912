"""Ground-truth evaluation: equal to SAELens's ``sae_lens.synthetic.evals`` on the same SAE (exported) and rows, and
right on planted SAEs whose answers are known: the true dictionary with an oracle encoder, and an SAE in which one
child's latent has absorbed its parent."""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import pytest
import torch
from cli_helpers import call_cli as cli
from synthetic_models import small_spec

from fit.config import SAEConfig
from fit.runs import find_runs, load_sae
from fit.sae import SAE
from harvest.synthetic.runner import synthetic_meta, write_stream
from harvest.synthetic.sampler import FastSampler, Stream
from pipeline.evaluate.record import EvalRecord
from pipeline.evaluate.truth.accumulate import TruthAccumulator
from store.location import StoreLocation
from store.reader import open_store
from store.truth import dense_rows

ROWS = 24_576


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory: pytest.TempPathFactory, small_truth) -> Path:
    """A small synthetic store written through the synth writer (no subprocess)."""
    path = tmp_path_factory.mktemp("truth") / "s.zarr"
    cpu = torch.device("cpu")
    stream = Stream(FastSampler(small_truth, cpu), 3, cpu)
    meta = synthetic_meta(small_spec(), small_truth, seed=3, first_row=0, n_rows=ROWS, slots=32, sampler="fast",
                          device=cpu, store_dtype="bfloat16", chunk_rows=4096, settings={})
    write_stream(StoreLocation(str(path)), meta, small_truth, stream, 0.0)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, synth_store: Path) -> Path:
    out = tmp_path_factory.mktemp("runs")
    for norm in ("none", "store_stats", "layer_norm"):
        assert cli("fit", "--store", str(synth_store), "--out", str(out), "--variant", "topk", "--variant",
                   "baseline", "--k", "6", "--l1", "1.0", "--expansion", "4", "--norm", norm, "--tokens", "40960",
                   "--batch-size", "1024", "--log-every", "10") == 0
    assert cli("evaluate", str(out)) == 0
    return out


class _Rows:
    """Hands SAELens's evaluator our store's held-out rows: its generator yields their true coefficients, and its
    feature dictionary maps each batch to the stored rows they came from (so both tools see the same floats)."""

    def __init__(self, store, start: int, stop: int) -> None:
        self.store, self.row = store, start
        self.pending: deque[torch.Tensor] = deque()
        self.truth = store.ground_truth()

    def sample(self, n: int) -> torch.Tensor:
        ids, coefs = self.store.truth_rows(self.row, self.row + n)
        self.pending.append(self.store.read_rows(self.row, self.row + n))
        self.row += n
        return dense_rows(ids, coefs, self.truth.n_features)


def saelens_eval(run_dir: Path, store_path: Path):
    import sae_lens
    from sae_lens.synthetic import FeatureDictionary
    from sae_lens.synthetic.evals import eval_sae_on_synthetic_data

    store = open_store(str(store_path))
    start, stop = load_sae(run_dir)[1]["train"]["heldout_rows"]
    rows = _Rows(store, start, stop)

    class StoredRows(FeatureDictionary):
        def forward(self, feature_activations):
            return rows.pending.popleft()

    fd = StoredRows(rows.truth.n_features, rows.truth.d_model, initializer=None)
    fd.feature_vectors.data = rows.truth.dictionary_GD.clone()
    sae = sae_lens.SAE.load_from_disk(str(run_dir / "saelens"), device="cpu")
    return eval_sae_on_synthetic_data(sae, fd, rows, num_samples=stop - start, batch_size=1000)


@pytest.mark.parametrize("norm", ["none", "store_stats"])
@pytest.mark.parametrize("variant", ["topk", "baseline"])
def test_ground_truth_metrics_equal_sae_lens_on_the_same_sae_and_rows(runs: Path, synth_store: Path, variant: str,
                                                                      norm: str):
    (run,) = [r for r in find_runs([runs]) if r.name.startswith(variant) and r.name.endswith(f"{norm}-s0")]
    ours = EvalRecord.read(run.eval_path)
    theirs = saelens_eval(run.path, synth_store)
    gt = ours.ground_truth
    pairs = {"mcc": (gt.mcc, theirs.mcc), "uniqueness": (gt.uniqueness, theirs.uniqueness),
             "precision": (gt.precision, theirs.classification.precision),
             "recall": (gt.recall, theirs.classification.recall), "f1": (gt.f1, theirs.classification.f1_score),
             "accuracy": (gt.accuracy, theirs.classification.accuracy), "true_l0": (gt.true_l0, theirs.true_l0),
             "shrinkage": (gt.shrinkage, theirs.shrinkage), "L0": (ours.l0, theirs.sae_l0),
             "explained variance": (ours.explained_variance, theirs.explained_variance),
             "dead latents": (ours.dead_features, theirs.dead_latents)}
    for name, (a, b) in pairs.items():
        assert abs(a - b) <= 1e-5, (name, a, b)
    assert 0.1 < gt.mcc < 1 and gt.pairs_scored > 0  # a real, imperfect SAE was measured


def test_a_layer_normed_sae_compares_centred_directions(runs: Path):
    (run,) = [r for r in find_runs([runs]) if r.name.startswith("topk") and "none" not in r.name
              and "store_stats" not in r.name]
    gt = EvalRecord.read(run.eval_path).ground_truth
    assert "centred" in gt.directions and 0 < gt.mcc < 1


def _oracle_sae(truth) -> SAE:
    cfg = SAEConfig(variant="baseline", norm="none", expansion=truth.n_features / truth.d_model, l1=0.0)
    sae = SAE(cfg, truth.d_model)
    with torch.no_grad():
        sae.W_dec.copy_(truth.dictionary_GD)
        sae.b_dec.copy_(truth.bias_D)
    return sae


def _accumulate(sae: SAE, truth, store, latents) -> object:
    acc = TruthAccumulator(sae, truth, torch.device("cpu"))
    fired = torch.zeros(sae.n_latents, dtype=torch.bool)
    for lo in range(0, store.n_rows, 4096):
        hi = min(lo + 4096, store.n_rows)
        ids, coefs = store.truth_rows(lo, hi)
        coef_BG = dense_rows(ids, coefs, truth.n_features)
        z = latents(coef_BG)
        x = store.read_rows(lo, hi)
        acc.add(z, torch.ones(hi - lo), x, sae.decode(z).detach(), ids, coefs)
        fired |= (z != 0).any(0)
    return acc.result(sae.group_bounds, fired.numpy())


def test_the_true_dictionary_with_an_oracle_encoder_scores_perfectly(synth_store: Path):
    store = open_store(str(synth_store))
    truth = store.ground_truth()
    record = _accumulate(_oracle_sae(truth), truth, store, lambda coef_BG: coef_BG)
    assert record.mcc == pytest.approx(1.0, abs=1e-6) and record.f1 == pytest.approx(1.0)
    assert record.uniqueness == 1.0 and record.pairs_scored > 10 and record.pairs_unlearned == 0
    assert record.absorption == 0.0 and all(p.absorption == 0.0 for p in record.pairs)
    assert record.partial_absorption == pytest.approx(0.0, abs=1e-6)


def test_a_child_that_absorbed_its_parent_scores_one_on_that_pair_and_zero_elsewhere(synth_store: Path):
    store = open_store(str(synth_store))
    truth = store.ground_truth()
    sae = _oracle_sae(truth)
    # The pair with the most rows of both kinds, so that it is scored.
    base = _accumulate(sae, truth, store, lambda c: c)
    pair = max(base.pairs, key=lambda p: min(p.child_rows, p.control_rows))
    p, c = pair.parent, pair.child
    with torch.no_grad():
        merged = truth.dictionary_GD[c] + truth.dictionary_GD[p]
        sae.W_dec[c] = merged / merged.norm()

    def absorbing(coef_BG: torch.Tensor) -> torch.Tensor:
        z = coef_BG.clone()
        on = coef_BG[:, c] > 0
        z[on, p] = 0.0  # the parent's latent is silent whenever the child fires
        z[on, c] = coef_BG[on, c] + coef_BG[on, p]  # and the child's latent carries the parent's direction
        return z

    record = _accumulate(sae, truth, store, absorbing)
    scored = {(q.parent, q.child): q for q in record.pairs}
    assert scored[(p, c)].absorption == 1.0 and scored[(p, c)].partial_absorption == 1.0
    assert all(q.absorption == 0.0 for key, q in scored.items() if key != (p, c))
    assert math.isclose(record.absorption, 1 / len(scored))
