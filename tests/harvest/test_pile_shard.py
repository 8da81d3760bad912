"""The Pile as published: zstd-compressed JSON lines (``{"text": ..., "meta": {"pile_set_name": ...}}``), read
from local files, folders and globs exactly as their uncompressed text would be.

The shards here are built in the test's temp dir the way ``monology/pile-uncopyrighted``'s ``00.jsonl.zst`` is:
one JSON object per line, compressed with ``zstandard``; the harvests run the tiny random Gemma-2 into real
stores and compare rows and tokens bit for bit with a harvest of the same lines uncompressed.
"""

import gzip
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard
from cli_helpers import assert_one_line_error, run_cli
from tiny_model import corpus_lines

from harvest.config import HarvestConfig
from harvest.data import DataSource
from harvest.digest import file_digest
from harvest.errors import HarvestError
from harvest.runner import harvest
from store.reader import open_store
from store.verify import verify_store

SETS = ["Pile-CC", "FreeLaw", "Github", "PubMed Abstracts"]
TOKENS = 1500


def pile_lines() -> list[str]:
    """Pile-shaped JSON lines: documents of five KJV verses (newlines inside the text, as real documents have),
    each tagged with a Pile subset."""
    verses = corpus_lines()
    docs = ["\n".join(verses[i : i + 5]) for i in range(0, len(verses), 5)]
    return [json.dumps({"text": d, "meta": {"pile_set_name": SETS[i % len(SETS)]}}) + "\n" for i, d in enumerate(docs)]


