"""Opening a sealed store against opening the same store unsealed, at the paper's size (10M rows in chunks of 4,096:
2,442 chunks per per-row array; rows 8 wide, so the bench's disk use stays small): the manifest's cost at every open
(its digest, the metadata documents against it, one listing per array). Target: within 5% (issue 20)."""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import BenchReport, Figure
from benchmarks.store_bench import write_bench_store
from store.reader import open_store

log = logging.getLogger(__name__)

ROWS, WIDTH, CHUNK, OPENS = 10_000_000, 8, 4096, 100


def _open_once(path: Path, allow_unsealed: bool) -> tuple[float, float]:
    """Seconds of an open, and of the background listing of stray and missing chunks it starts (awaited after the
    open's clock stops, as fit and evaluate await it before their first read)."""
    start = time.perf_counter()
    store = open_store(str(path), allow_unsealed=allow_unsealed)
    opened = time.perf_counter()
    if store.chunk_set is not None:
        store.chunk_set.result()
    return opened - start, time.perf_counter() - opened


def _interleaved(sealed: Path, unsealed: Path, opens: int) -> tuple[float, float, float]:
    """Median seconds of a sealed open, of its listing, and of an unsealed open, the two opens alternating (an open
    takes milliseconds: run one after the other, a drift of the machine between the runs decided the ratio, which
    read anywhere from 0.7 to 1.2 on the same code)."""
    sealed_opens, listings, unsealed_opens = [], [], []
    for _ in range(opens):
        opened, listed = _open_once(sealed, False)
        sealed_opens.append(opened)
        listings.append(listed)
        unsealed_opens.append(_open_once(unsealed, True)[0])
    return statistics.median(sealed_opens), statistics.median(listings), statistics.median(unsealed_opens)


def run(report: BenchReport, workdir: str | None = None, rows: int = ROWS, opens: int = OPENS) -> None:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-seal-") as tmp:
        sealed = Path(tmp) / "sealed.zarr"
        raw = np.random.default_rng(0).integers(0, 2**15, size=(rows, WIDTH), dtype=np.uint16)
        log.info("seal bench: writing %d rows in chunks of %d", rows, CHUNK)
        write_bench_store(str(sealed), raw, CHUNK, batch=65536)
        unsealed = Path(tmp) / "unsealed.zarr"
        shutil.copytree(sealed, unsealed)
        root = json.loads((unsealed / "zarr.json").read_text())
        root["attributes"].update(manifest_sha256=None, format_version=1)
        (unsealed / "zarr.json").write_text(json.dumps(root))
        (unsealed / "manifest.json").unlink()
        _interleaved(sealed, unsealed, opens)  # warm the page cache alike
        with_seal, listing, without = _interleaved(sealed, unsealed, opens)
        chunks = -(-rows // CHUNK)
        report.add(Figure(f"opening a sealed store ({rows:,} rows, {chunks:,} chunks per array)", 1 / with_seal,
                          1 / without, "opens/s", "the same store unsealed (no manifest checked)", target=0.95,
                          note=f"median of {opens} opens each, alternating, warm page cache"))
        report.add(Figure("the listing of stray and missing chunks an open starts (awaited before the first read)",
                          1 / (with_seal + listing), 1 / without, "opens/s", "the unsealed open, as above",
                          note="one directory listing per array, off the open's path"))
