"""Replacing a local file or folder whole: what every stage writes that another process, or a rerun after a kill,
reads back (records, weights, checkpoints' files, caches, a store's small documents).

The content goes to a temporary sibling, is flushed to the disk (fsync, so a power loss cannot leave the new name
pointing at empty blocks), and is renamed over the target; the folder's entry is flushed too. A reader, or a rerun
after a kill at any instant, sees the old content or the new, never a torn file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Make ``path`` what ``write(tmp)`` writes at ``tmp`` (a file or a folder), all at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        for f in ([tmp] if tmp.is_file() else [p for p in tmp.rglob("*") if p.is_file()]):
            _fsync(f)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
