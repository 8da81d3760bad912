"""Evaluation against a synthetic store's ground truth (docs/metrics.md): :mod:`.metrics` (plain functions:
matching, MCC, classification, absorption on the true forest, the groups' specificity) and :mod:`.accumulate` (one
SAE over held-out rows, in the same pass as the reconstruction metrics)."""
