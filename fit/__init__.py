"""Fit stage: train SAEs from an activation store: the paper's baseline and hierarchical-group-sparsity SAEs and the
field's TopK, BatchTopK and Matryoshka SAEs (and hier-matryoshka), registered by variant name in ``architectures``.

One model class serves every variant; what differs (encoder, loss, buffers) is its architecture. Many SAEs train in
one pass over the store, on the same batches, those of one shape and architecture as one batched computation (a
stack).

Where things live: ``config`` (SAEConfig, TrainConfig), ``functional`` (the SAE's math), ``architectures`` (what
differs between kinds of SAE, one module each), ``sparse`` (active-pair kernels), ``sae`` (one SAE), ``stack`` (SAEs
of one shape, stacked), ``optim`` (constrained AdamW), ``trainee`` (a stack in training and its step; one SAE in a
slot of it), ``trainer`` (the pass), ``checkpoint`` (checkpoints and resume), ``metrics`` (what a metric line holds),
``tracking`` (wandb, trackio, tensorboard), ``runs`` (the run directory), ``export`` (SAELens format), ``data`` and
``distributed``.
"""
