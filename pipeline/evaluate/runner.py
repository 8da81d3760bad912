"""`pipeline evaluate`: every metric of docs/metrics.md for one or many runs, written to RUN/eval.json."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fit.runs import RunDir, load_sae, store_identity, write_json_atomic
from fit.sae import SAE
from pipeline.errors import PipelineError
from pipeline.evaluate.metrics import ReconstructionAccumulator, ce_recovered, cross_entropy_per_token, kl_per_token
from pipeline.evaluate.splice import Splicer
from store.device import resolve_device
from store.errors import StoreError
from store.reader import ActivationStore, open_store

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


def find_runs(paths: list[str]) -> list[Path]:
    """Run directories named directly, or found one level below a directory of runs."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.json").exists():
            runs.append(p)
        elif p.is_dir():
            runs += sorted(q for q in p.iterdir() if (q / "config.json").exists())
        else:
            raise PipelineError(f"{p} is neither a run directory nor a folder of runs")
    if not runs:
        raise PipelineError(f"no run directories found in {', '.join(paths)}: train some with `pipeline fit`")
    return runs


def check_run_store(run: Path, config: dict, store: ActivationStore, url: str) -> None:
    """Refuse a store other than the one the run was trained on (another model, layer, data set or length):
    its held-out rows would be other rows, or rows the run trained on."""
    want = config["store"]
    have = store_identity(store.meta, store.n_rows)
    for key in want:
        if want[key] != have.get(key):
            raise PipelineError(
                f"{run} was trained on another store than {url}: its {key} is {want[key]!r}, this store's is "
                f"{have.get(key)!r}; pass the store it was trained on with --store"
            )


def open_run_store(url: str) -> ActivationStore:
    """A run's store, with store errors turned into one-line pipeline errors."""
    try:
        return open_store(url)
    except StoreError as exc:
        raise PipelineError(str(exc)) from exc


def evaluate(run_paths: list[str], *, store_url: str | None = None, model: str | None = None,
             kl: bool = True, kl_contexts: int | None = None, batch_contexts: int = 4, device: str = "auto",
             on_progress: Progress | None = None) -> list[dict]:
    """Evaluate every run; runs on the same store share one read of the held-out rows and one LM pass."""
    dev = resolve_device(device)
    by_store: dict[tuple, list[tuple[Path, SAE, dict]]] = defaultdict(list)
    for run in find_runs(run_paths):
        if not RunDir(run).finished:
            raise PipelineError(f"{run} has not finished training: rerun its `pipeline fit` command to finish it")
        sae, config = load_sae(run, dev)
        url = store_url or config.get("store_url")
        if url is None:
            raise PipelineError(f"{run} does not record its store: pass --store")
        by_store[(url, tuple(config["train"]["heldout_rows"]))].append((run, sae, config))
    results = []
    for (url, heldout), members in by_store.items():
        store = open_run_store(url)
        for run, _, config in members:
            check_run_store(run, config, store, url)
        start, stop = heldout
        if stop <= start:
            raise PipelineError(f"{members[0][0]} has no held-out rows (trained with --holdout 0)")
        recon = _reconstruction(store, (start, stop), members, dev, on_progress)
        behaviour = _behaviour(store, (start, stop), members, model, kl_contexts, batch_contexts, dev,
                               on_progress) if kl else {}
        for run, sae, config in members:
            training = json.loads((run / "training.json").read_text())
            result = {
                "name": run.name,
                "run_dir": str(run),
                "sae": config["sae"],
                "n_latents": sae.n_latents,
                "group_bounds": sae.group_bounds,
                "store": {"url": url, **config["store"], "architecture": store.meta.model.architecture,
                          "description": store.describe(),
                          "tokens_total": store.n_rows, "heldout_rows": [start, stop]},
                "train": {"steps": training["steps"], "tokens": training["tokens"],
                          "sae_seconds": training["sae_seconds"], "final": training["final"]},
                **recon[run.name],
                **behaviour.get(run.name, {}),
            }
            write_json_atomic(run / "eval.json", result)
            results.append(result)
            log.info("%s: MSE %.4g, EV %.3f, L0 %.1f, active %d%s", run.name, result["mse"],
                     result["explained_variance"], result["l0"], result["active_features"],
                     f", KL {result['kl']:.4g}, CE recovered {result['ce_recovered']:.3f}" if "kl" in result else "")
    return results


