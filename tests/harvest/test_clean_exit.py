"""A harvest that wrote a complete store exits 0, every time.

1 in ~35 harvests once ended with "terminate called without an active exception" (SIGABRT, status -6) after
writing a complete store: a thread or native resource still alive at interpreter shutdown. A script or a Slurm
array counts that as a failure, so this runs 20 real `pipeline harvest` processes in a row and wants 20 zeros.
"""

from cli_helpers import pipeline_subprocess

from store.reader import open_store

RUNS = 20


def test_twenty_harvests_in_a_row_all_exit_0(tiny_model_dir, kjv_file, tmp_path):
    failures = []
    for i in range(RUNS):
        store = tmp_path / f"s{i}.zarr"
        proc = pipeline_subprocess("harvest", "--model", tiny_model_dir, "--dataset", kjv_file, "--layer", "2",
                                   "--tokens", "200", "--ctx", "32", "--chunk-rows", "128", "--store", store)
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0 or "terminate called" in err:
            failures.append((i, proc.returncode, err[-500:]))
        else:
            assert open_store(str(store)).n_rows == 200  # a clean exit after a complete store
    assert not failures, f"{len(failures)}/{RUNS} harvests failed: {failures[0]}"
