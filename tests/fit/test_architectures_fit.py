"""Every architecture in real training passes over a store of random rows: side by side through `pipeline fit`,
stacked against the per-SAE loop, and killed with SIGKILL mid-pass then resumed bit for bit (AuxK's counters and
BatchTopK's threshold included)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import forked_fits, run_cli
from direct_store import make_meta, random_rows, write_store
from safetensors.torch import load_file

from fit.config import SAEConfig, TrainConfig
from fit.runs import load_sae
from fit.trainer import fit
from store.killpoint import KILL_AT_ENV

D = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tiny SAEs run many times faster on one thread when the machine is busy (as the forked fits do)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("arch") / "s.zarr")
    write_store(path, make_meta(n_rows=4000, d=D, chunk_rows=512), random_rows(4000, D))
    return path


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "sae.safetensors"))


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_every_architecture_trains_side_by_side_in_one_pipeline_fit(store, tmp_path, capsys):
    args = ["fit", "--store", store, "--out", tmp_path, "--batch-size", 64, "--tokens", 64 * 20, "--log-every", 5,
            "--shuffle-rows", 1024, "-K", 4, "--k", 3, "--k", 6, "--l1", 0.04, "--aux-alpha", 0.03125,
            "--dead-tokens", 256]
    for v in ("topk", "batchtopk", "matryoshka", "hier-matryoshka", "hier", "baseline"):
        args += ["--variant", v]
    result = run_cli(capsys, *args)
    assert result.code == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir() if (p / "training.json").exists())
    aux = "aux0.03125-dt256"
    assert names == sorted([f"topk-k3-{aux}-s0", f"topk-k6-{aux}-s0", f"batchtopk-k3-{aux}-s0",
                            f"batchtopk-k6-{aux}-s0", f"matryoshka-K4-k3-{aux}-s0", f"matryoshka-K4-k6-{aux}-s0",
                            "hier-matryoshka-K4-g1.5-l0.04-s0", "hier-K4-g1.5-l0.04-s0", "baseline-l0.04-s0"])
    x = random_rows(4000, D)[-200:].float()
    for name in names:
        run = tmp_path / name
        lines = metrics(run)
        assert [r["step"] for r in lines] == [5, 10, 15, 20], name
        assert lines[-1]["loss"] < lines[0]["loss"], name  # every one learns
        config = json.loads((run / "config.json").read_text())
        sae, _ = load_sae(run)
        assert config["sae"] == sae.cfg.to_dict()
        z = sae.encode(sae.normalise(x).x_BD)
        training = json.loads((run / "training.json").read_text())
        assert training["sae"] == config["sae"] and training["architecture"] == sae.arch.name
        final = training["final"]
        if name.startswith(("topk", "batchtopk", "matryoshka")):
            k = sae.cfg.k
            assert final["pairs"] is True and {"aux", "dead"} <= final.keys(), name
            assert final["penalty"] == 0
            assert final["l0"] <= k + 1e-9 if name.startswith("topk") else final["l0"] == pytest.approx(k, rel=0.01)
        if name.startswith("topk"):
            assert ((z > 0).sum(-1) <= sae.cfg.k).all()
        if name.startswith(("batchtopk", "matryoshka")):
            assert float(sae.threshold) > 0  # estimated, and what inference keeps latents above
            assert torch.equal(z > 0, (sae.normalise(x).x_BD @ sae.W_enc + sae.b_enc) > sae.threshold)
        if "matryoshka" in name:
            assert "prefix_recon" in final and len(final["live_per_group"]) == 4
            assert config["group_bounds"] == [[0, 4], [4, 8], [8, 12], [12, 16]]


NEW = [SAEConfig(variant="topk", k=4, seed=0, aux_alpha=0.1, dead_tokens=128),
       SAEConfig(variant="topk", k=4, seed=1, aux_alpha=0.1, dead_tokens=128, norm="none", recon="l2"),
       SAEConfig(variant="batchtopk", k=4, seed=2),
       SAEConfig(variant="matryoshka", k=4, groups=3, seed=3, aux_alpha=0.1, dead_tokens=128),
       SAEConfig(variant="hier-matryoshka", groups=3, seed=4),
       SAEConfig(variant="hier-matryoshka", groups=3, seed=5, norm="store_stats")]


def test_stacked_new_architectures_equal_the_per_sae_loop(store, tmp_path):
    def cfg(out, **kw):
        return TrainConfig(store=store, out=str(tmp_path / out), batch_size=64, tokens=64 * 15, log_every=5,
                           checkpoint_every=0, shuffle_rows=1024, **kw)

    stacked = fit(cfg("stacked"), NEW)
    looped = fit(cfg("looped", stack=False), NEW)
    for a, b in zip(stacked, looped, strict=True):
        wa, wb = weights(Path(a.run_dir)), weights(Path(b.run_dir))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], msg=f"{a.name} {k}")


def test_killed_mid_pass_resumes_bit_for_bit_with_auxk_thresholds_and_the_pair_path_choice(store, tmp_path):
    common = ["fit", "--store", store, "--batch-size", 64, "--log-every", 2, "--checkpoint-every", 4,
              "--shuffle-rows", 1024, "--expansion", 4]
    topk = [*common, "--variant", "topk", "--variant", "batchtopk", "--variant", "matryoshka", "--k", 2, "-K", 3,
            "--aux-alpha", 0.1, "--dead-tokens", 64, "--seed", 0, "--seed", 1, "--tokens", 64 * 12]
    # A ReLU-L1 SAE pushed sparse fast, so that --sparse auto switches it to the pair path mid-pass (at step 10),
    # before the checkpoint it is killed after (12): the resumed pass must step through pairs as the clean one does.
    relu = [*common, "--variant", "baseline", "--l1", 20, "--lr", 0.1, "--tokens", 64 * 16]
    codes = forked_fits([
        ("killed", {KILL_AT_ENV: "checkpoint:committed@2"}, [*topk, "--out", tmp_path / "resumed"]),
        ("resumed", {}, [*topk, "--out", tmp_path / "resumed"]),
        ("clean", {}, [*topk, "--out", tmp_path / "clean"]),
        ("relu-killed", {KILL_AT_ENV: "checkpoint:committed@3"}, [*relu, "--out", tmp_path / "resumed"]),
        ("relu-resumed", {}, [*relu, "--out", tmp_path / "resumed"]),
        ("relu-clean", {}, [*relu, "--out", tmp_path / "clean"]),
    ])
    assert codes == {"killed": -signal.SIGKILL, "resumed": 0, "clean": 0,
                     "relu-killed": -signal.SIGKILL, "relu-resumed": 0, "relu-clean": 0}
    names = sorted(p.name for p in (tmp_path / "clean").iterdir() if (p / "training.json").exists())
    assert len(names) == 7
    for name in names:
        a, b = weights(tmp_path / "resumed" / name), weights(tmp_path / "clean" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        lines = metrics(tmp_path / "resumed" / name)
        assert [r["step"] for r in lines] == list(range(2, len(lines) * 2 + 1, 2)), name
        if name.startswith("baseline"):
            pairs = [r["pairs"] for r in metrics(tmp_path / "clean" / name)]
            assert pairs[0] is False and pairs[4:] == [True] * 4, pairs  # switched at step 10
        else:
            assert "tokens_since_fired_F" in a and ("threshold" in a) == (not name.startswith("topk"))
    # AuxK had dead latents to work on (in the TopK SAEs at least), so the counters mattered to the weights.
    assert any(r["dead"] > 0 for name in names if "k2" in name for r in metrics(tmp_path / "clean" / name))


def test_two_gloo_processes_keep_one_auxk_state_equal_to_one_process(store, tmp_path):
    """Under torchrun each rank sees half the batch: AuxK's counters (like BatchTopK's threshold) are reduced over the
    ranks, so every rank holds the state one process training on the whole global batch holds. The weights agree
    only roughly: AuxK's loss is normalised by each rank's own residual spread, as per-device trainers do (and
    BatchTopK selects within each rank's share, so it is not compared here)."""
    common = ["fit", "--store", store, "--variant", "topk", "--k", 2, "--expansion", 4, "--aux-alpha", 0.1,
              "--dead-tokens", 128, "--batch-size", 128, "--tokens", 128 * 8, "--log-every", 4,
              "--shuffle-rows", 1024, "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    runs = {
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                "pipeline"],
        "one": [sys.executable, "-m", "pipeline"],
    }
    for out, cmd in runs.items():
        extra = ["--streams", "2"] if out == "one" else []
        done = subprocess.run([*cmd, *map(str, common), *extra, "--out", str(tmp_path / out)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    name = "topk-k2-aux0.1-dt128-x4-s0"
    a, b = weights(tmp_path / "ddp" / name), weights(tmp_path / "one" / name)
    assert torch.equal(a["tokens_since_fired_F"], b["tokens_since_fired_F"])
    assert int((a["tokens_since_fired_F"] >= 128).sum()) > 0  # some latents were dead: AuxK was at work
    for k in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(a[k], b[k], atol=5e-3, rtol=0, msg=k)
