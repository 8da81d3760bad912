"""Metadata inside the guarantee: single edits and corruptions of every kind of zarr.json in a real store.

Each must be caught by `pipeline store verify` (non-zero, exactly one problem, naming the damaged file), and
neither `pipeline store info` nor opening the store may show a traceback: they either read the store (our
reader uses the consolidated copy, which is intact when only an array's own document is damaged) or refuse in
one line.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli
from direct_store import make_meta, random_rows, write_store

from store.errors import StoreError
from store.reader import open_store
from store.verify import verify_store


def _edit_json(key: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(store: Path) -> None:
        doc = json.loads((store / key).read_text())
        change(doc)
        (store / key).write_text(json.dumps(doc, indent=2))

    return apply


def _edit_text(key: str, old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    def apply(store: Path) -> None:
        text = (store / key).read_text()
        assert old in text, (key, old)
        (store / key).write_text(text.replace(old, new, count))

    return apply


def _truncate(key: str) -> Callable[[Path], None]:
    def apply(store: Path) -> None:
        raw = (store / key).read_bytes()
        (store / key).write_bytes(raw[: len(raw) // 2])

    return apply


def _flip_byte(key: str, at: int) -> Callable[[Path], None]:
    def apply(store: Path) -> None:
        raw = bytearray((store / key).read_bytes())
        raw[at] ^= 0x01
        (store / key).write_bytes(bytes(raw))

    return apply


def _delete(key: str) -> Callable[[Path], None]:
    return lambda store: (store / key).unlink()


def _consolidated(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    return _edit_json("zarr.json", lambda doc: change(doc["consolidated_metadata"]["metadata"][name]))


def _attrs(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return _edit_json("zarr.json", lambda doc: change(doc["attributes"]))


def _set(d: dict, key: str, value) -> None:
    d[key] = value


ROOT = "zarr.json"
CASES = {
    # the root document: JSON, schema, values only the checksum can tell apart, the consolidated copies
    "root truncated": (_truncate(ROOT), ROOT),
    "root first byte flipped": (_flip_byte(ROOT, 0), ROOT),
    "root node type changed": (_edit_json(ROOT, lambda d: _set(d, "node_type", "array")), ROOT),
    "root attribute model removed": (_attrs(lambda a: a.pop("model")), ROOT),
    "root attribute context.length removed": (_attrs(lambda a: a["context"].pop("length")), ROOT),
    "root complete is a string": (_attrs(lambda a: _set(a, "complete", "yes")), ROOT),
    "root n_rows 1000 -> 1004": (_attrs(lambda a: _set(a, "n_rows", 1004)), ROOT),
    "root d_model disagrees with the model": (_attrs(lambda a: _set(a, "d_model", 16)), ROOT),
    "root dtype bfloat16 -> float16": (_attrs(lambda a: _set(a, "dtype", "float16")), ROOT),
    "root layer 2 -> 1": (_attrs(lambda a: _set(a, "layer", 1)), ROOT),
    "root model name edited": (_attrs(lambda a: a["model"].update(name="other")), ROOT),
    "root checksum edited": (_attrs(lambda a: _set(a, "metadata_sha256", "0" * 64)), ROOT),
    "consolidated activations shape": (_consolidated("activations", lambda d: _set(d, "shape", [1004, 8])), ROOT),
    "consolidated codec name mangled": (
        _consolidated("activations", lambda d: d["codecs"][1].update(name="crc32x")), ROOT),
    "consolidated tokens fill value": (_consolidated("tokens", lambda d: _set(d, "fill_value", 0)), ROOT),
    # each array's (and group's) own document
    "activations shape 1000 -> 1004": (_edit_text("activations/zarr.json", "1000", "1004"), "activations/zarr.json"),
    "activations codec name mangled": (_edit_text("activations/zarr.json", "crc32c", "crc32x"),
                                       "activations/zarr.json"),
    "activations truncated": (_truncate("activations/zarr.json"), "activations/zarr.json"),
    "activations endian changed": (_edit_text("activations/zarr.json", "little", "big"), "activations/zarr.json"),
    "tokens dtype int32 -> int64": (_edit_text("tokens/zarr.json", "int32", "int64"), "tokens/zarr.json"),
    "tokens chunk shape 128 -> 256": (_edit_text("tokens/zarr.json", "128", "256"), "tokens/zarr.json"),
    "positions fill value -1 -> 0": (_edit_text("positions/zarr.json", '"fill_value": -1', '"fill_value": 0'),
                                     "positions/zarr.json"),
    "context_ids document deleted": (_delete("context_ids/zarr.json"), "context_ids/zarr.json"),
    "chunk_mean shape edited": (_edit_json("stats/chunk_mean/zarr.json", lambda d: _set(d, "shape", [9, 8])),
                                "stats/chunk_mean/zarr.json"),
    "chunk_m2 fill value 0.0 -> 0.5": (_edit_text("stats/chunk_m2/zarr.json", "0.0", "0.5"),
                                       "stats/chunk_m2/zarr.json"),
    "mean crc32c removed": (_edit_json("stats/mean/zarr.json", lambda d: d["codecs"].pop()), "stats/mean/zarr.json"),
    "var dimension name edited": (_edit_json("stats/var/zarr.json", lambda d: _set(d, "dimension_names", ["x"])),
                                  "stats/var/zarr.json"),
    "activations attribute added": (_edit_json("activations/zarr.json", lambda d: _set(d, "attributes", {"a": 1})),
                                    "activations/zarr.json"),
    "stats group document corrupt": (_flip_byte("stats/zarr.json", 0), "stats/zarr.json"),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "s.zarr"
    write_store(str(path), make_meta(n_rows=1000, d=8, chunk_rows=128), random_rows(1000, 8))
    assert verify_store(str(path)).ok
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_every_metadata_corruption_is_caught_in_one_line_and_never_a_traceback(case, pristine, tmp_path, capsys):
    damage, damaged_file = CASES[case]
    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    damage(store)

    verify = run_cli(capsys, "store", "verify", store, "--json")
    assert verify.code == 1 and "Traceback" not in verify.stderr, verify.stderr
    report = json.loads(verify.stdout[verify.stdout.index("{"):])
    assert len(report["errors"]) == 1, report["errors"]
    assert f"{store}/{damaged_file}" in report["errors"][0], report["errors"][0]

    info = run_cli(capsys, "store", "info", store)
    if info.code != 0:
        assert_one_line_error(info)
    try:
        open_store(str(store))
    except StoreError as exc:
        assert "\n" not in str(exc)


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 20
