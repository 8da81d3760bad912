#!/usr/bin/env bash
# The one command of a GPU run (docs/gpu.md "How the figures were taken"): on a lent GPU machine with no network and
# no package registry, it installs the carried wheels (.whl/, the dependencies its image lacks), then runs, each step
# under its own `timeout` and within one overall budget, writing every result under $OUT:
#   env          nvidia-smi, the versions of torch/CUDA and of every package the stages import -> env.txt
#   sparse-check the pair path of fit/sparse.py against the dense computation ON CUDA (forward, every gradient,
#                TopK and ReLU selections, rows with no active latent) -> cuda-sparse-check.json
#   sparse-bench benchmarks.sparse_bench --device cuda (pair step vs dense step, dense vs floor loop)
#                -> sparse-bench.json
#   model        benchmarks.random_model: a random-weight model of Gemma-2-2B's shape (bf16) and a repeated-KJV
#                corpus; on failure Gemma-3-270M's shape -> model.json
#   gpu-check    benchmarks.gpu_check on that model: harvest, fit (hier and topk, 1 and 12 SAEs, fp32 and bf16),
#                evaluate -> gpu-check.json
#   sweep        the matched-sparsity stages through the CLI as a user runs them, on that model: `pipeline harvest`,
#                `pipeline experiment --sweep` (every architecture at its five default sparsities, SWEEP_SEEDS
#                seeds, one pass) with KL and absorption over the tokenizer's whole alphabetic vocabulary (the GPU
#                default), `pipeline report` -> sweep-report/ (report.md, report.json, claims.json, the plots) and
#                sweep-runs.json (each SAE's training seconds, L0 and figures)
# plus device-run.log (everything printed) and steps.tsv (each step's exit code and seconds). A step that fails or
# times out is recorded and the next one runs all the same. Weights are random: throughput figures only.
#
# On the device (the lead's `run` call): bash benchmarks/device_run.sh
# Some steps only: DEVICE_RUN_ONLY="wheels env model sweep" bash benchmarks/device_run.sh
# Dry run on a CPU machine, tiny sizes: DEVICE_RUN_TINY=1 DEVICE_RUN_NO_WHEELS=1 OUT=/tmp/out PYTHON=.venv/bin/python \
#   bash benchmarks/device_run.sh

set -u -o pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
PY=${PYTHON:-python3}
TINY=${DEVICE_RUN_TINY:-0}
BUDGET=${DEVICE_RUN_BUDGET:-450}   # seconds for everything; the lead's run gives the command a little more
WORK=${DEVICE_RUN_WORK:-/tmp/device-run}
rm -rf "$WORK" && mkdir -p "$WORK"
START=$SECONDS
STEPS=$OUT/steps.tsv
printf 'step\trc\tseconds\n' > "$STEPS"

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  HF_HOME="$WORK/hf" MPLBACKEND=Agg

if [ "$TINY" = 1 ]; then
  SHAPE=tiny LAYER=2 TOKENS=6000 CTX=64 FIT_STEPS=4 FIT_BATCH=256 WARMUP=1 SAES="--saes 1 --saes 3" KL=2 K=16
  SPARSE_ARGS="--quick" DEVICE=${DEVICE_RUN_DEVICE:-cpu}
  SWEEP_ARGS="--seeds 1 --tokens 20000 --batch-size 256 --kl-contexts 2 --sweep-l1 1 --sweep-l1 4 --sweep-k 16
    --sweep-k 64 --absorption-words 300"
else
  SHAPE=gemma-2-2b LAYER=19 TOKENS=200000 CTX=128 FIT_STEPS=200 FIT_BATCH=2048 WARMUP=10 SAES="--saes 1 --saes 12"
  KL=64 K=64 SPARSE_ARGS="" DEVICE=${DEVICE_RUN_DEVICE:-cuda}
  SWEEP_ARGS="--seeds ${SWEEP_SEEDS:-3} --tokens ${SWEEP_TOKENS:-1000000} --kl-contexts 8"
fi

left() { echo $((BUDGET - (SECONDS - START))); }

# step NAME CAP CMD...: runs CMD under `timeout` (CAP seconds, or what is left of the budget less RESERVE if
# that is less), logs and records its exit code; never stops the script.
RESERVE=0
step() {
  local name=$1 cap=$2; shift 2
  if [ -n "${DEVICE_RUN_ONLY:-}" ] && [[ " $DEVICE_RUN_ONLY " != *" $name "* ]]; then
    printf '%s\tnot asked for\t0\n' "$name" >> "$STEPS"
    return 0
  fi
  local limit=$(( $(left) - RESERVE ))
  [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -lt 10 ]; then
    echo "=== $name: skipped, $(left) s of the budget left"
    printf '%s\tskipped\t0\n' "$name" >> "$STEPS"
    return 0
  fi
  echo "=== $name (limit ${limit} s, $(left) s of the budget left) $(date -u +%FT%TZ)"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@"
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (timed out)')"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$STEPS"
  return 0
}

# The Python of the env and sparse-check steps, as files (so that `timeout` can run them).
cat > "$WORK/env_check.py" <<'EOF'
import importlib
import importlib.metadata as md
import platform

