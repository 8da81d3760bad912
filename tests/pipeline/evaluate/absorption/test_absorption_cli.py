"""`pipeline evaluate --absorption` end to end on the tiny Gemma-2: real store, real SAE, real prompts through the
LM, the cache beside the store built once and reused."""

import json
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from fit.config import SAEConfig, TrainConfig
from fit.trainer import fit
from harvest.config import HarvestConfig
from harvest.runner import harvest
from pipeline.evaluate.absorption.vocab import LETTERS, alpha_words
from pipeline.evaluate.record import EvalRecord


@pytest.fixture(scope="module")
def trained(tiny_model_dir, kjv_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("absorption")
    store = root / "s.zarr"
    harvest(HarvestConfig(store=str(store), model=str(tiny_model_dir), dataset=str(kjv_file), layers=(2,),
                          tokens=2000, context_length=32, batch_size=8, chunk_rows=1024))
    fit(TrainConfig(store=str(store), out=str(root / "runs"), batch_size=128, tokens=128 * 10, holdout=0.1,
                    log_every=10), [SAEConfig(variant="baseline")])
    return store, root / "runs"


def absorption_of(runs: Path) -> dict:
    (run,) = [p for p in runs.iterdir() if (p / "eval.json").exists()]
    return EvalRecord.read(run / "eval.json").absorption.to_dict()


def test_absorption_is_recorded_and_its_cache_reused(trained, capsys):
    store, runs = trained
    args = ("evaluate", runs, "--no-kl", "--absorption", "--absorption-words", "120", "--absorption-seed", "3")
    result = run_cli(capsys, *args)
    assert result.code == 0, result.stderr
    assert "absorption:" in result.stderr  # the console writes to stderr
    first = absorption_of(runs)
    assert (first["words"], first["train_words"], first["test_words"]) == (120, 96, 24)
    assert first["seed"] == 3 and first["layer"] == 2 and first["word_position"] < 0
    letters = [r["letter"] for r in first["letters"]] + [e["letter"] for e in first["excluded_letters"]]
    assert sorted(letters) == list(LETTERS)  # every letter scored or excluded with its reason, none dropped
    assert all(e["reason"] for e in first["excluded_letters"])
    caches = [p for p in (store.parent / "s.zarr.probes").iterdir() if p.is_dir()]
    assert [c.name for c in caches] == [Path(first["cache"]).name]
    built = (caches[0] / "tensors.pt").stat().st_mtime_ns

    assert run_cli(capsys, *args).code == 0
    again = absorption_of(runs)
    assert (caches[0] / "tensors.pt").stat().st_mtime_ns == built  # scored from the cache, not rebuilt
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}
    assert run_cli(capsys, "evaluate", runs, "--no-kl").code == 0
    assert absorption_of(runs) == again  # evaluating again without --absorption keeps what was measured


def test_an_explicit_word_list_is_used_as_given(trained, tiny_model_dir, tmp_path, capsys):
    from harvest.lm import load_tokenizer

    _store, runs = trained
    words = alpha_words(load_tokenizer(str(tiny_model_dir)))[:60]
    listed = tmp_path / "words.txt"
    listed.write_text("\n".join(words) + "\n")
    result = run_cli(capsys, "evaluate", runs, "--no-kl", "--absorption", "--absorption-words-file", listed,
                     "--absorption-cache", tmp_path / "cache")
    assert result.code == 0, result.stderr
    record = absorption_of(runs)
    assert record["words"] == 60 and record["words_file"] == str(listed)
    meta = json.loads((Path(record["cache"]) / "meta.json").read_text())
    assert sorted(meta["train_words"] + meta["test_words"]) == sorted(words)


def test_bad_absorption_options_are_one_line(trained, tmp_path, capsys):
    _, runs = trained
    assert_one_line_error(run_cli(capsys, "evaluate", runs, "--no-kl", "--absorption", "--absorption-words", "10"),
                          "--absorption-words must be at least 60")
    bad = tmp_path / "words.txt"
    bad.write_text("cat\ndog2\n")
    assert_one_line_error(run_cli(capsys, "evaluate", runs, "--no-kl", "--absorption", "--absorption-words-file",
                                  bad), "not a word of ASCII letters", "'dog2'")
