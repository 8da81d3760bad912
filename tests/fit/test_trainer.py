"""Training passes over real stores (random rows written through the store API): equality across passes, modes and
resumes."""

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, pipeline_subprocess, run_cli
from direct_store import make_meta, random_rows, write_store
from safetensors.torch import load_file

from fit.config import SAEConfig, TrainConfig
from fit.data import StoreSource
from fit.errors import FitError
from fit.runs import RunDir, load_sae
from fit.trainer import fit
from store.errors import IncompleteStoreError
from store.reader import open_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fit") / "s.zarr")
    write_store(path, make_meta(n_rows=12000, d=32, chunk_rows=1024), random_rows(12000, 32))
    return path


def train_cfg(store, out, **kw):
    defaults = dict(batch_size=256, log_every=5, checkpoint_every=0, shuffle_rows=2048)
    return TrainConfig(store=store, out=str(out), **{**defaults, **kw})


def weights(run_dir):
    return load_file(str(Path(run_dir) / "sae.safetensors"))


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


BASE = SAEConfig(variant="baseline", seed=0)
HIER = SAEConfig(variant="hier", groups=5, gamma=1.5, seed=1)


def test_training_writes_artefacts_and_learns(store, tmp_path):
    [result] = fit(train_cfg(store, tmp_path, tokens=256 * 60), [HIER])
    run = Path(result.run_dir)
    for name in ("sae.safetensors", "config.json", "metrics.jsonl", "training.json", "saelens/cfg.json",
                 "saelens/sae_weights.safetensors"):
        assert (run / name).exists(), name
    assert not (run / "checkpoints").exists()
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(5, 61, 5))
    assert log[-1]["loss"] < log[0]["loss"]  # it learns
    assert len(log[-1]["live_per_group"]) == 5 and log[-1]["explained_variance"] > 0
    sae, config = load_sae(run)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(32), atol=1e-5)
    assert config["group_bounds"] == [[0, 7], [7, 14], [14, 20], [20, 26], [26, 32]]  # 32 = 7+7+6+6+6
    assert config["train"]["heldout_rows"][1] == 12000


MIX = [BASE, HIER, SAEConfig(variant="hier", groups=3, gamma=2.0, norm="store_stats", seed=2),
       SAEConfig(variant="baseline", l1=0.1, norm="none", recon="l2", seed=3),
       SAEConfig(variant="hier", expansion=2.0, seed=4)]
"""Four SAEs of one shape (one stack) that differ in every other way, and one twice as wide (a stack of its own)."""


def test_stacked_saes_equal_separately_trained_ones(store, tmp_path, caplog):
    cfg = dict(tokens=256 * 20)
    with caplog.at_level("INFO", logger="fit.trainer"):
        stacked = fit(train_cfg(store, tmp_path / "stacked", **cfg), MIX)
    assert "training 5 SAE(s) in 2 stack(s) of 4 + 1 " in caplog.text
    looped = fit(train_cfg(store, tmp_path / "looped", stack=False, **cfg), MIX)
    alone = [fit(train_cfg(store, tmp_path / "alone", **cfg), [s])[0] for s in MIX]
    for a, b, c in zip(stacked, looped, alone, strict=True):
        wa, wc = weights(a.run_dir), weights(c.run_dir)
        assert wa.keys() == wc.keys()
        for k in wa:
            torch.testing.assert_close(wa[k], wc[k], msg=f"{a.name} {k}")  # float32 tolerances
        assert same_weights(b.run_dir, c.run_dir), b.name  # the per-SAE loop is one pass per SAE, bit for bit
        assert a.final["step"] == 20 and abs(a.final["loss"] - c.final["loss"]) <= 1e-5 * abs(c.final["loss"])


def test_memory_and_stream_data_give_the_same_weights(store, tmp_path):
    runs = [fit(train_cfg(store, tmp_path / mode, tokens=256 * 15, data=mode), [HIER])[0] for mode in
            ("memory", "stream")]
    assert same_weights(runs[0].run_dir, runs[1].run_dir)


