"""Export a trained SAE in SAELens' on-disk format (``cfg.json`` + ``sae_weights.safetensors``).

SAELens' ``standard`` architecture computes ReLU(x W_enc + b_enc) and x_hat = z W_dec + b_dec, which is ours.
Our ``layer_norm`` input normalisation is SAELens' ``normalize_activations="layer_norm"`` (same formula and
epsilon); ``store_stats`` (a per-dimension affine map) is folded into the weights and exported as ``none``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fit.sae import SAE
from store.format import StoreMeta

SAELENS_FORMAT_VERSION = "6.0.0"


def saelens_tensors(sae: SAE) -> tuple[dict[str, torch.Tensor], str]:
    W_enc, b_enc = sae.W_enc.detach().float().cpu(), sae.b_enc.detach().float().cpu()
    W_dec, b_dec = sae.W_dec.detach().float().cpu(), sae.b_dec.detach().float().cpu()
    norm = sae.cfg.norm
    if norm == "store_stats":
        mean, std = sae.norm_mean.float().cpu(), sae.norm_std.float().cpu()
        # encoder sees (x - mean) / std; decoder output y maps back to y * std + mean
        b_enc = b_enc - (mean / std) @ W_enc
        W_enc = W_enc / std[:, None]
        W_dec = W_dec * std
        b_dec = b_dec * std + mean
        norm = "none"
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    return {k: v.contiguous() for k, v in tensors.items()}, norm


def saelens_metadata(sae: SAE, meta: StoreMeta) -> dict[str, Any]:
    """Where the SAE reads its input (model, hook, context) and its penalty, for SAELens's cfg.json."""
    return {
        "model_name": meta.model.name,
        "hook_name": f"blocks.{meta.layer}.hook_resid_post",
        "hf_hook_point": meta.hook_point,
        "hook_layer": meta.layer,
        "context_size": meta.context.length,
        "prepend_bos": True,
        "dataset_path": meta.dataset.name,
        "sae_variant": sae.cfg.variant,
        "penalty_groups": sae.group_bounds,
        "penalty_weights": sorted({round(float(w), 10) for w in sae.w_F}),
    }


def export_saelens(sae: SAE, out_dir: Path, metadata: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, norm = saelens_tensors(sae)
    save_file(tensors, str(out_dir / "sae_weights.safetensors"))
    cfg = {
        "architecture": "standard",
        "d_in": sae.d_model,
        "d_sae": sae.n_latents,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": norm,
        "reshape_activations": "none",
        # SAELens reads a cfg.json without a version as a pre-6.0 layout; ours is the 6.x layout.
        "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, **metadata},
    }
    (out_dir / "cfg.json").write_text(json.dumps(cfg, indent=2))
    return out_dir
