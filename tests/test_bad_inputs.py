"""Bad input to any command: one line naming the problem and the fix, status 2, nothing already written lost.

One table, every command. Each row is a command line (with placeholders filled from fixtures) and fragments the
one error line must contain. Extend it with every bad input you find.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli
from direct_store import make_meta, random_rows, write_store

# (id, command line, fragments of the one error line). Placeholders: {store} a complete store of random rows,
# {out} a fresh run directory, {run} a folder that is not a run.
CASES: list[tuple[str, list[str], list[str]]] = [
    # Non-finite numbers pass every range check a config makes: they must be refused by name.
    ("fit lr nan", ["fit", "--store", "{store}", "--out", "{out}", "--lr", "nan"], ["--lr", "finite", "nan"]),
    ("fit l1 nan", ["fit", "--store", "{store}", "--out", "{out}", "--l1", "nan"], ["--l1", "finite"]),
    ("fit l1 inf", ["fit", "--store", "{store}", "--out", "{out}", "--l1", "inf"], ["--l1", "finite"]),
    ("fit gamma -inf", ["fit", "--store", "{store}", "--out", "{out}", "--gamma", "-inf"], ["--gamma", "finite"]),
    ("fit holdout nan", ["fit", "--store", "{store}", "--out", "{out}", "--holdout", "nan"], ["--holdout", "finite"]),
    ("fit weight decay nan", ["fit", "--store", "{store}", "--out", "{out}", "--weight-decay", "nan"],
     ["--weight-decay", "finite"]),
    ("fit expansion inf", ["fit", "--store", "{store}", "--out", "{out}", "--expansion", "inf"],
     ["--expansion", "finite"]),
    ("fit adam betas nan", ["fit", "--store", "{store}", "--out", "{out}", "--adam-betas", "0.9", "nan"],
     ["--adam-betas", "finite"]),
    ("fit adam beta 1.5", ["fit", "--store", "{store}", "--out", "{out}", "--adam-betas", "0.9", "1.5"],
     ["--adam-betas", "[0, 1)"]),
    ("fit shuffle rows -5", ["fit", "--store", "{store}", "--out", "{out}", "--shuffle-rows", "-5"],
     ["--shuffle-rows", "at least 1"]),
    ("fit data seed -1", ["fit", "--store", "{store}", "--out", "{out}", "--data-seed", "-1"], ["--data-seed"]),
    ("fit lr 0", ["fit", "--store", "{store}", "--out", "{out}", "--lr", "0"], ["lr > 0"]),
    ("fit batch 0", ["fit", "--store", "{store}", "--out", "{out}", "--batch-size", "0"], ["--batch-size"]),
    ("fit tokens below a batch", ["fit", "--store", "{store}", "--out", "{out}", "--tokens", "10"], ["--tokens"]),
    ("fit streams 3", ["fit", "--store", "{store}", "--out", "{out}", "--streams", "3"], ["--streams 3"]),
    ("fit K 0", ["fit", "--store", "{store}", "--out", "{out}", "-K", "0"], ["-K >= 1"]),
    ("fit no store", ["fit", "--store", "{missing}", "--out", "{out}"], ["no activation store"]),
    ("fit device cuda without a GPU", ["fit", "--store", "{store}", "--out", "{out}", "--device", "cuda"],
     ["no CUDA GPU", "--device cpu"]),
    ("fit device nonsense", ["fit", "--store", "{store}", "--out", "{out}", "--device", "gpu0"],
     ["not a device name"]),
    # Evaluation: a context count below 1 used to report KL 0 (or drop contexts silently).
    ("evaluate kl-contexts 0", ["evaluate", "{run}", "--kl-contexts", "0"], ["--kl-contexts", "at least 1"]),
    ("evaluate kl-contexts -3", ["evaluate", "{run}", "--kl-contexts", "-3"], ["--kl-contexts", "at least 1"]),
    ("evaluate batch-contexts 0", ["evaluate", "{run}", "--batch-contexts", "0"], ["--batch-contexts"]),
    ("evaluate not a run", ["evaluate", "{run}"], ["no run directories found", "pipeline fit"]),
    ("experiment kl-contexts 0", ["experiment", "--store", "{store}", "--out", "{out}", "--kl-contexts", "0"],
     ["--kl-contexts"]),
    ("experiment seeds 0", ["experiment", "--store", "{store}", "--out", "{out}", "--seeds", "0"], ["--seeds"]),
    ("experiment lr nan", ["experiment", "--store", "{store}", "--out", "{out}", "--lr", "nan"], ["--lr", "finite"]),
    ("browse k 0", ["browse", "{run}", "--out", "{out}", "--k", "0"], ["--k"]),
    ("browse model and store-model", ["browse", "{run}", "--out", "{out}", "--model", "x", "--store-model"],
     ["--model or --store-model"]),
    # Harvest: the config's own checks, before any model is loaded.
    ("harvest tokens 0", ["harvest", "--store", "{out}/s.zarr", "--tokens", "0"], ["--tokens"]),
    ("harvest ctx 1", ["harvest", "--store", "{out}/s.zarr", "--ctx", "1"], ["--ctx"]),
    ("harvest layer -1", ["harvest", "--store", "{out}/s.zarr", "--layer", "-1"], ["--layer"]),
    ("harvest shard 3 of 2", ["harvest", "--store", "{out}/s.zarr", "--shard", "3", "--num-shards", "2"],
     ["--shard 3"]),
    ("store info no store", ["store", "info", "{missing}"], ["no activation store"]),
    ("store verify no store", ["store", "verify", "{missing}"], ["no activation store"]),
    # Harvest: inputs only the model or the data can show wrong ({model} is the tiny model, {kjv} real text).
    ("harvest empty jsonl", ["harvest", "--store", "{out}/s.zarr", "--model", "{model}", "--dataset", "{empty}",
                             "--layer", "2"], ["holds no text", "empty"]),
    ("harvest random bytes jsonl", ["harvest", "--store", "{out}/s.zarr", "--model", "{model}", "--dataset",
                                    "{noise}.jsonl", "--layer", "2"], ["cannot read data set", "as json"]),
    ("harvest random bytes txt", ["harvest", "--store", "{out}/s.zarr", "--model", "{model}", "--dataset",
                                  "{noise}.txt", "--layer", "2"], ["is not UTF-8 text"]),
    ("harvest ctx beyond the model's positions", ["harvest", "--store", "{out}/s.zarr", "--model", "{model}",
                                                  "--dataset", "{kjv}", "--layer", "2", "--ctx", "2048"],
     ["--ctx 2048 is longer than", "512 positions", "--ctx 512 or less"]),
    ("harvest model folder missing", ["harvest", "--store", "{out}/s.zarr", "--model", "{missing}/model",
                                      "--dataset", "{kjv}", "--layer", "2"], ["model folder", "does not exist"]),
    # Synthetic stores and streams.
    ("synth unknown preset", ["synth", "--preset", "synth-huge", "--store", "{out}/s.zarr"],
     ["'synth-huge'", "synth-cpu", "--preset"]),
    ("synth no model", ["synth", "--store", "{out}/s.zarr"], ["--preset NAME or --config FILE"]),
    ("synth preset and config", ["synth", "--preset", "synth-cpu", "--config", "{kjv}", "--store", "{out}/s.zarr"],
     ["--preset NAME or --config FILE", "one of them"]),
    ("synth samples 0", ["synth", "--preset", "synth-cpu", "--samples", "0", "--store", "{out}/s.zarr"],
     ["--samples", "at least 1"]),
    ("synth config not JSON", ["synth", "--config", "{kjv}", "--store", "{out}/s.zarr"], ["is not JSON", "to_dict()"]),
    ("synth config missing", ["synth", "--config", "{missing}.json", "--store", "{out}/s.zarr"],
     ["cannot read --config"]),
    ("fit synthetic seed without synthetic", ["fit", "--store", "{store}", "--out", "{out}", "--synthetic-seed", "3"],
     ["--synthetic-seed", "only with --synthetic"]),
    ("fit synthetic names an LM's store", ["fit", "--synthetic", "{store}", "--out", "{out}", "--tokens", "4096"],
     ["holds an LM's activations", "--store"]),
    ("fit no store", ["fit", "--out", "{out}"], ["--store", "--synthetic"]),
    # Options no requested variant uses, and values clamped without a word: refused, naming the option.
    ("fit prefixes for the baseline", ["fit", "--store", "{store}", "--out", "{out}", "--variant", "baseline",
                                       "--prefixes", "4"], ["--prefixes", "none of the variants", "matryoshka"]),
    ("fit k for hier", ["fit", "--store", "{store}", "--out", "{out}", "--variant", "hier", "--k", "4"],
     ["--k", "none of the variants", "topk"]),
    ("fit aux-k beyond half the latents", ["fit", "--store", "{store}", "--out", "{out}", "--variant", "topk",
                                           "--k", "2", "--aux-alpha", "0.03", "--aux-k", "1000", "--batch-size", "128"],
     ["--aux-k 1000", "half the 8 latents", "at most 4"]),
    ("experiment sweep-k beyond the latents", ["experiment", "--store", "{store}", "--out", "{out}", "--sweep",
                                               "--sweep-variant", "topk", "--sweep-k", "1000"],
     ["--sweep-k 1000", "8 latents"]),
    # Click's own usage errors, as our one line.
    ("misspelt command", ["fitt"], ["No such command 'fitt'", "Did you mean 'fit'?", "pipeline --help"]),
    ("misspelt store command", ["store", "lst"], ["No such command 'lst'", "Did you mean 'list'?"]),
    ("fit variant nope", ["fit", "--store", "{store}", "--out", "{out}", "--variant", "nope"],
     ["'nope'", "baseline", "pipeline fit --help"]),
    ("fit prefixes abc", ["fit", "--store", "{store}", "--out", "{out}", "--variant", "matryoshka",
                          "--prefixes", "abc"], ["--prefixes", "'abc'"]),
    ("fit track nope", ["fit", "--store", "{store}", "--out", "{out}", "--track", "nope"], ["--track", "'nope'"]),
    ("harvest dtype nope", ["harvest", "--store", "{out}/s.zarr", "--dtype", "nope"], ["--dtype", "'nope'"]),
    # A store path that is a file: one line from every command that reads a store.
    ("store verify of a file", ["store", "verify", "{afile}"], ["is a file"]),
    ("store info of a file", ["store", "info", "{afile}"], ["is a file"]),
    ("store finalize of a file", ["store", "finalize", "{afile}"], ["is a file"]),
    ("fit store is a file", ["fit", "--store", "{afile}", "--out", "{out}"], ["is a file"]),
    ("evaluate store is a file", ["evaluate", "{trained}", "--store", "{afile}"], ["is a file"]),
    ("harvest whitespace-only texts", ["harvest", "--store", "{out}/s.zarr", "--model", "{model}", "--dataset",
                                       "{blank}", "--layer", "2"], ["holds no text", "whitespace only"]),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("bad-inputs") / "s.zarr")
    write_store(path, make_meta(n_rows=2000, d=8, chunk_rows=256), random_rows(2000, 8))
    return path


@pytest.fixture(scope="module")
def harvest_inputs(tmp_path_factory, tiny_model_dir, kjv_file, store) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-harvest-inputs")
    (root / "empty.jsonl").write_bytes(b"")
    noise = random.Random(0).randbytes(4096)
    (root / "noise.jsonl").write_bytes(noise)
    (root / "noise.txt").write_bytes(noise)
    (root / "blank.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in (" ", "\n\n", "\t  ")))
    (root / "a-file").write_text("not a store")
    from cli_helpers import call_cli

    assert call_cli("fit", "--store", store, "--out", root / "runs", "--variant", "topk", "--k", 2, "--batch-size",
                    128, "--tokens", 256, "--log-every", 1) == 0
    (trained,) = [p for p in (root / "runs").iterdir() if (p / "config.json").exists()]
    return {"model": str(tiny_model_dir), "kjv": str(kjv_file), "empty": str(root / "empty.jsonl"),
            "noise": str(root / "noise"), "blank": str(root / "blank.jsonl"), "afile": str(root / "a-file"),
            "trained": str(trained)}


def _digest(root: Path) -> str:
    """Every file's path and bytes under ``root``: equal digests mean nothing was written or lost."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(args, fragments, store, harvest_inputs, tmp_path, capsys):
    out, run = tmp_path / "out", tmp_path / "not-a-run"
    run.mkdir()
    fill = {"store": store, "out": str(out), "run": str(run), "missing": str(tmp_path / "missing.zarr"),
            **harvest_inputs}
    before = _digest(Path(store))
    result = run_cli(capsys, *[a.format(**fill) for a in args])
    assert_one_line_error(result, *fragments)
    before_error = result.stderr.split("error:")[0]
    assert "training" not in before_error and "wrote" not in before_error, result.stderr  # as if work had begun
    assert _digest(Path(store)) == before  # the store is untouched
    assert not out.exists() or not any(out.rglob("*.safetensors"))  # nothing trained on bad input
    assert not (out / "s.zarr").exists()  # no store begun from bad input
