"""Every array inside the guarantee: a flipped byte or a missing chunk in the statistics, token ids, context ids
or positions is refused in one line naming the array and the chunk, by `store verify` and by every reader that
uses the chunk (fit's normalisation statistics, evaluate's held-out tokens), never read as the fill value."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli
from direct_store import make_meta, random_rows, write_store

from store import format as fmt
from store.errors import CorruptStoreError
from store.reader import open_store
from store.verify import verify_store

CHUNK_ROWS = 128


def _chunk_file(store: Path, name: str, j: int) -> Path:
    two_d = name in (fmt.CHUNK_MEAN, fmt.CHUNK_M2)
    return store / name / "c" / str(j) / "0" if two_d else store / name / "c" / str(j)


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def _read(st, name: str, j: int):
    """What a reader of ``name`` calls: the store's own accessors, as fit and evaluate use them."""
    if name == fmt.TOKENS:
        return st.context_input_ids([st.context_of_row(j * CHUNK_ROWS)])  # evaluate's path to the LM
    if name == fmt.CONTEXT_IDS:
        return st.context_ids()
    if name == fmt.POSITIONS:
        return st.positions()
    if name in (fmt.CHUNK_MEAN, fmt.CHUNK_M2):
        return st.moments()  # fit --norm store_stats, store info
    return st.read_array(name, 0, st.d_model)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "s.zarr"
    write_store(str(path), make_meta(n_rows=1000, d=8, chunk_rows=CHUNK_ROWS), random_rows(1000, 8))
    return path


@pytest.mark.parametrize("damage", ["flip", "delete"])
@pytest.mark.parametrize(
    ("name", "j"),
    [(fmt.TOKENS, 5), (fmt.CONTEXT_IDS, 2), (fmt.POSITIONS, 7), (fmt.CHUNK_MEAN, 3), (fmt.CHUNK_M2, 6),
     (fmt.MEAN, 0), (fmt.VAR, 0)],
)
def test_damaged_chunk_is_named_by_verify_and_refused_by_readers(name, j, damage, pristine, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    chunk = _chunk_file(store, name, j)
    _flip(chunk) if damage == "flip" else chunk.unlink()
    what = "checksum" if damage == "flip" else "missing"

    errors = verify_store(str(store)).errors
    named = [e for e in errors if f"{name} chunk {j} " in e and what in e]
    assert named, errors
    with pytest.raises(CorruptStoreError, match=rf"{name} chunk {j} .*{what}") as exc:
        _read(open_store(str(store)), name, j)
    assert "\n" not in str(exc.value)


def test_activation_chunk_errors_name_the_array_and_chunk(pristine, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    _flip(store / "activations" / "c" / "4" / "0")
    (store / "activations" / "c" / "6" / "0").unlink()
    errors = verify_store(str(store)).errors
    assert any("activations chunk 4 (activations/c/4/0) fails its checksum" in e for e in errors), errors
    assert any("activations chunk 6 (activations/c/6/0) is missing" in e for e in errors), errors


def test_an_intact_store_reads_every_array(pristine):
    st = open_store(str(pristine))
    assert (st.tokens() >= 0).all() and st.moments().count == 1000
    np.testing.assert_array_equal(st.positions(0, 16), np.arange(16) % 15 + 1)


def test_fit_with_store_statistics_refuses_a_damaged_statistics_chunk_in_one_line(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    write_store(str(store), make_meta(n_rows=4000, d=16, chunk_rows=512), random_rows(4000, 16))
    args = ["fit", "--store", store, "--norm", "store_stats", "--batch-size", 128, "--tokens", 128 * 4]
    _chunk_file(store, fmt.CHUNK_MEAN, 2).unlink()
    assert_one_line_error(run_cli(capsys, *args, "--out", tmp_path / "a"), "stats/chunk_mean chunk 2", "missing")
    shutil.rmtree(store)
    write_store(str(store), make_meta(n_rows=4000, d=16, chunk_rows=512), random_rows(4000, 16))
    _flip(_chunk_file(store, fmt.CHUNK_M2, 5))
    assert_one_line_error(run_cli(capsys, *args, "--out", tmp_path / "b"), "stats/chunk_m2 chunk 5", "checksum")
    assert_one_line_error(run_cli(capsys, "store", "info", store), "stats/chunk_m2 chunk 5", "checksum")


def test_a_damaged_statistics_chunk_is_one_fail_line(pristine, tmp_path):
    """Several checks read the statistics (each chunk's, and all of them merged): the fault is said once, without
    the codec's bytes in it."""
    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    _flip(_chunk_file(store, fmt.CHUNK_MEAN, 3))
    errors = verify_store(str(store)).errors
    about = [e for e in errors if "stats/chunk_mean chunk 3" in e]
    assert len(about) == 1 and "b'" not in about[0] and "checksum" in about[0], errors
