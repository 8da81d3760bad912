"""Experiment tracking: the tensorboard event files hold the metrics.jsonl values; a missing extra is one line."""

import sys

import numpy as np
import pytest
from direct_store import make_meta, random_rows, write_store

from fit.config import SAEConfig, TrainConfig
from fit.errors import FitError
from fit.runs import RunDir
from fit.tracking import scalars
from fit.trainer import fit

HIER = SAEConfig(variant="hier", groups=3, gamma=1.5, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("track") / "s.zarr")
    write_store(path, make_meta(n_rows=4000, d=24, chunk_rows=512), random_rows(4000, 24))
    return path


def train_cfg(store, out, **kw):
    return TrainConfig(store=store, out=str(out), batch_size=128, tokens=128 * 12, log_every=4, checkpoint_every=0,
                       shuffle_rows=1024, **kw)


def test_tensorboard_events_hold_the_metrics_jsonl_values(store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [result] = fit(train_cfg(store, tmp_path, track="tensorboard"), [HIER])
    run = RunDir(result.run_dir)
    lines = run.read_metrics()
    assert [r["step"] for r in lines] == [4, 8, 12]
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    for record in lines:
        for tag, value in scalars(record).items():
            logged = {e.step: e.value for e in events.Scalars(tag)}
            assert logged[record["step"]] == np.float32(value), (tag, record["step"])
    assert set(events.Tags()["scalars"]) == set(scalars(lines[0]))
    assert {"loss", "l0", "explained_variance", "live_per_group/1", "live_per_group/3"} <= set(scalars(lines[0]))


@pytest.mark.parametrize("backend", ["tensorboard", "wandb", "trackio"])
def test_a_missing_backend_is_one_line_naming_the_extra(store, tmp_path, monkeypatch, backend):
    monkeypatch.setitem(sys.modules, backend, None)  # as if the package were not installed: its import fails
    with pytest.raises(FitError) as err:
        fit(train_cfg(store, tmp_path, track=backend), [HIER])
    assert str(err.value) == f"--track {backend} needs the {backend} package: pip install 'hfg-sae[{backend}]'"


def test_an_unknown_tracker_is_refused(store, tmp_path):
    with pytest.raises(FitError, match="--track must be one of wandb, trackio, tensorboard"):
        train_cfg(store, tmp_path, track="mlflow")
