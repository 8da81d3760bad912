"""A fit's rows straight from a synthetic model's stream (``pipeline fit --synthetic``): generated on the fit's
device, step by step, so a fit can be larger than any disk (SynthSAEBench's protocol is 200M rows). It joins harvest's
sampler to fit's :class:`fit.data.Source`, so it lives in pipeline, which may use both.

The training rows are the stream's rows ``[0, tokens)``: batch ``step`` is rows ``[step * B, (step + 1) * B)``, each
process taking its share; a `pipeline synth` store of the same model and seed holds the same rows. The runs record a
small store of held-out rows (the stream's rows from ``HELDOUT_FIRST_ROW``), written first, so that evaluate,
browse and report read them as any runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import torch

from fit.data import Plan
from harvest.synthetic.config import HELDOUT_FIRST_ROW, StreamConfig
from harvest.synthetic.model import ModelSpec, load_or_build, spec_of
from harvest.synthetic.runner import pilot_slots, synthetic_meta, write_stream
from harvest.synthetic.sampler import Stream, make_sampler
from pipeline.errors import PipelineError
from store.location import StoreLocation
from store.reader import ActivationStore, open_store
from store.stats import Moments, moments_of
from store.truth import GroundTruth

log = logging.getLogger(__name__)

MOMENT_ROWS = 65536
"""Training rows the per-dimension statistics (``--norm store_stats``) are computed from."""


class StreamBatches:
    def __init__(self, stream: Stream, batch: int, start_step: int, n_steps: int, streams: list[int] | None,
                 num_streams: int) -> None:
        self.stream, self.batch, self.start_step, self.n_steps = stream, batch, start_step, n_steps
        self.streams, self.num_streams = streams, num_streams
        self.mode = f"generated on {stream.device.type}"

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        share = self.batch // self.num_streams
        for step in range(self.start_step, self.start_step + self.n_steps):
            first = step * self.batch
            if self.streams is None:
                yield step, self.stream.rows(first, first + self.batch).x_BD
            else:
                parts = [self.stream.rows(first + r * share, first + (r + 1) * share).x_BD for r in self.streams]
                yield step, torch.cat(parts)


class SyntheticSource:
    """A pass's rows from the stream (fit.data.Source), and the held-out store its runs record."""

    def __init__(self, store: ActivationStore, stream: Stream, cfg: StreamConfig) -> None:
        self.store, self.stream, self.cfg = store, stream, cfg
        self.num_streams = 1

    def plan(self, cfg, streams: int):

        if cfg.tokens is None:
            raise PipelineError("a fit on a synthetic stream needs --tokens (the stream has no end)")
        n_steps = cfg.tokens // cfg.batch_size
        self.num_streams = streams
        syn = self.store.meta.synthetic
        record = {**cfg.identity(), "streams": streams, "n_steps": n_steps,
                  "stream": {"model": syn.model_digest, "seed": syn.seed, "sampler": syn.sampler,
                             "device": syn.device, "rows": [0, n_steps * cfg.batch_size]},
                  "heldout_rows": [0, self.store.n_rows]}
        summary = f"stream rows 0..{n_steps * cfg.batch_size} of seed {syn.seed}; {self.store.n_rows} held out"
        return Plan(n_steps, record, summary)

    def moments(self) -> Moments:
        return moments_of(self.stream.rows(0, MOMENT_ROWS).x_BD.double().cpu().numpy())

    def batches(self, cfg, device: torch.device, start_step: int, n_steps: int,
                streams: list[int] | None) -> StreamBatches:
        if device.type != self.stream.device.type:
            raise PipelineError(f"the stream is generated on {self.stream.device} but the fit runs on {device}")
        return StreamBatches(self.stream, cfg.batch_size, start_step, n_steps, streams, self.num_streams)


def synthetic_source(cfg: StreamConfig, store_url: str, device: torch.device, storage_options: dict | None = None,
                     on_progress: Callable[[int, int], None] | None = None,
                     on_build: Callable[[int, int], None] | None = None) -> SyntheticSource:
    """The source of ``cfg``'s stream on ``device``, its held-out store at ``store_url`` written (or finished)
    first."""
    started = time.monotonic()
    spec, truth = _model(cfg, device, on_build)
    stream = Stream(make_sampler(cfg.sampler, truth, device), cfg.synthetic_seed, device)
    slots = pilot_slots(stream, HELDOUT_FIRST_ROW)
    meta = synthetic_meta(spec, truth, seed=cfg.synthetic_seed, first_row=HELDOUT_FIRST_ROW,
                          n_rows=cfg.heldout_samples, slots=slots, sampler=cfg.sampler, device=device,
                          store_dtype="bfloat16", chunk_rows=None,
                          settings={"stream": {k: v for k, v in vars(cfg).items()}})
    location = StoreLocation(store_url, storage_options or {})
    write_stream(location, meta, truth, stream, started, on_progress)
    log.info("held-out rows of the %s stream (seed %d) in %s", spec.name, cfg.synthetic_seed, store_url)
    return SyntheticSource(open_store(location), stream, cfg)


def _model(cfg: StreamConfig, device: torch.device, on_build) -> tuple[ModelSpec, GroundTruth]:
    """The model --synthetic names: a preset's or a config file's (built or cached), or a synthetic store's own."""
    if not cfg.names_a_store:
        spec = spec_of(cfg.preset, cfg.config_file)
        return spec, load_or_build(spec, cfg.model_cache, device, on_build)
    store = open_store(cfg.synthetic)
    if not store.synthetic:
        raise PipelineError(f"--synthetic {cfg.synthetic} holds an LM's activations, not a synthetic model: train "
                           "from it with --store, or name a synthetic store, a preset or a config file")
    syn = store.meta.synthetic
    return ModelSpec(syn.config, preset=None, source=syn.config_file or syn.name), store.ground_truth()

