"""Random kill -9 trials of `pipeline harvest` and `pipeline fit` on the tiny Gemma-2: each trial kills the real
command at a random moment, reruns the exact command until it exits 0, and compares the result bit for bit with an
uninterrupted run.

    python -m benchmarks.crash_trials --trials 10 [--out crash-trials.json]     (or `make crash-trials`)

Prints "harvest: k/N identical" and "fit: k/N identical", and writes every trial (kill time, reruns, verdict) as
JSON. The fit trials train on the uninterrupted harvest's store.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from safetensors.numpy import load_file

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
MAX_RERUNS = 3
"""Reruns of the exact command after the kill; a trial that still fails is counted as not identical."""

HARVEST_ARGS = ["--layer", "2", "--tokens", "6000", "--ctx", "32", "--chunk-rows", "512", "--batch-size", "2"]
FIT_ARGS = ["--variant", "baseline", "--variant", "hier", "--batch-size", "64", "--tokens", str(64 * 200),
            "--log-every", "10", "--checkpoint-every", "15", "--shuffle-rows", "2048"]


def _run(args: list[str]) -> tuple[int, float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return done.returncode, time.perf_counter() - start, done.stderr


def _killed_run(args: list[str], after: float) -> bool:
    """Start the command and SIGKILL it ``after`` seconds later; whether it was still running then."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a store, by name."""
    group = zarr.open_group(str(path), mode="r")
    return {name: arr[...] for name, arr in group.arrays()} | {
        f"{g}/{name}": arr[...] for g, sub in group.groups() for name, arr in sub.arrays()}


def run_weights(out: Path) -> dict[str, np.ndarray]:
    """Every SAE's weights (and its metric log, which a resume must not gap or repeat) under a fit's --out."""
    found = {}
    for weights in sorted(out.glob("*/sae.safetensors")):
        for key, value in load_file(str(weights)).items():
            found[f"{weights.parent.name}/{key}"] = value
        found[f"{weights.parent.name}/steps"] = np.array(
            [json.loads(line)["step"] for line in (weights.parent / "metrics.jsonl").read_text().splitlines()])
    return found


def identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and len(a) > 0 and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a)


def trial(args: list[str], target: Path, reference: dict[str, np.ndarray], reference_seconds: float,
          rng: random.Random, read) -> dict:
    """One trial: kill at a random moment of the run (within the uninterrupted run's time, start-up included),
    rerun the exact command until it exits 0."""
    kill_after = rng.uniform(0.15, 0.85) * reference_seconds
    killed = _killed_run(args, kill_after)
    reruns, code, err = 0, None, ""
    while reruns < MAX_RERUNS and code != 0:
        code, _, err = _run(args)
        reruns += 1
    same = code == 0 and identical(read(target), reference)
    if code != 0:
        log.warning("%s: the rerun failed: %s", target, err.strip().splitlines()[-1:] or err)
    return {"kill_after_s": round(kill_after, 3), "killed_while_running": killed, "reruns": reruns,
            "exit": code, "identical": same}


def crash_trials(n: int, workdir: Path, seed: int = 0) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_model import KJV, save_tiny_model

    rng = random.Random(seed)
    model = save_tiny_model(workdir / "tiny-gemma2")
    harvest = ["harvest", "--model", str(model), "--dataset", str(KJV), *HARVEST_ARGS, "--store"]
    reference_store = workdir / "reference.zarr"
    code, harvest_seconds, err = _run([*harvest, str(reference_store)])
    if code != 0:
        raise RuntimeError(f"the uninterrupted harvest failed: {err}")
    reference = store_arrays(reference_store)
    results: dict = {"trials": n, "harvest_args": HARVEST_ARGS, "fit_args": FIT_ARGS, "harvest": [], "fit": []}
    for i in range(n):
        store = workdir / f"harvest-{i}.zarr"
        results["harvest"].append(trial([*harvest, str(store)], store, reference, harvest_seconds, rng,
                                        store_arrays))
        log.info("harvest trial %d: %s", i, results["harvest"][-1])

    fit = ["fit", "--store", str(reference_store), *FIT_ARGS, "--out"]
    code, fit_seconds, err = _run([*fit, str(workdir / "reference-runs")])
    if code != 0:
        raise RuntimeError(f"the uninterrupted fit failed: {err}")
    reference = run_weights(workdir / "reference-runs")
    for i in range(n):
        out = workdir / f"fit-{i}"
        results["fit"].append(trial([*fit, str(out)], out, reference, fit_seconds, rng, run_weights))
        log.info("fit trial %d: %s", i, results["fit"][-1])
    for stage in ("harvest", "fit"):
        results[f"{stage}_identical"] = sum(t["identical"] for t in results[stage])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="trials of each of harvest and fit")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    parser.add_argument("--out", default="crash-trials.json", help="where to write the trials as JSON")
    parser.add_argument("--workdir", help="keep the stores and runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with tempfile.TemporaryDirectory(prefix="crash-trials-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = crash_trials(args.trials, workdir, args.seed)
    Path(args.out).write_text(json.dumps(results, indent=2))
    for stage in ("harvest", "fit"):
        killed = sum(t["killed_while_running"] for t in results[stage])
        sys.stdout.write(f"{stage}: {results[f'{stage}_identical']}/{args.trials} identical "
                         f"({killed} killed while running)\n")
    return 0 if all(results[f"{s}_identical"] == args.trials for s in ("harvest", "fit")) else 1


if __name__ == "__main__":
    sys.exit(main())
