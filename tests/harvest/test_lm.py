import dataclasses
import time

import pytest
import torch
from direct_store import make_meta

from harvest.errors import HarvestError
from harvest.lm import (
    LayerCapture,
    Splicer,
    check_layer,
    fingerprint,
    load_model,
    load_store_lm,
    load_tokenizer,
    model_info,
)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir), None, torch.device("cpu"), torch.float32)


def test_capture_equals_hidden_states_of_full_model(model):
    ids = torch.randint(3, 300, (3, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states
    n_layers = len(model.model.layers)
    for layer in range(n_layers - 1):
        got = LayerCapture(model, layer)(ids)
        assert torch.equal(got, full[layer + 1]), layer


def test_capture_computes_nothing_after_the_layer(model):
    calls = []
    hooks = [m.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, m in enumerate(model.model.layers)]
    hooks.append(model.lm_head.register_forward_hook(lambda *_: calls.append("lm_head")))
    hooks.append(model.model.norm.register_forward_hook(lambda *_: calls.append("norm")))
    try:
        LayerCapture(model, 1)(torch.randint(3, 300, (2, 8)))
    finally:
        for h in hooks:
            h.remove()
    assert calls == [0, 1]  # layers after the captured one, the final norm and the LM head never run


def test_last_layer_is_the_pre_norm_residual(model):
    ids = torch.randint(3, 300, (2, 8))
    last = len(model.model.layers) - 1
    got = LayerCapture(model, last)(ids)
    with torch.inference_mode():
        normed = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        assert torch.allclose(model.model.norm(got), normed, atol=1e-5)


def test_layer_out_of_range(model):
    with pytest.raises(HarvestError, match=r"layer 4 is out of range: tiny has 4 decoder layers \(0\.\.3\)"):
        check_layer(model, 4, "tiny")


def test_unknown_hub_model_fails_fast_offline():
    started = time.monotonic()
    with pytest.raises(HarvestError, match=r"Hugging Face Hub is unreachable.*--model PATH"):
        load_tokenizer("google/gemma-2-2b")
    assert time.monotonic() - started < 20  # no minute of retries


def test_splicing_the_identity_changes_nothing(model):
    ids = torch.randint(3, 300, (2, 31), generator=torch.Generator().manual_seed(0))
    splicer = Splicer(model, 2)
    mask = torch.ones(2, 31, dtype=torch.bool)
    assert torch.equal(splicer.logits(ids, lambda out: out, mask), splicer.logits(ids))


def test_load_store_lm_is_the_stores_model_or_refused(model, tiny_model_dir, tmp_path):
    info = model_info(model, str(tiny_model_dir))
    meta = make_meta(d=info.d_model, model=info)
    assert fingerprint(load_store_lm(meta)) == info.fingerprint
    other = make_meta(d=info.d_model, model=dataclasses.replace(info, name="other", fingerprint="0" * 16))
    with pytest.raises(HarvestError, match=r"^model '.*' is not the one the store was made from \('other': its "
                       r"embedding fingerprint differs\): pass the right --model$"):
        load_store_lm(other, str(tiny_model_dir))
    with pytest.raises(HarvestError, match=r"\(the store was made with '.*'; pass --model\)$"):
        load_store_lm(meta, str(tmp_path / "missing"))
