"""Whether a synthetic validation set separates anything: the guard every choice made on it goes through.

Why: a synthetic set (NSA anomalies on held-out good images) only says which epoch, INT8 recipe or threshold is
better when the model itself tells its anomalies from the good images. On the random-backbone demo the fp32 model's
synthetic image AUROC was 0.4861 and training logged ``syn_image=0.5000`` for many epochs, yet the INT8 recipe was
chosen on those figures: a choice on noise. So a set whose figures are within :data:`CHANCE_MARGIN` of 0.5 (or
below chance) is not used to choose; each choice says so in one line and takes its documented default instead
(epoch: the final weights; INT8 recipe: the label-free rule on held-out good images; threshold: good-sigma).
"""

from __future__ import annotations

import math

__all__ = ["CHANCE_MARGIN", "no_separation_line", "separates"]

#: A synthetic AUROC must exceed 0.5 + this to count as separating (0.55 with 20-60 anomalies: the figure is then
#: more than about one standard error of a chance AUROC above 0.5 -- see README "Synthetic validation").
CHANCE_MARGIN = 0.05


def separates(*aurocs: float | None, margin: float = CHANCE_MARGIN) -> bool:
    """True when every given AUROC is finite and above ``0.5 + margin``."""
    return bool(aurocs) and all(a is not None and math.isfinite(a) and a > 0.5 + margin for a in aurocs)


def no_separation_line(choice: str, figures: dict[str, float | None], fallback: str) -> str:
    """The one line a choice logs when the synthetic set cannot separate: what, the figures, what it does instead."""
    shown = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in figures.items())
    return (
        f"{choice}: the synthetic validation set cannot separate ({shown}; needs > {0.5 + CHANCE_MARGIN:.2f}), "
        f"so it is not used: {fallback}"
    )
