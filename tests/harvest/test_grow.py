"""Growing a complete store: the same harvest rerun with a larger --tokens extends it. The rows it held stay bit
for bit, and the result is the store a harvest of the larger size makes in one go (rows, tokens, statistics,
metadata but for timing), also for a sharded store, also when the growth is killed anywhere; runs trained on
the smaller store evaluate on the grown one exactly as before."""

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, pipeline_subprocess, run_cli

from harvest.config import HarvestConfig
from harvest.runner import harvest
from store.errors import IncompleteStoreError
from store.format import MADE_AT
from store.reader import open_store
from store.verify import verify_store

SMALL, LARGE = 4000, 8000
ARRAYS = ("activations", "tokens", "context_ids", "positions", "stats/chunk_mean", "stats/chunk_m2", "stats/mean",
          "stats/var")


def cfg(model, data, store, tokens, **kw):
    settings = dict(layers=(2,), context_length=32, chunk_rows=512, batch_size=4)
    return HarvestConfig(store=str(store), model=str(model), dataset=str(data), tokens=tokens, **{**settings, **kw})


def attributes(path) -> dict:
    """The root attributes but for timing, and but for the store's own path recorded in its harvest config."""
    attrs = {k: v for k, v in json.loads((path / "zarr.json").read_text())["attributes"].items() if k not in MADE_AT}
    attrs["harvest_config"] = {k: v for k, v in attrs["harvest_config"].items() if k != "store"}
    return attrs


def assert_same_store(a, b):
    """Every array equal, bit for bit; the attributes and consolidated metadata equal but for timing."""
    sa, sb = open_store(str(a)), open_store(str(b))
    assert sa.n_rows == sb.n_rows
    for name in ARRAYS:
        assert np.array_equal(sa.group[name][:], sb.group[name][:]), name
    assert attributes(a) == attributes(b)
    docs = [json.loads((p / "zarr.json").read_text())["consolidated_metadata"] for p in (a, b)]
    assert docs[0] == docs[1]
    assert not (a / "_harvest").exists()
    assert verify_store(str(a)).ok


@pytest.fixture(scope="module")
def stores(tiny_model_dir, kjv_file, tmp_path_factory):
    """A 4k-token store, a copy of it, the same store grown to 8k, and an 8k store harvested in one go."""
    tmp = tmp_path_factory.mktemp("grow")
    harvest(cfg(tiny_model_dir, kjv_file, tmp / "grown.zarr", SMALL))
    shutil.copytree(tmp / "grown.zarr", tmp / "small.zarr")
    result = harvest(cfg(tiny_model_dir, kjv_file, tmp / "grown.zarr", LARGE))
    harvest(cfg(tiny_model_dir, kjv_file, tmp / "one.zarr", LARGE))
    return tmp, result


def test_a_grown_store_is_the_store_one_harvest_of_that_size_makes(stores):
    tmp, result = stores
    # 4000 = 7 chunks of 512 and 416 rows: the chunk that held them is written again, its old rows kept.
    assert result.complete and result.resumed_at_row == 7 * 512 and result.rows_written == LARGE - 7 * 512
    small, grown = open_store(str(tmp / "small.zarr")), open_store(str(tmp / "grown.zarr"))
    assert np.array_equal(grown.read_rows_raw(0, SMALL), small.read_rows_raw(0, SMALL))
    assert np.array_equal(grown.tokens(0, SMALL), small.tokens())
    assert_same_store(tmp / "grown.zarr", tmp / "one.zarr")


