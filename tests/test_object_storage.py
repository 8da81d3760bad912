"""The store on object storage: a real S3-compatible server (moto) on loopback, driven through s3fs."""

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, pipeline_subprocess, run_cli
from direct_store import make_meta, random_rows, write_store
from safetensors.torch import load_file

from store import dtypes
from store.errors import StoreLockedError
from store.location import StoreLocation
from store.reader import open_store
from store.verify import verify_store
from store.writer import StoreWriter


def test_store_round_trip_verify_and_lease_on_s3(s3):
    url = f"s3://{s3.new_bucket()}/acts.zarr"
    meta = make_meta(n_rows=3000, d=16, chunk_rows=512)
    acts = random_rows(3000, 16)
    writer = StoreWriter.open(StoreLocation(url), meta)
    try:
        with pytest.raises(StoreLockedError, match=r"another process .* is writing"):
            StoreWriter.open(StoreLocation(url), meta)
    finally:
        writer.close()
    write_store(url, meta, acts)
    st = open_store(url)
    assert not st.location.is_local and st.fast_path and st.meta.complete
    assert torch.equal(st.read_rows(0, 3000), dtypes.decode(dtypes.encode(acts, "bfloat16"), "bfloat16"))
    report = verify_store(url)
    assert report.ok and report.chunks_read == 6
    import s3fs

    keys = s3fs.S3FileSystem().find(url)
    assert not any("_harvest" in k for k in keys)  # bookkeeping (leases, progress) is gone once complete


def test_sharded_harvest_to_s3_then_verify_and_fit_from_s3(s3, tiny_model_dir, kjv_file, tmp_path, capsys):
    url = f"s3://{s3.new_bucket()}/tiny.zarr"
    args = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2", "--tokens", "6000",
            "--ctx", "33", "--chunk-rows", "512", "--batch-size", "4", "--store", url]  # chunks of whole contexts
    procs = [pipeline_subprocess(*args, "--shard", i, "--num-shards", 2) for i in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    verify = run_cli(capsys, "store", "verify", url)
    assert verify.code == 0 and "store is valid" in verify.stderr
    local = tmp_path / "local.zarr"  # the same two shards, one after the other, on local disk
    for i in (0, 1):
        local_args = [a if a != url else str(local) for a in args]
        assert run_cli(capsys, *local_args, "--shard", i, "--num-shards", 2).code == 0
    remote, here = open_store(url), open_store(str(local))
    assert np.array_equal(remote.read_rows_raw(0, 6000), here.read_rows_raw(0, 6000))

    fit = ["fit", "--batch-size", 128, "--tokens", 128 * 20, "--data", "stream", "--shuffle-rows", 1024]
    assert run_cli(capsys, *fit, "--store", url, "--out", tmp_path / "from-s3").code == 0
    assert run_cli(capsys, *fit, "--store", local, "--out", tmp_path / "from-disk").code == 0
    a = load_file(str(tmp_path / "from-s3" / "hier-K5-g1.5-l0.04-s0" / "sae.safetensors"))
    b = load_file(str(tmp_path / "from-disk" / "hier-K5-g1.5-l0.04-s0" / "sae.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same batches from S3 as from disk
    assert_one_line_error(run_cli(capsys, "store", "info", f"s3://{s3.new_bucket()}/missing.zarr"),
                          "no activation store")
