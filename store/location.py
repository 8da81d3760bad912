"""Where a store lives: a local path or any fsspec URL, and the few raw file operations the store needs.

Zarr reads and writes the arrays; this module handles what sits beside them (lock and progress files) and the
fast read path, which fetches whole chunk files without zarr-python's per-chunk overhead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import fsspec
import zarr
import zarr.storage

from store.errors import StoreError
from store.files import write_bytes_atomic

_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ServerDisconnectedError",
                "ConnectionRefusedError", "ConnectionError"}
"""Class names (anywhere in an exception's MRO) meaning "no server answered": botocore's, aiohttp's and the
builtin ones. Matched by name so that this module needs none of those optional libraries installed."""

_T = TypeVar("_T")


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the remote endpoint could not be reached at all."""
    seen = 0
    while exc is not None and seen < 8:
        if any(cls.__name__ in _UNREACHABLE for cls in type(exc).__mro__):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _reachable(method: Callable[..., _T]) -> Callable[..., _T]:
    """Turn "no server at the endpoint" inside ``method`` into one StoreError line (see unreachable_error)."""

    @functools.wraps(method)
    def wrapper(self: StoreLocation, *args: Any, **kwargs: Any) -> _T:
        with self.translate_unreachable():
            return method(self, *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class StoreLocation:
    """A store's URL and the fsspec options needed to reach it."""

    url: str
    """Local path or fsspec URL (``s3://bucket/acts.zarr``, ``memory://x``, ``file:///data/acts.zarr``)."""
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Passed to fsspec (credentials, ``client_kwargs={"endpoint_url": ...}``); empty uses the environment."""

    def __post_init__(self) -> None:
        if not self.url:
            raise StoreError("the store location is empty: pass a local path or an fsspec URL")
        object.__setattr__(self, "url", str(self.url).rstrip("/") or "/")

    @cached_property
    def _fs_and_root(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs, root.rstrip("/")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs_and_root[0]

    @property
    def root(self) -> str:
        """The store's root as a path of :attr:`fs`."""
        return self._fs_and_root[1]

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return "file" in protocols or "local" in protocols

    def path(self, key: str) -> str:
        """The fs path of a key (``"activations/c/3/0"``) inside the store."""
        return f"{self.root}/{key}" if key else self.root

    def zarr_store(self, *, read_only: bool) -> zarr.abc.store.Store:
        if self.is_local:
            return zarr.storage.LocalStore(self.root, read_only=read_only)
        return zarr.storage.FsspecStore.from_url(
            self.url, storage_options=self.storage_options or None, read_only=read_only
        )

    @_reachable
    def exists(self, key: str = "") -> bool:
        return bool(self.fs.exists(self.path(key)))

    @_reachable
    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    @_reachable
    def read_into(self, key: str, buffers: list[memoryview]) -> int:
        """Fill ``buffers`` in turn with a file's bytes; returns the file's total size.

        A size different from the buffers' total tells the caller the file is truncated or too long.
        """
        if self.is_local:
            # readinto straight into the caller's arrays avoids a copy of every chunk: the fit's hot path.
            total = 0
            with open(self.path(key), "rb", buffering=0) as f:
                for buf in buffers:
                    view, filled = buf.cast("B"), 0
                    while filled < len(view):
                        n = f.readinto(view[filled:])
                        if not n:
                            return total + filled
                        filled += n
                    total += filled
                return total + len(f.read(1))
        data = memoryview(self.fs.cat_file(self.path(key)))
        offset = 0
        for buf in buffers:
            view = buf.cast("B")
            n = min(len(view), len(data) - offset)
            view[:n] = data[offset : offset + n]
            offset += n
        return len(data)

    @_reachable
    def read_tails(self, keys: list[str], n: int = 4) -> list[bytes | None]:
        """The last ``n`` bytes of each file (None where it does not exist), in one batch of requests on object
        storage."""
        if not keys:
            return []
        if self.is_local:
            out: list[bytes | None] = []
            for key in keys:
                try:
                    with open(self.path(key), "rb", buffering=0) as f:
                        f.seek(-n, os.SEEK_END)
                        out.append(f.read(n))
                except FileNotFoundError:
                    out.append(None)
                except OSError:  # shorter than n bytes
                    out.append(b"")
            return out
        found = self.fs.cat_ranges([self.path(k) for k in keys], -n, None, on_error="return")
        return [None if isinstance(v, FileNotFoundError) else (b"" if isinstance(v, Exception) else v) for v in found]

    @_reachable
    def find(self, key: str) -> list[str]:
        """Every file under a key, as keys relative to the store root (empty when it does not exist)."""
        try:
            paths = self.fs.find(self.path(key))
        except FileNotFoundError:
            return []
        root = self.root.rstrip("/") + "/"
        return sorted(p[len(root):] if p.startswith(root) else p for p in paths)

    @_reachable
    def write_bytes_atomic(self, key: str, data: bytes) -> None:
        """Write a small file so that readers see either the old or the new content, never a torn one."""
        path = self.path(key)
        if self.is_local:
            write_bytes_atomic(path, data)
        else:
            # An object PUT replaces the object atomically.
            self.fs.pipe_file(path, data)

    @_reachable
    def remove(self, key: str, *, recursive: bool = False) -> None:
        """Delete a key (a folder with ``recursive``); a key that is already gone is fine."""
        path = self.path(key)
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=recursive)
        except FileNotFoundError:  # another process removed it first
            pass

    @_reachable
    def listdir(self, key: str) -> list[str]:
        """Names (not paths) of the entries under a key; empty when it does not exist."""
        path = self.path(key)
        try:
            if self.is_local:  # os.listdir: fsspec's local ls normalises every entry's path (~4 µs each)
                return sorted(os.listdir(path)) if os.path.isdir(path) else []
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:  # never there, or removed by another process meanwhile (two shards finalising)
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in entries)

    def endpoint(self, exc: BaseException | None = None) -> str:
        """The endpoint a remote store is reached at: the storage options', the environment's, or the one the
        error names."""
        opts = self.storage_options
        found = (opts.get("client_kwargs") or {}).get("endpoint_url") or opts.get("endpoint_url")
        found = found or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        while found is None and exc is not None:
            found = (getattr(exc, "kwargs", None) or {}).get("endpoint_url")
            exc = exc.__cause__ or exc.__context__
        return str(found or "the default endpoint")

    def unreachable_error(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"cannot reach the object store holding {self.url} at {self.endpoint(exc)} (no server answered): "
            "check that it is running and that AWS_ENDPOINT_URL or --storage-option "
            "client_kwargs='{\"endpoint_url\": ...}' points at it"
        )

    @contextmanager
    def translate_unreachable(self) -> Iterator[None]:
        """Raise :meth:`unreachable_error` for a connection failure inside the block (fsspec or zarr calls)."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            if self.is_local or not is_unreachable(exc):
                raise
            raise self.unreachable_error(exc) from exc

    def __str__(self) -> str:
        return self.url
