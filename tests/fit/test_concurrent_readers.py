"""Many fits read one store at once, read-only, with no locks."""

import hashlib
from pathlib import Path

import torch
from cli_helpers import pipeline_subprocess
from direct_store import make_meta, random_rows, write_store
from safetensors.torch import load_file


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_two_fits_read_one_store_at_once(tmp_path):
    store = tmp_path / "s.zarr"
    write_store(str(store), make_meta(n_rows=20000, d=32, chunk_rows=1024), random_rows(20000, 32))
    before = tree_digest(store)
    args = ["fit", "--store", store, "--batch-size", 256, "--tokens", 256 * 60, "--data", "stream",
            "--shuffle-rows", 2048, "--variant", "baseline"]
    procs = [pipeline_subprocess(*args, "--out", tmp_path / f"run{i}", env={"OMP_NUM_THREADS": "1"}) for i in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    a, b = (load_file(str(tmp_path / f"run{i}" / "baseline-l0.04-s0" / "sae.safetensors")) for i in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert tree_digest(store) == before  # readers wrote nothing: no lock files, no metadata updates
