"""Fit stage: train baseline and hierarchical-group-sparsity SAEs from an activation store.

One model class serves both variants: they differ only in the per-latent L1 weight vector
(:func:`fit.math.penalty_weights`). Many SAEs train in one pass over the store, on the same batches.
"""
