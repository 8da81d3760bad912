"""Sharded harvest: shard s of N makes contexts from its own documents (every N-th, from the s-th) and writes them
into its own chunks (every N-th, from chunk s), concurrently with the others, without coordination.

The claim docs/scale.md makes, and these tests check: the rows a shard writes, laid end to end, are the store a
single-process harvest of that shard's documents makes, bit for bit (activations, tokens, per-chunk statistics);
a sharded store whose documents run out ends at the first row a shard could not fill.
"""

import dataclasses
import json
import signal
import time

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, pipeline_subprocess, run_cli

from harvest.config import HarvestConfig
from harvest.runner import harvest
from store.layout import ShardRows
from store.reader import ActivationStore, open_store
from store.verify import verify_store

TOKENS = 12000
SETTINGS = dict(layers=(2,), context_length=33, chunk_rows=512, batch_size=4)
"""32 rows per context, 16 contexts per chunk: a sharded store's chunks hold whole contexts."""


def shard_args(model, data, tokens=TOKENS):
    return ["harvest", "--model", model, "--dataset", data, "--layer", "2", "--tokens", str(tokens), "--ctx", "33",
            "--chunk-rows", "512", "--batch-size", "4"]


def run(*args):
    proc = pipeline_subprocess(*args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return err


def shard_documents(data, tmp_path, shard, num_shards):
    """The shard's documents as a file of their own: every num_shards-th line from the shard-th."""
    lines = data.read_text().splitlines()
    path = tmp_path / f"docs-{shard}-of-{num_shards}.jsonl"
    path.write_text("\n".join(lines[shard::num_shards]) + "\n")
    return path


def single_harvest(model, data, store, tokens):
    harvest(HarvestConfig(store=str(store), model=str(model), dataset=str(data), tokens=tokens, **SETTINGS))
    return open_store(str(store))


def assert_shard_is(st: ActivationStore, shard: int, alone: ActivationStore, n: int):
    """The first ``n`` of the shard's rows in ``st`` (its chunks end to end) equal rows [0, n) of ``alone``."""
    rows = ShardRows.of(st.meta, shard)
    c = st.chunk_rows
    for k, j in enumerate(rows.chunks):
        lo, hi = k * c, min((k + 1) * c, n)
        if lo >= hi:
            break
        start = j * c
        assert np.array_equal(st.read_rows_raw(start, start + hi - lo), alone.read_rows_raw(lo, hi)), (shard, j)
        assert np.array_equal(st.tokens(start, start + hi - lo), alone.tokens(lo, hi)), (shard, j)
        if hi - lo == c:  # a whole chunk: the same statistics
            means, m2s = st.chunk_moments(j, j + 1)
            alone_means, alone_m2s = alone.chunk_moments(k, k + 1)
            assert np.array_equal(means, alone_means) and np.array_equal(m2s, alone_m2s), (shard, j)


@pytest.fixture(scope="module")
def concurrent(tiny_model_dir, kjv_file, tmp_path_factory):
    """A store written by 2 shards running at once."""
    sharded = tmp_path_factory.mktemp("sharded") / "s.zarr"
    args = shard_args(tiny_model_dir, kjv_file)
    procs = [pipeline_subprocess(*args, "--store", sharded, "--shard", i, "--num-shards", 2) for i in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    return sharded


def test_each_shard_holds_the_store_a_single_harvest_of_its_documents_makes(concurrent, tiny_model_dir, kjv_file,
                                                                            tmp_path):
    st = open_store(str(concurrent))
    assert st.meta.complete and st.meta.num_shards == 2 and st.n_rows == TOKENS
    for shard in (0, 1):
        n = ShardRows.of(st.meta, shard).n_local
        alone = single_harvest(tiny_model_dir, shard_documents(kjv_file, tmp_path, shard, 2),
                               tmp_path / f"alone-{shard}.zarr", n)
        assert alone.n_rows == n
        assert_shard_is(st, shard, alone, n)
    # context ids and positions follow the store's layout; stats/mean and stats/var merge the chunks' statistics
    assert verify_store(str(concurrent)).ok


def test_a_sharded_store_whose_documents_run_out_ends_at_the_first_row_a_shard_could_not_fill(
        tiny_model_dir, kjv_file, tmp_path, caplog):
    data = tmp_path / "few.jsonl"
    data.write_text("\n".join(kjv_file.read_text().splitlines()[:200]) + "\n")  # about 12k tokens
    store = tmp_path / "s.zarr"
    for shard in (0, 1):
        harvest(HarvestConfig(store=str(store), model=str(tiny_model_dir), dataset=str(data), tokens=10**6,
                              shard=shard, num_shards=2, **SETTINGS))
    st = open_store(str(store))
    assert "ran out" in caplog.text
    alone = [single_harvest(tiny_model_dir, shard_documents(data, tmp_path, s, 2), tmp_path / f"alone-{s}.zarr",
                            10**6) for s in (0, 1)]
    # Where each shard's documents end, in store rows (of the store as asked for); the store ends at the first.
    asked = dataclasses.replace(st.meta, n_rows=st.meta.tokens_requested)
    shard_rows = [ShardRows.of(asked, s) for s in (0, 1)]
    ends = [shard_rows[s].store_row(alone[s].n_rows) for s in (0, 1)]
    assert st.n_rows == min(ends)
    for s in (0, 1):
        held = sum(min(max(st.n_rows - j * st.chunk_rows, 0), st.chunk_rows) for j in shard_rows[s].chunks)
        assert_shard_is(st, s, alone[s], held)
    assert verify_store(str(store)).ok


def test_a_failed_shard_is_rerun_alone(concurrent, tiny_model_dir, kjv_file, tmp_path):
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
    a, b = open_store(str(store)), open_store(str(concurrent))  # the same store as two uninterrupted shards
    assert np.array_equal(a.read_rows_raw(0, TOKENS), b.read_rows_raw(0, TOKENS))
    assert np.array_equal(a.group["stats/mean"][:], b.group["stats/mean"][:])
    assert verify_store(str(store)).ok


def test_a_sharded_harvest_refuses_chunks_that_would_cut_contexts(tiny_model_dir, kjv_file, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    args = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2", "--tokens", "2000",
            "--ctx", "32", "--chunk-rows", "512", "--store", store, "--shard", "0", "--num-shards", "2"]
    assert_one_line_error(run_cli(capsys, *args), "--chunk-rows 512 is not a multiple of the 31 rows per context",
                          "pass --chunk-rows 496")
    assert not store.exists()
