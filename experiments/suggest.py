"""From a range-test curve to a (min_lr, max_lr) region, by several heuristics that are compared, not trusted alone.

The heuristics read the raw losses smoothed without lag (`finder.smooth_log_lr`, 0.15 decades): the causal EMA that
decides when to stop lags ~1 / (1 - beta) points behind the loss, and would move every suggestion.

- steepest: the lr where the smoothed loss falls fastest against log(lr) (torch-lr-finder, ignite);
- valley: the lr two thirds down the longest stretch over which the loss keeps falling, searched from where the
  loss starts to fall (fastai's "valley", which on a long flat start picks a point on the plateau);
- min_over_10: the lr of the lowest smoothed loss, divided by 10 (fastai's "minimum");
- fall_start: the first lr at which the loss has fallen by 5% of its total drop (Smith's lower bound).

max_lr is the median of steepest, valley and min_over_10, never above the lr of the lowest loss; min_lr is fall_start
kept within [max_lr / 25, max_lr / 3] (OneCycle starts at max_lr / 25 by default; Smith suggests max_lr / 3..4).
When the three candidates for max_lr span more than a decade, the suggestion says they disagree.
"""

from __future__ import annotations

import math

import numpy as np

from .finder import smooth_log_lr

MIN_POINTS = 10


def _valley(log_lr: np.ndarray, loss: np.ndarray, max_points: int = 400) -> float | None:
    """Longest non-increasing subsequence of the (down-sampled) curve; the lr 2/3 of the way along it."""
    idx = np.unique(np.linspace(0, len(loss) - 1, min(len(loss), max_points)).round().astype(int))
    y = loss[idx]
    n = len(y)
    length = np.ones(n, dtype=int)
    prev = np.full(n, -1)
    for j in range(n):
        for i in range(j):
            if y[i] >= y[j] and length[i] + 1 > length[j]:
                length[j], prev[j] = length[i] + 1, i
    end = int(np.argmax(length))
    start = end
    while prev[start] >= 0:
        start = prev[start]
    if length[end] < 3:
        return None
    pos = idx[start] + (idx[end] - idx[start]) * 2 // 3
    return float(10 ** log_lr[pos])


def suggest(lrs: list[float], losses: list[float], diverge_lr: float | None = None) -> dict:
    """The region and every heuristic's value (None where a heuristic has no answer), from the raw losses."""
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if math.isfinite(loss) and lr > 0]
    smoothed = smooth_log_lr([lr for lr, _ in finite], [loss for _, loss in finite]) if finite else []
    pairs = [(lr, s) for (lr, _), s in zip(finite, smoothed)]
    out = {
        "min_lr": None,
        "max_lr": None,
        "diverge_lr": diverge_lr,
        "best_loss": min((s for _, s in pairs), default=None),
        "heuristics": {"steepest": None, "valley": None, "min_over_10": None, "min_loss_lr": None, "fall_start": None},
        "agree": None,
        "note": "",
    }
    if len(pairs) < MIN_POINTS:
        out["note"] = f"only {len(pairs)} finite points: too few for a suggestion"
        return out
    lr = np.array([p[0] for p in pairs])
    loss = np.array([p[1] for p in pairs])
    log_lr = np.log10(lr)
    i_min = int(np.argmin(loss))
    h = out["heuristics"]
    h["min_loss_lr"] = float(lr[i_min])
    h["min_over_10"] = float(lr[i_min] / 10)
    # Slopes up to the minimum only: past it the loss is rising towards divergence.
    if i_min >= 2:
        slope = np.gradient(loss[: i_min + 1], log_lr[: i_min + 1])
        h["steepest"] = float(lr[int(np.argmin(slope))])
    drop = loss[0] - loss[i_min]
    i_fall = 0
    if drop > 0:
        i_fall = int(np.nonzero(loss[: i_min + 1] <= loss[0] - 0.05 * drop)[0][0])
        h["fall_start"] = float(lr[i_fall])
    # The valley starts where the loss starts to fall: on the flat start, noise alone makes long "valleys".
    if i_min - i_fall >= 2:
        h["valley"] = _valley(log_lr[i_fall : i_min + 1], loss[i_fall : i_min + 1])

    candidates = [v for v in (h["steepest"], h["valley"], h["min_over_10"]) if v is not None]
    max_lr = min(float(np.exp(np.median(np.log(candidates)))), h["min_loss_lr"])
    low, high = max_lr / 25, max_lr / 3
    min_lr = min(max(h["fall_start"] or low, low), high)
    out["min_lr"], out["max_lr"] = min_lr, max_lr
    spread = math.log10(max(candidates) / min(candidates)) if len(candidates) > 1 else 0.0
    out["agree"] = spread <= 1.0
    if drop <= 0:
        out["note"] = "the loss never fell below its start: no useful region; sweep lower learning rates"
    elif not out["agree"]:
        out["note"] = f"the heuristics for max_lr span {spread:.1f} decades: read the plot before trusting max_lr"
    return out
