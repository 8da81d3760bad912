"""Several layers per LM pass: one forward pass to the deepest layer writes one store per layer, each the store a
single-layer harvest of that layer writes (rows, tokens, statistics, attributes), however the stores got there:
fresh, killed with kill -9 and resumed, at different resume points, one already complete, sharded, on S3."""

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, pipeline_subprocess, run_cli

from harvest.config import HarvestConfig
from harvest.errors import HarvestError
from harvest.lm import LayerCapture, load_model
from harvest.runner import harvest
from store import dtypes
from store import format as fmt
from store.format import MADE_AT
from store.reader import open_store
from store.stats import moments_of
from store.verify import verify_store

LAYERS = (1, 2, 3)
TOKENS = 3000
SETTINGS = dict(tokens=TOKENS, context_length=32, chunk_rows=256, batch_size=4)
CLI_SETTINGS = ["--tokens", TOKENS, "--ctx", "32", "--chunk-rows", "256", "--batch-size", "4"]
ARRAYS = (fmt.ACTIVATIONS, fmt.TOKENS, fmt.CONTEXT_IDS, fmt.POSITIONS, fmt.CHUNK_MEAN, fmt.CHUNK_M2, fmt.MEAN,
          fmt.VAR)


def config(model, data, store, layers, **kw) -> HarvestConfig:
    return HarvestConfig(store=str(store), model=str(model), dataset=str(data), layers=layers, **{**SETTINGS, **kw})


def assert_same_store(path: str, reference: str) -> None:
    """Every array equal bit for bit, and every attribute but when it was made and where it lives."""
    st, ref = open_store(path), open_store(reference)
    for name in ARRAYS:
        np.testing.assert_array_equal(np.asarray(st.array(name)[:]), np.asarray(ref.array(name)[:]), err_msg=name)
    ours, theirs = st.meta.to_attrs(), ref.meta.to_attrs()
    for attrs in (ours, theirs):
        for key in MADE_AT:
            attrs.pop(key)
        attrs["harvest_config"] = {k: v for k, v in attrs["harvest_config"].items() if k != "store"}
    assert ours == theirs
    assert verify_store(path).ok


@pytest.fixture(scope="module")
def references(tiny_model_dir, kjv_file, tmp_path_factory) -> dict[int, str]:
    """Single-layer harvests of each layer: what every multi-layer store must equal."""
    root = tmp_path_factory.mktemp("single-layer")
    stores = {}
    for layer in LAYERS:
        cfg = config(tiny_model_dir, kjv_file, root / f"L{layer}.zarr", (layer,))
        assert harvest(cfg).complete
        stores[layer] = cfg.store
    return stores


def test_capture_of_several_layers_stops_after_the_deepest(tiny_model_dir):
    model = load_model(str(tiny_model_dir), None, torch.device("cpu"), torch.float32)
    calls = []
    hooks = [m.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, m in enumerate(model.model.layers)]
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    try:
        got = LayerCapture(model, (2, 0)).outputs(ids)
    finally:
        for h in hooks:
            h.remove()
    assert calls == [0, 1, 2]  # one pass, to the deepest captured layer only
    with torch.inference_mode():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert sorted(got) == [0, 2]
    assert all(torch.equal(got[layer], full[layer + 1]) for layer in got)


