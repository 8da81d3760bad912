"""The store's layout: array names, chunking rules and the typed form of the group attributes.

docs/store-format.md is the prose version of this module; keep the two in step.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from store.errors import CorruptStoreError, StoreError
from store.provenance import Provenance

FORMAT_NAME = "lm-activation-store"
FORMAT_VERSION = 2
"""2: sealed by a manifest (store/manifest.py). 1: stores written before, readable with ``--allow-unsealed``."""
READABLE_VERSIONS = (1, 2)

ACTIVATIONS = "activations"
TOKENS = "tokens"
CONTEXT_IDS = "context_ids"
POSITIONS = "positions"
CHUNK_MEAN = "stats/chunk_mean"
CHUNK_M2 = "stats/chunk_m2"
MEAN = "stats/mean"
VAR = "stats/var"
# Writer bookkeeping (locks, per-shard progress) lives here while a harvest runs; finalize removes it.
WORK_DIR = "_harvest"

MADE_AT = ("created_at", "harvest_seconds", "metadata_sha256", "manifest_sha256", "provenance")
"""Root attributes that say when (and how long, and by which process) a store was made, and the seals covering them:
the only ones two writes of the same store, a resumed one and an uninterrupted one, differ in."""

STORAGE_DTYPES = {"bfloat16": "uint16", "float16": "float16"}
"""Logical activation dtype -> zarr dtype: the dtypes a store may hold (``--store-dtype``'s choices; their torch
types in store/dtypes.py). Zarr 3 has no bfloat16, so bf16 is stored as its raw uint16 bits."""

TARGET_CHUNK_BYTES = 24 * 2**20
"""Activation chunks aim at 16-32 MiB: large enough for full-speed sequential reads from disk and one cheap
request per chunk from object storage, small enough that a shuffle buffer of a few chunks stays in RAM."""


def default_chunk_rows(d_model: int, itemsize: int = 2) -> int:
    """The power-of-two row count whose chunk is closest to TARGET_CHUNK_BYTES (at least 1024 rows)."""
    rows = 1024
    while rows * 2 * d_model * itemsize <= TARGET_CHUNK_BYTES * 1.4:
        rows *= 2
    return rows


def ceil_div(a: int, b: int) -> int:
    """``a / b`` rounded up, for non-negative ``a`` and positive ``b`` (the one ceil division of the code base)."""
    return -(-a // b)


def n_chunks(n_rows: int, chunk_rows: int) -> int:
    return ceil_div(n_rows, chunk_rows)


@dataclass(frozen=True)
class ModelInfo:
    """The language model the activations come from."""

    name: str
    """Hub id or local path as given by the user."""
    revision: str | None
    """Hub commit hash when loaded from the hub, else None."""
    architecture: str
    """Transformers class name, e.g. ``Gemma2ForCausalLM``."""
    n_layers: int
    d_model: int
    vocab_size: int
    fingerprint: str
    """sha256 over a slice of the token embedding: tells two models apart even when their names agree."""
    weights_digest: str | None = None
    """``blake2b:<hex>`` over a local model's config, weight and tokenizer files (its identity by content: a model
    changed in place is another model); None for a hub model, whose ``revision`` is its identity."""


@dataclass(frozen=True)
class TokenizerInfo:
    name: str
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int | None
    vocab_size: int


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    """Hub id, or the builder (``json``/``text``/``parquet``) for local files."""
    config: str | None
    split: str
    text_field: str
    data_files: list[str] | None = None
    """Local files, when the data set is local."""
    data_file_digests: list[str] | None = None
    """blake2b of each local file's bytes, in ``data_files`` order: the data's identity by content."""
    data_file_stats: list[dict[str, Any]] | None = None
    """Each local file's ``size`` and ``mtime`` when the harvest started, for provenance."""
    spec: str | None = None
    """The data set as the user gave it (``--dataset``: a file, folder or glob, or a hub id): how reports name it.
    Not part of the identity (the same files under another spelling are the same data); absent in older stores."""

    @property
    def label(self) -> str:
        """How the data set is named to people: what the user gave, with a hub data set's config."""
        return dataset_label(self.spec, self.data_files, self.name, self.config)