def zstd_bytes(text: str, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(text.encode())


def harvest_of(model_dir: Path, data: Path, store: Path, **kw) -> HarvestConfig:
    cfg = HarvestConfig(store=str(store), model=str(model_dir), dataset=str(data), layers=(2,), tokens=TOKENS,
                        context_length=32, chunk_rows=256, batch_size=4, **kw)
    assert harvest(cfg).complete
    return cfg


@pytest.fixture(scope="module")
def plain(tmp_path_factory, tiny_model_dir) -> tuple[list[str], Path]:
    """The lines and a store harvested from them uncompressed: what every compressed form must give."""
    root = tmp_path_factory.mktemp("pile-plain")
    lines = pile_lines()
    (root / "00.jsonl").write_text("".join(lines))
    harvest_of(tiny_model_dir, root / "00.jsonl", root / "plain.zarr")
    return lines, root / "plain.zarr"


def _write(form: str, lines: list[str], root: Path) -> tuple[str, list[Path]]:
    """``--dataset`` for ``lines`` in the given compressed form, and the files it names."""
    text = "".join(lines)
    if form == "jsonl.zst":
        files = {root / "00.jsonl.zst": zstd_bytes(text)}
    elif form in ("jsonl.gz", "json.gz"):
        files = {root / f"00.{form}": gzip.compress(text.encode())}
    else:  # a folder (and a glob) of two shards, the second in two zstd frames as a streaming compressor writes it
        half, quarter = len(lines) // 2, 3 * len(lines) // 4
        (root / "train").mkdir()
        files = {root / "train" / "00.jsonl.zst": zstd_bytes("".join(lines[:half])),
                 root / "train" / "01.jsonl.zst": zstd_bytes("".join(lines[half:quarter]))
                 + zstd_bytes("".join(lines[quarter:]), level=9)}
        (root / "train" / "README.md").write_text("not data: a folder's other files are skipped\n")
    for path, data in files.items():
        path.write_bytes(data)
    spec = {"folder": root / "train", "glob": root / "train" / "*.jsonl.zst"}.get(form, next(iter(files)))
    return str(spec), list(files)


@pytest.mark.parametrize("form", ["jsonl.zst", "jsonl.gz", "json.gz", "folder", "glob"])
def test_compressed_shard_harvests_the_rows_of_its_text(plain, tiny_model_dir, tmp_path, form):
    lines, plain_store = plain
    spec, files = _write(form, lines, tmp_path)
    source = DataSource.from_config(HarvestConfig(store="x", dataset=spec))
    assert source.builder == "json" and source.data_files == tuple(str(f.resolve()) for f in files)
    assert list(source.texts()) == [json.loads(line)["text"] for line in lines]  # every document, none twice

    cfg = harvest_of(tiny_model_dir, Path(spec), tmp_path / "s.zarr")
    st, ref = open_store(cfg.store), open_store(str(plain_store))
    assert st.n_rows == ref.n_rows == TOKENS
    assert torch.equal(st.read_rows(0, TOKENS), ref.read_rows(0, TOKENS))
    np.testing.assert_array_equal(st.tokens(), ref.tokens())
    # The store knows its data by the compressed files' own bytes.
    assert st.meta.dataset.name == "json"
    assert st.meta.dataset.data_file_digests == [file_digest(f) for f in files]
    assert verify_store(cfg.store).ok


@pytest.mark.parametrize("suffix", ["txt.gz", "txt.zst"])
def test_compressed_text_files_give_the_paragraphs_of_the_plain_file(tmp_path, suffix):
    text = "".join(f"{json.loads(line)['text']}\n\n" for line in pile_lines())
    (tmp_path / "plain.txt").write_text(text)
    packed = tmp_path / f"corpus.{suffix}"
    packed.write_bytes(gzip.compress(text.encode()) if suffix.endswith("gz") else zstd_bytes(text))
    plain_src = DataSource.from_config(HarvestConfig(store="x", dataset=str(tmp_path / "plain.txt")))
    packed_src = DataSource.from_config(HarvestConfig(store="x", dataset=str(packed), text_field="body"))
    assert packed_src.builder == "text" and packed_src.text_field == "text"  # .txt always reads `text`
    assert list(packed_src.texts()) == list(plain_src.texts())
    assert len(list(plain_src.texts())) == len(pile_lines())


def test_resume_of_a_compressed_shard_is_by_its_bytes(plain, tiny_model_dir, tmp_path, capsys):
    """A harvest stopped part-way continues from the same .zst under another spelling of its path; the same
    text recompressed in place (other bytes) is other data and is refused in one line."""
    lines, plain_store = plain
    shard = tmp_path / "00.jsonl.zst"
    shard.write_bytes(zstd_bytes("".join(lines)))

    class StopError(Exception):
        pass

    def stop_after_first_chunks(done: int, todo: int) -> None:
        if done >= 600:
            raise StopError

    cfg = HarvestConfig(store=str(tmp_path / "s.zarr"), model=str(tiny_model_dir), dataset=str(shard), layers=(2,),
                        tokens=TOKENS, context_length=32, chunk_rows=256, batch_size=4)
    with pytest.raises(StopError):
        harvest(cfg, on_progress=stop_after_first_chunks)
    with pytest.raises(Exception, match="incomplete"):
        open_store(cfg.store)

    args = ["harvest", "--model", tiny_model_dir, "--store", tmp_path / "s.zarr", "--layer", "2", "--tokens",
            TOKENS, "--ctx", "32", "--chunk-rows", "256", "--batch-size", "4"]
    original = shard.read_bytes()
    shard.write_bytes(zstd_bytes("".join(lines), level=19))  # the same documents, other bytes
    assert shard.read_bytes() != original
    assert_one_line_error(run_cli(capsys, *args, "--dataset", shard), "the data files changed")

    shard.write_bytes(original)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(shard, moved / shard.name)
    (tmp_path / "00.jsonl.zst").symlink_to(moved / shard.name)  # another spelling of the same bytes
    result = run_cli(capsys, *args, "--dataset", tmp_path / "00.jsonl.zst")
    assert result.code == 0, result.stderr
    assert "at row 512" in " ".join(result.stderr.split())  # continued, not restarted
    st, ref = open_store(cfg.store), open_store(str(plain_store))
    assert torch.equal(st.read_rows(0, TOKENS), ref.read_rows(0, TOKENS))
    np.testing.assert_array_equal(st.tokens(), ref.tokens())


def test_file_types_are_named_in_one_line(tmp_path, capsys):
    (tmp_path / "00.jsonl.bz2").write_bytes(b"BZh9")
    with pytest.raises(HarvestError, match=r"data files must be \.json, \.jsonl or \.txt \(each also as \.gz or "
                                           r"\.zst.*\) or \.parquet"):
        DataSource.from_config(HarvestConfig(store="x", dataset=str(tmp_path / "00.jsonl.bz2")))

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "00.jsonl").write_text(pile_lines()[0])
    (mixed / "00.jsonl.zst").write_bytes(zstd_bytes(pile_lines()[0]))  # the same shard twice: refused
    with pytest.raises(HarvestError, match=r"mixes file types \['\.jsonl', '\.jsonl\.zst'\]: use one type"):
        DataSource.from_config(HarvestConfig(store="x", dataset=str(mixed)))

    # A compressed empty file is not 0 bytes long, yet holds no text: skipped like an empty plain file.
    folder = tmp_path / "with-empty"
    folder.mkdir()
    (folder / "00.jsonl.zst").write_bytes(zstd_bytes(""))
    (folder / "01.jsonl.zst").write_bytes(zstd_bytes("".join(pile_lines()[:3])))
    source = DataSource.from_config(HarvestConfig(store="x", dataset=str(folder)))
    assert [Path(f).name for f in source.data_files] == ["01.jsonl.zst"] and len(list(source.texts())) == 3


