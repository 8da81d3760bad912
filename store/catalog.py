"""The stores under a local folder or an object-store prefix (`pipeline store list`): what a team member reads before
starting a second harvest of the same thing.

Each store is read from its root document (and, while it is being written, its writers' progress files) alone, never
its chunks; a store that cannot be read is a row naming the problem, not an error that hides the others. The walk
does not descend into a store, and stops :data:`MAX_DEPTH` folders down.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from store import format as fmt
from store.errors import StoreError
from store.layout import ROOT_DOC, read_meta
from store.location import StoreLocation
from store.progress import read_growth
from store.provenance import NOT_A_CHECKOUT
from store.reader import written_prefix_rows

MAX_DEPTH = 4
"""Folders below the given one that are searched for stores."""


@dataclass(frozen=True)
class StoreEntry:
    """One store found under a listed folder or prefix."""

    url: str
    """Where it is (path or URL)."""
    name: str
    """Its path under the listed folder or prefix ("." when that is the store itself)."""
    state: str
    """``complete``; ``growing`` (a complete store being extended to more tokens: it reads again once that harvest
    finishes); ``unfinished`` (a harvest that stopped or is still writing); ``unreadable`` (see ``problem``)."""
    model: str | None = None
    """The LM it was harvested from (hub id or folder), or the synthetic model's name."""
    revision: str | None = None
    """The LM's hub commit (None for a local model or a synthetic store)."""
    layer: int | None = None
    """The decoder layer whose output it holds."""
    tokens: int | None = None
    """Rows readable now: all of a complete store's, the written prefix of an unfinished one."""
    tokens_requested: int | None = None
    """Rows its harvest asked for."""
    dataset: str | None = None
    """The data set as the user gave it (a file or folder, or a hub id with its config)."""
    size_bytes: int | None = None
    """Bytes of every object under it."""
    written_by: str | None = None
    """The tool version (and commit) that wrote it, or the store format where an older version did not record it."""
    created_at: str | None = None
    """When its harvest started."""
    problem: str | None = None
    """Why an ``unreadable`` store could not be read."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_stores(url: str, storage_options: dict | None = None) -> list[StoreEntry]:
    """Every store at or under ``url``, in path order."""
    top = StoreLocation(url, storage_options or {})
    fs = top.fs
    with top.translate_unreachable():
        if not fs.exists(top.root):
            raise StoreError(f"{url} does not exist: pass a folder or prefix that holds stores")
        if not fs.isdir(top.root):
            raise StoreError(f"{url} is a file: pass the folder or prefix that holds the stores")
        roots = sorted(_store_roots(fs, top.root, MAX_DEPTH))
        # A local store is named by its path; a remote one by its URL, as `pipeline fit --store` takes it.
        top_root = top.root.rstrip("/")
        return [_entry(StoreLocation(root if top.is_local else fs.unstrip_protocol(root), storage_options or {}),
                       root[len(top_root) + 1:] or ".") for root in roots]


def _store_roots(fs: Any, folder: str, depth: int) -> Iterator[str]:
    try:
        entries = fs.ls(folder, detail=True)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return  # removed meanwhile, or not ours to read: nothing to list there
    if any(e["type"] == "file" and e["name"].rstrip("/").rsplit("/", 1)[-1] == ROOT_DOC for e in entries):
        yield folder.rstrip("/")
        return
    if depth > 0:
        for e in entries:
            if e["type"] == "directory" and e["name"].rstrip("/") != folder.rstrip("/"):
                yield from _store_roots(fs, e["name"], depth - 1)


def _entry(location: StoreLocation, name: str) -> StoreEntry:
    url = str(location)
    size = _size(location)
    try:
        meta = read_meta(location)
        if meta is None:
            raise StoreError(f"{location}/{ROOT_DOC} vanished while listing")
        growth = None if meta.complete else read_growth(location)
        tokens = meta.n_rows if meta.complete else written_prefix_rows(location, meta)
    except (StoreError, OSError, ValueError) as exc:
        return StoreEntry(url, name, "unreadable", size_bytes=size, problem=str(exc).splitlines()[0])
    state = "complete" if meta.complete else "growing" if growth is not None else "unfinished"
    synthetic = meta.synthetic is not None
    return StoreEntry(
        url, name, state, model=meta.synthetic.name if synthetic else meta.model.name,
        revision=None if synthetic else meta.model.revision, layer=None if synthetic else meta.layer, tokens=tokens,
        tokens_requested=meta.tokens_requested, dataset="synthetic" if synthetic else meta.dataset.label,
        size_bytes=size, written_by=_writer(meta), created_at=meta.created_at or None)


def _writer(meta: fmt.StoreMeta) -> str:
    p = meta.provenance
    if p is None:
        return f"not recorded (format {meta.format_version})"
    sha, plus, dirty = p.git_commit.partition("+")
    commit = p.git_commit if p.git_commit == NOT_A_CHECKOUT else sha[:12] + plus + dirty
    return f"{p.tool_version} ({commit})"


def _size(location: StoreLocation) -> int | None:
    try:
        return int(location.fs.du(location.root, total=True))
    except OSError:
        return None