def dataset_label(spec: str | None, data_files: list[str] | None, name: str, config: str | None) -> str:
    """A data set as people name it: the spec the user gave, else its files, else the loader's name with a hub data
    set's config (records from before the spec was kept have only the last two)."""
    label = spec or (", ".join(data_files) if data_files else name)
    return label + (f" ({config})" if config and not data_files else "")


@dataclass(frozen=True)
class ContextInfo:
    """How token streams became fixed-length contexts, and which positions became rows."""

    length: int
    """Tokens per context, BOS included."""
    include_bos: bool
    """Whether the BOS position of every context is stored as a row."""
    separator: str = "eos"
    """Documents are concatenated with this token between them; every context starts with BOS."""

    @property
    def rows_per_context(self) -> int:
        return self.length if self.include_bos else self.length - 1

    @property
    def first_position(self) -> int:
        """The position (within a context) of its first stored row."""
        return 0 if self.include_bos else 1

    def n_contexts(self, n_rows: int) -> int:
        """Contexts that ``n_rows`` rows span (the last may be short)."""
        return ceil_div(n_rows, self.rows_per_context)

    def context_of_row(self, row: int) -> int:
        return row // self.rows_per_context

    def contexts_between(self, start: int, stop: int) -> range:
        """Contexts with at least one row in [start, stop)."""
        if stop <= start:
            return range(0)
        return range(self.context_of_row(start), self.context_of_row(stop - 1) + 1)

    def context_rows(self, c: int, n_rows: int) -> tuple[int, int]:
        """Rows [start, stop) of context ``c`` in a store of ``n_rows`` rows."""
        start = c * self.rows_per_context
        return min(start, n_rows), min(start + self.rows_per_context, n_rows)


@dataclass(frozen=True)
class SyntheticInfo:
    """A synthetic store's generative model and row stream (``pipeline synth``): its rows were sampled from a known
    model, whose ground truth the store holds under ``truth/`` (store/truth.py, docs/store-format.md)."""

    name: str
    """The preset, or the name of the config file, the model came from."""
    config: dict[str, Any]
    """The model's SAELens configuration (``SyntheticModelConfig.to_dict()``)."""
    config_file: str | None
    """The config file it was read from (None for a preset)."""
    model_digest: str
    """``sha256:`` over the model's arrays as stored (the dictionary, bias, probabilities, magnitudes, correlation
    and forest): its identity by content."""
    seed: int
    """Seed of the row stream: rows come in blocks of ``block_rows``, block j sampled from a generator seeded by
    (seed, j) alone."""
    first_row: int
    """The stream row that is the store's row 0 (0, or where the held-out rows of a streamed fit begin)."""
    block_rows: int
    """Rows per seeded block."""
    sampler: str
    """``fast`` (this tool's sparse sampler) or ``sae-lens`` (SAELens's own): the same distribution, other draws."""
    device: str
    """The device type the rows were sampled on (CPU and CUDA generators draw different numbers)."""
    n_features: int
    """G, the true features."""
    rank: int
    """R, the rank of the firing correlation (0: features fire independently)."""
    n_children: int
    """Features that have a parent."""
    slots: int
    """S, the width of each row's padded list of active features."""


IDENTITY_LABELS = {
    "model_revision": "model revision",
    "model_fingerprint": "model weights (fingerprint)",
    "dataset_config": "dataset config",
    "dataset_split": "dataset split",
    "text_field": "dataset text field",
    "data_files": "dataset files",
    "model_weights": "model files (content digest)",
    "data_content": "dataset files' content (digest)",
    "context_length": "context length",
    "include_bos": "include BOS",
    "compute_dtype": "compute dtype",
    "batch_size": "batch size",
    "chunk_rows": "chunk rows",
    "synthetic_model": "synthetic model (content digest)",
    "synthetic_seed": "seed",
    "synthetic_first_row": "first stream row",
    "synthetic_sampler": "sampler",
    "synthetic_device": "sampling device",
    "synthetic_slots": "active-feature slots",
}
"""Identity key -> how messages name it (keys not listed read as they are)."""


