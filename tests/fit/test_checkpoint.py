"""Resuming a fit killed (SIGKILL, real processes) at every step of a checkpoint, the --out lock, and the
one-line refusals of a bad --out or an unfinished store."""

import json
import os
import signal
import time

import pytest
import torch
from cli_helpers import assert_one_line_error, forked_fits, pipeline_subprocess, run_cli
from direct_store import make_meta, random_rows, write_store
from safetensors.torch import load_file

from fit.trainer import LOCK_FILE
from store.killpoint import KILL_AT_ENV

STEPS, EVERY, LOG_EVERY = 12, 4, 2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "s.zarr")
    write_store(path, make_meta(n_rows=4000, d=16, chunk_rows=512), random_rows(4000, 16))
    return path


def fit_args(store, grid):
    return ["fit", "--store", store, *grid, "--batch-size", 64, "--tokens", 64 * STEPS, "--log-every", LOG_EVERY,
            "--checkpoint-every", EVERY, "--shuffle-rows", 1024]


def weights(run):
    return load_file(str(run / "sae.safetensors"))


ONE = ["--variant", "baseline"]
SIX = ["--variant", "baseline", "--variant", "hier", "--seed", 0, "--seed", 1, "--seed", 2]

# (grid, number of SAEs, kill points "<point>@<n-th checkpoint>"): every point of save_checkpoint, at the first
# checkpoint (nothing committed before it: the case that could never resume) and at a later one.
CASES = {
    "1-sae": (ONE, 1, ["sae-0@2", "staged@1", "renamed@1", "renamed@2", "committed@2", "dropped@1"]),
    "6-saes": (SIX, 6, ["sae-0@1", "sae-3@2", "staged@2", "renamed@1", "committed@1", "dropped@2"]),
}


@pytest.mark.parametrize("case", CASES)
def test_a_fit_killed_at_each_step_of_a_checkpoint_resumes_to_the_uninterrupted_weights(store, tmp_path, case):
    grid, n_saes, points = CASES[case]
    args = fit_args(store, grid)
    killed = forked_fits([(p, {KILL_AT_ENV: f"checkpoint:{p}"}, [*args, "--out", tmp_path / p]) for p in points])
    assert killed == {p: -signal.SIGKILL for p in points}
    for point in points:
        assert not list((tmp_path / point).glob("*/training.json")), point  # really killed mid-run
        assert list((tmp_path / point).glob("passes/*/*")), point  # with a checkpoint on disk, whole or not

    # The uninterrupted fit, then the exact command again in every killed --out.
    finished = forked_fits([(p, {}, [*args, "--out", tmp_path / p]) for p in ["clean", *points]])
    assert finished == {p: 0 for p in ["clean", *points]}
    names = sorted(p.name for p in (tmp_path / "clean").iterdir() if (p / "config.json").exists())
    assert len(names) == n_saes
    for point in points:
        out = tmp_path / point
        for name in names:
            a, b = weights(out / name), weights(tmp_path / "clean" / name)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (point, name)
            steps = [json.loads(line)["step"] for line in (out / name / "metrics.jsonl").read_text().splitlines()]
            assert steps == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)), (point, name)  # no gap, no duplicate
        assert list((out / "passes").iterdir()) == [], point  # the pass is tidied away


