"""Text in, fixed-length token contexts out.

Documents come from a hub data set streamed with ``datasets`` (``streaming=True``: a 10M-token harvest never
downloads the whole Pile) or from local json/jsonl/text files (plain, .gz or .zst, as the Pile is published) or
parquet files, streamed by the same library. They are
tokenised without special tokens and concatenated with EOS between documents; every context is BOS followed
by the next ``length - 1`` tokens of that stream. So every context is full (no padding) except, when the data
set runs out, the last one, and a context's rows in the store depend only on its index.
"""

from __future__ import annotations

import glob
import gzip
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import zstandard

from harvest.config import HarvestConfig
from harvest.digest import file_digest
from harvest.errors import HarvestError
from harvest.hub import hub_reachable, looks_local
from store.format import DatasetInfo

log = logging.getLogger(__name__)

LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".txt": "text", ".parquet": "parquet"}
"""Local data files by suffix, and the ``datasets`` builder that reads them."""
COMPRESSIONS = {".gz": gzip.open, ".zst": zstandard.open}
"""Compression suffixes allowed after a text type (the Pile is published as .jsonl.zst). ``datasets`` undoes them
itself when it streams data_files (zstd through the zstandard package); the openers here only peek at the first
byte. Parquet compresses inside the file, so it takes none."""
DATA_FILE_TYPES = {
    **LOCAL_BUILDERS,
    **{kind + comp: builder for kind, builder in LOCAL_BUILDERS.items() if builder != "parquet"
       for comp in COMPRESSIONS},
}
"""Every accepted file type (``.jsonl``, ``.jsonl.zst``, ``.txt.gz``...) and its builder."""
ACCEPTED_FILES = ".json, .jsonl or .txt (each also as .gz or .zst, like the Pile's .jsonl.zst) or .parquet"


def data_file_type(path: str | Path) -> str | None:
    """A data file's type, the suffix(es) that name it (``.jsonl.zst``), or None for a file we do not read."""
    name = Path(path).name.lower()
    # Longest first, so that "x.jsonl.gz" is a .jsonl.gz and never a bare .gz.
    return next((kind for kind in sorted(DATA_FILE_TYPES, key=len, reverse=True) if name.endswith(kind)), None)


