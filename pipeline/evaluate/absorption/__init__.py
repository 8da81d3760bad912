"""Feature absorption on first-letter spelling (Chanin et al. 2024, "A is for Absorption"), following SAEBench's
``sae_bench/evals/absorption`` (sae-bench 0.6.0) definitions; docs/metrics.md says where and why we differ.

Modules: :mod:`.vocab` (words and prompts), :mod:`.probe` (the 26-way logistic-regression probe), :mod:`.cache`
(prompt activations and the probe, computed once per model, layer and vocabulary and kept beside the store),
:mod:`.ksparse` (each letter's main latents), :mod:`.score` (the absorption rules, per SAE: ``absorption_records``,
what `pipeline evaluate --absorption` calls). The package imports none of them, so that each may import its
siblings without an import cycle.
"""
