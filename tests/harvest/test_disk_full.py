"""A full disk: a real, small tmpfs fills up mid-harvest."""

import os
import subprocess

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

from store.reader import open_store
from store.verify import verify_store


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_with_one_line_and_keeps_what_was_written(tiny_model_dir, kjv_file, small_disk,
                                                                     tmp_path, capsys):
    args = ["harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2", "--tokens", "12000",
            "--ctx", "32", "--chunk-rows", "1024", "--batch-size", "8"]
    store = small_disk / "s.zarr"  # 12,000 x 64 bf16 = 1.5 MB of activations: more than the 1 MB disk
    assert_one_line_error(run_cli(capsys, *args, "--store", store), "disk full", "rerun the same command")
    partial = open_store(str(store), partial=True)
    assert 0 < partial.n_rows < 12000
    assert verify_store(str(store), partial=True).ok  # every committed chunk reads back intact
    written = partial.read_rows_raw(0, partial.n_rows)

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)  # free space
    assert run_cli(capsys, *args, "--store", store).code == 0  # the same command resumes
    assert run_cli(capsys, *args, "--store", tmp_path / "clean.zarr").code == 0
    done, clean = open_store(str(store)), open_store(str(tmp_path / "clean.zarr"))
    assert np.array_equal(done.read_rows_raw(0, len(written)), written)
    assert np.array_equal(done.read_rows_raw(0, 12000), clean.read_rows_raw(0, 12000))