BY_CONTENT = {"model": "model_weights", "tokenizer": "model_weights", "data_files": "data_content"}
"""Identity keys naming an input by its path -> the key naming it by content (the harvest loads the tokenizer
from the model's folder, whose digest covers the tokenizer's files)."""


def identity_label(key: str) -> str:
    return IDENTITY_LABELS.get(key, key)


@dataclass(frozen=True)
class StoreMeta:
    """The group attributes of a store: what it holds and how it was made."""

    model: ModelInfo
    tokenizer: TokenizerInfo
    dataset: DatasetInfo
    context: ContextInfo
    layer: int
    """Decoder layer (0-based) whose output is stored; = ``hidden_states[layer + 1]`` of the HF model."""
    hook_point: str
    """The module whose output was captured, e.g. ``model.layers.19``."""
    d_model: int
    dtype: str
    """Logical dtype of the activations: ``bfloat16`` (stored as uint16 bits) or ``float16``."""
    compute_dtype: str
    """Dtype the LM ran in (``bfloat16`` on CUDA, ``float32`` on CPU)."""
    n_rows: int
    """Rows (token positions) the store holds once complete."""
    tokens_requested: int
    chunk_rows: int
    num_shards: int = 1
    harvest_config: dict[str, Any] = field(default_factory=dict)
    """The full harvest configuration, for provenance."""
    complete: bool = False
    harvest_seconds: float = 0.0
    """Wall-clock seconds the harvest took (the slowest shard's, summed over resumed runs)."""
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    created_at: str = ""
    software: dict[str, str] = field(default_factory=dict)
    """Stores written before ``provenance``: the versions of the libraries that wrote it ({} since)."""
    metadata_sha256: str | None = None
    """Format 1 only: sha256 of the root attributes (less this key) and every node's metadata document, in canonical
    JSON, recorded at finalisation (``store.layout.metadata_checksum``); the manifest replaced it."""
    manifest_sha256: str | None = None
    """sha256 of manifest.json, which records every metadata document's digest and every chunk's CRC-32C by position
    (store/manifest.py); set when the store is sealed at finalisation, None until then."""
    synthetic: SyntheticInfo | None = None
    """Set for a synthetic store (``pipeline synth``): its model and row stream; None for an LM's activations."""
    provenance: Provenance | None = None
    """The tool's version and commit, the libraries' versions and the device that wrote the store, and when
    (store/provenance.py); None for a store written before it was recorded (see ``software``)."""

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise StoreError(f"unsupported activation dtype {self.dtype!r}: use one of {sorted(STORAGE_DTYPES)}")
        if self.d_model != self.model.d_model:
            raise StoreError(f"d_model {self.d_model} disagrees with the model's hidden size {self.model.d_model}")
        if not 0 <= self.layer < self.model.n_layers:
            raise StoreError(f"layer {self.layer} is outside the model's 0..{self.model.n_layers - 1}")
        if self.chunk_rows <= 0 or self.n_rows < 0:
            raise StoreError("chunk_rows must be positive and n_rows non-negative")

    @property
    def storage_dtype(self) -> str:
        return STORAGE_DTYPES[self.dtype]

    @property
    def n_chunks(self) -> int:
        return n_chunks(self.n_rows, self.chunk_rows)

    @property
    def n_contexts(self) -> int:
        return self.context.n_contexts(self.n_rows)

    def identity(self) -> dict[str, Any]:
        """The fields that decide a store's content; two harvests agreeing on them write the same rows.

        JSON-serialisable, with snake_case keys (IDENTITY_LABELS names them for people).
        """
        return {
            "model": self.model.name,
            "model_revision": self.model.revision,
            "model_fingerprint": self.model.fingerprint,
            "layer": self.layer,
            "dataset": self.dataset.name,
            "dataset_config": self.dataset.config,
            "dataset_split": self.dataset.split,
            "text_field": self.dataset.text_field,
            "data_files": self.dataset.data_files,
            # By content, so that a model or text changed in place at the same path is refused on resume.
            "model_weights": self.model.weights_digest,
            "data_content": self.dataset.data_file_digests,
            "tokenizer": self.tokenizer.name,
            "context_length": self.context.length,
            "include_bos": self.context.include_bos,
            "dtype": self.dtype,
            "compute_dtype": self.compute_dtype,
            # The model runs on a fixed grid of this many contexts: a resumed or sharded run must keep it to
            # write the floats an uninterrupted run would.
            "batch_size": self.harvest_config.get("batch_size"),
            "tokens": self.tokens_requested,
            "chunk_rows": self.chunk_rows,
            **({} if self.synthetic is None else {
                "synthetic_model": self.synthetic.model_digest, "synthetic_seed": self.synthetic.seed,
                "synthetic_first_row": self.synthetic.first_row, "synthetic_sampler": self.synthetic.sampler,
                "synthetic_device": self.synthetic.device, "synthetic_slots": self.synthetic.slots}),
        }

    def first_mismatch(self, other: StoreMeta, ignore: tuple[str, ...] = ()) -> tuple[str, Any, Any] | None:
        """(identity key, ours, theirs) for the first identity field that differs, else None; keys in ``ignore``
        are not compared.

        A path is only a spelling of an input that both sides know by content: it is not compared then, so the
        same model or text moved or named another way continues a store, and other bytes at the same path do not.
        """
        mine, theirs = self.identity(), other.identity()
        for key, value in mine.items():
            if key in ignore:
                continue
            content = BY_CONTENT.get(key)
            if content is not None and mine[content] is not None and theirs.get(content) is not None:
                continue
            if theirs.get(key) != value:
                return key, value, theirs.get(key)
        return None


    def to_attrs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], where: str = "store") -> StoreMeta:
        if attrs.get("format") != FORMAT_NAME:
            raise CorruptStoreError(
                f"{where} is a Zarr group but not an activation store (attribute format={attrs.get('format')!r})"
            )
        version = attrs.get("format_version")
        if version not in READABLE_VERSIONS:
            raise StoreError(
                f"{where} has store format version {version}; this tool reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}: use the matching release of this tool or re-harvest"
            )
        problem = schema_problem(cls, attrs)
        if problem is not None:
            raise CorruptStoreError(f"{where}: attribute {problem}: the metadata is damaged; restore it or re-harvest")
        values = dict(attrs)
        for key, part in _PARTS.items():
            if attrs.get(key) is not None:
                values[key] = part(**attrs[key])
        try:
            return cls(**values)
        except StoreError as exc:
            raise CorruptStoreError(f"{where}: {exc}: the metadata is damaged; restore it or re-harvest") from None


