"""The one streaming pass: read the held-out rows block by block, encode them with every SAE, accumulate."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fit.sae import SAE
from pipeline.browse.stats import FeatureStats, StatsConfig
from pipeline.errors import PipelineError
from store.reader import ActivationStore


def block_rows(store: ActivationStore) -> int:
    """Rows per read: whole contexts, about one store chunk (a window must never need the next block)."""
    rpc = store.rows_per_context
    return max(1, store.chunk_rows // rpc) * rpc


@torch.inference_mode()
def scan(store: ActivationStore, rows: tuple[int, int], saes: dict[str, SAE], cfg: StatsConfig,
         device: torch.device, seed: int = 0,
         on_progress: Callable[[int, int], None] | None = None) -> dict[str, FeatureStats]:
    """Statistics of every SAE over store rows [start, stop), which must start at a context boundary."""
    start, stop = rows
    rpc = store.rows_per_context
    if start % rpc:
        raise PipelineError(f"held-out rows start at {start}, inside a context of {rpc} rows: retrain the run "
                            "with this version of `pipeline fit` (its held-out split is context-aligned)")
    stats = {key: FeatureStats(sae.n_latents, sae.group_bounds, cfg, device) for key, sae in saes.items()}
    # One generator for the random examples, so a rebuild picks the same ones.
    generator = torch.Generator(device=device).manual_seed(seed)
    step = block_rows(store)
    for lo in range(start, stop, step):
        hi = min(lo + step, stop)
        x = store.read_rows(lo, hi, device)
        for key, sae in saes.items():
            z = sae.encode(sae.normalise(x).x_BD)
            stats[key].add(z, lo, rpc, generator)
        if on_progress is not None:
            on_progress(hi - start, stop - start)
    return {key: s.cpu() for key, s in stats.items()}
