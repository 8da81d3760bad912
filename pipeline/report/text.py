"""How the report writes numbers: one place for every table, claim and verdict line."""

from __future__ import annotations

import math


def fmt(stat: tuple[float, float, int] | tuple[float, float], digits: int = 4) -> str:
    """``mean ± half-width``: the mean to ``digits`` significant digits, the interval to two."""
    mean, half = stat[0], stat[1]
    if mean is None or math.isnan(mean):
        return "–"

    def f(v: float, sig: int) -> str:
        if float(v).is_integer() and abs(v) >= 1:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:,.1f}"
        return f"{v:.{sig}g}"

    if half is None or math.isnan(half):
        return f(mean, digits)
    if half <= 1e-9 * max(abs(mean), 1e-12):  # identical across seeds (e.g. the clean model's CE)
        return f"{f(mean, digits)} ± 0"
    return f"{f(mean, digits)} ± {f(half, 2)}"


def fmt_paper(stat: tuple[float, float]) -> str:
    """A figure from the paper exactly as it printed it."""
    return f"{stat[0]:,g} ± {stat[1]:g}"
