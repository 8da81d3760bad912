"""Harvest tokens/s against the bare truncated forward pass over the same batches."""

from __future__ import annotations

import logging
import tempfile
import time
from itertools import islice

import numpy as np
import torch

from benchmarks.common import BenchReport, Figure
from harvest import HarvestConfig, harvest
from harvest.data import ContextStream, DataSource
from harvest.lm import LayerCapture, load_model, load_tokenizer, special_tokens
from pipeline.demo import DEMO_LAYER, demo_corpus, demo_model
from store.format import ceil_div

log = logging.getLogger(__name__)


def run(report: BenchReport, *, tokens: int = 8192, batch: int = 8, workdir: str | None = None) -> None:
    model_dir, corpus = str(demo_model()), str(demo_corpus())
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-harvest-") as tmp:
        cfg = HarvestConfig(store=f"{tmp}/s.zarr", model=model_dir, dataset=corpus, layer=DEMO_LAYER,
                            tokens=tokens, batch_size=batch)
        tokenizer = load_tokenizer(model_dir)
        sp = special_tokens(tokenizer, model_dir)
        per_ctx = cfg.context_length - 1
        n_ctx = ceil_div(tokens, per_ctx)
        contexts = list(islice(ContextStream(DataSource.from_config(cfg).texts(), tokenizer, cfg.context_length,
                                             bos_id=sp.bos, eos_id=sp.eos, pad_id=sp.pad), n_ctx))
        ids = torch.from_numpy(np.stack([c.tokens for c in contexts]))
        model = load_model(model_dir, None, torch.device("cpu"), torch.float32)
        capture = LayerCapture(model, DEMO_LAYER)

        def bare() -> float:
            start = time.perf_counter()
            for i in range(0, n_ctx, batch):
                capture(ids[i : i + batch])
            return tokens / (time.perf_counter() - start)

        capture(ids[:batch])  # warm-up
        before = bare()
        result = harvest(cfg)
        after = bare()
        log.info("bare forward %.0f then %.0f tok/s; harvest %.0f tok/s", before, after, result.tokens_per_second)
        report.add(Figure(
            "harvest (demo model)", result.tokens_per_second, (before + after) / 2, "tok/s",
            "bare truncated forward, same batches", target=0.9,
            note=f"Gemma-3-270M layer {DEMO_LAYER}, {tokens:,} tokens, {batch} contexts/batch, CPU float32",
        ))
