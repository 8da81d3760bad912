"""`pipeline evaluate`: every metric of docs/metrics.md for one or many runs, written to RUN/eval.json."""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fit.runs import LoadedRun, RunDir, runs_by_store
from harvest.lm import Splicer, load_store_lm
from pipeline.errors import PipelineError
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.metrics import ReconstructionAccumulator, ce_recovered, cross_entropy_per_token, kl_per_token
from pipeline.evaluate.record import (
    AbsorptionRecord,
    Behaviour,
    EvalRecord,
    GroundTruthRecord,
    Reconstruction,
    StoreRecord,
    TrainRecord,
)
from pipeline.evaluate.truth.accumulate import TruthAccumulator
from store.device import resolve_device
from store.provenance import provenance
from store.reader import BINDING, BOUND_ARRAYS, ActivationStore, open_store

log = logging.getLogger(__name__)

Progress = Callable[..., None]
"""``(done, total, stage, unit=None)``: the CLI's progress bar (``pipeline.cli.console.progress_bar``)."""


def check_runs_store(runs: list[tuple[RunDir, dict]], store: ActivationStore, url: str) -> None:
    """Refuse a store other than the one each run (its directory, its config.json) was trained on (another model,
    layer, data set or length): its held-out rows would be other rows, or rows the run trained on. The same store
    extended since is accepted: it holds the runs' held-out rows unchanged (``ActivationStore.recorded_mismatch``).
    The chunks' positions are read once for all the runs."""
    for run, config in runs:
        mismatch = store.recorded_mismatch(config["store"], tuple(config["train"]["heldout_rows"]))
        if mismatch is not None:
            key, want, have = mismatch
            raise PipelineError(
                f"{run} was trained on another store than {url}: its {key} is {want!r}, this store's is "
                f"{have!r}; pass the store it was trained on with --store"
            )
    stop = max(config["train"]["heldout_rows"][1] for _, config in runs)  # training rows, then the held-out ones
    for name in BOUND_ARRAYS:
        store.check_positions(name, 0, stop)
    for run, config in runs:
        changed = store.binding_problem(config["store"].get("binding"))
        if changed is not None:
            raise PipelineError(
                f"{url} changed since {run} was trained on it ({changed}; the store was sealed again since): its "
                "figures would measure other rows than it was trained and held out on; restore the store, or train "
                "again on it"
            )


def evaluate(cfg: EvaluateConfig, on_progress: Progress | None = None) -> list[EvalRecord]:
    """Evaluate every run; runs on the same store share one read of the held-out rows and one LM pass."""
    dev = resolve_device(cfg.device)
    records = []
    for (url, heldout), members in runs_by_store(list(cfg.runs), dev, cfg.store_url).items():
        store = open_store(url, allow_unsealed=cfg.allow_unsealed)
        check_runs_store([(m.run, m.config) for m in members], store, url)
        if heldout[1] <= heldout[0]:
            raise PipelineError(f"{members[0].run} has no held-out rows (trained with --holdout 0)")
        if store.synthetic and cfg.absorption:
            raise PipelineError(
                f"{url} is a synthetic store: it has no LM to run spelling prompts through; absorption on its true "
                "hierarchy is measured for every SAE without --absorption"
            )
        recon, truth = _reconstruction(store, heldout, members, dev, on_progress)
        behaviour = _behaviour(store, heldout, members, cfg, dev, on_progress) if cfg.kl and not store.synthetic else {}
        absorption = (_absorption(store, url, members, cfg, dev, on_progress) if cfg.absorption
                      else _earlier_absorption(members))
        for m in members:
            record = _record(m, store, url, heldout, recon[m.run.name], behaviour.get(m.run.name, Behaviour()),
                             absorption.get(m.run.name), truth.get(m.run.name))
            record = dataclasses.replace(record, provenance=provenance(dev), evaluation=_options(cfg))
            record.write(m.run.eval_path)
            _log_record(record)
            records.append(record)
    return records


