"""Fit stage: train baseline and hierarchical-group-sparsity SAEs from an activation store.

One model class serves both variants: they differ only in the per-latent L1 weight vector
(:func:`fit.functional.penalty_weights`). Many SAEs train in one pass over the store, on the same batches, those of
one shape as one batched computation (a stack).

Where things live: ``config`` (SAEConfig, TrainConfig), ``functional`` (the SAE's math), ``architectures`` (what
differs between kinds of SAE), ``sae`` (one SAE), ``stack`` (SAEs of one shape, stacked), ``optim`` (constrained
AdamW), ``trainee`` (a stack in training and its step; one SAE in a slot of it), ``trainer`` (the pass),
``checkpoint`` (checkpoints and resume), ``metrics`` (what a metric line holds), ``tracking`` (wandb, trackio,
tensorboard), ``runs`` (the run directory), ``export`` (SAELens format), ``data`` and ``distributed``.
"""