_PARTS = {"model": ModelInfo, "tokenizer": TokenizerInfo, "dataset": DatasetInfo, "context": ContextInfo,
          "synthetic": SyntheticInfo, "provenance": Provenance}


def schema_problem(cls: type, values: Any, prefix: str = "") -> str | None:
    """What is wrong with ``values`` as the attributes of dataclass ``cls`` (``key is missing``, ``key has type
    ...``), or None: the schema of the attributes is the dataclasses themselves."""
    if not isinstance(values, dict):
        return f"{prefix.rstrip('.') or 'attributes'} is not an object"
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return f"'{key}' is missing"
            continue
        hint, value = hints[f.name], values[f.name]
        hint = _optional_part(hint, value)
        if dataclasses.is_dataclass(hint):
            problem = schema_problem(hint, value, f"{key}.")
            if problem is not None:
                return problem
        elif not _conforms(value, hint):
            return f"'{key}' is {json_type(value)} {value!r:.60}, not {_type_words(hint)}"
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        return f"'{prefix}{unknown[0]}' is not part of the format"
    return None


def _optional_part(hint: Any, value: Any) -> Any:
    """``Part | None`` with a value present -> Part (checked as one); every other hint as it is."""
    args = typing.get_args(hint)
    if value is not None and typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        parts = [a for a in args if dataclasses.is_dataclass(a)]
        if len(parts) == 1:
            return parts[0]
    return hint


def json_type(value: Any) -> str:
    return type(value).__name__


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _conforms(v, args[1]) for k, v in value.items())
    return isinstance(value, hint)


def _type_words(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_words(a) for a in args)
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    return getattr(origin or hint, "__name__", str(hint))
