"""Each token's text inside its context, correct where a character's UTF-8 bytes span several tokens.

Decoding token by token breaks such characters (byte-level BPE and byte-fallback tokens each hold a piece,
and decode alone to U+FFFD). Instead token i's text is what it adds to the decoded text of the tokens before
it: decode(t[lo:i+1]) past its common prefix with decode(t[lo:i]), where a trailing U+FFFD (an unfinished
character) is not yet counted as text. A character thus belongs to the token that completes it; the tokens
holding its earlier bytes, and bytes that never form a character, show as empty. A short look-back
(lo = i - LOOKBACK) is enough, since a character has at most 4 bytes, and keeps the cost linear in the context
length.
"""

from __future__ import annotations

from collections.abc import Sequence

REPLACEMENT = "\ufffd"
LOOKBACK = 8


def _decode_batch(tokenizer, seqs: list[list[int]]) -> list[str]:
    # The Rust tokenizer decodes a batch in one call and never "cleans up" spaces (which is not prefix-stable).
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.decode_batch(seqs, skip_special_tokens=False)
    return tokenizer.batch_decode(seqs, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def token_texts(tokenizer, contexts: Sequence[Sequence[int]], lookback: int = LOOKBACK) -> list[list[str]]:
    """For each context (a list of token ids), the display text of each of its tokens."""
    seqs: list[list[int]] = []
    for ids in contexts:
        ids = [int(t) for t in ids]
        for i in range(len(ids)):
            lo = max(0, i - lookback)
            seqs += [ids[lo:i], ids[lo : i + 1]]
    decoded = _decode_batch(tokenizer, seqs) if seqs else []
    out, p = [], 0
    for ids in contexts:
        texts = []
        for i in range(len(ids)):
            before, upto = decoded[p], decoded[p + 1]
            p += 2
            if i < len(ids) - 1:
                upto = upto.rstrip(REPLACEMENT)
            else:  # nothing will complete an unfinished character at the end: the last token shows it as U+FFFD
                before = before.rstrip(REPLACEMENT)
            texts.append(upto[_common_prefix(before, upto) :])
        out.append(texts)
    return out


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


def vocab_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """Standalone display text of single tokens (for the logit lens); a byte piece shows as its raw name."""
    texts = _decode_batch(tokenizer, [[int(i)] for i in ids])
    raw = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    return [r if REPLACEMENT in t and r is not None else t for t, r in zip(texts, raw, strict=True)]
