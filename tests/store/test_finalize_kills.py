"""Finalisation is crash-safe at every step: a real process SIGKILLs itself right after each step of
`finalize` (HFG_TEST_KILL_AT=finalize:<step>), and a rerun (`pipeline store finalize`, or the same harvest
command) leaves a store that is complete, consolidated, tidy, verifies and is bit-identical to one finalised
without interruption."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import pipeline_subprocess, run_cli

from harvest.config import HarvestConfig
from harvest.runner import harvest
from store.errors import IncompleteStoreError
from store.finalize import STEPS
from store.format import MADE_AT
from store.killpoint import KILL_AT_ENV
from store.reader import open_store
from store.verify import verify_store

TESTS = Path(__file__).parents[1]

def write(path: str, short: bool) -> None:
    """A small store of random rows, finalised by its writer; ``short``: the data set runs out at row 700, so
    finalize shrinks the arrays first."""
    import numpy as np
    from direct_store import make_meta, random_rows, write_store

    from store import dtypes
    from store.location import StoreLocation
    from store.sink import ChunkSink
    from store.writer import StoreWriter

    meta, acts = make_meta(n_rows=1000, d=8, chunk_rows=128), random_rows(1000, 8)
    if not short:
        write_store(path, meta, acts)
        return
    writer = StoreWriter.open(StoreLocation(path), meta)
    sink = ChunkSink(writer)
    sink.put(0, dtypes.encode(acts, "bfloat16")[:700], (np.arange(700) % 100).astype(np.int32))
    sink.flush_partial()
    writer.finish()


def _write_killed(path: Path, *, short: bool, kill_at: str) -> int:
    """``write`` in a real child process that SIGKILLs itself right after finalisation step ``kill_at``."""
    env = {**os.environ, KILL_AT_ENV: f"finalize:{kill_at}"}
    script = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(TESTS / 'store')!r}, {str(TESTS.parent)!r}]; "
              f"from test_finalize_kills import write; write({str(path)!r}, {short})")
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120).returncode


def _tree(store: Path) -> dict[str, object]:
    """Every file of a store: bytes, except the root document, compared parsed and without its timing."""
    files: dict[str, object] = {}
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        key = str(path.relative_to(store))
        if key == "zarr.json":
            doc = json.loads(path.read_text())
            doc["attributes"] = {k: v for k, v in doc["attributes"].items() if k not in MADE_AT}
            doc["attributes"]["harvest_config"].pop("store", None)  # the two stores' paths differ
            files[key] = doc
        elif key == "manifest.json":  # all of it but the root's digest, which covers the timing
            doc = json.loads(path.read_text())
            del doc["documents"]["zarr.json"]
            files[key] = doc
        else:
            files[key] = path.read_bytes()
    return files


def _assert_finished_like(store: Path, clean: Path) -> None:
    assert not (store / "_harvest").exists()
    root = json.loads((store / "zarr.json").read_text())
    assert root["attributes"]["complete"] is True and "consolidated_metadata" in root
    report = verify_store(str(store))
    assert report.ok and not report.warnings, (report.errors, report.warnings)
    assert _tree(store) == _tree(clean)


@pytest.mark.parametrize(("short", "steps"), [(False, STEPS), (True, ("resized",))], ids=["full", "data-ran-out"])
def test_finalize_killed_after_each_step_is_finished_by_store_finalize(short, steps, tmp_path, capsys):
    clean = tmp_path / "clean.zarr"
    write(str(clean), short)
    for step in steps:
        store = tmp_path / f"{step}.zarr"
        assert _write_killed(store, short=short, kill_at=step) == -signal.SIGKILL, step
        completed = json.loads((store / "zarr.json").read_text())["attributes"]["complete"]
        # completion is one atomic write: before it nothing says complete, after it the rest is tidying
        assert completed == (STEPS.index(step) >= STEPS.index("completed")), step
        if not completed:
            with pytest.raises(IncompleteStoreError):
                open_store(str(store))
        result = run_cli(capsys, "store", "finalize", store)
        assert result.code == 0, result.stderr
        _assert_finished_like(store, clean)


def test_harvest_killed_after_marking_complete_is_finished_by_the_same_command(tiny_model_dir, kjv_file, tmp_path):
    """The issue's case: killed after `complete: true` but before the tidy-up; the same command repairs it."""
    args = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2", "--tokens", "3000",
            "--ctx", "32", "--chunk-rows", "1024", "--batch-size", "4"]
    clean, store = tmp_path / "clean.zarr", tmp_path / "s.zarr"
    killed = pipeline_subprocess(*args, "--store", store, env={KILL_AT_ENV: "finalize:completed"})
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL and (store / "_harvest").exists()
    assert any("left behind" in w for w in verify_store(str(store)).warnings)
    rerun = pipeline_subprocess(*args, "--store", store)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    harvest(HarvestConfig(store=str(clean), model=str(tiny_model_dir), dataset=str(kjv_file), layers=(2,), tokens=3000,
                          context_length=32, chunk_rows=1024, batch_size=4))
    _assert_finished_like(store, clean)