def test_store_stats_and_none_norms_train(store, tmp_path):
    saes = [SAEConfig(variant="hier", norm="store_stats"), SAEConfig(variant="baseline", norm="none", recon="l2")]
    results = fit(train_cfg(store, tmp_path, tokens=256 * 10), saes)
    assert [r.name for r in results] == ["hier-K5-g1.5-l0.04-store_stats-s0", "baseline-l0.04-none-l2-s0"]
    assert all(np.isfinite(r.final["loss"]) for r in results)


def test_finished_runs_are_skipped_and_other_configs_refused(store, tmp_path):
    fit(train_cfg(store, tmp_path, tokens=256 * 5), [HIER])
    before = weights(tmp_path / HIER.name)
    fit(train_cfg(store, tmp_path, tokens=256 * 5), [HIER])  # nothing to do
    assert all(torch.equal(before[k], v) for k, v in weights(tmp_path / HIER.name).items())
    with pytest.raises(FitError, match=r"train lr = 0\.0003, but this run asks for 0\.001"):
        fit(train_cfg(store, tmp_path, tokens=256 * 5, lr=1e-3), [HIER])


def test_an_incomplete_store_is_refused(tmp_path):
    partial = str(tmp_path / "partial.zarr")
    write_store(partial, make_meta(n_rows=4000, d=16, chunk_rows=512), random_rows(4000, 16), stop_row=2000)
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        fit(train_cfg(partial, tmp_path / "a"), [HIER])


@pytest.mark.parametrize(("every", "log_every"), [(3, 5), (1, 50)], ids=["seen at a log line", "at a checkpoint"])
def test_a_nan_batch_is_named_and_no_checkpoint_holds_a_step_after_it(tmp_path, every, log_every):
    meta, j = make_meta(n_rows=4000, d=16, chunk_rows=512), 13
    clean = str(tmp_path / "clean.zarr")
    write_store(clean, meta, random_rows(4000, 16))
    cfg = dict(batch_size=128, tokens=128 * 25, checkpoint_every=every, log_every=log_every)
    source = StoreSource(open_store(clean))
    source.plan(train_cfg(clean, tmp_path, **cfg), 1)
    order = source.order
    acts = random_rows(4000, 16)
    acts[int(order.batch_rows(j)[7]), 3] = float("nan")  # a row of batch j (0-based) alone
    bad = str(tmp_path / "nan.zarr")
    write_store(bad, meta, acts)
    out = tmp_path / "runs"
    with pytest.raises(FitError, match=rf"^batch {j} holds NaN or Inf activations: .*store verify") as err:
        fit(train_cfg(bad, out, **cfg), [BASE, HIER])
    assert "\n" not in str(err.value)
    # A checkpoint at step s holds batches 0..s-1: none may hold batch j.
    [pass_file] = (out / "passes").glob("*.json")
    committed = json.loads(pass_file.read_text())["step"]
    assert committed == (j if every == 1 else 12)
    assert [p.name for p in pass_file.with_suffix("").iterdir()] == [f"step-{committed:07d}"]
    for sae in (BASE, HIER):
        logged = [line["step"] for line in RunDir(out / sae.name).read_metrics()]
        assert logged == ([5, 10] if log_every == 5 else [])  # the line at 15 would have held batch j


def test_an_exactly_reconstructed_row_under_the_l2_loss_trains_on_finitely(tmp_path):
    """Constant rows are 0 after layer norm and reconstructed exactly at initialisation: the unsquared loss's
    gradient there must not turn the weights NaN (it did, and the fit exited 0 with a NaN SAE)."""
    acts = random_rows(4000, 16)
    acts[::7] = 3.0
    path = str(tmp_path / "constant.zarr")
    write_store(path, make_meta(n_rows=4000, d=16, chunk_rows=512), acts)
    sae = SAEConfig(variant="baseline", recon="l2", seed=0)
    [result] = fit(train_cfg(path, tmp_path / "runs", batch_size=128, tokens=128 * 10), [sae])
    assert all(torch.isfinite(w).all() for w in weights(result.run_dir).values())
    assert result.final["loss"] == result.final["loss"]  # not NaN


