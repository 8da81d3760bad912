"""Data-parallel fit under torchrun: 2 CPU processes on the gloo backend against one process."""

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file
from synthetic import make_meta, synthetic_rows, write_store


def test_two_gloo_processes_equal_one_process_on_the_same_global_batches(tmp_path):
    store = str(tmp_path / "s.zarr")
    write_store(store, make_meta(n_rows=16000, d=32, chunk_rows=1024), synthetic_rows(16000, 32))
    common = ["fit", "--store", store, "--variant", "baseline", "--variant", "hier", "--batch-size", 256,
              "--tokens", 256 * 40, "--log-every", 10, "--checkpoint-every", 20, "--shuffle-rows", 2048,
              "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pipeline",
         *map(str, common), "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "rank 1 of 2" in ddp.stderr
    single = subprocess.run([sys.executable, "-m", "pipeline", *map(str, common), "--streams", "2",
                             "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    for name in ("baseline-l0.04-s0", "hier-K5-g1.5-l0.04-s0"):
        a = load_file(str(tmp_path / "ddp" / name / "sae.safetensors"))
        b = load_file(str(tmp_path / "one" / name / "sae.safetensors"))
        for k in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-4), (name, k, (a[k] - b[k]).abs().max())
        log = (tmp_path / "ddp" / name / "metrics.jsonl").read_text().splitlines()
        assert len(log) == 4  # rank 0 alone logs
