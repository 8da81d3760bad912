"""Prompt activations and the first-letter probe, computed once per (model, layer, vocabulary, settings) and
kept beside the store, so that scoring another SAE costs its k-sparse probes, not the LM's passes and the probe.

A cache is a folder ``<key>/`` (key: a digest of the model's identity, the layer, the words and every setting
below) holding ``meta.json`` (the words of each split, the settings, the probe's test figures) and
``tensors.pt`` (each split's residual at the word's position, float32, and the probe). It is written under a
temporary name and renamed into place, so a killed build leaves no half cache behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import pipeline.evaluate.absorption.vocab as vocab
from harvest.lm import LayerCapture, load_store_lm, load_store_tokenizer, resolve_compute_dtype
from pipeline.errors import PipelineError
from pipeline.evaluate.absorption.probe import LinearProbe, ProbeSettings, letter_f1s, one_hot, train_multi_probe
from store.files import replace_atomically, write_json_atomic
from store.format import StoreMeta

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CPU_DEFAULT_WORDS = 2000
"""Words used on CPU when --absorption-words is not given (the full vocabulary takes hours there)."""


@dataclass(frozen=True)
class CacheSpec:
    """Everything a cache's content depends on; its digest names the cache's folder."""

    model: str
    model_fingerprint: str
    model_revision: str | None
    layer: int
    compute_dtype: str
    words_digest: str
    seed: int
    template: str = vocab.PROMPT_TEMPLATE
    icl_examples: int = vocab.ICL_EXAMPLES
    train_fraction: float = vocab.TRAIN_FRACTION
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    format: int = CACHE_FORMAT

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ProbeCache:
    """A loaded cache: the words, their residuals at the word's position, and the probe."""

    folder: Path
    train_words: list[str]
    test_words: list[str]
    acts_train: torch.Tensor  # (N_train, D) float32, raw residual
    acts_test: torch.Tensor  # (N_test, D)
    probe: LinearProbe
    meta: dict

    @property
    def labels_train(self) -> torch.Tensor:
        return _labels(self.train_words, self.acts_train.device)

    @property
    def labels_test(self) -> torch.Tensor:
        return _labels(self.test_words, self.acts_test.device)

    def to(self, device: torch.device) -> ProbeCache:
        return ProbeCache(self.folder, self.train_words, self.test_words, self.acts_train.to(device),
                          self.acts_test.to(device), LinearProbe(self.probe.weight.to(device),
                                                                 self.probe.bias.to(device)), self.meta)


def _labels(words: list[str], device: torch.device) -> torch.Tensor:
    return torch.tensor([vocab.LETTERS.index(vocab.first_letter(w)) for w in words], dtype=torch.long,
                        device=device)


def cache_root(store_url: str, override: str | None) -> Path:
    """Where caches live: ``override``, or ``STORE.probes`` beside a local store."""
    if override:
        return Path(override)
    if "://" in store_url and not store_url.startswith("file://"):
        raise PipelineError(f"the store {store_url} is not local, so its absorption probes cannot be kept beside "
                            "it: pass --absorption-cache FOLDER")
    path = Path(store_url.removeprefix("file://")).expanduser().resolve()
    return path.parent / f"{path.name}.probes"


def vocabulary(meta: StoreMeta, root: Path, tokenizer) -> list[str]:
    """The tokenizer's alphabetic words, kept in ``root`` once listed (listing Gemma's 262k tokens one by one
    takes tens of seconds; a cached score should not)."""
    key = hashlib.sha256(json.dumps([meta.model.fingerprint, meta.model.revision, meta.tokenizer.name,
                                     meta.tokenizer.vocab_size, CACHE_FORMAT]).encode()).hexdigest()[:16]
    path = root / f"vocabulary-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    words = vocab.alpha_words(tokenizer)
    write_json_atomic(path, words)
    return words


def choose_words(meta: StoreMeta, root: Path, words: int | None, words_file: str | None, seed: int,
                 device: torch.device, tokenizer) -> tuple[list[str], int]:
    """The words to use and the size of the vocabulary they were drawn from: a word file's words as given (a
    subsample only when ``words`` is given), else the tokenizer's (all on CUDA, CPU_DEFAULT_WORDS on CPU)."""
    if words_file:
        pool, n = vocab.read_words_file(words_file), words
    else:
        pool = vocabulary(meta, root, tokenizer)
        n = words if words is not None else (None if device.type == "cuda" else CPU_DEFAULT_WORDS)
    return vocab.subsample(pool, n, seed), len(pool)


