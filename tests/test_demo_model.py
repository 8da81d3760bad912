"""End to end over the real Gemma-3-270M (the demo model, converted once from its PyPI GGUF and cached)."""

import itertools

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

from harvest.data import ContextStream, DataSource
from harvest.lm import LayerCapture, load_model
from store.reader import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_store(demo_model_dir, tmp_path_factory):
    from pipeline.demo import DEMO_LAYER, demo_corpus

    store = tmp_path_factory.mktemp("demo") / "store.zarr"
    return store, demo_corpus(), DEMO_LAYER


def test_harvest_verify_info_on_gemma3_270m(demo_model_dir, demo_store, capsys):
    store, corpus, layer = demo_store
    result = run_cli(capsys, "harvest", "--model", demo_model_dir, "--dataset", corpus, "--layer", layer,
                     "--tokens", 1000, "--batch-size", 4, "--store", store)
    assert result.code == 0, result.stderr
    verify = run_cli(capsys, "store", "verify", store)
    assert verify.code == 0 and "store is valid" in verify.stderr, verify.stderr
    info = run_cli(capsys, "store", "info", store, "--json")
    assert '"architecture": "Gemma3ForCausalLM"' in info.stdout and '"d_model": 640' in info.stdout

    st = open_store(str(store))
    assert st.n_rows == 1000 and st.meta.layer == layer and st.meta.model.n_layers == 18
    model = load_model(str(demo_model_dir), None, torch.device("cpu"), torch.float32)
    tok = __import__("transformers").AutoTokenizer.from_pretrained(demo_model_dir)
    src = DataSource(str(corpus), None, "train", "text", (str(corpus),))
    stream = ContextStream(src.texts(), tok, 128, bos_id=2, eos_id=1, pad_id=0)
    contexts = list(itertools.islice(stream, 4))
    ids = torch.from_numpy(np.stack([c.tokens for c in contexts]))
    with torch.inference_mode():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
    assert torch.equal(LayerCapture(model, layer)(ids), hidden)
    expected = hidden[:, 1:].reshape(-1, 640)[: 4 * 127].to(torch.bfloat16).float()
    assert torch.equal(st.read_rows(0, 4 * 127), expected)
    np.testing.assert_array_equal(st.tokens(0, 127), ids[0, 1:].numpy())
