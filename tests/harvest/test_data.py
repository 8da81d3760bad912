import json

import numpy as np
import pytest

from harvest.config import HarvestConfig
from harvest.data import ContextStream, DataSource
from harvest.errors import HarvestError


class CharTokenizer:
    """ids = byte values + 10; enough to check context assembly exactly."""

    def __call__(self, texts, add_special_tokens=False):
        assert not add_special_tokens
        return {"input_ids": [[b + 10 for b in t.encode()] for t in texts]}


def test_contexts_are_bos_plus_stream_with_eos_between_documents():
    docs = ["abc", "defgh", "ij"]
    stream = [*[ord(c) + 10 for c in "abc"], 1, *[ord(c) + 10 for c in "defgh"], 1, *[ord(c) + 10 for c in "ij"], 1]
    contexts = list(ContextStream(docs, CharTokenizer(), 5, bos_id=2, eos_id=1, pad_id=0, docs_per_batch=2))
    assert [c.index for c in contexts] == [0, 1, 2, 3]
    for k, c in enumerate(contexts[:3]):
        assert c.tokens[0] == 2 and c.n_real == 5
        assert list(c.tokens[1:]) == stream[4 * k : 4 * k + 4]
    last = contexts[3]
    assert last.n_real == 1 + len(stream) - 12
    assert list(last.tokens[: last.n_real]) == [2, *stream[12:]] and all(last.tokens[last.n_real :] == 0)


def test_exact_multiple_has_no_padded_context():
    contexts = list(ContextStream(["abc"], CharTokenizer(), 5, bos_id=2, eos_id=1, pad_id=0))
    assert len(contexts) == 1 and contexts[0].n_real == 5  # "abc" + EOS fills 4 slots


@pytest.mark.parametrize("kind", ["jsonl", "txt", "parquet"])
def test_local_files_stream_through_datasets(tmp_path, kind):
    texts = ["first document here", "second one", "third"]
    path = tmp_path / f"data.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    elif kind == "txt":
        path.write_text("\n\n".join(texts) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": texts}), path)
    source = DataSource.from_config(HarvestConfig(store="x", dataset=str(path), text_field="body"))
    assert source.data_files == (str(path.resolve()),)
    assert list(source.texts()) == texts
    assert source.info().name == {"jsonl": "json", "txt": "text", "parquet": "parquet"}[kind]


def test_folder_and_glob(tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.jsonl").write_text(json.dumps({"text": f"doc {i}"}) + "\n")
    by_dir = DataSource.from_config(HarvestConfig(store="x", dataset=str(tmp_path)))
    by_glob = DataSource.from_config(HarvestConfig(store="x", dataset=str(tmp_path / "part*.jsonl")))
    assert by_dir.data_files == by_glob.data_files and len(by_dir.data_files) == 3
    assert list(by_dir.texts()) == ["doc 0", "doc 1", "doc 2"]


def test_missing_text_field_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"content": "x"}) + "\n")
    source = DataSource.from_config(HarvestConfig(store="x", dataset=str(path)))
    with pytest.raises(HarvestError, match=r"no field 'text' \(fields: content\): pass --text-field"):
        list(source.texts())


def test_missing_files_and_offline_hub_are_clear(tmp_path):
    with pytest.raises(HarvestError, match="no data files"):
        DataSource.from_config(HarvestConfig(store="x", dataset=str(tmp_path / "none*.jsonl")))
    hub = DataSource.from_config(HarvestConfig(store="x", dataset="monology/pile-uncopyrighted"))
    assert hub.data_files is None
    with pytest.raises(HarvestError, match=r"cannot reach the Hugging Face Hub.*pass a local"):
        next(hub.texts())


def test_stream_is_deterministic(kjv_file):
    from tiny_model import build_tokenizer
    from transformers import AutoTokenizer  # noqa: F401  (real tokenizer below)

    tok = build_tokenizer()
    source = DataSource.from_config(HarvestConfig(store="x", dataset=str(kjv_file)))
    a = [c.tokens for c in ContextStream(source.texts(), tok, 32, bos_id=2, eos_id=1, pad_id=0)]
    b = [c.tokens for c in ContextStream(source.texts(), tok, 32, bos_id=2, eos_id=1, pad_id=0)]
    assert len(a) > 100 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
