"""Content digests of a harvest's inputs: what a resume compares, so that a store is never continued from a model
or text that changed in place (same path, other bytes) and is continued under another spelling of the same path.

Every byte counts: a model whose decoder layers were swapped keeps its embeddings (and its file sizes), so a
header, a size or a sample of the weights would not tell the two apart. blake2b reads at about 1 GB/s on one
core, seconds for a 2B-parameter model next to the hours its harvest takes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from harvest.hub import looks_local

_BLOCK = 8 * 2**20
DIGEST_BYTES = 16
"""128-bit digests: collisions are out of reach, and the hex stays short enough to read in a message."""

WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".npz"}
"""Files of a model folder that hold weights; ``config.json`` and the shards' index are hashed with them."""
MODEL_FILES = {"config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
               "added_tokens.json"}
"""Files that change what the model computes (architecture, shard layout) or which tokens it is fed (the harvest
reads the tokenizer from the model's folder) without being weights."""


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _digest_files(root: Path, files: Iterable[Path]) -> str:
    """One digest over the files' names (relative to ``root``), sizes and bytes, in name order."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for path in sorted(files):
        name = path.relative_to(root).as_posix() if path != root else path.name
        h.update(f"{name}\0{path.stat().st_size}\0".encode())
        h.update(bytes.fromhex(file_digest(path)))
    return h.hexdigest()


def model_weights_digest(name: str) -> str | None:
    """``blake2b:<hex>`` over a local model's config, weight and tokenizer files; None for a hub id (its commit
    hash, recorded as the model's revision, is its identity)."""
    if not looks_local(name):
        return None
    path = Path(name).expanduser()
    if path.is_file():
        return f"blake2b:{_digest_files(path, [path])}"
    if not path.is_dir():
        return None  # loading the model fails first and says why
    files = [p for p in path.iterdir()
             if p.is_file() and (p.suffix.lower() in WEIGHT_SUFFIXES or p.name in MODEL_FILES)]
    return f"blake2b:{_digest_files(path, files)}"


def local_name(name: str) -> str:
    """A local model's absolute path (one spelling for ``./m``, ``m`` and ``/abs/m``); a hub id unchanged."""
    if not looks_local(name):
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name