@dataclass(frozen=True)
class DataSource:
    """A data set to stream documents from."""

    name: str
    config: str | None
    split: str
    text_field: str
    data_files: tuple[str, ...] | None = None
    """Local files, in the order they are read; None for a hub data set."""

    @property
    def builder(self) -> str:
        if self.data_files is None:
            return self.name
        return DATA_FILE_TYPES[data_file_type(self.data_files[0])]

    def info(self) -> DatasetInfo:
        """What the store records of its data: for local files their paths, sizes, times and content digests (a
        file edited in place is other data, whatever its path or time says)."""
        files = [Path(f) for f in self.data_files or ()]
        stats = [f.stat() for f in files]
        return DatasetInfo(
            name=self.name if self.data_files is None else self.builder,
            spec=self.name,
            config=self.config,
            split=self.split,
            text_field=self.text_field,
            data_files=list(self.data_files) if self.data_files else None,
            data_file_digests=[file_digest(f) for f in files] if files else None,
            data_file_stats=[{"size": st.st_size, "mtime": st.st_mtime} for st in stats] if files else None,
        )

    @classmethod
    def from_config(cls, cfg: HarvestConfig) -> DataSource:
        if not looks_local(cfg.dataset):
            return cls(cfg.dataset, cfg.dataset_config, cfg.split, cfg.text_field)
        files = _local_files(cfg.dataset)
        # One type only: a .jsonl beside the .jsonl.zst it was decompressed from would be read twice.
        kinds = {data_file_type(f) for f in files}
        if len(kinds) > 1:
            raise HarvestError(
                f"--dataset {cfg.dataset} mixes file types {sorted(kinds)}: use one type (a glob such as "
                f"'DIR/*{min(kinds)}' picks one)"
            )
        field = "text" if DATA_FILE_TYPES[kinds.pop()] == "text" else cfg.text_field
        return cls(cfg.dataset, None, "train", field, tuple(str(Path(f).resolve()) for f in files))

    def visible_texts(self, shard: int = 0, num_shards: int = 1) -> Iterator[str]:
        """``texts``, refused at once when none holds anything but whitespace (a single shard's): such a data set
        would make a store of a few rows of blanks."""
        texts = self.texts(shard, num_shards)
        seen: list[str] = []
        for text in texts:
            seen.append(text)
            if text.strip():
                return itertools.chain(seen, texts)
        if seen and num_shards == 1:
            raise HarvestError(f"data set '{self.name}' holds no text: its {len(seen)} text(s) are whitespace only; "
                               "pass files with text")
        return iter(seen)

    def check_ended(self) -> None:
        """Called when the data ran out before the tokens asked for: refuse a compressed file whose stream is cut
        short, which would otherwise pass for the end of the data set."""
        for f in self.data_files or ():
            if Path(f).suffix.lower() == ".zst" and not zstd_complete(Path(f)):
                raise HarvestError(f"cannot read '{f}' to its end: its zstd stream is cut short (a partial download?): "
                                   "fetch it again, then rerun to finish the store; the rows written so far are kept")

    def texts(self, shard: int = 0, num_shards: int = 1) -> Iterator[str]:
        """Documents, in a fixed order (the same on every run, which resume relies on).

        With ``num_shards > 1``, shard ``shard``'s share only, as ``datasets``' ``split_dataset_by_node`` deals
        them: whole files round-robin when the number of files divides by ``num_shards`` (a shard then never
        reads the others' files), else every ``num_shards``-th document from the ``shard``-th (the others' text is
        read and skipped, never tokenised). Either way a shard reaches its documents without going through the
        others' contexts, so its cost does not grow with its index.
        """
        import datasets
        from datasets.distributed import split_dataset_by_node

        if self.data_files is None and not hub_reachable():
            raise HarvestError(
                f"cannot reach the Hugging Face Hub to stream data set '{self.name}' (no network?): pass a "
                "local .jsonl/.txt/.parquet file, folder or glob with --dataset"
            )
        kwargs = {"sample_by": "paragraph"} if self.builder == "text" else {}
        try:
            ds = datasets.load_dataset(
                self.builder,
                self.config,
                data_files=list(self.data_files) if self.data_files else None,
                split=self.split,
                streaming=True,
                **kwargs,
            )
        except datasets.exceptions.DatasetNotFoundError as exc:
            raise HarvestError(f"no data set '{self.name}' on the Hugging Face Hub (or it is gated): {exc}") from exc
        # The json builder decompresses the first file's start to learn its columns: a truncated .gz or damaged .zst
        # fails here already (EOFError, ZstdError).
        except (ValueError, FileNotFoundError, EOFError, zstandard.ZstdError) as exc:
            raise HarvestError(f"cannot load data set '{self.name}' split '{self.split}': {exc}") from exc
        except ConnectionError as exc:
            raise HarvestError(
                f"cannot reach the Hugging Face Hub to stream '{self.name}' ({exc}): pass a local file with --dataset"
            ) from exc
        if num_shards > 1:
            ds = split_dataset_by_node(ds, rank=shard, world_size=num_shards)
        for i, example in enumerate(self._examples(ds)):
            if self.text_field not in example:
                raise HarvestError(
                    f"data set '{self.name}' has no field '{self.text_field}' (fields: {', '.join(example)}): "
                    "pass --text-field"
                )
            text = example[self.text_field]
            if not isinstance(text, str):
                raise HarvestError(f"field '{self.text_field}' of example {i} is {type(text).__name__}, not text")
            if self.builder == "text":
                text = text.strip("\n")  # paragraphs of a .txt file keep the blank line that ended them
            if text:
                yield text


    def _examples(self, ds) -> Iterator[dict]:
        """The data set's examples; a file that cannot be parsed as its type is one HarvestError, not a traceback
        from deep inside ``datasets`` or pyarrow."""
        where = self.data_files[0] if self.data_files and len(self.data_files) == 1 else self.name
        # The json builder logs a parse error before raising it; the error below says it once, in one line.
        logging.getLogger("datasets.packaged_modules.json.json").setLevel(logging.CRITICAL)
        it = iter(ds)
        while True:
            try:
                example = next(it)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise HarvestError(
                    f"data set '{where}' is not UTF-8 text ({exc.reason} at byte {exc.start}): pass UTF-8 "
                    ".txt/.jsonl files or parquet"
                ) from None
            # pyarrow's parse errors are ValueErrors; a stop inside the library's generators surfaces as a
            # RuntimeError; a read failing half-way (a network stream, a file that vanished) is an OSError; a
            # truncated .gz ends in EOFError and damaged .zst bytes in ZstdError.
            except (ValueError, RuntimeError, OSError, EOFError, zstandard.ZstdError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise HarvestError(
                    f"cannot read data set '{where}' as {self.builder}: {first}: check that the files are valid "
                    f"{'/'.join(sorted(LOCAL_BUILDERS)) if self.data_files else 'data'}"
                ) from None
            yield example


def _local_files(spec: str) -> list[str]:
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if data_file_type(p) and p.is_file())
    elif path.is_file():
        files = [str(path)]
    else:
        files = sorted(glob.glob(str(path), recursive=True))
    if not files:
        raise HarvestError(f"no data files at '{spec}': give {ACCEPTED_FILES} files, a file, a folder or a glob")
    unknown = [f for f in files if not data_file_type(f)]
    if unknown:
        raise HarvestError(f"cannot read '{unknown[0]}': data files must be {ACCEPTED_FILES}")
    # An empty file holds no text, and the json builder fails on one with an opaque StopIteration.
    empty = [f for f in files if _is_empty(f)]
    if len(empty) == len(files):
        raise HarvestError(f"data set '{spec}' holds no text: its file(s) are empty; pass files with text")
    for f in empty:
        log.warning("skipping the empty data file %s", f)
    return [f for f in files if f not in empty]