def test_diverged_weights_stop_the_fit_in_one_line(store, tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(FitError, match=r"^baseline-.*: its (loss became NaN or Inf at step \d+|weights hold NaN or "
                                       r"Inf after step \d+): training diverged \(try a lower --lr\)") as err:
        fit(train_cfg(store, out, tokens=256 * 10, lr=1e30), [BASE])
    assert "\n" not in str(err.value)
    assert not (out / BASE.name / "sae.safetensors").exists()


def test_cli_errors_are_one_line(store, tmp_path, capsys):
    other = str(tmp_path / "other.zarr")
    write_store(other, make_meta(n_rows=4000, d=16, chunk_rows=512), random_rows(4000, 16))
    out = tmp_path / "runs"
    args = ["fit", "--out", out, "--batch-size", 128, "--tokens", 128 * 4]
    assert run_cli(capsys, *args, "--store", store).code == 0
    assert_one_line_error(run_cli(capsys, *args, "--store", other), "holds a run with store d_model = 32",
                          "asks for 16")
    assert_one_line_error(run_cli(capsys, "fit", "--out", out, "--store", tmp_path / "none.zarr"),
                          "no activation store")


def _pass_step(out: Path):
    files = list((out / "passes").glob("*.json")) if (out / "passes").exists() else []
    try:
        return json.loads(files[0].read_text())["step"] if files else None
    except (ValueError, OSError):
        return None


def test_kill_9_and_resume_gives_the_uninterrupted_weights(tmp_path):
    store = str(tmp_path / "s.zarr")
    write_store(store, make_meta(n_rows=60000, d=96, chunk_rows=4096), random_rows(60000, 96))
    args = ["fit", "--store", store, "--variant", "baseline", "--variant", "hier", "--batch-size", 128,
            "--log-every", 10, "--checkpoint-every", 40, "--shuffle-rows", 8192, "--tokens", 128 * 400]
    killed = tmp_path / "killed"
    proc = pipeline_subprocess(*args, "--out", killed)
    deadline = time.monotonic() + 300
    while (step := _pass_step(killed)) is None or step < 80:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / BASE.name / "training.json").exists()  # really killed mid-run
    resumed = pipeline_subprocess(*args, "--out", killed)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming 2 SAE(s) from step" in err

    clean = tmp_path / "clean"
    proc = pipeline_subprocess(*args, "--out", clean)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    for name in (BASE.name, "hier-K5-g1.5-l0.04-s0"):
        assert same_weights(killed / name, clean / name), name
        steps = [json.loads(line)["step"] for line in (killed / name / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(10, 401, 10))  # the log has no gap and no duplicate either


def test_a_pass_that_dies_while_writing_results_resumes_the_rest(store, tmp_path, monkeypatch, caplog):
    import fit.trainer as trainer

    cfg = train_cfg(store, tmp_path / "crash", tokens=256 * 30, checkpoint_every=10)
    real_finish = trainer._finish

    def finish_then_die(m, *args):
        if m.cfg.name == HIER.name:
            raise KeyboardInterrupt  # killed after the baseline's results were written
        return real_finish(m, *args)

    monkeypatch.setattr(trainer, "_finish", finish_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, [BASE, HIER])
    # The last step was checkpointed, so the hier SAE finishes from there rather than training on alone (in a stack
    # of other members than the uninterrupted pass's, which need not round alike).
    [pass_file] = (tmp_path / "crash" / "passes").glob("*.json")
    assert json.loads(pass_file.read_text())["step"] == 30
    monkeypatch.setattr(trainer, "_finish", real_finish)
    with caplog.at_level("INFO", logger="fit.checkpoint"):
        results = fit(cfg, [BASE, HIER])  # the same command again
    assert "resuming 1 SAE(s) from step 30" in caplog.text
    assert [r.name for r in results] == [BASE.name, HIER.name]
    clean = fit(train_cfg(store, tmp_path / "clean", tokens=256 * 30, checkpoint_every=10), [BASE, HIER])
    for a, b in zip(results, clean, strict=True):
        assert same_weights(a.run_dir, b.run_dir), a.name
