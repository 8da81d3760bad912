"""Named sets of config values (``--preset``), such as the paper's own code's choices, and the values of the
experiment's sparsity sweep: what `pipeline experiment` trains and the report reads back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fit.architectures import variant
from fit.config import VARIANTS, SAEConfig, TrainConfig

TOPK_FAMILY = tuple(v for v in VARIANTS if "k" in variant(v).uses)
"""Variants whose sparsity is set by k (latents kept per row, or per row on average over a batch); the others are
swept over the L1 weight lambda."""
SWEEP_VARIANTS = VARIANTS
"""Every architecture fit knows (fit/architectures/), each swept."""
SWEEP_L1 = (0.32, 0.64, 1.28, 2.56, 5.12)
"""The sweep's lambdas. Measured on the demo store (Gemma-3-270M layer 13, layer-normed input, n = d = 640; one
stacked pass of 200k tokens, training-batch L0 at its end): lambda 0.04, 0.08, 0.16, 0.32, 0.64, 1.28 gave L0 421,
395, 353, 290, 206, 133, so L0 falls only ~25% per doubling of lambda there, and the high lambdas were still
falling; these five continue the doublings to reach the tens (docs/experiment.md). Not yet measured above 1.28."""
SWEEP_K = (16, 32, 64, 128, 256)
"""The sweep's k for the TopK family: L0 is k (BatchTopK/Matryoshka: k on average), so 16-256 spans the same
range as the lambdas' L0."""


@dataclass(frozen=True)
class Preset:
    """A named set of config values: the SAE fields and training-pass fields it sets. Options given on the command
    line override it."""

    name: str
    description: str
    sae: dict[str, Any]
    """SAEConfig fields."""
    train: dict[str, Any]
    """TrainConfig fields."""

    def __post_init__(self) -> None:
        # Checked against the configs here, so that a renamed field fails at import, not in a user's run.
        SAEConfig(**self.sae)
        TrainConfig(store="-", out="-", **self.train)

    def apply(self, sae: dict[str, Any], train: dict[str, Any], given: set[str]) -> None:
        """Set the preset's values in the two configs' keyword arguments, except the fields in ``given``."""
        for target, values in ((sae, self.sae), (train, self.train)):
            target.update({k: v for k, v in values.items() if k not in given})


PRESETS = {p.name: p for p in (
    Preset("paper-code", "the choices of the code the paper's figures came from: unsquared L2 reconstruction, no "
           "input normalisation, Adam without weight decay, the paper's lambda 0.04 and batch 2048",
           sae={"recon": "l2", "norm": "none", "l1": 0.04},
           train={"weight_decay": 0.0, "batch_size": 2048}),
)}
"""The presets, by name (``--preset``)."""
