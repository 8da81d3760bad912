"""The store's manifest: one record, sealed at finalisation, of every metadata document (by digest) and of every
chunk's CRC-32C bound to its array and chunk index, so that an edited or nulled attribute, a swapped or copied
chunk, a stray chunk and a missing one are each told apart from the store that was written.

Every chunk file of the format ends with the CRC-32C of what precedes it (the ``crc32c`` codec), so the manifest
records those 4 bytes per chunk; a reader compares a chunk's trailer with the manifest's entry for that position
when it reads the chunk (for the activations, at no cost: the fast path reads the trailer anyway). The root
``zarr.json`` carries the manifest's sha256 (``manifest_sha256``), and the manifest carries the digest of the root
document less that one attribute. Checking the seal at open is one small read and a few metadata documents, never a
pass over the data. A digest guards against accidents and careless edits, not against a writer who recomputes it
(`pipeline store finalize --reseal` does exactly that, on purpose). docs/store-format.md, "The manifest", specifies
it for readers with plain zarr.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from store.errors import CorruptStoreError
from store.location import StoreLocation

MANIFEST = "manifest.json"
"""Beside the root zarr.json; not a zarr node."""
FORMAT = "lm-activation-store-manifest"
VERSION = 1
SEAL = "manifest_sha256"
"""The root attribute holding the manifest's sha256."""


