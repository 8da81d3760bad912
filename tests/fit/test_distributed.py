"""Data-parallel fit under torchrun: 2 CPU processes on the gloo backend against one process."""

import contextlib
import json
import os
import subprocess
import sys

import torch
from direct_store import make_meta, random_rows, write_store
from safetensors.torch import load_file


def test_two_gloo_processes_equal_one_process_on_the_same_global_batches(tmp_path):
    store = str(tmp_path / "s.zarr")
    write_store(store, make_meta(n_rows=16000, d=32, chunk_rows=1024), random_rows(16000, 32))
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


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_a_killed_two_process_fit_resumes_to_the_same_weights(tmp_path):
    import signal
    import time

    store = str(tmp_path / "s.zarr")
    write_store(store, make_meta(n_rows=40000, d=128, chunk_rows=2048), random_rows(40000, 128))
    common = ["fit", "--store", store, "--variant", "hier", "--batch-size", 256, "--tokens", 256 * 400,
              "--log-every", 10, "--checkpoint-every", 20, "--shuffle-rows", 4096, "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "pipeline", *map(str, common), "--out", str(tmp_path / "ddp")]
    proc = subprocess.Popen(ddp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    passes = tmp_path / "ddp" / "passes"
    deadline = time.monotonic() + 300
    while True:
        files = list(passes.glob("*.json")) if passes.exists() else []
        try:
            if files and json.loads(files[0].read_text())["step"] >= 20:
                break
        except ValueError:
            pass
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for pid in [proc.pid, *_descendants(proc.pid)]:  # torchrun and both workers (in their own sessions)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "ddp" / "hier-K5-g1.5-l0.04-s0" / "training.json").exists()
    resumed = subprocess.run(ddp, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming 1 SAE(s) from step" in resumed.stderr, resumed.stderr
    clean = subprocess.run([*ddp[:-1], str(tmp_path / "clean")], env=env, capture_output=True, text=True,
                           timeout=600)
    assert clean.returncode == 0, clean.stderr[-3000:]
    a = load_file(str(tmp_path / "ddp" / "hier-K5-g1.5-l0.04-s0" / "sae.safetensors"))
    b = load_file(str(tmp_path / "clean" / "hier-K5-g1.5-l0.04-s0" / "sae.safetensors"))
    for k in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max())  # same reduction order: exact
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "ddp" / "hier-K5-g1.5-l0.04-s0" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 401, 10))


def test_a_nan_batch_that_one_rank_reads_stops_both_ranks_naming_it(tmp_path):
    from fit.config import TrainConfig
    from fit.data import StoreSource
    from store.reader import open_store

    meta, j = make_meta(n_rows=16000, d=32, chunk_rows=1024), 9
    clean = str(tmp_path / "clean.zarr")
    write_store(clean, meta, random_rows(16000, 32))
    cfg = TrainConfig(store=clean, out=str(tmp_path), batch_size=256, shuffle_rows=2048, streams=2)
    source = StoreSource(open_store(clean))
    source.plan(cfg, cfg.streams)
    order = source.order
    acts = random_rows(16000, 32)
    acts[int(order.batch_rows(j, [1])[5]), 0] = float("inf")  # in rank 1's half of batch j only
    bad = str(tmp_path / "inf.zarr")
    write_store(bad, meta, acts)
    out = tmp_path / "ddp"
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pipeline",
         "fit", "--store", bad, "--variant", "baseline", "--variant", "hier", "--batch-size", "256", "--tokens",
         str(256 * 20), "--log-every", "5", "--checkpoint-every", "4", "--shuffle-rows", "2048", "--device", "cpu",
         "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True,
        timeout=600,
    )
    assert ddp.returncode != 0
    errors = [line for line in ddp.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, ddp.stderr[-3000:]  # one line from each rank, rank 0 told by rank 1
    assert all(f"batch {j} holds NaN or Inf activations" in e for e in errors), errors
    [pass_file] = (out / "passes").glob("*.json")
    assert json.loads(pass_file.read_text())["step"] == 8  # the checkpoint at 12 would have held batch 9
