"""Sharded harvest: shards write disjoint chunk ranges of one store, concurrently, without coordination."""

import json
import signal
import time

import numpy as np
from cli_helpers import pipeline_subprocess

from store import open_store
from store.verify import verify_store

TOKENS = 12000


def shard_args(model, data, tokens=TOKENS):
    return ["harvest", "--model", model, "--dataset", data, "--layer", "2", "--tokens", str(tokens), "--ctx", "32",
            "--chunk-rows", "512", "--batch-size", "2"]


def run(*args):
    proc = pipeline_subprocess(*args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return err


def test_two_concurrent_shards_equal_one_process(tiny_model_dir, kjv_file, tmp_path):
    args = shard_args(tiny_model_dir, kjv_file)
    sharded = tmp_path / "sharded.zarr"
    procs = [pipeline_subprocess(*args, "--store", sharded, "--shard", i, "--num-shards", 2) for i in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    run(*args, "--store", tmp_path / "one.zarr")
    a, b = open_store(str(sharded)), open_store(str(tmp_path / "one.zarr"))
    assert a.meta.complete and a.meta.num_shards == 2 and a.n_rows == b.n_rows == TOKENS
    # the same rows (here even in the same places, since both follow one batch grid) and statistics
    rows_a, rows_b = a.read_rows_raw(0, TOKENS), b.read_rows_raw(0, TOKENS)
    assert {r.tobytes() for r in rows_a} == {r.tobytes() for r in rows_b}
    assert np.array_equal(rows_a, rows_b) and np.array_equal(a.tokens(), b.tokens())
    np.testing.assert_allclose(a.group["stats/mean"][:], b.group["stats/mean"][:], rtol=1e-12)
    np.testing.assert_allclose(a.group["stats/var"][:], b.group["stats/var"][:], rtol=1e-12)
    assert verify_store(str(sharded)).ok


def test_a_failed_shard_is_rerun_alone(tiny_model_dir, kjv_file, tmp_path):
    args = shard_args(tiny_model_dir, kjv_file)
    store = tmp_path / "s.zarr"
    failing = pipeline_subprocess(*args, "--store", store, "--shard", 1, "--num-shards", 2)
    progress = store / "_harvest" / "progress-00001-of-00002.json"
    deadline = time.monotonic() + 300
    while True:
        try:
            if json.loads(progress.read_text())["chunks_done"] >= 2:
                break
        except (FileNotFoundError, ValueError):
            pass
        assert failing.poll() is None, failing.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    failing.send_signal(signal.SIGKILL)
    failing.wait()
    err = run(*args, "--store", store, "--shard", 0, "--num-shards", 2)
    assert "store not complete until every shard finishes" in err
    assert not open_store(str(store), partial=True).meta.complete
    err = run(*args, "--store", store, "--shard", 1, "--num-shards", 2)  # the failed shard alone, resumed
    assert "resuming" in err and "; complete" in err
    run(*args, "--store", tmp_path / "one.zarr")
    a, b = open_store(str(store)), open_store(str(tmp_path / "one.zarr"))
    assert np.array_equal(a.read_rows_raw(0, TOKENS), b.read_rows_raw(0, TOKENS))
    assert verify_store(str(store)).ok
