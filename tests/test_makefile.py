"""The user's own commands, through `make` itself: `make fit VARIANT=...` and the other variables users change most
turn into the options they name, and a misspelt variable or value stops with one line instead of training the
default."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from direct_store import make_meta, random_rows, write_store

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


def make(*args: str, dry: bool = False) -> subprocess.CompletedProcess:
    """`make ARGS` in the repository, with this interpreter's environment as the project's (never rebuilt here)."""
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={VENV}", "-o", f"{VENV}/.installed",
           *(["-n"] if dry else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def recipe(*args: str) -> list[str]:
    """The `pipeline` command line `make -n ARGS` would run, as its words."""
    done = make(*args, dry=True)
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if "/bin/pipeline " in ln]
    return shlex.split(line)


def option_values(words: list[str], option: str) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words) if w == option]


def test_variant_picks_the_architecture_and_repeats_as_a_list():
    assert option_values(recipe("fit", "VARIANT=baseline"), "--variant") == ["baseline"]
    assert option_values(recipe("fit", "VARIANT=hier"), "--variant") == ["hier"]
    words = recipe("fit", "VARIANT=baseline hier topk", "K=32 64", "L1=0.04", "SEEDS=0 1 2", "TOKENS=4096")
    assert option_values(words, "--variant") == ["baseline", "hier", "topk"]
    assert option_values(words, "--k") == ["32", "64"]
    assert option_values(words, "--l1") == ["0.04"]
    assert option_values(words, "--seed") == ["0", "1", "2"]
    assert option_values(words, "--tokens") == ["4096"]


def test_unset_variables_pass_nothing_so_the_configs_defaults_apply():
    words = recipe("fit")
    assert not {"--variant", "--k", "--l1", "--seed", "--tokens"} & set(words)


def test_harvest_variables_become_its_options():
    words = recipe("harvest", "MODEL=some/model", "DATASET=data.jsonl", "LAYER=6 19", "TOKENS=1000",
                   "STORE=stores/x-L{layer}.zarr")
    assert option_values(words, "--model") == ["some/model"]
    assert option_values(words, "--dataset") == ["data.jsonl"]
    assert option_values(words, "--layer") == ["6", "19"]
    assert option_values(words, "--tokens") == ["1000"]
    assert option_values(words, "--store") == ["stores/x-L{layer}.zarr"]


def test_a_misspelt_variable_stops_make_naming_it():
    done = make("fit", "VARAINT=baseline", dry=True)
    assert done.returncode != 0
    errors = [ln for ln in done.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "VARAINT" in errors[0] and "VARIANT" in errors[0], done.stderr


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("make") / "store.zarr"
    meta = make_meta(n_rows=1024, d=8, chunk_rows=256)
    write_store(str(path), meta, random_rows(meta.n_rows, meta.d_model))
    return path


def test_a_misspelt_variant_is_one_error_line_naming_the_choices(tiny_store: Path, tmp_path: Path):
    done = make("fit", f"STORE={tiny_store}", f"RUN_DIR={tmp_path / 'runs'}", "VARIANT=heir")
    assert done.returncode != 0
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "'heir'" in errors[0] and "baseline" in errors[0] and "hier" in errors[0], errors[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("variant", ["baseline", "hier"])
def test_make_fit_trains_the_variant_it_names(tiny_store: Path, tmp_path: Path, variant: str):
    runs = tmp_path / "runs"
    done = make("fit", f"STORE={tiny_store}", f"RUN_DIR={runs}", f"VARIANT={variant}", "TOKENS=256",
                "FIT_ARGS=--batch-size 64 --log-every 2")
    assert done.returncode == 0, done.stderr
    (run,) = [p for p in runs.iterdir() if (p / "config.json").exists()]
    assert json.loads((run / "config.json").read_text())["sae"]["variant"] == variant
    assert run.name.startswith(f"{variant}-") and (run / "sae.safetensors").exists()
