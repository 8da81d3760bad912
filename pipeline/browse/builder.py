"""`pipeline browse`: the site for a set of runs, one streaming pass per store they were trained on."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from fit.runs import RunDir, runs_by_store
from fit.sae import SAE
from harvest.lm import load_store_lm, load_store_tokenizer
from pipeline.browse import pages
from pipeline.browse.config import BrowseConfig
from pipeline.browse.decode import token_texts, vocab_texts
from pipeline.browse.logit_lens import LensResult, logit_lens
from pipeline.browse.scan import scan
from pipeline.browse.site import LEVELS, SiteWriter
from pipeline.browse.stats import FeatureStats
from pipeline.browse.truth import TRUTH_LENS, truth_names, truth_row_texts
from pipeline.errors import PipelineError
from pipeline.evaluate.record import EvalRecord
from pipeline.evaluate.runner import check_runs_store
from pipeline.report.frontier import describe
from store.device import resolve_device
from store.reader import ActivationStore, open_store

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
StepProgress = Callable[[int, int], None]


@dataclass
class Run:
    key: str
    """Unique among the site's runs and safe in a path and a URL fragment."""
    run: RunDir
    sae: SAE
    config: dict


def _keys(runs: list[RunDir]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", run.name) or "run"
        key, i = base, 2
        while key in keys:
            key, i = f"{base}-{i}", i + 1
        keys.append(key)
    return keys


def _evaluation(run: Run, url: str, heldout: tuple[int, int]) -> EvalRecord | None:
    """The run's evaluation when it measured the same rows this site shows, else None."""
    if not run.run.evaluated:
        return None
    ev = EvalRecord.read(run.run.eval_path)
    same = ev.store.url == url and tuple(ev.store.heldout_rows) == heldout
    if not same:
        log.warning("%s: eval.json measured another store or rows than %s %s; not shown", run.run, url, heldout)
    return ev if same else None


def _unembedding(cfg: BrowseConfig, store: ActivationStore) -> torch.Tensor:
    """W_U (V, D) of the LM named by --model or the store, refused if it is not the store's model."""
    lm = load_store_lm(store.meta, cfg.model, torch.device("cpu"), torch.float32)
    return lm.get_output_embeddings().weight.detach()


def _similar(members: list[Run]) -> dict[str, list[list[list]]]:
    """Per run, per feature: [[other run, its feature with the closest decoder direction, cosine], ...]."""
    dirs = {r.key: torch.nn.functional.normalize(r.sae.decoder_directions().cpu(), dim=1) for r in members}
    out: dict[str, list[list[list]]] = {r.key: [[] for _ in range(r.sae.n_latents)] for r in members}
    for a in members:
        for b in members:
            if a is b:
                continue
            # in row blocks: the full n x n cosine matrix would be 1 GB at n = 16k
            best = [(dirs[a.key][i : i + 4096] @ dirs[b.key].T).max(dim=1) for i in range(0, len(dirs[a.key]), 4096)]
            cos, j = torch.cat([c for c, _ in best]), torch.cat([i for _, i in best])
            for f in range(a.sae.n_latents):
                out[a.key][f].append([b.key, int(j[f]), pages.sig(float(cos[f]), 3)])
    return out


def _load_runs(cfg: BrowseConfig, dev: torch.device) -> dict[tuple[str, tuple[int, int]], list[Run]]:
    """The runs, grouped by the store and held-out rows they are shown on."""
    groups = runs_by_store(list(cfg.runs), dev, cfg.store_url)
    loaded = [r for members in groups.values() for r in members]
    keys = dict(zip((r.run.path for r in loaded), _keys([r.run for r in loaded]), strict=True))
    for (_, (start, stop)), members in groups.items():
        if stop <= start:
            raise PipelineError(f"{members[0].run} has no held-out rows (trained with --holdout 0): the browser shows "
                                "held-out rows only, so retrain with --holdout above 0")
    return {group: [Run(keys[r.run.path], r.run, r.sae, r.config) for r in members]
            for group, members in groups.items()}


def _progress(on_progress: Progress | None, what: str) -> StepProgress | None:
    return None if on_progress is None else (lambda done, total: on_progress(done, total, what))


def build_site(cfg: BrowseConfig, on_progress: Progress | None = None) -> Path:
    """Build the site; returns its index.html."""
    dev = resolve_device(cfg.device)
    groups = _load_runs(cfg, dev)
    site_meta = _site_meta(cfg)
    with SiteWriter(Path(cfg.out)) as site:
        for s, ((url, heldout), members) in enumerate(groups.items()):
            shown = _ShownStore(f"s{s}", url, heldout, open_store(url, allow_unsealed=cfg.allow_unsealed))
            site_meta["runs"] += _build_store(site, shown, members, cfg, dev, on_progress)
            site_meta["stores"].append(_store_meta(shown, members, cfg))
        site.put("data/site.js", site_meta)
        return site.finish()


def _site_meta(cfg: BrowseConfig) -> dict[str, Any]:
    """data/site.js before its stores and runs: the settings the app reads, and which fields it shows."""
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "k": cfg.k, "window": [cfg.before, cfg.after], "quantiles": list(cfg.quantiles),
        "bins": {"lo": cfg.stats.bins.lo, "per_decade": cfg.stats.bins.per_decade, "n": cfg.stats.bins.n},
        "density_bins": pages.DENSITY_BINS, "levels": LEVELS,
        "features_per_shard": cfg.features_per_shard,
        "columns": pages.overview_columns(),
        "stores": [], "runs": [],
    }


