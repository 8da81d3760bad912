"""A resume continues a store only from the same model and text by content, whatever the path says.

The store is killed (kill -9) part-way through a real subprocess harvest; then the model folder or the corpus is
changed in place (same path, same sizes, same modification times) and the rerun must refuse in one line, while
the unchanged inputs under another spelling of their path must continue the store to completion.
"""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, pipeline_subprocess, run_cli
from tiny_model import build_model, save_tiny_model
from transformers import AutoTokenizer

from store.reader import open_store
from store.verify import verify_store

ARGS = ["--layer", "2", "--tokens", "6000", "--ctx", "32", "--chunk-rows", "512", "--batch-size", "2"]


def _chunks_done(store: Path) -> int | None:
    try:
        return json.loads((store / "_harvest" / "progress-00000-of-00001.json").read_text())["chunks_done"]
    except (FileNotFoundError, ValueError):
        return None


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _keep_times(path: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


def _swap_decoder_layers(model_dir: Path) -> None:
    """Put, at the same path, a model with the same embeddings (so the same fingerprint) but other decoder layers:
    same files, same sizes, same modification times; only the bytes of the layers differ."""
    from transformers import AutoModelForCausalLM

    times = _keep_times(model_dir)
    original = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    other = build_model(len(tokenizer), seed=1)
    with torch.no_grad():
        other.get_input_embeddings().weight.copy_(original.get_input_embeddings().weight)
    shutil.rmtree(model_dir)
    other.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    for p, t in times.items():
        os.utime(p, ns=t)


def _killed_harvest(root: Path, kjv_file: Path) -> Path:
    """A model, a corpus and a store of them killed with kill -9 after its first chunks, in ``root``; the harvest
    named the model and corpus by relative paths."""
    save_tiny_model(root / "model")
    shutil.copy(kjv_file, root / "corpus.jsonl")
    proc = pipeline_subprocess("harvest", "--model", "model", "--dataset", "corpus.jsonl", "--store", "s.zarr",
                               *ARGS, cwd=root)
    deadline = time.monotonic() + 120
    while (done := _chunks_done(root / "s.zarr")) is None or done < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _chunks_done(root / "s.zarr") < 11  # really killed mid-run (12 chunks)
    return root


@pytest.fixture(scope="module")
def killed(tmp_path_factory, kjv_file) -> Path:
    return _killed_harvest(tmp_path_factory.mktemp("identity"), kjv_file)


@pytest.fixture
def in_place(tmp_path, kjv_file) -> Path:
    """A killed harvest of its own, so its inputs can be changed at the very paths the store recorded."""
    return _killed_harvest(tmp_path, kjv_file)


@pytest.fixture
def case(killed, tmp_path) -> Path:
    """A private copy of the killed harvest's folder, elsewhere."""
    shutil.copytree(killed, tmp_path / "c", symlinks=True)
    return tmp_path / "c"


def _resume(capsys, root: Path, model: Path, data: Path):
    return run_cli(capsys, "harvest", "--model", model, "--dataset", data, "--store", root / "s.zarr", *ARGS)


def _refused_and_untouched(capsys, root: Path, *fragments: str) -> None:
    before = _files(root / "s.zarr")
    assert_one_line_error(_resume(capsys, root, root / "model", root / "corpus.jsonl"), *fragments)
    assert _files(root / "s.zarr") == before  # nothing written, nothing lost
    with pytest.raises(Exception, match="incomplete"):
        open_store(str(root / "s.zarr"))


def test_model_replaced_in_place_by_other_decoder_layers_is_refused(in_place, capsys):
    _swap_decoder_layers(in_place / "model")
    _refused_and_untouched(capsys, in_place, "model files (content digest)", "the model's files changed")


def test_corpus_edited_in_place_is_refused(in_place, capsys):
    corpus = in_place / "corpus.jsonl"
    times = _keep_times(in_place)[corpus]
    text = corpus.read_text()
    corpus.write_text(text.replace("God", "Gxd", 1))  # same size, and the same time below
    os.utime(corpus, ns=times)
    _refused_and_untouched(capsys, in_place, "dataset files' content (digest)", "the data files changed")


def test_same_model_and_corpus_by_absolute_path_elsewhere_continue_the_store(case, capsys):
    started_at = _chunks_done(case / "s.zarr")
    result = _resume(capsys, case, (case / "model").resolve(), (case / "corpus.jsonl").resolve())
    assert result.code == 0, result.stderr
    assert f"at row {started_at * 512}" in " ".join(result.stderr.split())  # resumed, not restarted
    st = open_store(str(case / "s.zarr"))
    assert st.n_rows == 6000 and verify_store(str(case / "s.zarr")).ok
    assert Path(st.meta.model.name).is_absolute()  # recorded as "model", found again from any directory
    assert st.meta.model.weights_digest.startswith("blake2b:")
    assert len(st.meta.dataset.data_file_digests) == 1
