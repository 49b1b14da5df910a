"""Figures made from the run's CSV files (never from memory), so they can be redrawn from any run folder."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from .finder import smooth_log_lr
from .outputs import read_csv

COLORS = {"sgd": "tab:blue", "adam": "tab:orange", "lars": "tab:green", "lamb": "tab:red"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(run: Path) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"lr": [], "loss": [], "smoothed": []})
    for row in read_csv(run / "curves.csv"):
        c = out[row["optimizer"]]
        c["lr"].append(float(row["lr"]))
        c["loss"].append(float(row["loss"]))
        c["smoothed"].append(float(row["smoothed"]))
    return out


def _ylim(values: list[float]) -> tuple[float, float] | None:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    low, start = finite[0], values[0] if math.isfinite(values[0]) else finite[-1]
    high = max(start, low) * 1.4
    return low - 0.05 * (high - low), high


def _centered(c: dict) -> tuple[list[float], list[float]]:
    pts = [(lr, loss) for lr, loss in zip(c["lr"], c["loss"]) if math.isfinite(loss)]
    x = [p[0] for p in pts]
    return x, smooth_log_lr(x, [p[1] for p in pts]) if pts else []


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(run: Path, summary: dict) -> list[Path]:
    """range_<optimizer>.png for each optimizer, range_all.png overlaid, trust_<optimizer>.png for LARS/LAMB,
    training.png for the schedule runs. Returns the files written."""
    plt = _plt()
    written = []
    curves = _curves(run)
    for name, c in curves.items():
        s = summary.get("optimizers", {}).get(name, {})
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot(c["lr"], c["loss"], color="0.75", lw=0.8, label="loss")
        ax.plot(c["lr"], c["smoothed"], color=COLORS.get(name, "k"), lw=1, ls="--",
                label="EMA (decides the stop; lags)")
        x, centered = _centered(c)
        ax.plot(x, centered, color=COLORS.get(name, "k"), lw=2, label="smoothed without lag (heuristics)")
        if s.get("min_lr") and s.get("max_lr"):
            ax.axvspan(s["min_lr"], s["max_lr"], color=COLORS.get(name, "k"), alpha=0.15,
                       label=f"suggested region {s['min_lr']:.2g} – {s['max_lr']:.2g}")
        for key, style in (("steepest", ":"), ("valley", "--"), ("min_over_10", "-.")):
            v = (s.get("heuristics") or {}).get(key)
            if v:
                ax.axvline(v, color="k", ls=style, lw=0.8, label=f"{key} {v:.2g}")
        if s.get("diverge_lr"):
            ax.axvline(s["diverge_lr"], color="crimson", lw=1, label=f"stopped (diverging) {s['diverge_lr']:.2g}")
        ax.set_xscale("log")
        lim = _ylim(centered + [v for v in c["loss"] if math.isfinite(v)])
        if lim:
            ax.set_ylim(*lim)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title(f"LR range test: {name}")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3, which="both")
        written.append(_save(plt, fig, run / f"range_{name}.png"))

    if curves:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        top = 0.0
        for name, c in curves.items():
            s = summary.get("optimizers", {}).get(name, {})
            x, centered = _centered(c)
            ax.plot(x, centered, color=COLORS.get(name, "k"), lw=2, label=name)
            if s.get("min_lr") and s.get("max_lr"):
                ax.axvspan(s["min_lr"], s["max_lr"], color=COLORS.get(name, "k"), alpha=0.12)
            finite = [v for v in centered if math.isfinite(v)]
            if finite:
                top = max(top, finite[0])
        ax.set_xscale("log")
        if top > 0:
            ax.set_ylim(0, top * 1.6)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss (smoothed without lag)")
        ax.set_title("LR range tests, LeNet5 / MNIST (shaded: suggested regions)")
        ax.legend()
        ax.grid(alpha=0.3, which="both")
        written.append(_save(plt, fig, run / "range_all.png"))

    trust: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in read_csv(run / "trust.csv"):
        ratio = float(row["trust_ratio"])
        if math.isfinite(ratio):
            trust[row["optimizer"]][row["layer"]].append((float(row["lr"]), float(row["effective_lr"])))
    for name, layers in trust.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for layer, pts in layers.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, label=layer)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("swept learning rate")
        ax.set_ylabel("effective per-layer lr (lr x trust ratio)")
        ax.set_title(f"{name}: effective learning rate per layer")
        ax.legend(fontsize=6, ncol=2)
        ax.grid(alpha=0.3, which="both")
        written.append(_save(plt, fig, run / f"trust_{name}.png"))

    runs: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in read_csv(run / "training.csv"):
        runs[row["run"]].append((int(row["iteration"]), float(row["loss"])))
    tests: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in read_csv(run / "test_loss.csv"):
        tests[row["run"]].append((int(row["step"]), float(row["test_loss"])))
    if runs:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, (name, pts) in enumerate(runs.items()):
            color = f"C{i}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=0.6, alpha=0.6, label=f"{name} train")
            if tests.get(name):
                ax.plot([p[0] for p in tests[name]], [p[1] for p in tests[name]], "o-", color=color, ms=3,
                        label=f"{name} test")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.set_title("Training with the schedules")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
        written.append(_save(plt, fig, run / "training.png"))
    return written