def _absorption(store: ActivationStore, url: str, members: list[LoadedRun], cfg: EvaluateConfig,
                dev: torch.device, on_progress: Progress | None) -> dict[str, AbsorptionRecord]:
    from pipeline.evaluate.absorption.score import absorption_records

    def prompts(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(done, total, "absorption prompts through the LM", "prompt")

    return absorption_records(store, url, {m.run.name: m.sae for m in members}, words=cfg.absorption_words,
                              words_file=cfg.absorption_words_file, seed=cfg.absorption_seed,
                              cache_dir=cfg.absorption_cache, device=dev, model=cfg.model, on_progress=prompts)


def _earlier_absorption(members: list[LoadedRun]) -> dict[str, AbsorptionRecord]:
    """Absorption measured by an earlier --absorption run, kept when evaluating again without it (a finished SAE
    does not change, and its absorption took the longest to measure)."""
    out = {}
    for m in members:
        try:
            earlier = EvalRecord.read(m.run.eval_path).absorption if m.run.eval_path.exists() else None
        except PipelineError:  # written by another version: nothing to keep
            earlier = None
        if earlier is not None:
            out[m.run.name] = earlier
    return out


def _record(m: LoadedRun, store: ActivationStore, url: str, heldout: tuple[int, int], recon: Reconstruction,
            behaviour: Behaviour, absorption: AbsorptionRecord | None = None,
            ground_truth: GroundTruthRecord | None = None) -> EvalRecord:
    """The run's eval.json: which run and store, its training summary, and what was measured."""
    recorded = {k: v for k, v in m.config["store"].items() if k != BINDING}  # the binding stays in config.json
    store_record = StoreRecord.from_dict(
        {"url": url, **recorded, "architecture": store.meta.model.architecture,
         "dataset_label": store.meta.dataset.label,
         "description": store.describe(), "tokens_total": store.n_rows, "heldout_rows": list(heldout)},
        f"{m.run.config_path}: store")
    training = m.run.read_training()
    train = TrainRecord(steps=training["steps"], tokens=training["tokens"], sae_seconds=training["sae_seconds"],
                        stack_size=training.get("stack_size", 1), final=training["final"])
    return EvalRecord(name=m.run.name, run_dir=str(m.run), sae=m.config["sae"], n_latents=m.sae.n_latents,
                      group_bounds=[list(b) for b in m.sae.group_bounds], store=store_record, train=train,
                      **recon.field_values(), **behaviour.field_values(), absorption=absorption,
                      ground_truth=ground_truth)


def _options(cfg: EvaluateConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def _log_record(r: EvalRecord) -> None:
    lm = f", KL {r.kl:.4g}, CE recovered {r.ce_recovered:.3f}" if r.kl is not None else ""
    gt = r.ground_truth
    if gt is not None:
        absorbed = "n/a" if gt.absorption is None else f"{gt.absorption:.3f}"
        lm += f", MCC {gt.mcc:.3f}, F1 {gt.f1:.3f}, true absorption {absorbed} ({gt.pairs_scored} pairs)"
    log.info("%s: MSE %.4g, EV %.3f, L0 %.1f, active %d%s", r.name, r.mse, r.explained_variance, r.l0,
             r.active_features, lm)


@torch.inference_mode()
def _reconstruction(store: ActivationStore, rows: tuple[int, int], members: list[LoadedRun], dev: torch.device,
                    on_progress: Progress | None) -> tuple[dict[str, Reconstruction], dict[str, GroundTruthRecord]]:
    """Every member's reconstruction metrics over the held-out rows and, on a synthetic store, its ground-truth
    metrics, from one read of the rows."""
    accs = {m.run.name: ReconstructionAccumulator(m.sae.n_latents, m.sae.group_bounds) for m in members}
    truth = {}
    if store.synthetic:
        gt = store.ground_truth()
        truth = {m.run.name: TruthAccumulator(m.sae, gt, dev) for m in members}
    start, stop = rows
    step = store.chunk_rows
    for lo in range(start, stop, step):
        hi = min(lo + step, stop)
        x = store.read_rows(lo, hi, dev)
        true_rows = store.truth_rows(lo, hi) if truth else None
        for m in members:
            norm = m.sae.normalise(x)
            z = m.sae.encode(norm.x_BD)
            x_hat_n = m.sae.decode(z)
            x_hat = norm.inverse(x_hat_n)
            accs[m.run.name].add(x, x_hat, norm.x_BD, x_hat_n, z, m.sae.w_F)
            if true_rows is not None:
                scale_B = norm.scale.reshape(-1) if m.sae.cfg.norm == "layer_norm" else x.new_ones(len(x))
                truth[m.run.name].add(z, scale_B, x, x_hat, *true_rows)
        if on_progress is not None:
            on_progress(hi - start, stop - start, "reconstruction" + (" and ground truth" if truth else ""))
    recon = {name: acc.result() for name, acc in accs.items()}
    bounds = {m.run.name: m.sae.group_bounds for m in members}
    return recon, {name: acc.result(bounds[name], accs[name].fire_count > 0) for name, acc in truth.items()}


# -- the LM with each SAE spliced in ----------------------------------------------------------------------------

@dataclass
class ContextBatch:
    """Held-out contexts as the LM saw them, and which positions the SAEs replace."""

    ids_CT: torch.Tensor
    """Token ids, BOS first, a short last context padded."""
    replaced_CT: torch.Tensor
    """The positions the SAEs were trained on (every stored row's position)."""
    has_next: torch.Tensor
    """Of the replaced positions (row-major), those with a next token."""
    targets: torch.Tensor
    """That next token, for each replaced position that has one."""


def _context_batch(store: ActivationStore, contexts: list[int], dev: torch.device, end_row: int) -> ContextBatch:
    ids, n_real = store.context_input_ids(contexts, end_row=end_row)  # as the run's store ended, if it grew since
    ids_CT = torch.from_numpy(ids).to(dev)
    pos_T = torch.arange(ids_CT.shape[1], device=dev)[None, :]
    ends_C = torch.from_numpy(n_real).to(dev)[:, None]
    replaced_CT = (pos_T >= store.meta.context.first_position) & (pos_T < ends_C)
    has_next = (pos_T < ends_C - 1)[replaced_CT]
    targets = torch.roll(ids_CT, -1, dims=1)[replaced_CT][has_next]
    return ContextBatch(ids_CT, replaced_CT, has_next, targets)


@dataclass
class _Sums:
    """Running float64 sums of per-token KL and CE, and the token counts they are averaged over."""

    kl: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    """Per run name."""
    ce_spliced: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    """Per run name."""
    ce_clean: float = 0.0
    ce_zero: float = 0.0
    kl_tokens: int = 0
    ce_tokens: int = 0

    def behaviour(self, name: str, n_contexts: int) -> Behaviour:
        """The means of run ``name``'s sums."""
        n_kl, n_ce = max(self.kl_tokens, 1), max(self.ce_tokens, 1)
        clean, zero, spliced = self.ce_clean / n_ce, self.ce_zero / n_ce, self.ce_spliced[name] / n_ce
        return Behaviour(kl=self.kl[name] / n_kl, ce_clean=clean, ce_spliced=spliced, ce_zero_ablated=zero,
                         ce_recovered=ce_recovered(clean, spliced, zero), kl_tokens=self.kl_tokens,
                         ce_tokens=self.ce_tokens, kl_contexts=n_contexts)


def _add_batch(splicer: Splicer, batch: ContextBatch, members: list[LoadedRun], sums: _Sums) -> None:
    """One context batch through the LM clean, zero-ablated and once per SAE."""

    def logp(replace=None) -> torch.Tensor:
        logits = splicer.logits(batch.ids_CT, replace, batch.replaced_CT)
        return torch.log_softmax(logits[batch.replaced_CT], dim=-1)

    def ce(replaced_logp: torch.Tensor) -> float:
        return float(cross_entropy_per_token(replaced_logp[batch.has_next], batch.targets).double().sum())

    clean = logp()
    sums.ce_clean += ce(clean)
    sums.ce_zero += ce(logp(lambda out: torch.zeros_like(out)))
    sums.kl_tokens += len(clean)
    sums.ce_tokens += len(batch.targets)
    for m in members:
        spliced = logp(lambda out, sae=m.sae: sae(out.float()))
        sums.kl[m.run.name] += float(kl_per_token(clean, spliced).double().sum())
        sums.ce_spliced[m.run.name] += ce(spliced)


@torch.inference_mode()
def _behaviour(store: ActivationStore, rows: tuple[int, int], members: list[LoadedRun], cfg: EvaluateConfig,
               dev: torch.device, on_progress: Progress | None) -> dict[str, Behaviour]:
    """KL(clean || spliced) and CE clean / spliced / zero-ablated over the held-out contexts."""
    splicer = Splicer(load_store_lm(store.meta, cfg.model, dev, torch.float32), store.meta.layer)
    contexts = list(store.contexts_between(*rows))[: cfg.kl_contexts]
    sums = _Sums()
    for b in range(0, len(contexts), cfg.batch_contexts):
        batch = contexts[b : b + cfg.batch_contexts]
        _add_batch(splicer, _context_batch(store, batch, dev, rows[1]), members, sums)
        if on_progress is not None:
            on_progress(b + len(batch), len(contexts), "LM with SAE spliced in", "context")
    return {m.run.name: sums.behaviour(m.run.name, len(contexts)) for m in members}
