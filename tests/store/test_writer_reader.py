import json
import os

import numpy as np
import pytest
import torch
from direct_store import make_meta, random_rows, write_store

from store import dtypes
from store.errors import (
    IncompleteStoreError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreNotFoundError,
)
from store.location import StoreLocation
from store.reader import open_store
from store.verify import verify_store
from store.writer import StoreWriter


@pytest.fixture
def meta():
    return make_meta(n_rows=1000, d=8, chunk_rows=128)


def test_roundtrip_rows_tokens_stats(tmp_path, meta):
    acts = random_rows(1000, 8)
    write_store(str(tmp_path / "s.zarr"), meta, acts)
    st = open_store(str(tmp_path / "s.zarr"))
    assert st.meta.complete and st.n_rows == 1000 and st.fast_path
    expected = dtypes.decode(dtypes.encode(acts, "bfloat16"), "bfloat16")
    assert torch.equal(st.read_rows(0, 1000), expected)
    assert torch.equal(st.read_rows(100, 300), expected[100:300])
    np.testing.assert_array_equal(st.tokens(5, 9), (np.arange(5, 9) * 7) % 100)
    # 15 rows per context (BOS not stored), positions start at 1
    np.testing.assert_array_equal(st.context_ids(13, 17), [0, 0, 1, 1])
    np.testing.assert_array_equal(st.positions(13, 17), [14, 15, 1, 2])
    m = st.moments()
    ref = expected.double().numpy()
    np.testing.assert_allclose(m.mean, ref.mean(0), rtol=1e-10)
    np.testing.assert_allclose(m.var, ref.var(0), rtol=1e-8)
    # plain zarr sees the same numbers (what docs/store-format.md promises)
    import zarr

    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    bits = np.asarray(g["activations"][:10])
    assert torch.equal(torch.from_numpy((bits.astype(np.uint32) << 16).view(np.float32)), expected[:10])
    np.testing.assert_allclose(g["stats/mean"][:], m.mean)
    assert g.attrs["complete"] is True and g.attrs["dtype"] == "bfloat16"


def test_reader_refuses_incomplete_unless_partial(tmp_path, meta):
    acts = random_rows(1000, 8)
    write_store(str(tmp_path / "s.zarr"), meta, acts, stop_row=450)
    with pytest.raises(IncompleteStoreError, match="written 384 of 1,000"):
        open_store(str(tmp_path / "s.zarr"))
    st = open_store(str(tmp_path / "s.zarr"), partial=True)
    assert st.n_rows == 384  # three whole chunks; the rest was still buffered when the writer stopped
    assert st.read_rows(0, 384).shape == (384, 8)


def test_resume_continues_and_matches_one_pass(tmp_path, meta):
    acts = random_rows(1000, 8)
    write_store(str(tmp_path / "a.zarr"), meta, acts, stop_row=450)
    writer = write_store(str(tmp_path / "a.zarr"), meta, acts)
    assert writer.meta.complete or open_store(str(tmp_path / "a.zarr")).meta.complete
    write_store(str(tmp_path / "b.zarr"), meta, acts)
    a, b = open_store(str(tmp_path / "a.zarr")), open_store(str(tmp_path / "b.zarr"))
    assert torch.equal(a.read_rows(0, 1000), b.read_rows(0, 1000))
    np.testing.assert_array_equal(a.group["stats/var"][:], b.group["stats/var"][:])


def test_second_writer_fails_at_once(tmp_path, meta):
    loc = StoreLocation(str(tmp_path / "s.zarr"))
    first = StoreWriter.open(loc, meta)
    try:
        with pytest.raises(StoreLockedError, match="another process is writing"):
            StoreWriter.open(loc, meta)
    finally:
        first.close()
    StoreWriter.open(loc, meta).close()  # released: a new writer may open


def test_mismatched_store_is_named(tmp_path, meta):
    write_store(str(tmp_path / "s.zarr"), meta, random_rows(1000, 8))
    with pytest.raises(StoreMismatchError, match="layer = 2, but this run asks for 3"):
        StoreWriter.open(StoreLocation(str(tmp_path / "s.zarr")), make_meta(layer=3))
    with pytest.raises(StoreMismatchError, match="fingerprint"):
        other = make_meta()
        other = type(other)(**{**other.__dict__, "model": type(other.model)(**{**other.model.__dict__,
                                                                               "fingerprint": "0" * 16})})
        StoreWriter.open(StoreLocation(str(tmp_path / "s.zarr")), other)


