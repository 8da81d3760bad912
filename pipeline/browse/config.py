"""The configuration of `pipeline browse`; the CLI's options are generated from these fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError
from store.configs import check_finite

if TYPE_CHECKING:
    from pipeline.browse.stats import StatsConfig


@dataclass(frozen=True)
class BrowseConfig:
    runs: tuple[str, ...]
    """Run directories, or folders of them."""
    out: str
    """The site's folder (created; a previous site there is replaced)."""
    store_url: str | None = None
    """Store to read instead of the one each run was trained on."""
    model: str | None = None
    """LM (hub id or folder) whose unembedding gives each feature's promoted and suppressed tokens."""
    store_model: bool = False
    """Use the store's own model for the logit lens."""
    tokenizer: str | None = None
    """Tokenizer to decode contexts with; default the model's (--model) or the store's."""
    k: int = 20
    """Top activating examples kept per feature."""
    before: int = 24
    """Tokens shown before an activating token (within its context)."""
    after: int = 8
    """Tokens shown after it."""
    quantiles: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    """Quantiles of a feature's positive activations to show one random example at."""
    lens_tokens: int = 10
    """Promoted and suppressed tokens shown per feature."""
    features_per_shard: int = 64
    """Features per data file: a feature page loads one."""
    context_tokens_per_shard: int = 2048
    """Decoded tokens per context data file (whole contexts, at least one): a feature page loads one file per
    distinct context its examples come from, so files stay small (~16 kB) whatever the context length."""
    device: str = "auto"
    """Device to encode with: auto (CUDA when there is a GPU), cpu, cuda or cuda:N."""
    allow_unsealed: bool = False
    """Read a store that carries no manifest (finalised by an older version of this tool, or its seal removed), whose
    chunks cannot be checked against their positions; `pipeline store finalize` seals it instead."""
    seed: int = 0
    """Seed of the random lower-quantile examples."""

    def __post_init__(self) -> None:
        check_finite(self, PipelineError)
        if self.k < 1:
            raise PipelineError(f"--k must be at least 1, got {self.k}")
        if self.before < 0 or self.after < 0:
            raise PipelineError(f"--before and --after must be 0 or more, got {self.before} and {self.after}")
        if not all(0 < q < 1 for q in self.quantiles):
            raise PipelineError(f"quantiles must lie strictly between 0 and 1, got {self.quantiles}")
        if self.model is not None and self.store_model:
            raise PipelineError("give either --model or --store-model, not both")
        if self.features_per_shard < 1 or self.context_tokens_per_shard < 1 or self.lens_tokens < 1:
            raise PipelineError("shard sizes and --lens-tokens must be positive")

    @property
    def stats(self) -> StatsConfig:
        from pipeline.browse.stats import LogBins, StatsConfig  # torch: loaded when the browser runs, not for --help
        from pipeline.browse.topk import Window

        return StatsConfig(k=self.k, window=Window(self.before, self.after), bins=LogBins())

    @property
    def wants_lens(self) -> bool:
        return self.model is not None or self.store_model