def test_compiled_steps_resume_exactly_and_stop_at_a_nan_batch(store, tmp_path):
    """--compile changes how a step computes, not what the pass does around it: a compiled pass killed at a
    checkpoint resumes bit for bit, agrees with the eager pass to float32 rounding, and names a NaN batch without
    checkpointing past it."""
    from fit.config import TrainConfig
    from fit.data import StoreSource
    from fit.distributed import World
    from store.reader import open_store

    j = 6
    source = StoreSource(open_store(store))
    source.plan(TrainConfig(store=store, out=str(tmp_path), batch_size=64, shuffle_rows=1024), World().size)
    order = source.order
    acts = random_rows(4000, 16)
    acts[int(order.batch_rows(j)[0]), 2] = float("nan")
    bad = str(tmp_path / "nan.zarr")
    write_store(bad, make_meta(n_rows=4000, d=16, chunk_rows=512), acts)
    args = [*fit_args(store, SIX[:4]), "--compile", "--l1-warmup", 5]  # a penalty scale that changes every step
    eager = [a for a in args if a != "--compile"]
    err: list[str] = []
    codes = forked_fits([
        ("killed", {KILL_AT_ENV: "checkpoint:committed@2"}, [*args, "--out", tmp_path / "resumed"]),
        ("resumed", {}, [*args, "--out", tmp_path / "resumed"]),
        ("clean", {}, [*args, "--out", tmp_path / "clean"]),
        ("eager", {}, [*eager, "--out", tmp_path / "eager"]),
        ("nan", {}, [*fit_args(bad, SIX[:4]), "--compile", "--out", tmp_path / "nan"]),
    ], err)
    assert codes == {"killed": -signal.SIGKILL, "resumed": 0, "clean": 0, "eager": 0, "nan": 2}, err
    for name in ("baseline-l0.04-s0", "hier-K5-g1.5-l0.04-s0"):
        resumed, clean, eager_w = (weights(tmp_path / out / name) for out in ("resumed", "clean", "eager"))
        assert all(torch.equal(resumed[k], clean[k]) for k in clean), name
        for k in clean:
            torch.testing.assert_close(clean[k], eager_w[k], msg=f"{name} {k}")
    assert f"batch {j} holds NaN or Inf activations" in err[0]
    [pass_file] = (tmp_path / "nan" / "passes").glob("*.json")
    assert json.loads(pass_file.read_text())["step"] == 4  # the checkpoint at 8 would have held batch 6


def test_a_pass_of_other_saes_is_still_refused(store, tmp_path, capsys):
    out = tmp_path / "runs"
    killed = forked_fits([("six", {KILL_AT_ENV: "checkpoint:committed"}, [*fit_args(store, SIX), "--out", out])])
    assert killed == {"six": -signal.SIGKILL}
    assert_one_line_error(run_cli(capsys, *fit_args(store, ONE), "--out", out), "baseline",
                          "is being trained by another training pass", "rerun that exact command")
    assert run_cli(capsys, *fit_args(store, SIX), "--out", out).code == 0  # which still finishes


def test_a_second_fit_into_one_out_fails_at_once_and_a_killed_ones_lock_does_not_block(store, tmp_path, capsys):
    out = tmp_path / "runs"
    long_fit = ["fit", "--store", store, "--variant", "baseline", "--batch-size", 64, "--tokens", 64 * 10**6,
                "--checkpoint-every", 0, "--shuffle-rows", 1024, "--out", out]
    first = pipeline_subprocess(*long_fit)
    deadline = time.monotonic() + 300  # only a guard against a hung test
    while not (out / "baseline-l0.04-s0" / "config.json").exists():  # written once it holds the lock
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    other = [*fit_args(store, ["--variant", "hier"]), "--out", out]  # other SAEs: only the lock can refuse it
    assert_one_line_error(run_cli(capsys, *other), "another fit is writing to", "choose another --out")
    assert first.poll() is None  # the first fit was running all along
    assert (out / LOCK_FILE).exists()

    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert run_cli(capsys, *other).code == 0  # the dead fit's lock went with it
    assert (out / "hier-K5-g1.5-l0.04-s0" / "training.json").exists()


def test_an_out_that_cannot_be_a_directory_is_one_line(store, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    for out in (a_file, a_file / "runs"):
        assert_one_line_error(run_cli(capsys, *fit_args(store, ONE), "--out", out), str(out), "not a directory")
    assert a_file.read_text() == "not a directory"
    assert_one_line_error(run_cli(capsys, *fit_args(store, ONE), "--out", "/proc/hfg-no-such/runs"),
                          "cannot create --out", "choose a directory you can write to")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_one_line_error(run_cli(capsys, *fit_args(store, ONE), "--out", locked / "runs"), "cannot create")


def test_an_unfinished_store_names_the_fix_that_fit_has(tmp_path, capsys):
    partial = str(tmp_path / "partial.zarr")
    write_store(partial, make_meta(n_rows=4000, d=16, chunk_rows=512), random_rows(4000, 16), stop_row=2000)
    result = run_cli(capsys, "fit", "--store", partial, "--out", tmp_path / "runs")
    assert_one_line_error(result, "is incomplete", "1,536 of 4,000 tokens", "wait for the harvest to finish")
    assert "--partial" not in result.stderr
