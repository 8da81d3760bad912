"""Fit stage: train baseline and hierarchical-group-sparsity SAEs from an activation store.

One model class serves both variants: they differ only in the per-latent L1 weight vector
(:func:`fit.functional.penalty_weights`). Many SAEs train in one pass over the store, on the same batches.

Where things live: ``config`` (SAEConfig, TrainConfig), ``functional`` (the SAE's math), ``sae`` (the module),
``optim`` (constrained AdamW), ``trainee`` (one SAE in training: its step), ``trainer`` (the pass),
``checkpoint`` (checkpoints and resume), ``metrics`` (what a metric line holds), ``tracking`` (wandb, trackio,
tensorboard), ``runs`` (the run directory), ``export`` (SAELens format), ``data`` and ``distributed``.
"""
