"""A tiny random Gemma-2 and a byte-level BPE tokenizer trained on local text, for fast tests.

No Gemma-2 weights ship in any package, so the unit tests build a real ``Gemma2ForCausalLM`` with random
weights and a real ``PreTrainedTokenizerFast``; both save and load like a hub model (about 2 MB).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"
KJV = DATA / "kjv_genesis.jsonl"


def corpus_lines() -> list[str]:
    return [json.loads(line)["text"] for line in KJV.read_text().splitlines()]


def build_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Gemma's special ids: pad 0, eos 1, bos 2.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<bos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus_lines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


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
