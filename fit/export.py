"""Export a trained SAE in SAELens' on-disk format (``cfg.json`` + ``sae_weights.safetensors``), under the SAELens
architecture that computes what ours does at inference, which each architecture names (its ``saelens``,
fit/architectures/); why each is right:

- ``baseline``, ``hier``, ``hier-matryoshka`` -> ``standard``: ReLU(x W_enc + b_enc), x_hat = z W_dec + b_dec
  (the prefixes of hier-matryoshka shape training only);
- ``topk`` -> ``topk`` with our k: SAELens keeps each row's k largest pre-activations, ReLU'd, as we do; our decoder
  rows have unit norm, so its ``rescale_acts_by_decoder_norm`` is off (it would multiply by 1);
- ``batchtopk``, ``matryoshka`` -> ``jumprelu``: at inference both are a ReLU that keeps the pre-activations above
  the threshold estimated in training; a per-latent ``threshold`` vector filled with ours, as SAELens converts its
  own BatchTopK and Matryoshka SAEs on saving (``torch.ones_like(b_enc) * topk_threshold``), and its JumpReLU
  keeps ``pre`` where ``pre > threshold``, ReLU'd: ours exactly, ReLU included (before any training step our
  threshold is -1, which lets every positive pre-activation through, there too).

Our ``layer_norm`` input normalisation is SAELens' ``normalize_activations="layer_norm"`` (same formula and
epsilon); ``store_stats`` (a per-dimension affine map) is folded into the weights and exported as ``none`` (it
leaves every pre-activation as it was, so the TopK choice and the threshold carry over).
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


def saelens_architecture(sae: SAE) -> str:
    """The SAELens architecture that computes ``sae`` at inference: its architecture's (fit/architectures/)."""
    return sae.arch.saelens


def saelens_tensors(sae: SAE) -> tuple[dict[str, torch.Tensor], str]:
    """The weights as SAELens names them, and the normalisation SAELens applies to its input."""
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
    if saelens_architecture(sae) == "jumprelu":
        # SAELens's own BatchTopK -> JumpReLU conversion, to the rounding: a float32 vector of ones times the
        # threshold as a Python float.
        tensors["threshold"] = torch.ones_like(b_enc) * float(sae.threshold)
    return {k: v.contiguous() for k, v in tensors.items()}, norm


def saelens_metadata(sae: SAE, meta: StoreMeta) -> dict[str, Any]:
    """Where the SAE reads its input (model, hook, context) and how it was trained, for SAELens's cfg.json."""
    out: dict[str, Any] = {
        "model_name": meta.model.name,
        "hook_name": f"blocks.{meta.layer}.hook_resid_post",
        "hf_hook_point": meta.hook_point,
        "hook_layer": meta.layer,
        "context_size": meta.context.length,
        "prepend_bos": True,
        "dataset_path": meta.dataset.name,
        "sae_variant": sae.cfg.variant,
    }
    uses = sae.cfg.uses
    if "l1" in uses:
        out["penalty_groups"] = sae.group_bounds
        out["penalty_weights"] = sorted({round(float(w), 10) for w in sae.w_F})
    if "k" in uses:
        out["k"] = sae.cfg.k
    if "prefixes" in uses:
        out["matryoshka_widths"] = list(sae.arch.ends)
    return out


def export_saelens(sae: SAE, out_dir: Path, metadata: dict[str, Any]) -> Path:
    architecture = saelens_architecture(sae)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, norm = saelens_tensors(sae)
    save_file(tensors, str(out_dir / "sae_weights.safetensors"))
    cfg: dict[str, Any] = {
        "architecture": architecture,
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
    if architecture == "topk":
        cfg.update(k=sae.cfg.k, rescale_acts_by_decoder_norm=False)
    (out_dir / "cfg.json").write_text(json.dumps(cfg, indent=2))
    return out_dir