def load_or_build(meta: StoreMeta, root: Path, *, words: int | None, words_file: str | None, seed: int,
                  device: torch.device, model: str | None = None, batch_prompts: int = 32,
                  on_progress: Callable[[int, int], None] | None = None) -> ProbeCache:
    """The cache for these words and settings, built (LM passes and probe training) when absent;
    ``on_progress(prompts done, prompts)`` as the LM passes go."""
    tokenizer = load_store_tokenizer(meta)
    chosen, pool_size = choose_words(meta, root, words, words_file, seed, device, tokenizer)
    spec = CacheSpec(model=meta.model.name, model_fingerprint=meta.model.fingerprint,
                     model_revision=meta.model.revision, layer=meta.layer, compute_dtype=meta.compute_dtype,
                     words_digest=hashlib.sha256("\n".join(chosen).encode()).hexdigest(), seed=seed)
    folder = root / spec.key()
    if (folder / "meta.json").exists():
        log.info("absorption: probe and prompt activations from %s", folder)
        return load(folder)
    t0 = time.perf_counter()
    split = vocab.split_words(chosen, seed)
    # the dtype the store's rows were computed in (bf16 on CUDA): the SAE was trained on such residuals, and the
    # store's model fingerprint was taken of the model loaded so
    lm = load_store_lm(meta, model, device, resolve_compute_dtype(meta.compute_dtype, device))
    rng = random.Random(seed)
    position = word_position(tokenizer, spec.template)
    acts = {}
    total, before = len(split.train) + len(split.test), 0
    for name in ("train", "test"):
        texts = vocab.prompts(getattr(split, name), rng, spec.template)
        on_batch = None if on_progress is None else (lambda done, b=before: on_progress(b + done, total))
        acts[name] = residuals(lm, tokenizer, meta, texts, position, device, batch_prompts, on_batch)
        before += len(texts)
    lm_seconds = time.perf_counter() - t0
    y_train = _labels(split.train, device)
    probe = train_multi_probe(acts["train"], one_hot(y_train), seed=seed, **asdict(spec.probe))
    test_logits = probe.logits(acts["test"])
    y_test = _labels(split.test, device)
    meta_out = {
        "spec": asdict(spec), "train_words": split.train, "test_words": split.test, "vocabulary_words": pool_size,
        "words_file": words_file, "word_position": position,
        "probe_test_accuracy": float((test_logits.argmax(dim=-1) == y_test).float().mean()),
        "probe_f1": letter_f1s(test_logits, y_test),
        "lm_seconds": lm_seconds, "build_seconds": time.perf_counter() - t0,
    }
    tensors = {"acts_train": acts["train"].cpu(), "acts_test": acts["test"].cpu(),
               "probe_weight": probe.weight.cpu(), "probe_bias": probe.bias.cpu()}
    _write(folder, meta_out, tensors)
    log.info("absorption: built %s in %.0f s (LM %.0f s); probe test accuracy %.3f", folder,
             meta_out["build_seconds"], lm_seconds, meta_out["probe_test_accuracy"])
    return load(folder)


def _write(folder: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write under a temporary name, then rename: a reader sees the whole cache or none."""
    def save(tmp: Path) -> None:
        tmp.mkdir()
        torch.save(tensors, tmp / "tensors.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    # Another process may have finished the same cache first (a folder is not replaced): its content is the same.
    with contextlib.suppress(OSError):
        replace_atomically(folder, save)


def load(folder: Path) -> ProbeCache:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        t = torch.load(folder / "tensors.pt", map_location="cpu", weights_only=True)
    except (OSError, json.JSONDecodeError, RuntimeError) as exc:
        raise PipelineError(f"the absorption cache {folder} is unreadable ({str(exc).splitlines()[0]}): delete "
                            "that folder and rerun") from None
    return ProbeCache(folder, meta["train_words"], meta["test_words"], t["acts_train"], t["acts_test"],
                      LinearProbe(t["probe_weight"], t["probe_bias"]), meta)


def word_position(tokenizer, template: str) -> int:
    """The word's last token, counted from the prompt's end: SAEBench's ``prompt_token_pos`` (-6 for its template
    on Gemma), here from the tokenizer's count of the template's tokens after the word."""
    suffix = template.split("{word}", 1)[1]
    return -(len(tokenizer(suffix, add_special_tokens=False)["input_ids"]) + 1)


@torch.inference_mode()
def residuals(lm, tokenizer, meta: StoreMeta, texts: list[str], position: int, device: torch.device,
              batch: int, on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """The residual after the store's layer at ``position`` of each prompt (BOS in front, as TransformerLens
    prepends it), float32, on ``device``."""
    capture = LayerCapture(lm, meta.layer)
    bos, pad = meta.tokenizer.bos_token_id, meta.tokenizer.pad_token_id
    ids = [[bos, *tokenizer(t, add_special_tokens=False)["input_ids"]] for t in texts]
    out = torch.empty(len(ids), meta.d_model, dtype=torch.float32, device=device)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: little padding
    for lo in range(0, len(order), batch):
        rows = order[lo : lo + batch]
        width = max(len(ids[i]) for i in rows)
        # right padding: a causal LM's positions before the padding do not see it
        ids_CT = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in rows], device=device)
        at = torch.tensor([len(ids[i]) + position for i in rows], device=device)
        h = capture(ids_CT)
        out[torch.tensor(rows, device=device)] = h[torch.arange(len(rows), device=device), at].float()
        if on_batch is not None:
            on_batch(lo + len(rows))
    return out
