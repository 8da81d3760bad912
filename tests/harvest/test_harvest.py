"""End-to-end harvests of the tiny random Gemma-2 over real text into a real Zarr store."""

import json
import signal
import time

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, pipeline_subprocess, run_cli

from harvest.config import HarvestConfig
from harvest.data import ContextStream, DataSource
from harvest.lm import LayerCapture, load_model, load_tokenizer
from harvest.runner import harvest
from store import dtypes
from store.reader import open_store
from store.verify import verify_store


def harvest_cfg(model_dir, data, store, **kw):
    defaults = dict(layers=(2,), tokens=1234, context_length=32, chunk_rows=256, batch_size=4)
    return HarvestConfig(store=str(store), model=str(model_dir), dataset=str(data), **{**defaults, **kw})


def test_rows_are_the_layer_output_of_the_stored_contexts(tiny_model_dir, kjv_file, tmp_path):
    cfg = harvest_cfg(tiny_model_dir, kjv_file, tmp_path / "s.zarr")
    result = harvest(cfg)
    assert result.complete and result.rows_written == 1234
    st = open_store(cfg.store)
    assert st.n_rows == 1234 and st.meta.context.rows_per_context == 31
    assert st.meta.model.architecture == "Gemma2ForCausalLM" and st.meta.hook_point == "model.layers.2"

    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model, None, torch.device("cpu"), torch.float32)
    contexts = list(ContextStream(DataSource.from_config(cfg).texts(), tok, 32, bos_id=2, eos_id=1, pad_id=0))
    n_ctx = -(-1234 // 31)
    ids = torch.from_numpy(np.stack([c.tokens for c in contexts[:n_ctx]]))
    # same batching as the harvest (4 contexts), so the same floats; equal to hidden_states[L + 1]
    captured = torch.cat([LayerCapture(model, 2)(ids[i : i + 4]) for i in range(0, n_ctx, 4)])
    with torch.inference_mode():
        hidden = torch.cat([model(input_ids=ids[i : i + 4], output_hidden_states=True).hidden_states[3]
                            for i in range(0, n_ctx, 4)])
    assert torch.equal(captured, hidden)
    expected = captured[:, 1:].reshape(-1, captured.shape[-1])[:1234]
    stored = st.read_rows(0, 1234)
    assert torch.equal(stored, dtypes.decode(dtypes.encode(expected, "bfloat16"), "bfloat16"))
    np.testing.assert_array_equal(st.tokens(), ids[:, 1:].reshape(-1)[:1234].numpy())
    assert verify_store(cfg.store).ok


def test_include_bos_and_float16(tiny_model_dir, kjv_file, tmp_path):
    cfg = harvest_cfg(tiny_model_dir, kjv_file, tmp_path / "s.zarr", include_bos=True, store_dtype="float16",
                      tokens=100)
    harvest(cfg)
    st = open_store(cfg.store)
    assert st.meta.dtype == "float16" and st.meta.context.rows_per_context == 32
    np.testing.assert_array_equal(st.positions(0, 34), [*range(32), 0, 1])
    assert st.tokens(0, 1)[0] == 2 and st.tokens(32, 33)[0] == 2


def test_data_set_smaller_than_budget_gives_a_shorter_complete_store(tiny_model_dir, kjv_file, tmp_path, caplog):
    cfg = harvest_cfg(tiny_model_dir, kjv_file, tmp_path / "s.zarr", tokens=10**6, chunk_rows=4096,
                      batch_size=16)
    result = harvest(cfg)
    st = open_store(cfg.store)
    assert result.complete and 30_000 < st.n_rows < 40_000 and st.meta.tokens_requested == 10**6
    assert "ran out" in caplog.text
    assert verify_store(cfg.store).ok


def _progress(store):
    path = store / "_harvest" / "progress-00000-of-00001.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_kill_9_and_resume_gives_the_uninterrupted_store(tiny_model_dir, kjv_file, tmp_path):
    args = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2", "--tokens", "20000",
            "--ctx", "32", "--chunk-rows", "1024", "--batch-size", "2"]
    killed = tmp_path / "killed.zarr"
    proc = pipeline_subprocess(*args, "--store", killed)
    deadline = time.monotonic() + 120
    while (p := _progress(killed)) is None or p["chunks_done"] < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = _progress(killed)["chunks_done"]
    assert at_kill < 20  # really killed mid-run
    with pytest.raises(Exception, match="incomplete"):
        open_store(str(killed))
    # the same command again resumes and finishes
    proc = pipeline_subprocess(*args, "--store", killed)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"resuming {killed} at row {at_kill * 1024}" in " ".join(err.split())

    clean = tmp_path / "clean.zarr"
    harvest(HarvestConfig(store=str(clean), model=str(tiny_model_dir), dataset=str(kjv_file), layers=(2,),
                          tokens=20000, context_length=32, chunk_rows=1024, batch_size=2))
    a, b = open_store(str(killed)), open_store(str(clean))
    assert a.n_rows == b.n_rows == 20000
    assert np.array_equal(a.read_rows_raw(0, 20000), b.read_rows_raw(0, 20000))
    assert np.array_equal(a.tokens(), b.tokens())
    assert np.array_equal(a.group["stats/mean"][:], b.group["stats/mean"][:])
    assert verify_store(str(killed)).ok