@dataclass
class _ShownStore:
    """One store of the site: its key there, where it is read, and the held-out rows shown."""

    key: str
    url: str
    heldout: tuple[int, int]
    store: ActivationStore


@dataclass
class _Texts:
    """What the feature pages show as text: each example row's token, and the logit lens's tokens."""

    contexts: dict[int, list[str]]
    """Context -> the display text of each of its tokens."""
    rows_per_context: int
    lens: pages.TokenText | None = None

    def of_row(self, row: int) -> str:
        c, i = divmod(row, self.rows_per_context)
        return self.contexts[c][i]


def _build_store(site: SiteWriter, shown: _ShownStore, members: list[Run], cfg: BrowseConfig, dev: torch.device,
                 on_progress: Progress | None) -> list[dict[str, Any]]:
    """The pass over one store's held-out rows, its contexts and every run's pages; returns the runs' entries of
    data/site.js."""
    store = shown.store
    check_runs_store([(r.run, r.config) for r in members], store, shown.url)
    log.info("%s: %d held-out rows for %s", shown.url, shown.heldout[1] - shown.heldout[0],
             ", ".join(r.key for r in members))
    stats = scan(store, shown.heldout, {r.key: r.sae for r in members}, cfg.stats, dev, cfg.seed,
                 _progress(on_progress, "held-out rows"))
    if store.synthetic:
        # A synthetic row has no text: it shows as its true features, and the lens is the true dictionary.
        namer = truth_names(store.ground_truth())
        texts = _Texts(_write_contexts(site, shown, stats, cfg, truth_row_texts(store, shown.heldout, namer), None),
                       store.rows_per_context, lens=namer)
        W_U = store.ground_truth().dictionary_GD
        lenses = {r.key: logit_lens(W_U, r.sae.decoder_directions().to(dev), cfg.lens_tokens) for r in members}
    else:
        tokenizer = load_store_tokenizer(store.meta, cfg.tokenizer or cfg.model)
        decode = token_decoder(store, shown.heldout, tokenizer)
        texts = _Texts(_write_contexts(site, shown, stats, cfg, decode, _progress(on_progress, "decode contexts")),
                       store.rows_per_context)
        lenses = _lenses(cfg, store, members, dev, on_progress) if cfg.wants_lens else {}
        if lenses:
            texts.lens = _lens_texts(lenses, tokenizer)
    similar = _similar(members)
    log.info("writing the feature pages of %s", ", ".join(r.key for r in members))
    return [_write_run(site, shown, r, stats[r.key], lenses.get(r.key), texts, similar[r.key], cfg, on_progress)
            for r in members]


def _lenses(cfg: BrowseConfig, store: ActivationStore, members: list[Run], dev: torch.device,
            on_progress: Progress | None) -> dict[str, LensResult]:
    """Each run's logit lens through the unembedding of --model (or the store's model)."""
    log.info("logit lens through the unembedding of %s", cfg.model or store.meta.model.name)
    W_U = _unembedding(cfg, store)
    return {r.key: logit_lens(W_U, r.sae.decoder_directions().to(dev), cfg.lens_tokens,
                              on_progress=_progress(on_progress, f"logit lens {r.key}")) for r in members}


def _lens_texts(lenses: dict[str, LensResult], tokenizer) -> pages.TokenText:
    """Token id -> display text, for every token a lens shows."""
    ids = sorted({int(i) for lens in lenses.values()
                  for i in torch.cat([lens.promoted_ids.flatten(), lens.suppressed_ids.flatten()])})
    return dict(zip(ids, vocab_texts(tokenizer, ids), strict=True)).__getitem__


