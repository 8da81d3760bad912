"""Fixtures of the report's tests: real evaluation records with chosen figures."""

import pytest

from fit.config import SAEConfig
from harvest.config import HarvestConfig
from harvest.runner import harvest
from pipeline.evaluate.record import AbsorptionRecord, EvalRecord, GroupStats, StoreRecord, TrainRecord


def run(variant, l0, mse, seed=0, l1=0.04, k=None, seconds=0.5, groups=None, **fields) -> EvalRecord:
    """A real evaluation record with these figures (the rest as a tiny run would have them)."""
    store = StoreRecord(url="s.zarr", model="m", model_fingerprint="f", layer=2, d_model=4, dataset="json",
                        data_files=[], context_length=8, include_bos=False, n_rows=70, architecture="A",
                        description="d", tokens_total=70, heldout_rows=[63, 70])
    train = TrainRecord(steps=3, tokens=30, sae_seconds=seconds, final={})
    group = GroupStats(group=1, features=2, live=1, active=1, token_rate=0.5, feature_density=0.25, intensity=2.0)
    sae = SAEConfig.of(variant, l1=l1, seed=seed, k=k).to_dict()
    figures = dict(rows=7, mse=mse, mse_raw=2.0, explained_variance=0.5, explained_variance_normalised=0.4, l0=l0,
                   penalty=0.1, active_features=1, dead_features=1, groups=groups or [group],
                   feature_density=[0.5, 0.0], feature_mean_activation=[1.0, 0.0])
    return EvalRecord(name="r", run_dir="runs/r", sae=sae, n_latents=2, group_bounds=[[0, 2]], store=store,
                      train=train, **{**figures, **fields})


@pytest.fixture
def make_run():
    """:func:`run`, for the tests of this folder."""
    return run


@pytest.fixture(scope="module")
def store(tiny_model_dir, kjv_file, tmp_path_factory):
    """A 3,000-token store of the tiny Gemma-2 at layer 2 (each test module gets its own)."""
    path = str(tmp_path_factory.mktemp("exp") / "s.zarr")
    harvest(HarvestConfig(store=path, model=str(tiny_model_dir), dataset=str(kjv_file), layers=(2,), tokens=3000,
                          context_length=32, batch_size=8, chunk_rows=1024))
    return path


def thin_absorption(**fields) -> AbsorptionRecord:
    """An absorption record with no qualifying letter and too few for SAEBench (fields override)."""
    return AbsorptionRecord(**{**dict(
        mean_full_absorption=0.1, mean_absorption_fraction=0.1, letters=[], excluded_letters=[], enough_letters=False,
        min_letters=20, model="m", layer=2, words=100, train_words=80, test_words=20, vocabulary_words=100, seed=42,
        prompt_template="{word} has the first letter:", icl_examples=10, word_position=-6, probe_test_accuracy=0.3,
        cache="c", seconds=1.0, min_probe_f1=0.6, sae_l0=20.0), **fields})


@pytest.fixture
def make_thin_absorption():
    """:func:`thin_absorption`, for the tests of this folder."""
    return thin_absorption
