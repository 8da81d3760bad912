"""`pipeline browse`: the site for a set of runs, one streaming pass per store they were trained on."""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from fit.runs import load_sae
from fit.sae import SAE
from pipeline.browse import pages
from pipeline.browse.config import BrowseConfig
from pipeline.browse.decode import token_texts, vocab_texts
from pipeline.browse.logit_lens import LensResult, decoder_directions, logit_lens
from pipeline.browse.scan import scan
from pipeline.browse.site import LEVELS, SiteWriter
from pipeline.errors import PipelineError
from pipeline.evaluate.runner import check_run_store, find_runs, open_run_store
from store.device import resolve_device
from store.reader import ActivationStore

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass
class Run:
    key: str
    """Unique among the site's runs and safe in a path and a URL fragment."""
    path: Path
    sae: SAE
    config: dict


def _keys(paths: list[Path]) -> list[str]:
    keys: list[str] = []
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", p.name) or "run"
        key, i = base, 2
        while key in keys:
            key, i = f"{base}-{i}", i + 1
        keys.append(key)
    return keys


def _evaluation(run: Run, url: str, heldout: tuple[int, int]) -> dict | None:
    """The run's eval.json when it measured the same rows this site shows, else None."""
    path = run.path / "eval.json"
    if not path.exists():
        return None
    ev = json.loads(path.read_text())
    same = ev.get("store", {}).get("url") == url and tuple(ev.get("store", {}).get("heldout_rows", ())) == heldout
    if not same:
        log.warning("%s: eval.json measured another store or rows than %s %s; not shown", run.path, url, heldout)
    return ev if same else None


def _tokenizer(cfg: BrowseConfig, store: ActivationStore):
    from harvest.errors import HarvestError
    from harvest.model import load_tokenizer

    name = cfg.tokenizer or cfg.model or store.meta.tokenizer.name
    revision = store.meta.model.revision if name == store.meta.model.name else None
    try:
        return load_tokenizer(name, revision)
    except HarvestError as exc:
        raise PipelineError(f"{exc}: pass --tokenizer PATH (a folder holding the store's tokenizer)") from exc


def _unembedding(cfg: BrowseConfig, store: ActivationStore) -> torch.Tensor:
    """W_U (V, D) of the LM named by --model or the store, refused if it is not the store's model."""
    from harvest.errors import HarvestError
    from harvest.model import load_model, model_info

    name = cfg.model or store.meta.model.name
    try:
        lm = load_model(name, store.meta.model.revision if cfg.store_model else None, torch.device("cpu"),
                        torch.float32)
    except HarvestError as exc:
        raise PipelineError(f"{exc} (the store was made with '{store.meta.model.name}'; pass --model)") from exc
    if model_info(lm, name).fingerprint != store.meta.model.fingerprint:
        raise PipelineError(f"model '{name}' is not the one the store was made from ('{store.meta.model.name}': "
                            "its embedding fingerprint differs): pass the right --model")
    return lm.get_output_embeddings().weight.detach()


def _similar(members: list[Run]) -> dict[str, list[list[list]]]:
    """Per run, per feature: [[other run, its feature with the closest decoder direction, cosine], ...]."""
    dirs = {r.key: torch.nn.functional.normalize(decoder_directions(r.sae).cpu(), dim=1) for r in members}
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
    paths = find_runs(list(cfg.runs))
    by_store: dict[tuple[str, tuple[int, int]], list[Run]] = defaultdict(list)
    for key, path in zip(_keys(paths), paths, strict=True):
        sae, config = load_sae(path, dev)
        url = cfg.store_url or config.get("store_url")
        if url is None:
            raise PipelineError(f"{path} does not record its store: pass --store")
        start, stop = config["train"]["heldout_rows"]
        if stop <= start:
            raise PipelineError(f"{path} has no held-out rows (trained with --holdout 0): the browser shows "
                                "held-out rows only, so retrain with --holdout above 0")
        by_store[(url, (start, stop))].append(Run(key, path, sae, config))
    return by_store


def _check_store(store: ActivationStore, url: str, members: list[Run]) -> None:
    for run in members:
        check_run_store(run.path, run.config, store, url)


