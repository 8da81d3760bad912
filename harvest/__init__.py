"""Harvest stage: run a causal LM over a text data set and write one layer's residual stream to a store
(:func:`harvest.runner.harvest` with a :class:`harvest.config.HarvestConfig`); the synthetic source beside it in
:mod:`harvest.synthetic`. The package imports none of its modules, so that reading a config loads no LM library."""
