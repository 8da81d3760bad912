"""`pipeline browse`: a static feature browser built in one streaming pass over a store's held-out rows.

Modules, one job each: ``stats`` (per-feature top-k, histograms and random examples over a stream of latent
blocks), ``decode`` (each token's text inside its context, correct across split UTF-8 characters),
``logit_lens`` (tokens a decoder direction promotes and suppresses), ``scan`` (the pass over the store),
``site`` (the files of the site) and ``builder`` (all of it for a set of runs). docs/browser.md is the prose.
"""
