"""The words and the prompts: SAEBench's alphabetic vocabulary, its in-context first-letter prompts.

SAEBench (``vocab.get_alpha_tokens``) takes every token of the tokenizer whose text, a leading space allowed,
is one or more ASCII letters; ``probing.create_dataset_probe_training`` splits them 80/20 into train and test
words; ``prompting.create_icl_prompt`` puts ten other words of the same split before each word as in-context
examples ("\\ncat has the first letter: C\\ndog has the first letter: D\\n...\\n{word} has the first letter:").
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ALPHA = frozenset(LETTERS + LETTERS.upper())
PROMPT_TEMPLATE = "{word} has the first letter:"
"""SAEBench's template (``AbsorptionEvalConfig.prompt_template``)."""
ICL_EXAMPLES = 10
"""In-context examples before each prompt (SAEBench's ``max_icl_examples``)."""
TRAIN_FRACTION = 0.8
"""Fraction of the words the probe trains on (SAEBench's ``train_test_fraction``)."""
SEPARATOR = "\n"


def is_alpha_word(text: str) -> bool:
    """SAEBench's filter: one or more ASCII letters, after at most one leading space."""
    text = text[1:] if text.startswith(" ") else text
    return bool(text) and all(c in _ALPHA for c in text)


def alpha_words(tokenizer) -> list[str]:
    """Every token's text that passes :func:`is_alpha_word`, in token-id order, each text once.

    SAEBench walks ``tokenizer.vocab`` in its dict order and keeps duplicate texts; token-id order makes the
    list reproducible, and one entry per text keeps a word out of both the train and the test split."""
    seen: set[str] = set()
    words = []
    for token, _id in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        text = tokenizer.convert_tokens_to_string([token])
        if token.startswith("\u2581") and not text.startswith(" "):
            text = " " + text  # SAEBench's fix for SentencePiece tokenizers that drop the word's space
        if is_alpha_word(text) and text not in seen:
            seen.add(text)
            words.append(text)
    return words


def read_words_file(path: str) -> list[str]:
    """One word a line, a leading space kept (the token's own space); blank lines skipped."""
    try:
        lines = Path(path).read_text().split("\n")
    except OSError as exc:
        raise PipelineError(f"cannot read the word list {path} ({exc.strerror}): pass an existing file with "
                            "--absorption-words-file") from None
    words = [line.rstrip("\r") for line in lines if line.strip()]
    bad = [w for w in words if not is_alpha_word(w)]
    if bad:
        raise PipelineError(f"{path} has {len(bad)} line(s) that are not a word of ASCII letters (e.g. {bad[0]!r}): "
                            "keep one word a line, at most one leading space")
    return list(dict.fromkeys(words))


def first_letter(word: str) -> str:
    """The word's first letter, lower case (SAEBench's ``first_letter``: leading space stripped)."""
    return word.strip()[0].lower()


def subsample(words: list[str], n: int | None, seed: int) -> list[str]:
    """``n`` of the words drawn with ``seed``, in their original order (all of them when ``n`` is None)."""
    if n is None or n >= len(words):
        return list(words)
    keep = sorted(random.Random(seed).sample(range(len(words)), n))
    return [words[i] for i in keep]


@dataclass(frozen=True)
class Split:
    """The probe's train and test words (disjoint)."""

    train: list[str]
    test: list[str]


def split_words(words: list[str], seed: int, train_fraction: float = TRAIN_FRACTION) -> Split:
    """SAEBench's split: the words shuffled, the first ``train_fraction`` of them train, the rest test."""
    shuffled = random.Random(seed).sample(words, len(words))
    cut = int(len(shuffled) * train_fraction)
    train, test = shuffled[:cut], shuffled[cut:]
    if len(test) <= ICL_EXAMPLES or len(train) <= ICL_EXAMPLES:
        raise PipelineError(f"{len(words)} words are too few for the probe's train and test splits: pass "
                            "--absorption-words 60 or more (or a longer --absorption-words-file)")
    return Split(train, test)


def icl_prompt(word: str, examples: list[str], rng: random.Random, template: str = PROMPT_TEMPLATE,
               n_examples: int = ICL_EXAMPLES) -> str:
    """SAEBench's ``create_icl_prompt``: ``n_examples`` other words of the split, each with its answer, then the
    word's prompt; the separator also goes first (``prepend_separator_to_first_example``)."""
    while True:
        chosen = rng.sample(examples, n_examples)
        if word not in chosen:
            break
    shown = [template.format(word=ex) + " " + first_letter(ex).upper() for ex in chosen]
    return SEPARATOR + SEPARATOR.join(shown) + SEPARATOR + template.format(word=word)


def prompts(words: list[str], rng: random.Random, template: str = PROMPT_TEMPLATE) -> list[str]:
    """One in-context prompt per word, its examples drawn from the same words."""
    return [icl_prompt(w, words, rng, template) for w in words]