def test_missing_store(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no activation store"):
        open_store(str(tmp_path / "nothing.zarr"))


def test_verify_passes_then_catches_corruption_truncation_and_loss(tmp_path, meta):
    path = tmp_path / "s.zarr"
    write_store(str(path), meta, random_rows(1000, 8))
    report = verify_store(str(path))
    assert report.ok, report.errors
    assert report.chunks_read == 8 and report.nan_count == 0

    chunk = path / "activations" / "c" / "3" / "0"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0x40
    chunk.write_bytes(bytes(data))
    report = verify_store(str(path))
    assert not report.ok and any("chunk 3" in e and "checksum" in e for e in report.errors)
    with pytest.raises(StoreError, match="checksum"):
        open_store(str(path)).read_chunk_raw(3)

    chunk.write_bytes(bytes(data[:50]))
    assert any("chunk 3" in e and "bytes" in e for e in verify_store(str(path)).errors)
    os.remove(chunk)
    assert any("chunk 3" in e and "missing" in e for e in verify_store(str(path)).errors)


def test_verify_reports_nan_and_bad_stats(tmp_path, meta):
    acts = random_rows(1000, 8)
    acts[5, 3] = float("nan")
    acts[700, 1] = float("inf")
    write_store(str(tmp_path / "s.zarr"), meta, acts)
    report = verify_store(str(tmp_path / "s.zarr"))
    assert report.nan_count == 1 and report.inf_count == 1
    assert any("1 NaN and 1 Inf" in e for e in report.errors)


def test_verify_catches_tampered_attributes(tmp_path, meta):
    path = tmp_path / "s.zarr"
    write_store(str(path), meta, random_rows(1000, 8))
    root = json.loads((path / "zarr.json").read_text())
    root["attributes"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(root))
    report = verify_store(str(path))
    assert not report.ok and "format version 99" in report.errors[0]


def test_fsspec_url_store_roundtrip():
    """Nothing may assume a local path: write and read through fsspec's in-memory filesystem."""
    meta = make_meta(n_rows=600, d=8, chunk_rows=128)
    acts = random_rows(600, 8)
    write_store("memory://roundtrip/s.zarr", meta, acts)
    st = open_store("memory://roundtrip/s.zarr")
    assert not st.location.is_local and st.fast_path
    assert torch.equal(st.read_rows(0, 600), dtypes.decode(dtypes.encode(acts, "bfloat16"), "bfloat16"))
    assert verify_store("memory://roundtrip/s.zarr").ok


def test_data_set_running_out_shrinks_the_store(tmp_path):
    from store.sink import ChunkSink

    meta = make_meta(n_rows=1000, d=8, chunk_rows=128)
    acts = random_rows(1000, 8)
    writer = StoreWriter.open(StoreLocation(str(tmp_path / "s.zarr")), meta)
    sink = ChunkSink(writer)
    raw = dtypes.encode(acts, "bfloat16")
    sink.put(0, raw[:300], np.zeros(300, np.int32))
    assert sink.flush_partial() == 300
    writer.finish()
    st = open_store(str(tmp_path / "s.zarr"))
    assert st.n_rows == 300 and st.meta.n_rows == 300
    np.testing.assert_allclose(st.moments().mean, st.read_rows(0, 300).double().mean(0).numpy(), rtol=1e-10)
    assert verify_store(str(tmp_path / "s.zarr")).ok


def test_verify_catches_statistics_that_disagree_with_the_data(tmp_path, meta):
    import zarr

    path = tmp_path / "s.zarr"
    write_store(str(path), meta, random_rows(1000, 8))
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    m2 = g["stats/chunk_m2"][2]
    g["stats/chunk_m2"][2] = m2 * 1.01
    errors = verify_store(str(path)).errors
    assert errors == [f"{path}: stats/chunk_m2 chunk 2 (stats/chunk_m2/c/2/0) is not the chunk the store was sealed "
                      "with: its checksum is not the one sealed for it (rewritten or corrupt); restore it, or "
                      "re-harvest the store"]
    # Sealed as it is (a writer that got the statistics wrong), the statistics themselves are checked against the data.
    from store.finalize import finalize

    finalize(StoreLocation(str(path)), reseal=True)
    errors = verify_store(str(path)).errors
    assert any("chunk(s) 2" in e for e in errors) and any("stats/mean or stats/var" in e for e in errors)


def test_a_store_an_older_version_finalised_reads_only_when_allowed_and_finalize_seals_it(tmp_path, meta):
    """Format 1, as an older version finalised it: no manifest, possibly not consolidated, its writers' bookkeeping
    left behind. fit and evaluate refuse it without --allow-unsealed (naming the fix), verify says so, and
    `store finalize` seals it: after that it reads like any store."""
    from store.errors import UnsealedStoreError
    from store.finalize import finalize

    path = tmp_path / "s.zarr"
    write_store(str(path), meta, random_rows(1000, 8))
    raw = json.loads((path / "zarr.json").read_text())
    raw.pop("consolidated_metadata")
    raw["attributes"].update(format_version=1, manifest_sha256=None)
    del raw["attributes"]["manifest_sha256"]
    (path / "zarr.json").write_text(json.dumps(raw))
    (path / "manifest.json").unlink()
    (path / "_harvest").mkdir()
    (path / "_harvest" / "progress-00000-of-00001.json").write_text("{}")
    with pytest.raises(UnsealedStoreError, match=r"store format 1.*pipeline store finalize .*--allow-unsealed"):
        open_store(str(path))
    assert open_store(str(path), allow_unsealed=True).n_rows == 1000
    report = verify_store(str(path))
    assert report.ok and any("not consolidated" in w for w in report.warnings)
    assert any("not sealed" in w for w in report.warnings)
    assert finalize(StoreLocation(str(path))) is True
    assert not (path / "_harvest").exists()
    assert open_store(str(path)).manifest is not None and open_store(str(path)).meta.format_version == 2
    assert not verify_store(str(path)).warnings
