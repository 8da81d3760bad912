"""A randomly initialised causal LM of a real model's SHAPE, and a text file long enough to harvest from it, for
timing the pipeline where no weights can be downloaded (the GPU machine of benchmarks/device_run.sh has no network).

    python -m benchmarks.random_model OUT_DIR --shape gemma-2-2b [--corpus CORPUS.jsonl --corpus-tokens 300000]

The model has the real architecture's shape (Gemma-2-2B: d=2304, 26 layers, vocabulary 256,000) and random
weights, saved with ``save_pretrained`` in bfloat16 beside a small byte-level BPE tokenizer trained here on the
repository's KJV text (tests/data), so it loads like a hub model. Its tokens/s are real throughput figures for
that shape; any quality figure (KL, CE, explained variance) of an SAE fitted on it means nothing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from store.device import resolve_device

log = logging.getLogger(__name__)

TEXT = Path(__file__).resolve().parent.parent / "tests" / "data" / "kjv_genesis.jsonl"
"""The text the tokenizer is trained on and the corpus repeats (Genesis, KJV: public domain, in the repo)."""


@dataclass(frozen=True)
class Shape:
    """A published architecture's dimensions (the released config's values), weights aside."""

    family: str
    """``gemma2`` (Gemma2ForCausalLM) or ``gemma3`` (Gemma3ForCausalLM, text only)."""
    config: dict[str, Any]


SHAPES = {
    # google/gemma-2-2b's config.json: the paper's model (layer 19 harvested).
    "gemma-2-2b": Shape("gemma2", dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, max_position_embeddings=8192, sliding_window=4096,
        query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, rope_theta=10000.0)),
    # google/gemma-3-270m's config.json: the embedded demo model's shape (a fallback ten times smaller).
    "gemma-3-270m": Shape("gemma3", dict(
        vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, max_position_embeddings=32768, sliding_window=512,
        query_pre_attn_scalar=256, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6)),
    # A few layers of Gemma-2-2B's width with a small vocabulary: the CPU dry run of the device script.
    "tiny": Shape("gemma2", dict(
        vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, max_position_embeddings=512, sliding_window=64)),
}


def corpus_lines(text: Path = TEXT) -> list[str]:
    return [json.loads(line)["text"] for line in text.read_text().splitlines() if line.strip()]


def train_tokenizer(vocab_size: int, text: Path = TEXT):
    """A byte-level BPE tokenizer (any text encodes) with Gemma's special ids: pad 0, eos 1, bos 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_lines(text), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype = torch.bfloat16, seed: int = 0):
    """The architecture with random weights, created directly on ``device`` in ``dtype`` (a 2.6B-parameter model
    initialised on a GPU takes seconds; on a CPU, float32 first and a cast would double its memory)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

    special = dict(pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if shape.family == "gemma2":
        cfg, cls = Gemma2Config(**shape.config, **special), Gemma2ForCausalLM
    else:
        cfg, cls = Gemma3TextConfig(**shape.config, **special), Gemma3ForCausalLM
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls._from_config(cfg, dtype=dtype)
    return model.eval()


def write_corpus(path: Path, tokenizer, tokens: int, text: Path = TEXT) -> int:
    """A jsonl of the text's documents repeated until it holds at least ``tokens`` tokens (plus an EOS per
    document, as the harvest counts them); the tokens written. Repeated text is fine for throughput."""
    lines = corpus_lines(text)
    per_pass = sum(len(ids) + 1 for ids in tokenizer(lines, add_special_tokens=False)["input_ids"])
    passes = -(-tokens // per_pass)
    with path.open("w") as f:
        for p in range(passes):
            for i, line in enumerate(lines):
                f.write(json.dumps({"text": line, "id": f"{p}-{i}"}) + "\n")
    return passes * per_pass


@click.command(help=__doc__.split("\n\n")[0])
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--shape", type=click.Choice(sorted(SHAPES)), default="gemma-2-2b", show_default=True)
@click.option("--vocab", type=int, default=4096, show_default=True,
              help="The tokenizer's vocabulary (the model keeps its shape's, larger: the extra rows are unused).")
@click.option("--device", default="auto", show_default=True, help="Where the weights are initialised.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Also write a jsonl of repeated text here, for --dataset.")
@click.option("--corpus-tokens", type=int, default=300_000, show_default=True,
              help="Tokens (at least) the corpus holds.")
@click.option("--info", type=click.Path(path_type=Path), default=None, help="Write what was built as JSON here.")
def main(out: Path, shape: str, vocab: int, device: str, corpus: Path | None, corpus_tokens: int,
         info: Path | None) -> None:
    # Plain logging: this runs before the stages on a fresh machine, so it imports no more of the project than it uses.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dev = resolve_device(device)
    start = time.perf_counter()
    tokenizer = train_tokenizer(vocab)
    t_tok = time.perf_counter()
    model = build_model(SHAPES[shape], dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t_init = time.perf_counter()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    t_save = time.perf_counter()
    params = sum(p.numel() for p in model.parameters())
    del model
    written = write_corpus(corpus, tokenizer, corpus_tokens) if corpus else None
    record = {
        "shape": shape, "config": SHAPES[shape].config, "parameters": params, "dtype": "bfloat16",
        "weights": "random (seed 0): throughput only, no quality figure means anything",
        "tokenizer_vocab": len(tokenizer),
        "device": str(dev), "seconds": {"tokenizer": t_tok - start, "init": t_init - t_tok, "save": t_save - t_init},
        "bytes_on_disk": sum(f.stat().st_size for f in out.iterdir() if f.is_file()),
        "corpus": str(corpus) if corpus else None, "corpus_tokens": written,
    }
    log.info("built %s (%s parameters, random weights) in %s: tokenizer %.1f s, init %.1f s, save %.1f s",
             shape, f"{params:,}", out, *record["seconds"].values())
    if info:
        info.parent.mkdir(parents=True, exist_ok=True)
        info.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
