"""`pipeline synth`: a verified store of the harvest's format with its ground truth, the same after a kill -9, and
read by fit unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from cli_helpers import assert_one_line_error, forked_fits, run_cli
from synthetic_models import small_config, write_config

from store.reader import open_store
from store.truth import dense_rows, rows_of
from store.verify import verify_store

SAMPLES = 20_000


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("config") / "small.json", small_config())


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


def synth_args(config_file: Path, store: Path, cache: Path, *more: str) -> list[str]:
    return ["synth", "--config", str(config_file), "--samples", str(SAMPLES), "--chunk-rows", "4096", "--store",
            str(store), "--model-cache", str(cache), "--device", "cpu", *more]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, config_file: Path, model_cache: Path) -> Path:
    path = tmp_path_factory.mktemp("synth") / "s.zarr"
    codes = forked_fits([("synth", {}, synth_args(config_file, path, model_cache))], preload=("sae_lens.synthetic",))
    assert codes == {"synth": 0}
    return path


def test_synth_writes_a_verified_store_holding_its_ground_truth(store_path: Path, small_truth):
    report = verify_store(str(store_path))
    assert report.ok, report.errors
    assert any("ground truth" in c for c in report.checks)
    store = open_store(str(store_path))
    assert store.synthetic and store.n_rows == SAMPLES and store.d_model == 32
    truth = store.ground_truth()
    assert truth.digest() == small_truth.digest()  # the same configuration builds the same model
    ids, coefs = store.truth_rows(0, 500)
    # every row is the sum of its features, as stored (bfloat16)
    expected = rows_of(ids, coefs, truth.dictionary_GD, truth.bias_D)
    assert float((store.read_rows(0, 500) - expected).abs().max()) < 0.05 * float(expected.abs().max())
    assert float((dense_rows(ids, coefs, truth.n_features) > 0).sum(1).double().mean()) > 1  # sparse, not empty
    # plain zarr reads the ground truth too
    group = zarr.open_group(str(store_path), mode="r")
    assert group["truth/dictionary"].shape == (256, 32) and group["truth/row_features"].shape[0] == SAMPLES


def test_a_synth_killed_mid_write_resumes_to_the_same_store(tmp_path: Path, store_path: Path, config_file: Path,
                                                            model_cache: Path):
    path = tmp_path / "killed.zarr"
    args = synth_args(config_file, path, model_cache)
    codes = forked_fits([("killed", {"HFG_TEST_KILL_AT": "synth:chunk-2"}, args), ("rerun", {}, args)],
                        preload=("sae_lens.synthetic",))
    assert codes == {"killed": -9, "rerun": 0}
    a, b = zarr.open_group(str(path), mode="r"), zarr.open_group(str(store_path), mode="r")
    for name in ("activations", "tokens", "stats/chunk_mean", "stats/mean", "truth/row_features",
                 "truth/row_coefficients", "truth/dictionary", "truth/parent"):
        assert np.array_equal(a[name][:], b[name][:]), name


def test_a_preset_and_its_config_file_describe_one_model(tmp_path: Path, capsys):
    from harvest.synthetic.model import spec_of
    from harvest.synthetic.presets import PRESETS

    path = write_config(tmp_path / "cpu.json", PRESETS["synth-cpu"].config)
    assert spec_of(config_file=str(path)).digest == spec_of(preset="synth-cpu").digest


def test_a_config_sae_lens_rejects_is_one_line(tmp_path: Path, capsys, model_cache: Path):
    bad = write_config(tmp_path / "bad.json", {**small_config(), "num_features": 0})
    result = run_cli(capsys, *synth_args(bad, tmp_path / "s.zarr", model_cache))
    assert_one_line_error(result, "SAELens rejects", "num_features")
    assert not (tmp_path / "s.zarr").exists()
