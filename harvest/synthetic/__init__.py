"""The synthetic source, a peer of the LM harvest: rows sampled from a model with known ground truth (SAELens's
``sae_lens.synthetic``, SynthSAEBench), written into a store of the harvest's format together with that truth
(``pipeline synth``), or streamed straight into a fit (``pipeline fit --synthetic``).

Modules: presets (named models), model (built by SAELens, cached as plain tensors), sampler (the fast sampler,
SAELens's reference sampler, the seeded stream), config, runner (the store writer), stream (a fit's rows).
"""