def _write_run(site: SiteWriter, shown: _ShownStore, r: Run, st: FeatureStats, lens: LensResult | None,
               texts: _Texts, similar: list[list[list]], cfg: BrowseConfig,
               on_progress: Progress | None) -> dict[str, Any]:
    """One run's feature table and feature pages; returns its entry of data/site.js."""
    base = f"data/runs/{r.key}"
    site.put(f"{base}/features.js", pages.feature_list(st, texts.of_row, lens, texts.lens))
    n, per = r.sae.n_latents, cfg.features_per_shard
    for first in range(0, n, per):
        site.put(f"{base}/f/{first // per:05d}.js", {"first": first, "features": [
            pages.feature_detail(f, st, cfg.quantiles, lens, texts.lens, similar[f])
            for f in range(first, min(first + per, n))]})
        if on_progress is not None:
            on_progress(min(first + per, n), n, f"pages {r.key}")
    return {
        "key": r.key, "name": r.run.name, "dir": str(r.run), "store": shown.key, "sae": r.config["sae"],
        "label": describe(r.config["sae"], r.config.get("group_bounds")), "n": n, "lens": lens is not None,
        **pages.run_overview(st, _evaluation(r, shown.url, shown.heldout)),
    }


def _store_meta(shown: _ShownStore, members: list[Run], cfg: BrowseConfig) -> dict[str, Any]:
    """The store's entry of data/site.js."""
    store = shown.store
    return {
        "key": shown.key, "url": shown.url, "description": store.describe(), "model": store.meta.model.name,
        "layer": store.meta.layer, "rpc": store.rows_per_context, "heldout": list(shown.heldout),
        "contexts_per_shard": contexts_per_shard(cfg, store.rows_per_context),
        "runs": [r.key for r in members],
        "lens_model": (cfg.model or store.meta.model.name) if cfg.wants_lens else None,
        **({"lens": TRUTH_LENS, "lens_model": "the true dictionary"} if store.synthetic else {}),
    }


def contexts_per_shard(cfg: BrowseConfig, rows_per_context: int) -> int:
    return max(1, cfg.context_tokens_per_shard // rows_per_context)


def _write_contexts(site: SiteWriter, shown: _ShownStore, stats: dict[str, FeatureStats], cfg: BrowseConfig,
                    decode: Callable[[list[int]], list[list[str]]],
                    on_progress: StepProgress | None) -> dict[int, list[str]]:
    """Decode every context an example comes from (``decode``: context ids -> each stored row's text); write them in
    shards. Returns context id -> row texts."""
    store = shown.store
    rows: set[int] = set()
    for st in stats.values():
        rows |= pages.referenced_rows(st, cfg.quantiles)
    contexts = sorted({store.context_of_row(r) for r in rows})
    texts = _decode_contexts(contexts, decode, on_progress)
    per = contexts_per_shard(cfg, store.rows_per_context)
    shards: dict[int, dict[str, list[str]]] = defaultdict(dict)
    for c in contexts:
        shards[c // per][str(c)] = texts[c]
    for shard, ctxs in shards.items():
        site.put(f"data/stores/{shown.key}/ctx/{shard:05d}.js", {"contexts": ctxs})
    log.info("decoded %d contexts into %d files", len(contexts), len(shards))
    return texts


def token_decoder(store: ActivationStore, heldout: tuple[int, int], tokenizer) -> Callable[[list[int]], list]:
    """``decode`` for an LM's store: held-out contexts -> the display text of each of their stored tokens."""
    start, stop = heldout
    tokens = store.tokens(start, stop)  # one read; the contexts are slices of it

    def decode(contexts: list[int]) -> list[list[str]]:
        ids = [tokens[lo - start : hi - start] for lo, hi in map(store.context_rows, contexts)]
        return token_texts(tokenizer, ids)

    return decode


def _decode_contexts(contexts: list[int], decode: Callable[[list[int]], list[list[str]]],
                     on_progress: StepProgress | None, batch: int = 256) -> dict[int, list[str]]:
    """Context -> the display text of each of its stored rows."""
    texts: dict[int, list[str]] = {}
    for i in range(0, len(contexts), batch):
        chunk = contexts[i : i + batch]
        texts.update(zip(chunk, decode(chunk), strict=True))
        if on_progress is not None:
            on_progress(min(i + batch, len(contexts)), len(contexts))
    return texts