def test_a_run_trained_on_the_smaller_store_evaluates_on_the_grown_one_as_before(stores, capsys):
    tmp, _ = stores
    runs = tmp / "runs"
    fit = ["fit", "--store", tmp / "small.zarr", "--out", runs, "--variant", "baseline", "--batch-size", 128,
           "--tokens", 128 * 10]
    assert run_cli(capsys, *fit).code == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    evals = []
    for store in ("small.zarr", "grown.zarr"):
        assert run_cli(capsys, "evaluate", run, "--store", tmp / store).code == 0
        evals.append(json.loads((run / "eval.json").read_text()))
    on_small, on_grown = evals
    assert on_grown["store"]["heldout_rows"] == on_small["store"]["heldout_rows"]
    for key in ("mse", "explained_variance", "l0", "kl", "ce_clean", "ce_spliced", "kl_tokens", "ce_tokens"):
        assert on_grown[key] == on_small[key], key
    # A new fit on the grown store holds out the grown store's last contexts; a store too small to hold a run's
    # held-out rows is refused in one line.
    fit[fit.index(tmp / "small.zarr")], fit[fit.index(runs)] = tmp / "grown.zarr", tmp / "new-runs"
    assert run_cli(capsys, *fit).code == 0
    (new,) = [p for p in (tmp / "new-runs").iterdir() if p.is_dir()]
    train = json.loads((new / "config.json").read_text())["train"]
    assert tuple(train["heldout_rows"]) == open_store(str(tmp / "grown.zarr")).split(train["holdout"]).heldout
    assert_one_line_error(run_cli(capsys, "evaluate", new, "--store", tmp / "small.zarr"),
                          "its n_rows is 8000, this store's is 4000")


def test_a_sharded_store_grows_into_the_one_a_sharded_harvest_of_that_size_makes(tiny_model_dir, kjv_file,
                                                                                tmp_path):
    sharded = dict(context_length=33, num_shards=2)  # 32 rows per context: chunks hold whole contexts
    for tokens, store in ((SMALL, "grown.zarr"), (LARGE, "grown.zarr"), (LARGE, "one.zarr")):
        for shard in (0, 1):
            harvest(cfg(tiny_model_dir, kjv_file, tmp_path / store, tokens, shard=shard, **sharded))
    assert_same_store(tmp_path / "grown.zarr", tmp_path / "one.zarr")


def _progress(store):
    try:
        return json.loads((store / "_harvest" / "progress-00000-of-00001.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_a_growth_killed_while_writing_resumes_to_the_same_store(tiny_model_dir, kjv_file, tmp_path):
    """kill -9 of a real harvest half-way through a growth (tests/store/test_extend.py kills one after each step
    that starts a growth or finishes it)."""
    store = tmp_path / "s.zarr"
    harvest(cfg(tiny_model_dir, kjv_file, store, SMALL, chunk_rows=256, batch_size=1))
    grow = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2", "--ctx", "32",
            "--chunk-rows", "256", "--batch-size", "1", "--tokens", LARGE, "--store", store]
    proc = pipeline_subprocess(*grow)
    deadline = time.monotonic() + 300
    while (p := _progress(store)) is None or p["chunks_done"] < SMALL // 256 + 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _progress(store)["chunks_done"] < LARGE // 256  # really killed mid-growth
    with pytest.raises(IncompleteStoreError, match="being extended from 4,000 to 8,000 tokens"):
        open_store(str(store))
    proc = pipeline_subprocess(*grow)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    harvest(cfg(tiny_model_dir, kjv_file, tmp_path / "one.zarr", LARGE, chunk_rows=256, batch_size=1))
    assert_same_store(store, tmp_path / "one.zarr")


def test_growth_is_refused_in_one_line_where_it_cannot_be(stores, tiny_model_dir, kjv_file, capsys):
    tmp, _ = stores
    args = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2", "--ctx", "32",
            "--chunk-rows", "512", "--store", tmp / "one.zarr"]
    before = {p: p.stat().st_mtime_ns for p in (tmp / "one.zarr").rglob("*")}
    assert_one_line_error(run_cli(capsys, *args, "--batch-size", "4", "--tokens", SMALL), "a store never shrinks")
    # another setting changed along with the size: refused as for any rerun
    assert_one_line_error(run_cli(capsys, *args, "--batch-size", "2", "--tokens", 12000), "batch size = 4")
    assert {p: p.stat().st_mtime_ns for p in (tmp / "one.zarr").rglob("*")} == before
