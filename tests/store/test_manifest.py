"""The manifest a store is sealed with: every tampering that once passed (a swapped chunk, the same swap made
consistently in activations, statistics and tokens, a stray chunk, a nulled consolidation, a removed seal, an edited
attribute or array document) fails `store verify` with one line naming the chunk or document and is refused by fit
and evaluate; a run is bound to the rows it used, so a store changed and sealed again is refused by evaluate while a
grown one still evaluates."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli
from direct_store import make_meta, random_rows, write_store

from store.finalize import finalize
from store.location import StoreLocation
from store.verify import verify_store

ROWS, CHUNK = 4000, 512  # 8 chunks; the held-out rows (the last 5% of contexts) lie in chunk 7


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _root(store: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads((store / "zarr.json").read_text())
    edit(doc)
    (store / "zarr.json").write_text(json.dumps(doc))


def swap_activations(store: Path) -> None:
    _swap(store / "activations/c/2/0", store / "activations/c/5/0")


def swap_consistently(store: Path, a: int = 2, b: int = 7) -> None:
    """The same two chunks swapped in the activations, their statistics and their tokens: each chunk still matches
    its own checksum and statistics, so only their positions betray them (by default the held-out chunk among
    them)."""
    _swap(store / f"activations/c/{a}/0", store / f"activations/c/{b}/0")
    _swap(store / f"stats/chunk_mean/c/{a}/0", store / f"stats/chunk_mean/c/{b}/0")
    _swap(store / f"stats/chunk_m2/c/{a}/0", store / f"stats/chunk_m2/c/{b}/0")
    _swap(store / f"tokens/c/{a}", store / f"tokens/c/{b}")


def stray_chunk(store: Path) -> None:
    (store / "activations/c/8").mkdir()
    shutil.copy(store / "activations/c/1/0", store / "activations/c/8/0")


def null_consolidation(store: Path) -> None:
    _root(store, lambda d: d.__setitem__("consolidated_metadata", None))


def delete_seal_and_edit_layer(store: Path) -> None:
    def edit(d: dict) -> None:
        del d["attributes"]["manifest_sha256"]
        d["attributes"]["layer"] = 3

    _root(store, edit)


def edit_attribute(store: Path) -> None:
    _root(store, lambda d: d["attributes"].__setitem__("layer", 3))


def edit_array_document(store: Path) -> None:
    doc = json.loads((store / "tokens/zarr.json").read_text())
    doc["fill_value"] = 7
    (store / "tokens/zarr.json").write_text(json.dumps(doc))


TAMPERING = {
    # case: (tamper, what verify's line names, what fit's and evaluate's line names)
    "swapped activation chunks": (swap_activations, "activations chunk 2 (activations/c/2/0)", "activations chunk"),
    "chunks swapped consistently in every array": (swap_consistently, "activations chunk 2 (activations/c/2/0)",
                                                    "chunk 7"),
    "a stray chunk beyond the shape": (stray_chunk, "activations/c/8/0", "activations/c/8"),
    "consolidated metadata nulled": (null_consolidation, "zarr.json differs from the manifest", "zarr.json"),
    "seal deleted, layer edited": (delete_seal_and_edit_layer, "lost the seal", "lost the seal"),
    "attribute edited": (edit_attribute, "zarr.json differs from the manifest", "zarr.json differs"),
    "an array's zarr.json edited": (edit_array_document, "tokens/zarr.json differs", "tokens/zarr.json differs"),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A sealed store, and a run trained on it."""
    root = tmp_path_factory.mktemp("manifest")
    store = root / "pristine.zarr"
    write_store(str(store), make_meta(n_rows=ROWS, d=8, chunk_rows=CHUNK), random_rows(ROWS, 8))
    from cli_helpers import call_cli

    assert call_cli("fit", "--store", store, "--out", root / "runs", "--variant", "topk", "--k", 2, "--batch-size",
                    256, "--tokens", 1024, "--log-every", 2) == 0
    (run,) = [p for p in (root / "runs").iterdir() if (p / "config.json").exists()]
    return store, run


@pytest.mark.parametrize("case", list(TAMPERING), ids=list(TAMPERING))
def test_tampering_fails_verify_in_one_line_and_is_refused_by_fit_and_evaluate(case, trained, tmp_path, capsys):
    pristine, run = trained
    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    tamper, in_verify, in_readers = TAMPERING[case]
    tamper(store)
    report = verify_store(str(store))
    assert not report.ok and any(in_verify in e for e in report.errors), report.errors
    assert len(report.errors) == len(set(report.errors))
    fit = run_cli(capsys, "fit", "--store", store, "--out", tmp_path / "runs", "--variant", "topk", "--k", 2,
                  "--batch-size", 256, "--tokens", 1024)
    assert_one_line_error(fit, in_readers)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))
    evaluate = run_cli(capsys, "evaluate", run, "--store", store, "--no-kl")
    assert_one_line_error(evaluate, in_readers)


def test_an_unsealed_store_reads_only_when_asked_and_finalize_reseal_accepts_it_as_it_is(trained, tmp_path, capsys):
    pristine, _ = trained
    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    delete_seal_and_edit_layer(store)
    refused = run_cli(capsys, "fit", "--store", store, "--out", tmp_path / "a", "--tokens", 512, "--batch-size", 256)
    assert_one_line_error(refused, "lost the seal", "--reseal", "--allow-unsealed")
    allowed = run_cli(capsys, "fit", "--store", store, "--out", tmp_path / "b", "--tokens", 512, "--batch-size", 256,
                      "--allow-unsealed")
    assert allowed.code == 0, allowed.stderr
    with pytest.raises(Exception, match="--reseal"):
        finalize(StoreLocation(str(store)))
    finalize(StoreLocation(str(store)), reseal=True)
    assert verify_store(str(store)).ok


def test_evaluate_refuses_rows_changed_under_a_run_even_when_sealed_again(trained, tmp_path, capsys):
    pristine, run = trained
    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    swap_consistently(store, 2, 5)
    finalize(StoreLocation(str(store)), reseal=True)  # sealed as it is now: the store itself checks out
    assert verify_store(str(store)).ok
    result = run_cli(capsys, "evaluate", run, "--store", store, "--no-kl")
    assert_one_line_error(result, "changed since", "activations chunk 2 is not the one it trained on")
    intact = tmp_path / "intact.zarr"
    shutil.copytree(pristine, intact)
    finalize(StoreLocation(str(intact)), reseal=True)  # sealed again without a change: the same rows
    assert run_cli(capsys, "evaluate", run, "--store", intact, "--no-kl").code == 0
