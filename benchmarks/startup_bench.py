"""`pipeline --help` start-up against `python -c pass` (the interpreter alone), in fresh processes: what every
command, and every test that runs one, pays before it does anything; and which of torch, zarr and matplotlib the
help loaded (none should: the commands import their stages when they run)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from benchmarks.common import BenchReport, Figure

STARTS = 10
HEAVY = ("torch", "zarr", "matplotlib", "transformers", "datasets", "sae_lens")
PROBE = ("import sys, json\nsys.argv = ['pipeline', '--help']\nfrom pipeline.cli import main\ntry:\n    main()\n"
         f"except SystemExit:\n    pass\nsys.stderr.write(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")


def _seconds(args: list[str], starts: int) -> float:
    times = []
    for _ in range(starts):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loaded_by_help() -> list[str]:
    """The heavy libraries `pipeline --help` imports."""
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True)
    return json.loads(out.stderr.strip().splitlines()[-1])


def run(report: BenchReport, starts: int = STARTS, warm: int = 2) -> None:
    for _ in range(warm):  # warm the page cache alike
        _seconds([sys.executable, "-c", "pass"], 1)
        _seconds([sys.executable, "-m", "pipeline", "--help"], 1)
    bare = _seconds([sys.executable, "-c", "pass"], starts)
    helped = _seconds([sys.executable, "-m", "pipeline", "--help"], starts)
    heavy = loaded_by_help()
    report.add(Figure("`pipeline --help` start-up", 1 / helped, 1 / bare, "starts/s", "`python -c pass`",
                      note=f"median of {starts} fresh processes each; {helped:.2f} s against {bare:.2f} s; heavy "
                           f"libraries it loaded: {', '.join(heavy) or 'none'}"))
