"""What the browser shows of a synthetic store's rows, which have no text: each row as its true features, and the true
dictionary in place of the unembedding (a latent's closest true features by its decoder direction)."""

from __future__ import annotations

from collections.abc import Callable

from store.reader import ActivationStore
from store.truth import GroundTruth

TRUTH_LENS = {"promoted": "Closest true features (dictionary · d)", "suppressed": "Most opposed true features",
              "note": "The decoder direction against every true feature's direction (the store's ground truth); "
                      "#g (in #p) is feature g, a child of p."}
"""The labels of the feature page's lens card for a synthetic store."""


def truth_names(truth: GroundTruth) -> Callable[[int], str]:
    """A true feature's display name: ``#g``, with its parent when it has one."""
    parent = truth.parent_G.tolist()
    depth = truth.depth_G.tolist()

    def name(g: int) -> str:
        g = int(g)
        if parent[g] >= 0:
            return f"#{g} (in #{parent[g]})"
        return f"#{g} (root)" if depth[g] == 0 else f"#{g}"

    return name


def truth_row_texts(store: ActivationStore, heldout: tuple[int, int],
                    name: Callable[[int], str]) -> Callable[[list[int]], list[list[str]]]:
    """``decode`` for a synthetic store, whose contexts are single rows: each held-out row shown as its active true
    features and their coefficients, the largest first."""
    start, stop = heldout
    feats, coefs = store.truth_rows(start, stop)  # one read; the rows are picked from it

    def decode(contexts: list[int]) -> list[list[str]]:
        out = []
        for c in contexts:
            lo, hi = store.context_rows(c)
            rows = []
            for row in range(lo, hi):
                pairs = sorted(((float(v), int(f)) for f, v in zip(feats[row - start], coefs[row - start], strict=True)
                                if f >= 0), reverse=True)
                rows.append(" · ".join(f"{name(f)} {v:.2g}" for v, f in pairs) or "(no feature)")
            out.append(rows)
        return out

    return decode
