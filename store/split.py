"""Train / held-out split of a store's rows, in whole contexts.

The held-out part is the store's last contexts. Splitting on context boundaries means the evaluation can rerun
every held-out context through the LM with none of its positions ever seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.errors import StoreError
from store.format import ceil_div


@dataclass(frozen=True)
class RowSplit:
    """Row ranges [start, stop) for training and held-out evaluation."""

    train: tuple[int, int]
    heldout: tuple[int, int]

    @property
    def n_train(self) -> int:
        return self.train[1] - self.train[0]

    @property
    def n_heldout(self) -> int:
        return self.heldout[1] - self.heldout[0]


def split_rows(n_rows: int, rows_per_context: int, holdout_fraction: float) -> RowSplit:
    """Hold out the last ``round(n_contexts * holdout_fraction)`` contexts (at least one when the fraction > 0)."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise StoreError(f"holdout fraction {holdout_fraction} must be in [0, 1)")
    n_contexts = ceil_div(n_rows, rows_per_context)
    held = 0 if holdout_fraction == 0 else max(1, round(n_contexts * holdout_fraction))
    if held >= n_contexts:
        raise StoreError(
            f"the store has only {n_contexts} contexts, too few to hold out {holdout_fraction:.0%} and still "
            "train: harvest more tokens or lower --holdout"
        )
    boundary = min((n_contexts - held) * rows_per_context, n_rows)
    return RowSplit(train=(0, boundary), heldout=(boundary, n_rows))
