"""The evaluation record: strict reading, a round trip, and the committed JSON Schema kept in step with it."""

import json
import re
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.evaluate.record import (
    HEADLINE_METRICS,
    REGENERATE,
    SCHEMA_PATH,
    EvalRecord,
    GroupStats,
    StoreRecord,
    TrainRecord,
    json_schema,
    metric_names,
)
from store.configs import field_docs

APP_JS = Path(__file__).resolve().parents[3] / "pipeline" / "browse" / "static" / "app.js"


def record(**behaviour) -> EvalRecord:
    store = StoreRecord(url="s.zarr", model="m", model_fingerprint="f", layer=2, d_model=4, dataset="json",
                        data_files=["a.jsonl"], context_length=8, include_bos=False, n_rows=70, architecture="A",
                        description="d", tokens_total=70, heldout_rows=[63, 70])
    train = TrainRecord(steps=3, tokens=30, sae_seconds=0.5, final={"step": 3, "recon": 1.5})
    group = GroupStats(group=1, features=2, live=1, active=1, token_rate=0.5, feature_density=0.25, intensity=2.0)
    return EvalRecord(name="r", run_dir="runs/r", sae={"variant": "baseline", "seed": 0}, n_latents=2,
                      group_bounds=[[0, 2]], store=store, train=train, rows=7, mse=1.0, mse_raw=2.0,
                      explained_variance=0.5, explained_variance_normalised=0.4, l0=0.5, penalty=0.1,
                      active_features=1, dead_features=1, groups=[group], feature_density=[0.5, 0.0],
                      feature_mean_activation=[1.0, 0.0], **behaviour)


def test_round_trip_and_optional_lm_fields(tmp_path):
    path = tmp_path / "eval.json"
    without_kl = record()
    without_kl.write(path)
    assert "kl" not in json.loads(path.read_text())  # not measured: left out, as with --no-kl
    assert EvalRecord.read(path) == without_kl
    with_kl = record(kl=0.1, ce_clean=2.0, ce_spliced=2.5, ce_zero_ablated=6.0, ce_recovered=0.875, kl_tokens=7,
                     ce_tokens=6, kl_contexts=1)
    with_kl.write(path)
    assert EvalRecord.read(path) == with_kl and EvalRecord.read(path).groups[0].intensity == 2.0


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(surprise=1), "unknown field(s) surprise"),
    (lambda d: d.pop("mse"), "no field(s) mse"),
    (lambda d: d["groups"][0].pop("live"), "no field(s) live"),
    (lambda d: d["store"].update(layer="two"), "layer is 'two', not of type int"),
])
def test_reading_is_strict_with_one_line_errors(tmp_path, change, message):
    obj = record().to_dict()
    change(obj)
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(PipelineError) as err:
        EvalRecord.read(path)
    assert message in str(err.value) and "\n" not in str(err.value) and "pipeline evaluate" in str(err.value)


def test_every_field_has_a_docstring_and_metric_names_are_fields():
    for cls in (EvalRecord, StoreRecord, TrainRecord, GroupStats):
        schema = json_schema()
        props = schema["properties"] if cls is EvalRecord else schema["$defs"][cls.__name__]["properties"]
        assert set(props) == set(field_docs(cls)), cls
    with pytest.raises(AttributeError):
        metric_names("mse", "msee")


def test_the_committed_schema_is_current():
    committed = json.loads(SCHEMA_PATH.read_text()) if SCHEMA_PATH.exists() else None
    assert committed == json_schema(), f"{SCHEMA_PATH} is stale: regenerate it with `{REGENERATE}`"


def test_the_browser_hard_codes_no_metric_list():
    app = APP_JS.read_text()
    # each headline metric reaches the app only through SITE.columns, written from the record
    named = [m for m in HEADLINE_METRICS if re.search(rf"\b{m}\b", app)]
    assert set(named) <= {"l0"}, named  # the comparison legend names L0 once
