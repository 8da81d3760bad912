"""SAELens's own BatchTopK beside ours on the same synthetic rows (docs/synthetic.md): the same width, k, steps,
learning rate and batches, 3 seeds each, both scored by SAELens's ``eval_sae_on_synthetic_data`` on the same held-out
rows of the store.

Each trainer keeps its own defaults otherwise: SAELens's Adam with its AuxK (coefficient 1) and its decoder-norm
rescaling, ours the constrained AdamW (unit-norm decoder rows, weight decay 1e-4) without AuxK; both read the rows
unnormalised (SAELens's default; ours with ``--norm none``). Ours trains through `pipeline fit` on the store; SAELens
through ``SAETrainer.fit`` on a data provider that yields the very batches our pass read, in the same order.

``python -m benchmarks.saelens_synthetic --out saelens-synthetic.json`` (``make saelens-synthetic``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import click
import torch

from benchmarks.common import machine_info
from pipeline.evaluate.metrics import t_interval

log = logging.getLogger(__name__)

PRESET, SAMPLES, WIDTH, K, LR, BATCH, STEPS, SEEDS = "synth-cpu", 1_000_000, 256, 5, 1e-3, 1024, 900, (0, 1, 2)
SAELENS_RUNS = {"SAELens 6.54 BatchTopK": {}, "SAELens, dead-latent window 100 steps": {"dead_feature_window": 100}}
"""SAELens as it comes, and with its AuxK able to act: its dead-latent window (1,000 steps) is longer than these
900-step runs, so by default no latent ever counts as dead and its AuxK loss stays 0."""


def _heldout(store, start: int, stop: int):
    """SAELens's evaluator, fed our held-out rows: its generator yields their true coefficients, its feature
    dictionary maps each batch back to the stored rows (both tools see the same floats)."""
    from collections import deque

    from sae_lens.synthetic import FeatureDictionary

    from store.truth import dense_rows

    truth = store.ground_truth()

    class Rows:
        def __init__(self) -> None:
            self.row, self.pending = start, deque()

        def sample(self, n: int) -> torch.Tensor:
            ids, coefs = store.truth_rows(self.row, self.row + n)
            self.pending.append(store.read_rows(self.row, self.row + n))
            self.row += n
            return dense_rows(ids, coefs, truth.n_features)

    rows = Rows()

    class StoredRows(FeatureDictionary):
        def forward(self, feature_activations):
            return rows.pending.popleft()

    fd = StoredRows(truth.n_features, truth.d_model, initializer=None)
    fd.feature_vectors.data = truth.dictionary_GD.clone()
    return fd, rows


def _score(sae, store, start: int, stop: int) -> dict:
    from sae_lens.synthetic.evals import eval_sae_on_synthetic_data

    fd, rows = _heldout(store, start, stop)
    r = eval_sae_on_synthetic_data(sae, fd, rows, num_samples=stop - start, batch_size=4096)
    return {"mcc": r.mcc, "f1": r.classification.f1_score, "explained_variance": r.explained_variance,
            "l0": r.sae_l0, "dead": r.dead_latents}


def run(out: Path, workdir: str | None = None) -> dict:
    import sae_lens
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from fit.config import SAEConfig, TrainConfig
    from fit.data import StoreSource
    from fit.trainer import fit
    from harvest.synthetic.config import SynthConfig
    from harvest.synthetic.runner import synthesize
    from store.reader import open_store

    results: dict = {"ours": []}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store_path = f"{tmp}/synth.zarr"
        synthesize(SynthConfig(store=store_path, preset=PRESET, samples=SAMPLES, device="cpu"))
        store = open_store(store_path)
        train = TrainConfig(store=store_path, out=f"{tmp}/ours", tokens=STEPS * BATCH, batch_size=BATCH, lr=LR,
                            log_every=100, device="cpu")
        saes = [SAEConfig(variant="batchtopk", k=K, expansion=WIDTH / store.d_model, norm="none", seed=s)
                for s in SEEDS]
        for r in fit(train, saes):
            ours = sae_lens.SAE.load_from_disk(str(Path(r.run_dir) / "saelens"), device="cpu")
            start, stop = json.loads((Path(r.run_dir) / "config.json").read_text())["train"]["heldout_rows"]
            results["ours"].append(_score(ours, store, start, stop))
        source = StoreSource(store)
        source.plan(train, 1)
        for name, window in SAELENS_RUNS.items():
            results[name] = []
            for seed in SEEDS:
                torch.manual_seed(seed)
                cfg = BatchTopKTrainingSAEConfig(d_in=store.d_model, d_sae=WIDTH, k=K, device="cpu")
                batches = (x for _, x in source.batches(train, torch.device("cpu"), 0, STEPS, None))
                trainer = SAETrainer(SAETrainerConfig(total_training_samples=STEPS * BATCH,
                                                      train_batch_size_samples=BATCH, lr=LR, lr_end=LR,
                                                      device="cpu", **window),
                                     BatchTopKTrainingSAE(cfg), data_provider=batches)
                results[name].append(_score(_inference(trainer.fit()), store, start, stop))
    summary = {tool: {m: t_interval([r[m] for r in runs]) for m in runs[0]} for tool, runs in results.items()}
    report = {"machine": machine_info(), "preset": PRESET, "samples": SAMPLES, "width": WIDTH, "k": K, "lr": LR,
              "batch": BATCH, "steps": STEPS, "seeds": list(SEEDS), "runs": results, "summary": summary}
    out.write_text(json.dumps(report, indent=2))
    return report


def _inference(sae):
    """A trained SAELens training SAE as the inference SAE it saves (BatchTopK: a JumpReLU with its threshold)."""
    import sae_lens

    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        return sae_lens.SAE.load_from_disk(tmp, device="cpu")


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("saelens-synthetic.json"), show_default=True)
def main(out: Path) -> None:
    import os

    from pipeline.cli.console import console, setup_logging
    from pipeline.report.text import fmt

    os.environ.setdefault("TQDM_DISABLE", "1")  # SAELens's per-step bar
    setup_logging(0)
    report = run(out)
    console.print("| trainer | MCC | F1 | explained variance | L0 | dead |")
    console.print("|---|---|---|---|---|---|")
    for tool, stats in report["summary"].items():
        console.print(f"| {tool} | " + " | ".join(fmt(stats[m]) for m in ("mcc", "f1", "explained_variance", "l0",
                                                                          "dead")) + " |")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