def _is_empty(path: str) -> bool:
    """Whether a data file holds no bytes, decompressed (a compressed empty file is not 0 bytes long). A file whose
    first bytes do not decompress is refused here, before a harvest starts."""
    p = Path(path)
    if p.stat().st_size == 0:
        return True
    opener = COMPRESSIONS.get(p.suffix.lower())
    if opener is None:
        return False
    try:
        with opener(p, "rb") as f:
            if f.read(1):
                return False
    except (OSError, EOFError, zstandard.ZstdError) as exc:
        raise HarvestError(
            f"cannot decompress '{path}' as {p.suffix.lower()} ({exc}): the file is damaged or not "
            f"{p.suffix.lower()}-compressed; fetch it again"
        ) from None
    if opener is zstandard.open and not zstd_complete(p):
        raise HarvestError(f"cannot decompress '{path}': its zstd data is cut short (a partial download?); fetch it "
                           "again")
    return True


def zstd_complete(path: Path) -> bool:
    """Whether a .zst file's stream ends with a complete frame. zstd reads a stream cut short (a partial download)
    as fewer bytes and no error, so a file cut exactly at a line end would read as a shorter, valid data set."""
    dctx = zstandard.ZstdDecompressor()
    frame, started = dctx.decompressobj(), False
    with path.open("rb") as f:
        while block := f.read(2**22):
            while block:
                started = True
                frame.decompress(block)
                if not frame.eof:
                    break
                block, frame, started = frame.unused_data, dctx.decompressobj(), False
    return not started or frame.eof


@dataclass(frozen=True)
class Context:
    """One context: BOS plus ``length - 1`` tokens; ``n_real`` < length only for a padded last context."""

    index: int
    tokens: np.ndarray  # (length,) int64
    n_real: int


class ContextStream:
    """Turns documents into numbered contexts, tokenising a batch of documents at a time."""

    def __init__(
        self,
        texts: Iterable[str],
        tokenizer,
        length: int,
        *,
        bos_id: int,
        eos_id: int,
        pad_id: int,
        docs_per_batch: int = 64,
    ) -> None:
        self.texts = texts
        self.tokenizer = tokenizer
        self.length = length
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.docs_per_batch = docs_per_batch

    def _token_blocks(self) -> Iterator[np.ndarray]:
        it = iter(self.texts)
        while batch := list(islice(it, self.docs_per_batch)):
            encoded = self.tokenizer(batch, add_special_tokens=False)["input_ids"]
            for ids in encoded:
                yield np.asarray([*ids, self.eos_id], dtype=np.int64)

    def __iter__(self) -> Iterator[Context]:
        body = self.length - 1
        pending: list[np.ndarray] = []
        n_pending = 0
        index = 0
        for block in self._token_blocks():
            pending.append(block)
            n_pending += len(block)
            if n_pending < body:
                continue
            stream = np.concatenate(pending)
            n_full = len(stream) // body
            for k in range(n_full):
                tokens = np.empty(self.length, dtype=np.int64)
                tokens[0] = self.bos_id
                tokens[1:] = stream[k * body : (k + 1) * body]
                yield Context(index, tokens, self.length)
                index += 1
            rest = stream[n_full * body :]
            pending, n_pending = ([rest], len(rest)) if len(rest) else ([], 0)
        if n_pending:
            stream = np.concatenate(pending)
            tokens = np.full(self.length, self.pad_id, dtype=np.int64)
            tokens[0] = self.bos_id
            tokens[1 : 1 + len(stream)] = stream
            yield Context(index, tokens, 1 + len(stream))
