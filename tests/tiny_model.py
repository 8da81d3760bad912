"""A tiny random Gemma-2 and a byte-level BPE tokenizer trained on local text, for fast tests.

No Gemma-2 weights ship in any package, so the unit tests build a real ``Gemma2ForCausalLM`` with random
weights and a real ``PreTrainedTokenizerFast``; both save and load like a hub model (about 2 MB).
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks import random_model

DATA = Path(__file__).parent / "data"
KJV = DATA / "kjv_genesis.jsonl"


def corpus_lines() -> list[str]:
    return random_model.corpus_lines(KJV)


def build_tokenizer(vocab_size: int = 384):
    """The device run's byte-level BPE tokenizer (Gemma's special ids), trained on the test text."""
    return random_model.train_tokenizer(vocab_size, KJV)


def build_model(vocab_size: int, hidden: int = 64, layers: int = 4, seed: int = 0):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    cfg = Gemma2Config(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=512,
        sliding_window=64, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    return Gemma2ForCausalLM(cfg).eval()


def save_tiny_model(path: Path, *, hidden: int = 64, layers: int = 4, seed: int = 0) -> Path:
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), hidden=hidden, layers=layers, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