def test_second_writer_fails_at_once_with_a_clear_message(tiny_model_dir, kjv_file, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    args = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2", "--tokens", "30000",
            "--ctx", "32", "--chunk-rows", "1024", "--batch-size", "1"]
    first = pipeline_subprocess(*args, "--store", store)
    try:
        deadline = time.monotonic() + 120
        while _progress(store) is None:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        result = run_cli(capsys, *args, "--store", store)
        assert_one_line_error(result, "another process is writing to", "pid")
        assert time.monotonic() - started < 30
        assert first.poll() is None  # the first writer carries on untouched
    finally:
        first.kill()
        first.wait()


def test_rerun_with_other_settings_names_the_mismatch(tiny_model_dir, kjv_file, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    base = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--tokens", "300", "--ctx", "32",
            "--store", store]
    assert run_cli(capsys, *base, "--layer", "2").code == 0
    assert_one_line_error(run_cli(capsys, *base, "--layer", "1"), "layer = 2", "asks for 1")
    assert_one_line_error(run_cli(capsys, *base, "--layer", "2", "--batch-size", "3"), "batch size = 8",
                          "rerun with --batch-size 8")
    other_data = tmp_path / "other.jsonl"
    other_data.write_text('{"text": "something else entirely"}\n' * 50)
    other = ["harvest", "--model", tiny_model_dir, "--dataset", other_data, "--tokens", "300", "--ctx", "32",
             "--layer", "2", "--store", store]
    assert_one_line_error(run_cli(capsys, *other), "dataset", "other.jsonl")
    assert open_store(str(store)).n_rows == 300  # nothing lost


@pytest.fixture(scope="module")
def nan_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with one poisoned weight: its layer outputs overflow to Inf/NaN."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.fill_(float("inf"))
    out = tmp_path_factory.mktemp("nan-model")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_bad_inputs_get_one_line_errors(tiny_model_dir, kjv_file, nan_model_dir, tmp_path, capsys):
    def run(*extra, model=tiny_model_dir, data=kjv_file, store=tmp_path / "s.zarr"):
        return run_cli(capsys, "harvest", "--model", model, "--dataset", data, "--tokens", "200", "--ctx", "32",
                       "--store", store, *extra)

    assert_one_line_error(run("--layer", "9"), "layer 9 is out of range", "4 decoder layers")
    assert_one_line_error(run("--layer", "2", model="google/gemma-2-2b"), "Hub is unreachable", "--model PATH")
    assert_one_line_error(run("--layer", "2", data="monology/pile-uncopyrighted"), "cannot reach", "--dataset")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n')
    assert_one_line_error(run("--layer", "2", data=empty), "holds no text")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_one_line_error(run("--layer", "2", store=blocker / "s.zarr"), "cannot write to", "writable")
    assert not (tmp_path / "s.zarr").exists()  # none of the failures above created a store

    nan_store = tmp_path / "nan.zarr"
    assert_one_line_error(run("--layer", "2", model=nan_model_dir, store=nan_store), "NaN/Inf activations",
                          "--dtype float32")
    assert_one_line_error(run_cli(capsys, "harvest", "--tokens", "0", "--store", "x"), "--tokens must be positive")