import torch

print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version(), "cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.1f} GiB", f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs")
print("tf32 matmul", torch.backends.cuda.matmul.allow_tf32)
for name in ("transformers", "huggingface_hub", "tokenizers", "safetensors", "datasets", "zarr", "numcodecs",
             "google_crc32c", "donfig", "zstandard", "dill", "multiprocess", "fsspec", "pyarrow", "pandas", "numpy",
             "scipy", "click", "rich", "matplotlib", "xxhash"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:16} {md.version(name.replace('_', '-'))} {getattr(mod, '__file__', '')}")
    except Exception as exc:  # a report of what is there, not a check that stops
        print(f"{name:16} MISSING OR BROKEN: {type(exc).__name__}: {exc}")
for name in ("store", "harvest", "fit", "pipeline", "pipeline.cli", "benchmarks", "benchmarks.gpu_check",
             "benchmarks.sparse_bench", "fit.sparse"):
    try:
        importlib.import_module(name)
        print(f"import {name}: ok")
    except Exception as exc:
        print(f"import {name}: FAILED {type(exc).__name__}: {exc}")
EOF
cat > "$WORK/sparse_check.py" <<'EOF'
"""fit/sparse.py's pair path against the dense computation of the same SAE on one device: reconstruction, loss
and the gradient of every parameter (float32), TopK (k of F per row) and ReLU (rows with no active latent)."""
import json
import sys
import time

import torch

from fit import functional as fn
from fit import sparse as sp

out, device = sys.argv[1], torch.device(sys.argv[2] if sys.argv[2] != "cuda" or torch.cuda.is_available() else "cpu")
cases = [("topk", 512, 256, 1024, 32), ("topk", 7, 64, 128, 128), ("relu", 1024, 512, 2048, None)]
if sys.argv[3] != "1":  # the paper's shapes too (seconds on a GPU, minutes on a CPU)
    cases += [("topk", 2048, 2304, 9216, 64), ("relu", 2048, 2304, 2304, None)]