def canonical(doc: Any) -> bytes:
    """A JSON document in canonical form: sorted keys, no spaces, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_digest(doc: dict, key: str) -> str:
    """sha256 of a metadata document in canonical form; for the root, without the seal attribute."""
    if key == "zarr.json":
        doc = {**doc, "attributes": {k: v for k, v in doc.get("attributes", {}).items() if k != SEAL}}
    return hashlib.sha256(canonical(doc)).hexdigest()


@dataclass(frozen=True)
class ArrayChunks:
    """One array's chunks: how many along each dimension, and each one's CRC-32C in C order of the chunk grid (as
    the manifest holds them, 8 hex digits each, decoded only where a chunk is checked: opening a store parses no
    per-chunk list)."""

    grid: tuple[int, ...]
    crc32c_hex: str

    @classmethod
    def of(cls, grid: tuple[int, ...], crcs: list[int] | tuple[int, ...]) -> ArrayChunks:
        return cls(tuple(grid), "".join(f"{c:08x}" for c in crcs))

    def __post_init__(self) -> None:
        n = 1
        for g in self.grid:
            n *= g
        if len(self.crc32c_hex) != 8 * n:
            raise ValueError(f"{len(self.crc32c_hex) // 8} CRCs for a grid of {n} chunks")

    def index(self, coords: tuple[int, ...]) -> int:
        flat = 0
        for c, n in zip(coords, self.grid, strict=True):
            flat = flat * n + c
        return flat

    @property
    def crc32c(self) -> tuple[int, ...]:
        h = self.crc32c_hex
        return tuple(int(h[i : i + 8], 16) for i in range(0, len(h), 8))

    def crc_of(self, coords: tuple[int, ...]) -> int:
        i = 8 * self.index(coords)
        return int(self.crc32c_hex[i : i + 8], 16)

    def coords_of(self, crc: int) -> list[tuple[int, ...]]:
        """The chunk positions whose recorded CRC is ``crc`` (where a misplaced chunk's bytes came from)."""
        out = []
        for flat, c in enumerate(self.crc32c):
            if c == crc:
                coords = []
                for n in reversed(self.grid):
                    coords.append(flat % n)
                    flat //= n
                out.append(tuple(reversed(coords)))
        return out


@dataclass(frozen=True)
class Manifest:
    documents: dict[str, str]
    """Metadata document key (``zarr.json``, ``activations/zarr.json``, ``stats/zarr.json``, ...) -> its digest."""
    arrays: dict[str, ArrayChunks]

    def to_bytes(self) -> bytes:
        return canonical({
            "format": FORMAT, "version": VERSION, "documents": self.documents,
            "arrays": {name: {"grid": list(a.grid), "crc32c": a.crc32c_hex} for name, a in self.arrays.items()},
        })

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        try:
            obj = json.loads(raw)
            if obj.get("format") != FORMAT or obj.get("version") != VERSION:
                raise ValueError(f"format {obj.get('format')!r} version {obj.get('version')!r}")
            arrays = {name: ArrayChunks(tuple(int(n) for n in a["grid"]), str(a["crc32c"]))
                      for name, a in obj["arrays"].items()}
            return cls(dict(obj["documents"]), arrays)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptStoreError(f"{where} is not a manifest this tool reads ({exc}): restore it, or re-seal the "
                                    "store with `pipeline store finalize --reseal`") from None


def read_manifest(location: StoreLocation, seal: str) -> Manifest:
    """The store's manifest, checked against the seal its root carries."""
    where = f"{location}/{MANIFEST}"
    try:
        raw = location.read_bytes(MANIFEST)
    except FileNotFoundError:
        raise CorruptStoreError(f"{where} is missing, though zarr.json is sealed with it: restore it, or re-harvest "
                                "the store") from None
    if hashlib.sha256(raw).hexdigest() != seal:
        raise CorruptStoreError(f"{where} does not match the seal in zarr.json ({SEAL}): one of the two was edited; "
                                "restore them, or re-harvest the store")
    return Manifest.from_bytes(raw, where)


def write_manifest(location: StoreLocation, manifest: Manifest) -> str:
    """Write the manifest (atomically); its sha256, the seal the root is to carry."""
    raw = manifest.to_bytes()
    location.write_bytes_atomic(MANIFEST, raw)
    return hashlib.sha256(raw).hexdigest()


def check_documents(location: StoreLocation, root: dict, manifest: Manifest) -> None:
    """Every metadata document as sealed: the root one (attributes and consolidated metadata) and each node's own
    ``zarr.json``; the first that differs is one CorruptStoreError line naming the file."""
    from store.layout import ROOT_DOC, read_doc

    if document_digest(root, ROOT_DOC) != manifest.documents.get(ROOT_DOC):
        raise CorruptStoreError(
            f"{location}/{ROOT_DOC} differs from the manifest sealed at finalisation (an attribute or the consolidated "
            "metadata was edited or removed): restore it, or re-harvest the store"
        )
    for key, digest in manifest.documents.items():
        if key == ROOT_DOC:
            continue
        doc = read_doc(location, key)
        if doc is None:
            raise CorruptStoreError(f"{location}/{key} is missing: restore it, or re-harvest the store")
        if document_digest(doc, key) != digest:
            raise CorruptStoreError(f"{location}/{key} differs from the manifest sealed at finalisation (edited or "
                                    "corrupt): restore it, or re-harvest the store")


def chunk_problem(location: StoreLocation, name: str, coords: tuple[int, ...], key: str, trailer: bytes | None,
                  manifest: Manifest) -> str | None:
    """What is wrong with one chunk file's trailer against the manifest, as one line, or None."""
    if name not in manifest.arrays:
        return f"{location}: array '{name}' is not in the manifest: restore the manifest, or re-harvest the store"
    chunks = manifest.arrays[name]
    j = str(coords[0]) if not any(coords[1:]) else ",".join(map(str, coords))
    if trailer is None:
        return f"{location}: {name} chunk {j} ({key}) is missing: restore it, or re-harvest the store"
    if len(trailer) != 4:
        return f"{location}: {name} chunk {j} ({key}) is truncated: restore it, or re-harvest the store"
    crc = int.from_bytes(trailer, "little")
    if crc == chunks.crc_of(coords):
        return None
    elsewhere = [c for c in chunks.coords_of(crc) if c != coords]
    where = elsewhere[0] if elsewhere else ()
    other = str(where[0]) if where and not any(where[1:]) else ",".join(map(str, where))
    origin = (f"it holds the bytes of chunk {other} (chunks swapped or copied)" if elsewhere
              else "its checksum is not the one sealed for it (rewritten or corrupt)")
    return f"{location}: {name} chunk {j} ({key}) is not the chunk the store was sealed with: {origin}; restore it, " \
           "or re-harvest the store"


def verify_seal(location: StoreLocation, root: dict) -> Manifest:
    """The manifest of a sealed store, after checking it against the root's seal and every metadata document
    against it; the first problem is one CorruptStoreError line naming the file."""
    found = read_manifest(location, root["attributes"][SEAL])
    check_documents(location, root, found)
    return found
