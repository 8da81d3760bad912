"""The figures the paper claims (Gemma-2-2B, layer 19, 10M tokens of the uncopyrighted Pile; 3 seeds, 95% CI).

They are quoted for comparison only: a claim, not a result this project reproduced.
"""

from __future__ import annotations

from fit.architectures.relu_l1 import HierFields

SETTING = "Gemma-2-2B layer 19 (d = n = 2304), 10M tokens of monology/pile-uncopyrighted, 3 seeds"

# metric -> (baseline, hierarchical), each (mean, 95% CI half-width)
TABLE_1 = {
    "mse": ((200.23, 4.12), (85.87, 2.31)),
    "kl": ((2.06, 0.11), (0.047, 0.008)),
    "explained_variance": ((0.31, 0.02), (0.926, 0.015)),
    "active_features": ((85, 7), (1247, 23)),
}

GAMMA_KL = {1.25: (0.31, 0.04), 1.5: (0.047, 0.008), 2.0: (0.99, 0.07)}
K_CLAIM = "K = 5 optimal, balancing granularity and training stability"
LAMBDA_CLAIM = "lambda = 0.06 gives 23% higher training loss than 0.04"
TRAINING_TIME_CLAIM = 0.15
"""Hierarchical training takes 15% longer."""

GROUPS = {
    "early (groups 1-2)": {"activation_rate": (0.73, 0.05), "intensity": (0.31, 0.03)},
    "late (groups 4-5)": {"activation_rate": (0.12, 0.02), "intensity": (0.85, 0.06)},
}

THE_SETTING = HierFields()
"""The paper's lambda, K and gamma: the hierarchical SAE's defaults (fit/architectures/relu_l1.py), where they live."""
ABLATIONS = {"groups": (3, 7), "gamma": (1.25, 2.0), "l1": (0.06,)}
"""The paper's ablations: each varies one field of its setting (K and gamma of hier; lambda of both)."""
SYMBOLS = {"l1": "λ", "groups": "K", "gamma": "γ"}


def ablations() -> list[tuple[str, str, float]]:
    """(variant, field, value) of each ablation SAE: K and gamma for hier, lambda for baseline and hier."""
    return [(v, name, value) for name, values in ABLATIONS.items() for value in values
            for v in (("baseline", "hier") if name == "l1" else ("hier",))]


def ablation_axis(name: str) -> tuple[float, ...]:
    """The values the report's ablation table of ``name`` shows: the paper's setting and its ablations, in order."""
    return tuple(sorted((getattr(THE_SETTING, name), *ABLATIONS[name])))


def setting_text(*without: str) -> str:
    """The paper's setting in prose (``λ = 0.04, K = 5, γ = 1.5``), without the fields ``without``."""
    return ", ".join(f"{SYMBOLS[f]} = {getattr(THE_SETTING, f):g}" for f in ("l1", "groups", "gamma")
                     if f not in without)
