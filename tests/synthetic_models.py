"""Small synthetic models (SAELens's configuration, built by SAELens) and stores of them, for fast tests."""

from __future__ import annotations

from pathlib import Path

from harvest.synthetic.model import ModelSpec, normalised
from harvest.synthetic.presets import _config


def small_config(**overrides) -> dict:
    """256 features in 32 dimensions: 8 trees of depth 2 (branching 3, exclusive children, scaled by their parents),
    a rank-6 correlation, Zipfian firing: every kind of structure, small."""
    args = dict(features=256, hidden=32, zipf=(0.5, 0.3, 5e-3), roots=8, branching=3, depth=2, rank=6, scale=0.15,
                orthogonalisation=(5, 3e-4), magnitudes=(5.0, 4.0), bias=0.5, seed=1)
    return normalised(_config(**(args | overrides)), "the test model")


def small_spec(**overrides) -> ModelSpec:
    return ModelSpec(small_config(**overrides), preset=None, source="small.json")


def write_config(path: Path, config: dict) -> Path:
    import json

    path.write_text(json.dumps(config))
    return path