results = []
for kind, B, D, F, k in cases:
    g = torch.Generator().manual_seed(B + F)
    x = torch.randn(B, D, generator=g)
    x[0] = 0  # with the negative biases below, no latent is active on this row (ReLU)
    W_enc = torch.randn(D, F, generator=g) / D**0.5
    # Negative biases: the zero row has no active latent; ReLU's are deeper, for an L0 of a few % of F.
    b_enc = -torch.rand(F, generator=g) * 0.5 - (0.05 if kind == "topk" else 1.6)
    W_dec = fn.unit_rows(torch.randn(F, D, generator=g))
    b_dec = torch.randn(D, generator=g) * 0.1
    xd = x.to(device)
    got = {}
    for path in ("pairs", "dense"):
        params = [p.to(device).clone().requires_grad_() for p in (W_enc, b_enc, W_dec, b_dec)]
        t = time.perf_counter()
        if path == "pairs":
            select = (lambda pre, k=k: sp.topk_pairs(pre, k)) if kind == "topk" else sp.relu_pairs
            pairs = sp.encode_pairs(xd, params[0], params[1], select)
            x_hat = sp.decode_pairs(pairs, params[2], params[3])
            l0 = sp.l0(pairs).mean().item()
        else:
            pre = xd @ params[0] + params[1]
            if kind == "topk":
                idx = pre.detach().topk(k, dim=-1).indices
                z = torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx).clamp_min(0))
            else:
                z = torch.relu(pre)
            x_hat = z @ params[2] + params[3]
            l0 = (z != 0).sum(-1).float().mean().item()
        loss = (x_hat - xd).pow(2).sum(-1).mean()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        got[path] = (x_hat.detach(), loss.item(), [p.grad for p in params], l0, time.perf_counter() - t)
    (xp, lp, gp, l0p, _), (xq, lq, gq, l0q, _) = got["pairs"], got["dense"]
    rel = [((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in zip(gp, gq, strict=True)]
    rec = ((xp - xq).abs().max() / xq.abs().max()).item()
    ok = max([*rel, rec]) < 1e-4 and abs(lp - lq) <= 1e-5 * abs(lq) and l0p == l0q
    results.append({"kind": kind, "B": B, "D": D, "F": F, "k": k, "l0": l0p, "loss": [lp, lq],
                    "x_hat_rel_err": rec,
                    "grad_rel_err": dict(zip(["W_enc", "b_enc", "W_dec", "b_dec"], rel, strict=True)),
                    "ok": ok})
    print(("OK  " if ok else "FAIL"), kind, f"B={B} D={D} F={F} k={k} L0={l0p:.1f}", f"x_hat {rec:.1e}",
          "grads", " ".join(f"{r:.1e}" for r in rel), flush=True)
summary = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
           "torch": torch.__version__, "all_ok": all(r["ok"] for r in results), "cases": results}
with open(out, "w") as f:
    json.dump(summary, f, indent=2)
print("all equal within float32 tolerance:", summary["all_ok"])
sys.exit(0 if summary["all_ok"] else 1)
EOF

main() {
# The image lacks zarr, numcodecs, google-crc32c, donfig, datasets, dill, multiprocess and zstandard; fsspec travels
# too, pinned to the version datasets accepts (the image's may be newer).
if [ "${DEVICE_RUN_NO_WHEELS:-0}" != 1 ]; then
  step wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .whl/*.whl
  export PYTHONPATH="$WORK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi

step env 60 bash -c '{ nvidia-smi || echo "(no nvidia-smi)"; "$0" "$1"; } 2>&1 | tee "$2"' "$PY" \
  "$WORK/env_check.py" "$OUT/env.txt"
step sparse-check 45 "$PY" "$WORK/sparse_check.py" "$OUT/cuda-sparse-check.json" "$DEVICE" "$TINY"

# B's bench: more timed steps where its CLI takes them (a GPU step is milliseconds; a CPU-sized count is noise).
if timeout 30 "$PY" -m benchmarks.sparse_bench --help 2>/dev/null | grep -q -- "--steps"; then
  [ "$TINY" = 1 ] || SPARSE_ARGS="$SPARSE_ARGS --steps 20"
fi
RESERVE=240  # what the model and gpu-check need at least
# shellcheck disable=SC2086
step sparse-bench 75 "$PY" -m benchmarks.sparse_bench --device "$DEVICE" $SPARSE_ARGS --out "$OUT/sparse-bench.json"
RESERVE=0

MODEL=$WORK/model CORPUS=$WORK/corpus.jsonl
step model 150 "$PY" -m benchmarks.random_model "$MODEL" --shape "$SHAPE" --device "$DEVICE" --corpus "$CORPUS" \
  --corpus-tokens "$((TOKENS * 11 / 10))" --info "$OUT/model.json"
if [ ! -f "$OUT/model.json" ] && [ "$TINY" != 1 ]; then
  echo "the Gemma-2-2B-shaped model was not built: falling back to Gemma-3-270M's shape, layer 13"
  SHAPE=gemma-3-270m LAYER=13
  rm -rf "$MODEL"
  step model-fallback 90 "$PY" -m benchmarks.random_model "$MODEL" --shape "$SHAPE" --device "$DEVICE" \
    --corpus "$CORPUS" --corpus-tokens "$((TOKENS * 11 / 10))" --info "$OUT/model.json"
fi

# shellcheck disable=SC2086
step gpu-check 400 "$PY" -m benchmarks.gpu_check --model "$MODEL" --dataset "$CORPUS" --layer "$LAYER" \
  --tokens "$TOKENS" --ctx "$CTX" --fit-steps "$FIT_STEPS" --fit-batch "$FIT_BATCH" --warmup-steps "$WARMUP" $SAES \
  --variant hier --variant topk --k "$K" --kl-contexts "$KL" --device "$DEVICE" --out "$OUT/gpu-check.json" \
  --workdir "$WORK"

# The sweep as a user runs it (the CLI, a bare device option): harvest, one pass of every architecture at every
# sparsity, evaluation with KL and absorption, the report.
cat > "$WORK/sweep.sh" <<'EOF'
set -eu
PY=$1 MODEL=$2 CORPUS=$3 LAYER=$4 TOKENS=$5 CTX=$6 DEVICE=$7 WORK=$8 OUT=$9; shift 9
"$PY" -m pipeline harvest --model "$MODEL" --dataset "$CORPUS" --layer "$LAYER" --tokens "$TOKENS" --ctx "$CTX" \
  --device "$DEVICE" --store "$WORK/sweep-store.zarr"
"$PY" -m pipeline experiment --store "$WORK/sweep-store.zarr" --out "$WORK/sweep" --sweep --device "$DEVICE" \
  --absorption "$@"
"$PY" -m pipeline report "$WORK/sweep" --out "$OUT/sweep-report"
"$PY" - "$WORK/sweep" "$OUT/sweep-runs.json" <<'PYEOF'
import json, sys
from pathlib import Path
runs = []
for d in sorted(p for p in Path(sys.argv[1]).iterdir() if (p / "eval.json").exists()):
    ev, tr = json.loads((d / "eval.json").read_text()), json.loads((d / "training.json").read_text())
    ab = ev.get("absorption") or {}
    runs.append({"name": d.name, "training": tr, "absorption_letters": len(ab.get("letters", [])),
                 "absorption": ab.get("mean_full_absorption"),
                 **{k: ev.get(k) for k in ("l0", "mse", "explained_variance", "kl", "ce_recovered")}})
Path(sys.argv[2]).write_text(json.dumps(runs, indent=1))
print(len(runs), "runs ->", sys.argv[2])
PYEOF
EOF
# shellcheck disable=SC2086
step sweep 420 bash "$WORK/sweep.sh" "$PY" "$MODEL" "$CORPUS" "$LAYER" "$TOKENS" "$CTX" "$DEVICE" "$WORK" "$OUT" \
  $SWEEP_ARGS

echo "=== done in $((SECONDS - START)) s (shape $SHAPE, layer $LAYER); steps:"
cat "$STEPS"
ls -la "$OUT"
}

# Everything printed goes to the log as well; a pipeline, so the log is whole when the script returns.
main 2>&1 | tee -a "$OUT/device-run.log"