def build_site(cfg: BrowseConfig, on_progress: Progress | None = None) -> Path:
    """Build the site; returns its index.html."""
    dev = resolve_device(cfg.device)

    def progress(what: str) -> Callable[[int, int], None] | None:
        return None if on_progress is None else (lambda done, total: on_progress(done, total, what))

    groups = _load_runs(cfg, dev)
    site_meta = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "k": cfg.k, "window": [cfg.before, cfg.after], "quantiles": list(cfg.quantiles),
        "bins": {"lo": cfg.stats.bins.lo, "per_decade": cfg.stats.bins.per_decade, "n": cfg.stats.bins.n},
        "density_bins": pages.DENSITY_BINS, "levels": LEVELS,
        "features_per_shard": cfg.features_per_shard,
        "stores": [], "runs": [],
    }
    with SiteWriter(Path(cfg.out)) as site:
        for s, ((url, heldout), members) in enumerate(groups.items()):
            skey = f"s{s}"
            store = open_run_store(url)
            _check_store(store, url, members)
            log.info("%s: %d held-out rows for %s", url, heldout[1] - heldout[0], ", ".join(r.key for r in members))
            stats = scan(store, heldout, {r.key: r.sae for r in members}, cfg.stats, dev, cfg.seed,
                         progress("held-out rows"))
            tokenizer = _tokenizer(cfg, store)
            texts = _write_contexts(site, skey, store, heldout, stats, cfg, tokenizer, progress("decode contexts"))
            rpc = store.meta.context.rows_per_context

            def text_of(row: int, texts=texts, rpc=rpc) -> str:
                return texts[row // rpc][row % rpc]

            lenses: dict[str, LensResult] = {}
            lens_text = None
            if cfg.wants_lens:
                log.info("logit lens through the unembedding of %s", cfg.model or store.meta.model.name)
                W_U = _unembedding(cfg, store)
                for r in members:
                    lenses[r.key] = logit_lens(W_U, decoder_directions(r.sae).to(dev), cfg.lens_tokens,
                                               on_progress=progress(f"logit lens {r.key}"))
                del W_U
                ids = sorted({int(i) for lens in lenses.values()
                              for i in torch.cat([lens.promoted_ids.flatten(), lens.suppressed_ids.flatten()])})
                vocab = dict(zip(ids, vocab_texts(tokenizer, ids), strict=True))
                lens_text = vocab.__getitem__
            similar = _similar(members)
            log.info("writing the feature pages of %s", ", ".join(r.key for r in members))
            for r in members:
                st, lens = stats[r.key], lenses.get(r.key)
                base = f"data/runs/{r.key}"
                site.put(f"{base}/features.js", pages.feature_list(st, text_of, lens, lens_text))
                n, per = r.sae.n_latents, cfg.features_per_shard
                for first in range(0, n, per):
                    site.put(f"{base}/f/{first // per:05d}.js", {"first": first, "features": [
                        pages.feature_detail(f, st, cfg.quantiles, lens, lens_text, similar[r.key][f])
                        for f in range(first, min(first + per, n))]})
                    if on_progress is not None:
                        on_progress(min(first + per, n), n, f"pages {r.key}")
                site_meta["runs"].append({
                    "key": r.key, "name": r.path.name, "dir": str(r.path), "store": skey, "sae": r.config["sae"],
                    "n": n, "lens": lens is not None,
                    **pages.run_overview(st, _evaluation(r, url, heldout)),
                })
            site_meta["stores"].append({
                "key": skey, "url": url, "description": store.describe(), "model": store.meta.model.name,
                "layer": store.meta.layer, "rpc": rpc, "heldout": list(heldout),
                "contexts_per_shard": contexts_per_shard(cfg, rpc),
                "runs": [r.key for r in members], "lens_model": (cfg.model or store.meta.model.name)
                if cfg.wants_lens else None,
            })
        site.put("data/site.js", site_meta)
        return site.finish()


def contexts_per_shard(cfg: BrowseConfig, rows_per_context: int) -> int:
    return max(1, cfg.context_tokens_per_shard // rows_per_context)


def _write_contexts(site: SiteWriter, skey: str, store: ActivationStore, heldout: tuple[int, int],
                    stats: dict, cfg: BrowseConfig, tokenizer,
                    on_progress: Callable[[int, int], None] | None) -> dict[int, list[str]]:
    """Decode every context an example comes from; write them in shards. Returns context id -> token texts."""
    start, stop = heldout
    rpc = store.meta.context.rows_per_context
    rows: set[int] = set()
    for st in stats.values():
        rows |= pages.referenced_rows(st, cfg.quantiles)
    contexts = sorted({r // rpc for r in rows})
    tokens = store.tokens(start, stop)
    texts: dict[int, list[str]] = {}
    batch = 256
    for i in range(0, len(contexts), batch):
        ids = [tokens[c * rpc - start : min((c + 1) * rpc, stop) - start] for c in contexts[i : i + batch]]
        texts.update(zip(contexts[i : i + batch], token_texts(tokenizer, ids), strict=True))
        if on_progress is not None:
            on_progress(min(i + batch, len(contexts)), len(contexts))
    per = contexts_per_shard(cfg, rpc)
    shards: dict[int, dict[str, list[str]]] = defaultdict(dict)
    for c in contexts:
        shards[c // per][str(c)] = texts[c]
    for shard, ctxs in shards.items():
        site.put(f"data/stores/{skey}/ctx/{shard:05d}.js", {"contexts": ctxs})
    log.info("decoded %d contexts into %d files", len(contexts), len(shards))
    return texts