@torch.inference_mode()
def _reconstruction(store: ActivationStore, rows: tuple[int, int], members, dev: torch.device,
                    on_progress: Progress | None) -> dict[str, dict]:
    accs = {run.name: ReconstructionAccumulator(sae.n_latents, sae.group_bounds) for run, sae, _ in members}
    start, stop = rows
    step = store.chunk_rows
    for lo in range(start, stop, step):
        hi = min(lo + step, stop)
        x = store.read_rows(lo, hi, dev)
        for run, sae, _ in members:
            norm = sae.normalise(x)
            z = sae.encode(norm.x_BD)
            x_hat_n = sae.decode(z)
            accs[run.name].add(x, norm.inverse(x_hat_n), norm.x_BD, x_hat_n, z, sae.w_F)
        if on_progress is not None:
            on_progress(hi - start, stop - start, "reconstruction")
    return {name: acc.result() for name, acc in accs.items()}


def _load_lm(store: ActivationStore, model: str | None, dev: torch.device):
    from harvest.errors import HarvestError
    from harvest.model import load_model, model_info

    name = model or store.meta.model.name
    try:
        lm = load_model(name, store.meta.model.revision if model is None else None, dev, torch.float32)
    except HarvestError as exc:
        raise PipelineError(f"{exc} (the store was made with '{store.meta.model.name}'; pass --model)") from exc
    info = model_info(lm, name)
    if info.fingerprint != store.meta.model.fingerprint:
        raise PipelineError(
            f"model '{name}' is not the one the store was made from ('{store.meta.model.name}': its embedding "
            "fingerprint differs): pass the right --model"
        )
    return lm


@torch.inference_mode()
def _behaviour(store: ActivationStore, rows: tuple[int, int], members, model: str | None,
               kl_contexts: int | None, batch_contexts: int, dev: torch.device,
               on_progress: Progress | None) -> dict[str, dict]:
    """KL(clean || spliced) and CE clean / spliced / zero-ablated over the held-out contexts."""
    meta = store.meta
    lm = _load_lm(store, model, dev)
    splicer = Splicer(lm, meta.layer)
    per_ctx = meta.context.rows_per_context
    first_pos = meta.context.first_position
    length = meta.context.length
    start, stop = rows
    contexts = list(range(start // per_ctx, -(-stop // per_ctx)))
    if kl_contexts is not None:
        contexts = contexts[:kl_contexts]
    tokens = store.tokens(start, stop)
    sums: dict[str, dict[str, float]] = {run.name: defaultdict(float) for run, _, _ in members}
    clean_ce = zero_ce = 0.0
    n_kl = n_ce = 0
    for b in range(0, len(contexts), batch_contexts):
        batch = contexts[b : b + batch_contexts]
        ids = np.full((len(batch), length), meta.tokenizer.pad_token_id or 0, dtype=np.int64)
        n_real = []
        for i, c in enumerate(batch):
            lo, hi = c * per_ctx - start, min((c + 1) * per_ctx, stop) - start
            ids[i, first_pos : first_pos + hi - lo] = tokens[lo:hi]
            ids[i, 0] = meta.tokenizer.bos_token_id
            n_real.append(first_pos + hi - lo)
        ids_t = torch.from_numpy(ids).to(dev)
        pos = torch.arange(length, device=dev)[None, :]
        ends = torch.tensor(n_real, device=dev)[:, None]
        replaced = (pos >= first_pos) & (pos < ends)  # the positions the SAE was trained on
        # Of the replaced positions (in row-major order), those with a next token, and that token.
        has_next = (pos < ends - 1)[replaced]
        targets = torch.roll(ids_t, -1, dims=1)[replaced][has_next]

        def logp(replace=None, ids_t=ids_t, replaced=replaced):
            return torch.log_softmax(splicer.logits(ids_t, replace, replaced)[replaced], dim=-1)

        clean = logp()
        zero = logp(lambda out: torch.zeros_like(out))
        clean_ce += float(cross_entropy_per_token(clean[has_next], targets).double().sum())
        zero_ce += float(cross_entropy_per_token(zero[has_next], targets).double().sum())
        del zero
        n_kl += len(clean)
        n_ce += len(targets)
        for run, sae, _ in members:
            spliced = logp(lambda out, sae=sae: sae(out.float()))
            s = sums[run.name]
            s["kl"] += float(kl_per_token(clean, spliced).double().sum())
            s["ce"] += float(cross_entropy_per_token(spliced[has_next], targets).double().sum())
        if on_progress is not None:
            on_progress(b + len(batch), len(contexts), "LM with SAE spliced in")
    out = {}
    ce_clean, ce_zero = clean_ce / max(n_ce, 1), zero_ce / max(n_ce, 1)
    for run, _, _ in members:
        ce = sums[run.name]["ce"] / max(n_ce, 1)
        out[run.name] = {
            "kl": sums[run.name]["kl"] / max(n_kl, 1),
            "ce_clean": ce_clean,
            "ce_spliced": ce,
            "ce_zero_ablated": ce_zero,
            "ce_recovered": ce_recovered(ce_clean, ce, ce_zero),
            "kl_tokens": n_kl,
            "ce_tokens": n_ce,
            "kl_contexts": len(contexts),
        }
    return out
