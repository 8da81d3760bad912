"""Evaluation of trained SAEs on a store's held-out contexts: reconstruction, sparsity, feature use, groups,
and the LM's behaviour with the SAE spliced in. Definitions: docs/metrics.md."""
