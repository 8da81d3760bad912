"""The files of the site: data as ``.js`` files that hand JSON to the page, the static app, an atomic swap.

Data files are scripts (``BROWSE.put(path, {...})``) rather than ``.json`` because browsers refuse ``fetch``
of local files from a ``file://`` page, while ``<script src>`` loads from both ``file://`` and any static
server. The app inserts such a script when it needs a file and resolves a promise when the file calls back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

STATIC_FILES = ("index.html", "assets/app.js", "assets/style.css")
SITE_MARKER = "data/site.js"

LEVELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"
"""One character per token for a window's shading: level = round(63 * activation / feature max), with any
positive activation at least 1 so that "fired" stays visible; 0 for not firing."""


def clean(obj: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


def js_data(key: str, obj: Any) -> str:
    """A script that registers ``obj`` under ``key``; '<' is escaped so no text can end a script element."""
    text = json.dumps(clean(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"BROWSE.put({json.dumps(key)},{text});\n"


def levels(window: list[float], fmax: float) -> tuple[int, str]:
    """(first in-context index, shading string) of a window whose missing entries are negative."""
    valid = [i for i, v in enumerate(window) if v >= 0]
    if not valid:
        return 0, ""
    lo, hi = valid[0], valid[-1] + 1
    chars = []
    for v in window[lo:hi]:
        level = 0 if v <= 0 or fmax <= 0 else min(63, max(1, round(63 * v / fmax)))
        chars.append(LEVELS[level])
    return lo, "".join(chars)


class SiteWriter:
    """Writes a site into a scratch folder next to ``out`` and swaps it in whole when done."""

    def __init__(self, out: Path) -> None:
        self.out = out
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SITE_MARKER).exists())):
            raise PipelineError(f"{out} exists and is not a feature browser site: choose an empty or new --out")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = out.parent / f".{out.name}.building-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.bytes = 0

    def __enter__(self) -> SiteWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def put(self, rel: str, obj: Any) -> None:
        """Write data file ``rel`` (a path under the site root, also its key)."""
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = js_data(rel, obj).encode()
        path.write_bytes(data)
        self.bytes += len(data)

    def finish(self) -> Path:
        """Add the app, replace any previous site at ``out``; returns the site's index.html."""
        static = resources.files("pipeline.browse") / "static"
        for rel in STATIC_FILES:
            dest = self.tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = (static / rel.split("/")[-1]).read_bytes()
            dest.write_bytes(data)
            self.bytes += len(data)
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        log.info("wrote %s (%.1f MB)", self.out, self.bytes / 1e6)
        return self.out / "index.html"
