"""The configuration of `pipeline evaluate`; the CLI's options are these fields."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class EvaluateConfig:
    """Which runs to measure, on which store, and how much of the LM to run for KL and CE."""

    runs: tuple[str, ...]
    """Run directories, or folders of them."""
    store_url: str | None = None
    """Store to evaluate on, instead of the one each run was trained on."""
    model: str | None = None
    """LM (hub id or folder) for the spliced KL and CE, instead of the store's model."""
    kl: bool = True
    """Run the LM with each SAE spliced in over the held-out contexts, for KL and CE."""
    kl_contexts: int | None = None
    """At most this many held-out contexts for KL and CE (all when unset)."""
    batch_contexts: int = 2
    """Contexts per LM forward pass."""
    device: str = "auto"
    """Device to evaluate on: auto (CUDA when there is a GPU), cpu, cuda or cuda:N."""
    allow_unsealed: bool = False
    """Read a store that carries no manifest (finalised by an older version of this tool, or its seal removed), whose
    chunks cannot be checked against their positions; `pipeline store finalize` seals it instead."""
    absorption: bool = False
    """Measure feature absorption on first-letter spelling prompts (SAEBench's definitions; docs/metrics.md)."""
    absorption_words: int | None = None
    """Words of the tokenizer's alphabetic vocabulary to use, drawn with --absorption-seed (default: all of them
    on CUDA, 2000 on CPU)."""
    absorption_words_file: str | None = None
    """Use the words of this file (one a line, all of them unless --absorption-words is given) instead of the
    tokenizer's alphabetic vocabulary."""
    absorption_seed: int = 42
    """Seed of the word subsample, the probe's train/test split, the in-context examples and the probes."""
    absorption_cache: str | None = None
    """Folder for the cached prompts, activations and probes (default: STORE.probes beside a local store)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(str(r) for r in self.runs))
        if not self.runs:
            raise PipelineError("name at least one run directory, or a folder of them")
        if self.kl_contexts is not None and self.kl_contexts < 1:
            raise PipelineError(f"--kl-contexts must be at least 1, got {self.kl_contexts}")
        if self.batch_contexts < 1:
            raise PipelineError(f"--batch-contexts must be at least 1, got {self.batch_contexts}")
        if self.absorption_words is not None and self.absorption_words < 60:
            raise PipelineError(f"--absorption-words must be at least 60 (the test split needs 11 words for its "
                                f"in-context examples), got {self.absorption_words}")
