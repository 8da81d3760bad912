"""SAEBench's own absorption eval beside ours, on the same exported SAEs (`make absorption-reference`).

For each run directory given, its SAELens export (RUN/saelens/) is scored twice on the same model, layer and
word list: by sae-bench 0.6.0's code (``sae_bench/evals/absorption``, with its default probe, k-sparse and
absorption settings) and by ``pipeline evaluate --absorption`` with that word list. The per-letter and mean
figures are written side by side as JSON and a markdown table; docs/absorption-validation.md records a run and
explains the differences.

Two halves in two environments: sae-bench pins sae-lens, transformer-lens and transformers versions of its own,
so it lives in its own venv (.sb-venv, built by the Makefile target) and runs the ``saebench`` subcommand in a
subprocess; ``compare`` (the default) runs in the project venv. This module's top level imports only the standard
library so that both can load it, and it uses argparse rather than click for the same reason.

What is matched, and how. The word list is written once and given to both. SAEBench's probe stage
(``common.create_and_train_probe``) runs on that list instead of the tokenizer's whole alphabetic vocabulary, and
its absorption stage draws its in-context examples from it (SAEBench would draw them from its vocabulary).
SAEBench draws its train/test split and its in-context examples from Python's global ``random``; here the split
comes from a ``random.Random(seed)`` and the prompts from a second ``random.Random(seed)``, which are the draws
ours makes, so both tools see the same train and test words in the same prompts. Every other draw (probe
initialisation and batch order, the k-sparse probes, the absorption prompts) is SAEBench's own and differs.
SAEBench's ``run_eval`` loads the model by name from the hub and stops when fewer than 20 letters qualify; here
its stages (``run_k_sparse_probing_experiment``, ``run_feature_absortion_experiment``, ``_aggregate_results_df``)
are called as ``run_eval`` calls them, on the local model, and the figures are kept whatever the count.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("absorption_reference")

REPO = Path(__file__).resolve().parent.parent
LETTERS = "abcdefghijklmnopqrstuvwxyz"
DEFAULT_WORDS = 2000
"""Words on a 2-core CPU (our metric's CPU default): SAEBench's probe stage takes minutes, not hours."""
TL_MODEL_NAME = "google/gemma-3-270m"
"""TransformerLens's name for the demo model: it picks the architecture; the weights come from --model."""


# ---------------------------------------------------------------------------------------------------------------
# SAEBench half (runs in .sb-venv)
# ---------------------------------------------------------------------------------------------------------------


def run_saebench(model_dir: str, tl_name: str, layer: int, words_file: Path, seed: int,
                 saes: list[tuple[str, str]], work: Path, out: Path) -> dict:
    """SAEBench's absorption stages on each (name, SAELens export folder); the figures as ``run_eval`` aggregates
    them, per letter, plus the probe's test figures and the prompts' token lengths."""
    import functools
    import hashlib
    import random

    import numpy as np
    import torch
    from sae_bench.evals.absorption import common, feature_absorption, probing, prompting
    from sae_bench.evals.absorption import main as sb_main
    from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
    from sae_bench.evals.absorption.feature_absorption import run_feature_absortion_experiment
    from sae_bench.evals.absorption.k_sparse_probing import run_k_sparse_probing_experiment
    from sae_bench.evals.absorption.prompting import first_letter_formatter
    from sae_bench.sae_bench_utils import general_utils
    from sae_lens import SAE
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    words = [w for w in words_file.read_text().split("\n") if w.strip()]
    config = AbsorptionEvalConfig(model_name=tl_name, random_seed=seed)
    device = "cpu" if not torch.cuda.is_available() else "cuda"
    probes_dir, sparse_dir, absorption_dir = work / "probes", work / "k_sparse_probing", work / "feature_absorption"
    timing: dict[str, float] = {}

    t0 = time.perf_counter()
    hf_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = HookedTransformer.from_pretrained_no_processing(tl_name, hf_model=hf_model, tokenizer=tokenizer,
                                                            device=device, dtype=torch.float32)
    del hf_model
    timing["model_load_seconds"] = time.perf_counter() - t0
    # SAEBench reads only the residual after `layer`: stopping the forward there (TransformerLens's stop_at_layer)
    # leaves that activation as it is and skips the later layers and the 262k-token unembedding, most of the cost.
    model.run_with_cache = functools.partial(model.run_with_cache, stop_at_layer=layer + 1)

    layer_dir = probes_dir / model.cfg.model_name / f"layer_{layer}"
    # SAEBench keeps a probe per (model, layer) in its probes folder; ours is also keyed by the words and the seed
    key = hashlib.sha256(json.dumps([words, seed, layer]).encode()).hexdigest()
    # run_eval's seeding (general_utils.setup_environment does not seed), then the two draws ours makes (module
    # docstring): the split from one Random(seed), the in-context examples from another.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if not (layer_dir / "probe.pth").exists() or (work / "probe.key").read_text() != key:
        probing.random = random.Random(seed)
        prompting.random = random.Random(seed)
        t0 = time.perf_counter()
        # common.train_and_save_probes with our word list for get_alpha_tokens(model.tokenizer)
        common.create_and_train_probe(
            model=model, formatter=first_letter_formatter(), hook_point=f"blocks.{layer}.hook_resid_post",
            probes_dir=probes_dir, vocab=words, batch_size=64, num_epochs=50, lr=1e-2, device=torch.device(device),
            base_template=config.prompt_template, pos_idx=config.prompt_token_pos)
        timing["probe_seconds"] = time.perf_counter() - t0
        (work / "probe.key").write_text(key)
        (work / "probe-timing.json").write_text(json.dumps(timing))
        probing.random = random
        prompting.random = random
    else:
        timing["probe_reused"] = json.loads((work / "probe-timing.json").read_text())
    # the absorption stage's in-context examples come from the same words
    feature_absorption.get_alpha_tokens = lambda _tokenizer: words

    probe = common.load_probe(model.cfg.model_name, layer, probes_dir, torch.float32, device)
    data = np.load(layer_dir / "data.npz")
    with torch.no_grad():
        pred = probe(torch.from_numpy(data["X_test"]).to(device)).argmax(dim=-1).cpu().numpy()
    np.save(work / "probe_weight.npy", probe.weights.detach().float().cpu().numpy())
    probe_info = {
        "test_accuracy": float((pred == data["y_test"]).mean()),
        "train_words": len(data["y_train"]), "test_words": len(data["y_test"]),
        "prompt_token_pos": config.prompt_token_pos, "probe_dir": str(layer_dir),
        "prompt_token_lengths": _token_lengths(model, layer_dir),
    }

    results = {}
    for name, path in saes:
        t0 = time.perf_counter()
        loaded = SAE.load_from_disk(path, device=device)
        sae_id, sae, _ = general_utils.load_and_format_sae(name, loaded, device)
        sae = sae.to(device=device, dtype=torch.float32)
        sae_name = f"{name}_{sae_id}"
        ks = run_k_sparse_probing_experiment(
            model=model, sae=sae, layer=layer, sae_name=sae_name, force=True, max_k_value=config.max_k_value,
            f1_jump_threshold=config.f1_jump_threshold, prompt_template=config.prompt_template,
            prompt_token_pos=config.prompt_token_pos, device=device,
            k_sparse_probe_l1_decay=config.k_sparse_probe_l1_decay,
            k_sparse_probe_batch_size=config.k_sparse_probe_batch_size,
            k_sparse_probe_num_epochs=config.k_sparse_probe_num_epochs,
            eval_batch_size=config.eval_k_sparse_probe_batch_size,
            precalc_k_sparse_probe_sae_acts=config.precalc_k_sparse_probe_sae_acts,
            experiment_dir=sparse_dir, probes_dir=probes_dir)
        raw = run_feature_absortion_experiment(
            model=model, sae=sae, layer=layer, sae_name=sae_name, force=True, max_k_value=config.max_k_value,
            feature_split_f1_jump_threshold=config.f1_jump_threshold, prompt_template=config.prompt_template,
            prompt_token_pos=config.prompt_token_pos, batch_size=config.llm_batch_size, device=device,
            experiment_dir=absorption_dir, sparse_probing_experiment_dir=sparse_dir, probes_dir=probes_dir)
        results[name] = _saebench_figures(sb_main._aggregate_results_df(raw), ks, config)
        results[name]["sae_l0_test"] = _sae_l0(sae, data["X_test"], device)
        results[name]["seconds"] = time.perf_counter() - t0
        results[name]["export"] = path
        log.info("SAEBench %s: %s", name, json.dumps(results[name]["mean"]))
    report = {"settings": {k: v for k, v in vars(config).items() if not k.startswith("_")}, "words": len(words),
              "layer": layer, "model": model_dir, "tl_name": tl_name, "seed": seed, "device": device,
              "timing": timing, "probe": probe_info, "saes": results}
    out.write_text(json.dumps(report, indent=1, default=_jsonable))
    return report


def _saebench_figures(agg, ks, config) -> dict:
    """run_eval's aggregation (qualifying letters: probe F1 above min_GT_probe_f1), kept per letter for every
    letter, with the k-sparse figures beside it."""
    letters = []
    for _, k_row in ks.iterrows():
        letter = k_row["letter"]
        split = [int(f) for f in k_row["split_feats"]]
        row = {"letter": letter, "probe_f1": float(k_row["f1_probe"]),
               "probe_precision": float(k_row["precision_probe"]), "probe_recall": float(k_row["recall_probe"]),
               "qualifies": bool(k_row["f1_probe"] > config.min_GT_probe_f1), "main_latents": split,
               "main_latents_f1": float(k_row[f"f1_sparse_sae_{len(split)}"]) if split else None,
               "f1_by_k": [float(k_row[f"f1_sparse_sae_{k}"]) for k in range(1, config.max_k_value + 1)]}
        a = agg[agg["letter"] == letter]
        if len(a):
            a = a.iloc[0]
            row.update(probe_true_positives=int(a["num_probe_true_positives"]),
                       full_absorptions=int(a["num_full_absorption"]),
                       full_absorption_rate=float(a["full_absorption_rate"]),
                       absorption_fraction=float(a["mean_absorption_fraction"]))
        letters.append(row)
    q = [r for r in letters if r["qualifies"] and "full_absorption_rate" in r]

    def stats(key):
        vals = [float(r[key]) for r in q]
        return (statistics.mean(vals) if vals else None, statistics.stdev(vals) if len(vals) > 1 else None)

    (full, full_sd), (frac, frac_sd), (split, split_sd) = (stats("full_absorption_rate"),
                                                           stats("absorption_fraction"), _split_stats(q))
    return {"letters": letters, "qualifying": len(q), "enough_letters": len(q) >= config.min_feats_for_eval,
            "mean": {"mean_full_absorption_score": full, "mean_absorption_fraction_score": frac,
                     "mean_num_split_features": split, "std_dev_full_absorption_score": full_sd,
                     "std_dev_absorption_fraction_score": frac_sd, "std_dev_num_split_features": split_sd}}


def _split_stats(rows: list[dict]) -> tuple[float | None, float | None]:
    vals = [len(r["main_latents"]) for r in rows]
    return (statistics.mean(vals) if vals else None, statistics.stdev(vals) if len(vals) > 1 else None)


def _sae_l0(sae, x_test, device) -> float:
    import torch

    with torch.no_grad():
        z = sae.encode(torch.from_numpy(x_test).to(device))
    return float((z > 0).sum(dim=1).float().mean())


def _token_lengths(model, layer_dir: Path) -> dict[str, int]:
    """How many prompts have each token length: SAEBench reads position -6 of right-padded batches, which is the
    word only where every prompt of a batch has the same length."""
    import csv

    counts: dict[str, int] = {}
    for split in ("train", "test"):
        with open(layer_dir / f"{split}_df.csv", newline="") as f:
            for row in csv.DictReader(f):
                n = str(model.to_tokens(row["prompt"]).shape[1])
                counts[n] = counts.get(n, 0) + 1
    return counts


def _jsonable(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


# ---------------------------------------------------------------------------------------------------------------
# Comparison (runs in the project venv)
# ---------------------------------------------------------------------------------------------------------------


def choose_words(model_dir: str, n: int, seed: int) -> tuple[list[str], int]:
    """``n`` words of the tokenizer's alphabetic vocabulary drawn with ``seed``: what ``pipeline evaluate
    --absorption --absorption-words n`` uses."""
    from transformers import AutoTokenizer

    import pipeline.evaluate.absorption.vocab as vocab

    pool = vocab.alpha_words(AutoTokenizer.from_pretrained(model_dir))
    return vocab.subsample(pool, n, seed), len(pool)


def run_ours(run_dir: Path, words_file: Path, n_words: int, seed: int, cache: Path | None) -> dict:
    """``pipeline evaluate RUN --absorption`` with the word list, as a user would run it; its absorption record."""
    from fit.runs import RunDir

    cmd = [sys.executable, "-m", "pipeline", "evaluate", str(run_dir), "--no-kl", "--absorption",
           "--absorption-words-file", str(words_file), "--absorption-words", str(n_words),
           "--absorption-seed", str(seed)]
    if cache is not None:
        cmd += ["--absorption-cache", str(cache)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    record = json.loads(RunDir(run_dir).eval_path.read_text())["absorption"]
    record["wall_seconds"] = time.perf_counter() - t0
    return record


def share_residuals(store_url: str, words_file: Path, n_words: int, seed: int, sb_work: Path,
                    cache_dir: str | None) -> Path:
    """Build our probe cache from the prompt residuals SAEBench's probe stage computed (``--share-residuals``).

    Our cache build (``cache.load_or_build``) runs as it is, except that its LM is not loaded and each split's
    residuals are SAEBench's: the prompts are checked to be, string for string, the ones SAEBench ran. Our probe,
    k-sparse probes and rules then read the very activations SAEBench's read, so what differs is only the code
    after the LM; and on a 2-core CPU the prompts' LM passes, the bulk of the time, run once instead of twice."""
    import csv

    import numpy as np
    import torch

    import pipeline.evaluate.absorption.cache as cache
    from store.reader import open_store

    layer_dirs = list((sb_work / "probes").glob("*/layer_*"))
    if len(layer_dirs) != 1:
        raise SystemExit(f"expected one SAEBench probe folder under {sb_work / 'probes'}, found {len(layer_dirs)}")
    data = np.load(layer_dirs[0] / "data.npz")
    prompts = {}
    for split in ("train", "test"):
        with open(layer_dirs[0] / f"{split}_df.csv", newline="") as f:
            prompts[split] = [row["prompt"] for row in csv.DictReader(f)]
    calls = iter(("train", "test"))  # load_or_build asks for the train split's residuals, then the test split's

    def saebench_residuals(lm, tokenizer, meta, texts, position, device, batch, on_batch=None):
        split = next(calls)
        if list(texts) != prompts[split]:
            raise SystemExit(f"our {split} prompts are not SAEBench's: the residuals cannot be shared")
        return torch.from_numpy(data[f"X_{split}"]).float().to(device)

    store = open_store(store_url)
    cache.load_store_lm = lambda *args, **kwargs: None
    cache.residuals = saebench_residuals
    built = cache.load_or_build(store.meta, cache.cache_root(store_url, cache_dir), words=n_words,
                                words_file=str(words_file), seed=seed, device=torch.device("cpu"))
    return built.folder


def _evaluated(run, words_file: Path) -> dict | None:
    """The run's absorption record when eval.json already has one for this word list."""
    if not run.eval_path.exists():
        return None
    record = json.loads(run.eval_path.read_text()).get("absorption")
    if record and record.get("words_file") and Path(record["words_file"]).resolve() == words_file.resolve():
        return record
    return None


def compare(sb: dict, ours: dict[str, dict], sb_probe_weight=None) -> dict:
    """Per SAE: per letter and mean figures of both, and where they agree."""
    out = {}
    for name, theirs in sb["saes"].items():
        mine = ours.get(name)
        if mine is None:
            continue
        o_letters = {r["letter"]: r for r in mine["letters"]}
        o_excluded = {r["letter"]: r for r in mine["excluded_letters"]}
        rows = []
        for t in theirs["letters"]:
            o = o_letters.get(t["letter"])
            row = {"letter": t["letter"],
                   "probe_f1": [t["probe_f1"], (o or o_excluded.get(t["letter"], {})).get("probe_f1")],
                   "qualifies": [t["qualifies"], o is not None],
                   "main_latents": [t["main_latents"], o["main_latents"] if o else None],
                   "probe_true_positives": [t.get("probe_true_positives"), o["probe_true_positives"] if o else None],
                   "full_absorption_rate": [t.get("full_absorption_rate"), o["full_absorption_rate"] if o else None],
                   "absorption_fraction": [t.get("absorption_fraction"), o["absorption_fraction"] if o else None]}
            row["same_main_latents"] = o is not None and sorted(t["main_latents"]) == sorted(o["main_latents"])
            row["same_top_latent"] = o is not None and t["main_latents"][:1] == o["main_latents"][:1]
            rows.append(row)
        both = [r for r in rows if all(r["qualifies"])]

        def mean_both(key, side, both=both):
            vals = [r[key][side] for r in both if r[key][side] is not None]
            return statistics.mean(vals) if vals else None

        out[name] = {
            "letters": rows,
            "qualifying": [theirs["qualifying"], len(mine["letters"])],
            "qualifying_both": len(both),
            "same_main_latents": sum(r["same_main_latents"] for r in both),
            "same_top_latent": sum(r["same_top_latent"] for r in both),
            "enough_letters": [theirs["enough_letters"], mine["enough_letters"]],
            "mean_full_absorption": [theirs["mean"]["mean_full_absorption_score"], mine["mean_full_absorption"]],
            "mean_absorption_fraction": [theirs["mean"]["mean_absorption_fraction_score"],
                                         mine["mean_absorption_fraction"]],
            "mean_main_latents": [theirs["mean"]["mean_num_split_features"], mine["mean_main_latents"]],
            "both_mean_full_absorption": [mean_both("full_absorption_rate", 0), mean_both("full_absorption_rate", 1)],
            "both_mean_absorption_fraction": [mean_both("absorption_fraction", 0),
                                              mean_both("absorption_fraction", 1)],
            "probe_test_accuracy": [sb["probe"]["test_accuracy"], mine["probe_test_accuracy"]],
            "sae_l0": [theirs["sae_l0_test"], mine["sae_l0"]],
            "seconds": [theirs["seconds"], mine.get("wall_seconds")],
        }
    return out


def probe_agreement(sb_work: Path, ours_cache: Path) -> dict:
    """The two probes and the two tools' prompt activations, compared directly: per-letter cosine of the probe
    weights, and the largest difference between the residuals each read for the same train/test words."""
    import numpy as np
    import torch

    meta = json.loads((ours_cache / "meta.json").read_text())
    t = torch.load(ours_cache / "tensors.pt", map_location="cpu", weights_only=True)
    w_sb = torch.from_numpy(np.load(sb_work / "probe_weight.npy")).float()
    w_ours = t["probe_weight"].float()
    cos = torch.nn.functional.cosine_similarity(w_sb, w_ours, dim=1)
    out = {"probe_cos_by_letter": dict(zip(LETTERS, [round(float(c), 4) for c in cos], strict=True)),
           "probe_cos_mean": float(cos.mean())}
    layer_dirs = list((sb_work / "probes").glob("*/layer_*"))
    if len(layer_dirs) == 1:
        import csv

        data = np.load(layer_dirs[0] / "data.npz")
        for split in ("train", "test"):
            with open(layer_dirs[0] / f"{split}_df.csv", newline="") as f:
                sb_words = [row["token"] for row in csv.DictReader(f)]
            same_words = sb_words == meta[f"{split}_words"]
            out[f"{split}_same_words"] = same_words
            if same_words:
                a, b = torch.from_numpy(data[f"X_{split}"]).float(), t[f"acts_{split}"].float()
                rel = (a - b).norm(dim=1) / b.norm(dim=1)
                out[f"{split}_residual_rel_diff_max"] = float(rel.max())
                out[f"{split}_residual_rel_diff_median"] = float(rel.median())
    return out


def _f(v, digits=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pair(p, digits=3) -> str:
    return f"{_f(p[0], digits)} / {_f(p[1], digits)}"


def markdown(report: dict) -> str:
    lines = [f"# Absorption: SAEBench {report['saebench_version']} / ours", "",
             f"Model {report['model']}, layer {report['layer']}, {report['words']} words (of "
             f"{report['vocabulary_words']} alphabetic tokens, seed {report['seed']}); each cell is "
             "SAEBench / ours.", ""]
    agree = report.get("probe_agreement", {})
    if agree:
        lines += [f"Probe weights' cosine (SAEBench's vs ours), mean over letters: {agree['probe_cos_mean']:.3f}; "
                  f"same train/test words: {_f(agree.get('train_same_words'))}/{_f(agree.get('test_same_words'))}"
                  + (f"; residuals' largest relative difference {agree['test_residual_rel_diff_max']:.2e}"
                     if "test_residual_rel_diff_max" in agree else ""), ""]
    for name, c in report["comparison"].items():
        lines += [f"## {name}", "",
                  "| | SAEBench / ours |", "|---|---|",
                  f"| probe test accuracy | {_pair(c['probe_test_accuracy'])} |",
                  f"| SAE L0 on the test prompts | {_pair(c['sae_l0'], 1)} |",
                  f"| qualifying letters (probe F1 > 0.6) | {_pair(c['qualifying'])} (both: {c['qualifying_both']}) |",
                  f"| same main latents (letters qualifying in both) | {c['same_main_latents']} of "
                  f"{c['qualifying_both']} (same first main latent: {c['same_top_latent']}) |",
                  f"| at least 20 qualifying letters (SAEBench's run_eval scores only then) | "
                  f"{_pair(c['enough_letters'])} |",
                  f"| mean full-absorption rate | {_pair(c['mean_full_absorption'])} |",
                  f"| mean absorption fraction | {_pair(c['mean_absorption_fraction'])} |",
                  f"| mean main latents | {_pair(c['mean_main_latents'], 2)} |",
                  "| mean full-absorption rate, letters qualifying in both | "
                  f"{_pair(c['both_mean_full_absorption'])} |",
                  f"| mean absorption fraction, letters qualifying in both | "
                  f"{_pair(c['both_mean_absorption_fraction'])} |",
                  f"| seconds (this SAE) | {_pair(c['seconds'], 0)} |", "",
                  "| letter | probe F1 | qualifies | main latents | probe TPs | full absorption "
                  "| absorption fraction |",
                  "|---|---|---|---|---|---|---|"]
        for r in c["letters"]:
            lines.append(f"| {r['letter']} | {_pair(r['probe_f1'])} | {_pair(r['qualifies'])} | "
                         f"{_pair(r['main_latents'])} | {_pair(r['probe_true_positives'])} | "
                         f"{_pair(r['full_absorption_rate'])} | {_pair(r['absorption_fraction'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    p_sb = sub.add_parser("saebench", help="SAEBench's half (run in .sb-venv)")
    p_sb.add_argument("--model", required=True)
    p_sb.add_argument("--tl-name", default=TL_MODEL_NAME)
    p_sb.add_argument("--layer", type=int, required=True)
    p_sb.add_argument("--words-file", type=Path, required=True)
    p_sb.add_argument("--seed", type=int, default=42)
    p_sb.add_argument("--sae", action="append", default=[], help="NAME=SAELENS_EXPORT_DIR (repeatable)")
    p_sb.add_argument("--work", type=Path, required=True)
    p_sb.add_argument("--out", type=Path, required=True)
    p_cmp = sub.add_parser("compare", help="both halves and the comparison (run in the project venv)")
    p_cmp.add_argument("runs", nargs="+", type=Path, help="run directories (each with saelens/ and config.json)")
    p_cmp.add_argument("--model", required=True, help="the HF model folder of the store's model")
    p_cmp.add_argument("--tl-name", default=TL_MODEL_NAME)
    p_cmp.add_argument("--words", type=int, default=DEFAULT_WORDS)
    p_cmp.add_argument("--seed", type=int, default=42)
    p_cmp.add_argument("--out", type=Path, default=Path("absorption-reference"))
    p_cmp.add_argument("--sb-python", default=str(REPO / ".sb-venv" / "bin" / "python"))
    p_cmp.add_argument("--absorption-cache", type=Path, default=None, help="our probe cache folder (reused)")
    p_cmp.add_argument("--share-residuals", action="store_true",
                       help="our probe cache from SAEBench's prompt residuals (the same prompts): compares the code "
                            "after the LM only, and runs the LM once")
    p_cmp.add_argument("--reuse", action="store_true",
                       help="reuse OUT/saebench.json and each run's eval.json absorption for OUT/words.txt if present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "saebench":
        args.work.mkdir(parents=True, exist_ok=True)
        run_saebench(args.model, args.tl_name, args.layer, args.words_file, args.seed,
                     [tuple(s.split("=", 1)) for s in args.sae], args.work, args.out)
    elif args.command == "compare":
        run_compare(args)
    else:
        parser.print_help()


def run_compare(args) -> None:
    from fit.runs import find_runs

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs([str(r) for r in args.runs])
    layer = {r.read_config()["store"]["layer"] for r in runs}
    if len(layer) != 1:
        raise SystemExit(f"the runs read {len(layer)} different layers: compare runs of one store")
    layer = layer.pop()
    words_file, words_meta = out / "words.txt", out / "words.json"
    chosen = json.loads(words_meta.read_text()) if args.reuse and words_meta.exists() else {}
    if chosen.get("requested") == [args.words, args.seed]:
        words = [w for w in words_file.read_text().split("\n") if w.strip()]
        pool = chosen["vocabulary_words"]
    else:
        words, pool = choose_words(args.model, args.words, args.seed)
        words_file.write_text("\n".join(words) + "\n")
        words_meta.write_text(json.dumps({"requested": [args.words, args.seed], "vocabulary_words": pool}))
    sb_json = out / "saebench.json"
    if not (args.reuse and sb_json.exists()):
        t0 = time.perf_counter()
        cmd = [args.sb_python, "-m", "benchmarks.absorption_reference", "saebench", "--model", args.model,
               "--tl-name", args.tl_name, "--layer", str(layer), "--words-file", str(words_file.resolve()),
               "--seed", str(args.seed), "--work", str((out / "saebench").resolve()), "--out", str(sb_json.resolve())]
        for r in runs:
            cmd += ["--sae", f"{r.name}={r.export_dir.resolve()}"]
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        log.info("SAEBench half: %.0f s", time.perf_counter() - t0)
    sb = json.loads(sb_json.read_text())
    if args.share_residuals:
        store_url = runs[0].read_config()["store_url"]
        log.info("our cache from SAEBench's residuals: %s",
                 share_residuals(store_url, words_file, len(words), args.seed, out / "saebench",
                                 str(args.absorption_cache) if args.absorption_cache else None))
    ours = {r.name: (_evaluated(r, words_file) if args.reuse else None)
            or run_ours(r.path, words_file, len(words), args.seed, args.absorption_cache) for r in runs}
    report = {"model": args.model, "layer": layer, "words": len(words), "vocabulary_words": pool,
              "seed": args.seed, "saebench_version": "0.6.0", "saebench": sb, "ours": ours,
              "comparison": compare(sb, ours)}
    cache = next(iter(ours.values()))["cache"] if ours else None
    if cache:
        report["probe_agreement"] = probe_agreement(out / "saebench", Path(cache))
    (out / "absorption-reference.json").write_text(json.dumps(report, indent=1))
    (out / "absorption-reference.md").write_text(markdown(report))
    log.info("wrote %s and %s", out / "absorption-reference.json", out / "absorption-reference.md")


if __name__ == "__main__":
    main()