@pytest.mark.parametrize(("damage", "fragment"), [
    ("not zstd", "damaged or not .zst-compressed"),
    ("zstd cut in its first block", "cut short"),  # reads as no bytes, no error: not to be taken for empty
    ("zstd cut after many blocks", "JSON parse error"),  # the documents up to the cut, then half a line
    ("gzip cut short", "end-of-stream marker"),
])
def test_damaged_compressed_files_are_one_line(tiny_model_dir, tmp_path, capsys, damage, fragment):
    text = "".join(pile_lines())
    if damage == "not zstd":
        path, data = tmp_path / "00.jsonl.zst", b"plain bytes, not a zstd frame\n"
    elif damage.startswith("zstd"):
        if "many" in damage:  # zstd blocks hold 128 KiB of text: this one needs several, and text that stays long
            rng = random.Random(0)
            words = text.split()
            text = "".join(json.dumps({"text": " ".join(rng.choices(words, k=60))}) + "\n" for _ in range(1500))
        packed = zstd_bytes(text)
        path, data = tmp_path / "00.jsonl.zst", packed[: len(packed) // 2]
    else:
        packed = gzip.compress(text.encode())
        path, data = tmp_path / "00.jsonl.gz", packed[: len(packed) // 2]
    path.write_bytes(data)
    result = run_cli(capsys, "harvest", "--model", tiny_model_dir, "--dataset", path, "--store", tmp_path / "s.zarr",
                     "--layer", "2", "--tokens", "100000", "--ctx", "32")
    assert_one_line_error(result, str(path), fragment)


def test_a_zstd_file_cut_exactly_at_a_line_end_is_refused_and_its_rows_kept(tiny_model_dir, tmp_path, capsys):
    """Two frames, the second cut inside its first block: the text decompresses to the first frame's lines, every
    one whole, so the data set would simply seem to end there. The harvest refuses it when the data runs out, and
    keeps the rows it wrote."""
    lines = pile_lines()
    first, second = zstd_bytes("".join(lines[:60])), zstd_bytes("".join(lines[60:]))
    path = tmp_path / "00.jsonl.zst"
    path.write_bytes(first + second[: len(second) // 3])
    store = tmp_path / "s.zarr"
    result = run_cli(capsys, "harvest", "--model", tiny_model_dir, "--dataset", path, "--store", store,
                     "--layer", "2", "--tokens", "100000", "--ctx", "32", "--chunk-rows", "256")
    assert_one_line_error(result, str(path), "cut short", "rows written so far are kept")
    partial = open_store(str(store), partial=True)
    assert not partial.meta.complete and partial.n_rows > 0
    assert verify_store(str(store), partial=True).ok


def test_a_resume_with_data_of_another_format_names_the_files(plain, tiny_model_dir, tmp_path, capsys):
    lines, _ = plain
    (tmp_path / "d.jsonl").write_text("".join(lines))
    (tmp_path / "d.txt").write_text("\n\n".join(json.loads(line)["text"] for line in lines))
    store = tmp_path / "s.zarr"
    args = ["harvest", "--model", tiny_model_dir, "--store", store, "--layer", "2", "--tokens", "300", "--ctx", "32"]
    assert run_cli(capsys, *args, "--dataset", tmp_path / "d.jsonl").code == 0
    result = run_cli(capsys, *args, "--dataset", tmp_path / "d.txt")
    assert_one_line_error(result, "d.jsonl", "d.txt")
    assert "'json'" not in result.stderr and "'text'" not in result.stderr


def test_datasets_can_stream_zstd():
    """The hub's Pile (``monology/pile-uncopyrighted``, *.jsonl.zst) streams through the same decompression as
    the local files above: ``datasets`` marks a .zst data file for its ``zstd://`` file system, which opens it
    with fsspec's zstd codec, registered only when ``zstandard`` is installed. Without it streaming fails with
    "Compression type zstd not supported"; this fails CI first instead."""
    import datasets.config
    from datasets.utils.file_utils import _get_extraction_protocol
    from fsspec.compression import compr

    assert datasets.config.ZSTANDARD_AVAILABLE
    assert "zstd" in compr
    assert _get_extraction_protocol("hf://datasets/monology/pile-uncopyrighted/train/00.jsonl.zst") == "zstd"
