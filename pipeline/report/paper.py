"""The figures the paper claims (Gemma-2-2B, layer 19, 10M tokens of the uncopyrighted Pile; 3 seeds, 95% CI).

They are quoted for comparison only: a claim, not a result this project reproduced.
"""

from __future__ import annotations

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
