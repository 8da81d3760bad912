"""Named synthetic models, each the JSON of SAELens's ``SyntheticModelConfig.to_dict()`` (so that a config written
for SAELens or SynthSAEBench, passed with ``--config``, is the same kind of thing as a preset).

- ``synth-16k``: SynthSAEBench-16k (Chanin and Garriga-Alonso 2026) with its authors' published configuration.
  Built here it is statistically equivalent to the authors' copy on the Hub, not bit-equal: they built theirs with
  CUDA's generators, and its orthogonalisation alone is ~120 TFLOP (minutes on a GPU, tens of minutes on a CPU).
- ``synth-cpu``: the same kinds of structure (Zipfian firing, a forest of exclusive children scaled by their
  parents, a low-rank firing correlation, superposition 16x) at a size whose SAEs train to a verdict on 2 CPU cores
  in about two minutes (``make demo``).
- ``synth-mid``: between the two, for ``make demo-paper``: 4,096 features in 256 dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SyntheticPreset:
    name: str
    description: str
    config: dict[str, Any]
    """SAELens's SyntheticModelConfig.to_dict()."""


def _config(*, features: int, hidden: int, zipf: tuple[float, float, float], roots: int, branching: int,
            depth: int, rank: int, scale: float, orthogonalisation: tuple[int, float], magnitudes: tuple[float, float],
            bias: float, seed: int) -> dict[str, Any]:
    exponent, max_prob, min_prob = zipf
    steps, lr = orthogonalisation
    return {
        "num_features": features,
        "hidden_dim": hidden,
        "firing_probability": {"exponent": exponent, "max_prob": max_prob, "min_prob": min_prob,
                               "generator_name": "zipfian"},
        "hierarchy": {"total_root_nodes": roots, "branching_factor": branching, "max_depth": depth,
                      "mutually_exclusive_portion": 1.0, "mutually_exclusive_min_depth": 0,
                      "mutually_exclusive_max_depth": None, "compensate_probabilities": True,
                      "scale_children_by_parent": True},
        "orthogonalization": {"num_steps": steps, "lr": lr, "chunk_size": 1024},
        "correlation": {"rank": rank, "correlation_scale": scale, "seed": None},
        "std_firing_magnitudes": {"mean": 0.5, "std": 0.5, "min_value": None, "max_value": None,
                                  "generator_name": "folded_normal"},
        "mean_firing_magnitudes": {"start": magnitudes[0], "end": magnitudes[1], "generator_name": "linear"},
        "bias": bias,
        "dtype": "float32",
        "seed": seed,
    }


PRESETS = {p.name: p for p in (
    SyntheticPreset(
        "synth-16k",
        "SynthSAEBench-16k: 16,384 features in 768 dimensions, 128 trees of depth 3 (branching 4, exclusive "
        "children), rank-25 correlation, the authors' published configuration",
        _config(features=16384, hidden=768, zipf=(0.5, 0.4, 5e-4), roots=128, branching=4, depth=3, rank=25,
                scale=0.1, orthogonalisation=(100, 3e-4), magnitudes=(5.0, 4.0), bias=0.5, seed=42)),
    SyntheticPreset(
        "synth-mid",
        "4,096 features in 256 dimensions, 64 trees of depth 2 (branching 4, exclusive children), rank-16 "
        "correlation",
        _config(features=4096, hidden=256, zipf=(0.6, 0.3, 3e-4), roots=64, branching=4, depth=2, rank=16,
                scale=0.1, orthogonalisation=(100, 3e-4), magnitudes=(5.0, 4.0), bias=0.5, seed=42)),
    SyntheticPreset(
        "synth-cpu",
        "1,024 features in 64 dimensions, 24 trees of depth 2 (branching 4, exclusive children), rank-8 "
        "correlation: sized for 2 CPU cores",
        _config(features=1024, hidden=64, zipf=(0.7, 0.3, 5e-4), roots=24, branching=4, depth=2, rank=8,
                scale=0.1, orthogonalisation=(100, 3e-4), magnitudes=(5.0, 4.0), bias=0.5, seed=42)),
)}
"""The presets, by name (``--preset``)."""