def test_three_layers_in_one_pass_equal_single_layer_harvests(references, tiny_model_dir, kjv_file, tmp_path,
                                                              capsys):
    template = tmp_path / "m-L{layer}.zarr"
    result = run_cli(capsys, "harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--store", template,
                     "--layer", "3", "--layer", "1", "--layer", "2", *CLI_SETTINGS)  # any order
    assert result.code == 0, result.stderr
    out = " ".join(result.stderr.split())  # the console writes to stderr, keeping stdout for --json
    for layer in LAYERS:
        path = str(tmp_path / f"m-L{layer}.zarr")
        assert f"layer {layer}: wrote {TOKENS:,} rows to {path}; complete" in out
        assert_same_store(path, references[layer])
        st = open_store(path)
        assert st.meta.layer == layer and st.meta.hook_point == f"model.layers.{layer}"
        # The statistics computed by torch as the rows were made are numpy's float64 ones of the stored rows.
        means, m2s = st.chunk_moments()
        for j in range(st.n_chunks):
            lo, hi = j * st.chunk_rows, min((j + 1) * st.chunk_rows, st.n_rows)
            want = moments_of(dtypes.decode_numpy(st.read_rows_raw(lo, hi), "bfloat16"))
            np.testing.assert_allclose(means[j], want.mean, rtol=1e-12)
            np.testing.assert_allclose(m2s[j], want.m2, rtol=1e-12)
    assert open_store(str(tmp_path / "m-L1.zarr")).meta.harvest_config["layers"] == [1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_stores_at_different_points_each_resume_from_their_own(references, tiny_model_dir, kjv_file, tmp_path):
    """Layer 1's store does not exist, layer 2's stopped after a few chunks, layer 3's is complete: one pass
    finishes the first two from their own resume points and leaves the third as it is."""
    template = tmp_path / "m-L{layer}.zarr"

    class StopError(Exception):
        pass

    def stop(done: int, todo: int) -> None:
        if done >= 700:
            raise StopError

    with pytest.raises(StopError):
        harvest(config(tiny_model_dir, kjv_file, tmp_path / "m-L2.zarr", (2,)), on_progress=stop)
    shutil.copytree(references[3], tmp_path / "m-L3.zarr")
    complete_before = _files(tmp_path / "m-L3.zarr")

    result = harvest(config(tiny_model_dir, kjv_file, template, LAYERS))
    by_layer = {s.layer: s for s in result.stores}
    assert result.complete and [s.layer for s in result.stores] == list(LAYERS)
    assert by_layer[1].resumed_at_row == 0 and by_layer[1].rows_written == TOKENS
    assert by_layer[2].resumed_at_row == 512 and by_layer[2].rows_written == TOKENS - 512
    assert by_layer[3].rows_written == 0 and by_layer[3].complete
    assert result.rows_written == TOKENS  # the pass ran from the earliest resume point
    assert _files(tmp_path / "m-L3.zarr") == complete_before
    for layer in LAYERS:
        assert_same_store(str(tmp_path / f"m-L{layer}.zarr"), references[layer])


def _chunks_done(store: Path) -> int:
    try:
        return json.loads((store / "_harvest" / "progress-00000-of-00001.json").read_text())["chunks_done"]
    except (FileNotFoundError, ValueError):
        return 0


def test_kill_9_of_a_multi_layer_harvest_resumes_every_store(references, tiny_model_dir, kjv_file, tmp_path):
    args = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--store", tmp_path / "m-L{layer}.zarr",
            *[a for layer in LAYERS for a in ("--layer", layer)], *CLI_SETTINGS]
    stores = [tmp_path / f"m-L{layer}.zarr" for layer in LAYERS]
    proc = pipeline_subprocess(*args)
    deadline = time.monotonic() + 120
    while max(_chunks_done(s) for s in stores) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = [_chunks_done(s) for s in stores]
    assert max(at_kill) < 12  # really killed mid-run (12 chunks a store)
    proc = pipeline_subprocess(*args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    err = " ".join(err.split())
    for store, done in zip(stores, at_kill, strict=True):
        assert done == 0 or f"resuming {store} at row {done * 256}" in err
    for layer in LAYERS:
        assert_same_store(str(tmp_path / f"m-L{layer}.zarr"), references[layer])


def test_data_running_out_ends_every_store_where_a_single_layer_harvest_ends(tiny_model_dir, kjv_file, tmp_path):
    short = tmp_path / "short.jsonl"
    short.write_text("".join(kjv_file.read_text().splitlines(keepends=True)[:40]))
    layers = (1, 3)
    result = harvest(config(tiny_model_dir, short, tmp_path / "m-L{layer}.zarr", layers, tokens=5000))
    assert result.complete
    for layer in layers:
        ref = config(tiny_model_dir, short, tmp_path / f"ref-L{layer}.zarr", (layer,), tokens=5000)
        harvest(ref)
        assert_same_store(str(tmp_path / f"m-L{layer}.zarr"), ref.store)
        assert 256 < open_store(ref.store).n_rows < 5000 and open_store(ref.store).n_rows % 256  # a short last chunk


def test_sharded_multi_layer_harvest_on_s3(s3, tiny_model_dir, kjv_file, tmp_path, capsys):
    """Two shards, each one pass over its documents for two layers, into two stores on S3: each store equals the
    two-shard single-layer harvest of its layer, and verifies."""
    layers, sharded = (1, 3), dict(tokens=2000, chunk_rows=248, num_shards=2)  # chunks of whole contexts
    url = f"s3://{s3.new_bucket()}/m-L{{layer}}.zarr"
    for shard in (0, 1):
        result = harvest(config(tiny_model_dir, kjv_file, url, layers, shard=shard, **sharded))
    assert result.complete and all(s.complete for s in result.stores)
    for layer in layers:
        for shard in (0, 1):
            ref = config(tiny_model_dir, kjv_file, tmp_path / f"ref-L{layer}.zarr", (layer,), shard=shard, **sharded)
            harvest(ref)
        assert_same_store(url.replace("{layer}", str(layer)), ref.store)
        verify = run_cli(capsys, "store", "verify", url.replace("{layer}", str(layer)))
        assert verify.code == 0 and "store is valid" in verify.stderr


def test_layer_options_are_checked_in_one_line(tiny_model_dir, kjv_file, tmp_path, capsys):
    base = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, *CLI_SETTINGS]
    assert_one_line_error(run_cli(capsys, *base, "--store", tmp_path / "s.zarr", "--layer", "1", "--layer", "2"),
                          "no {layer} placeholder", "--store stores/model-L{layer}.zarr")
    assert_one_line_error(run_cli(capsys, *base, "--store", tmp_path / "L{layer}.zarr", "--layer", "2", "--layer",
                                  "2"), "--layer 2 is given twice")
    assert_one_line_error(run_cli(capsys, *base, "--store", tmp_path / "L{layer}.zarr", "--layer", "1", "--layer",
                                  "-1"), "--layer must be 0 or more, got -1")
    assert_one_line_error(run_cli(capsys, *base, "--store", tmp_path / "L{layer}.zarr", "--layer", "1", "--layer",
                                  "7"), "layer 7 is out of range")
    assert not list(tmp_path.iterdir())  # none of them created a store
    with pytest.raises(HarvestError, match=r"no \{layer\} placeholder"):
        HarvestConfig(store="s3://bucket/acts.zarr", layers=(6, 12))
    cfg = HarvestConfig(store="s3://bucket/gemma-L{layer}.zarr", layers=(19, 6, 12))
    assert cfg.layers == (6, 12, 19) and cfg.store_of(12) == "s3://bucket/gemma-L12.zarr"


def test_the_bench_cases_run_at_a_tiny_size(tiny_model_dir, kjv_file, tmp_path):
    """`make bench`'s several-layers and chunk-statistics cases, on the tiny model, so that they cannot rot."""
    from benchmarks import harvest_bench
    from benchmarks.common import BenchReport

    report = BenchReport()
    seconds = harvest_bench.layers(report, str(tiny_model_dir), str(kjv_file), (1, 3), tokens=300, batch=4,
                                   repeats=1, workdir=str(tmp_path))
    harvest_bench.chunk_statistics(report, rows=512, d=16, chunk_rows=128, repeats=1)
    assert sorted(seconds) == ["alone-1", "alone-3", "one-pass"]
    names = [f.name for f in report.figures]
    assert names[:2] == ["2 layers in one pass vs the deepest alone", "2 layers in one pass vs one harvest per layer"]
    assert "chunk statistics, torch on cpu" in names
    assert all(np.isfinite(f.ratio) and f.ratio > 0 for f in report.figures)
