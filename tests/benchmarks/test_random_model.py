"""benchmarks/random_model.py, the model and text of the GPU run (benchmarks/device_run.sh): what it builds loads
through the harvest's own loaders with the shape asked for, and the corpus holds the tokens asked for."""

import json

from benchmarks.random_model import SHAPES, main
from harvest.lm import decoder_layers, load_model, load_tokenizer


def test_a_random_model_of_a_shape_loads_like_a_hub_model_with_enough_text(tmp_path):
    import torch

    out, corpus, info = tmp_path / "model", tmp_path / "corpus.jsonl", tmp_path / "model.json"
    main.main([str(out), "--shape", "tiny", "--device", "cpu", "--vocab", "512", "--corpus", str(corpus),
               "--corpus-tokens", "30000", "--info", str(info)], standalone_mode=False)
    shape = SHAPES["tiny"].config
    model = load_model(str(out), None, torch.device("cpu"), torch.float32)
    assert type(model).__name__ == "Gemma2ForCausalLM"
    assert model.config.hidden_size == shape["hidden_size"] and model.config.vocab_size == shape["vocab_size"]
    assert len(decoder_layers(model)[0]) == shape["num_hidden_layers"]
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"  # saved as the GPU run loads it
    tokenizer = load_tokenizer(str(out))
    assert len(tokenizer) <= 512 and tokenizer.bos_token_id == 2 and tokenizer.eos_token_id == 1
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    tokens = sum(len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    record = json.loads(info.read_text())
    assert tokens == record["corpus_tokens"] >= 30000
    assert record["parameters"] == sum(p.numel() for p in model.parameters())
