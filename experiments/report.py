"""report.md: what was run, the suggested regions and how to read them, trust ratios, training results."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from .outputs import read_csv

SEED_BUGS = [
    ("MultiStepLR milestones [10, 20] were stepped every iteration, so the decays fell at iterations 10 and 20: "
     "the runs trained at lr x 0.01 (x 1e-5 for [5, 10, 15, 20, 25]) for all 30 epochs.",
     "The scheduler is stepped once per epoch: the milestones are epochs."),
    ("OneCycleLR max_lr=3.32 was log2(10) passed by position, and OneCycleLR cycled momentum 0.95 <-> 0.85 on plain "
     "SGD without saying so: the run diverged by epoch 2.",
     "max_lr comes from the range test; momentum cycling is an explicit switch (--onecycle-momentum), reported below."),
    ("The TensorBoard Loss/test of ColossalAI 0.1.x was the mean test loss divided once more by the number of test "
     "batches (79).",
     "Loss/test is the sum of per-sample losses over all 10,000 test images divided by 10,000."),
    ("LR/train at step s was the lr of step s+1 (logged after the scheduler step).",
     "Each point pairs the lr used for an update with the first loss measured after it."),
    ("All four optimizers were swept to lr 1.0 on one scale, meaningless for LAMB (relative step per layer) and "
     "LARS (raw lr scaled by trust_coeff): Adam, LARS and LAMB 'blew up' for that reason.",
     "Each optimizer has its own sweep range (the table above), and sweeps stop when the loss diverges."),
]


def _fmt(v, spec=".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _trust_table(run_dir: Path, summary: dict) -> list[str]:
    rows = read_csv(run_dir / "trust.csv")
    if not rows:
        return []
    by_opt: dict[str, dict[str, list[tuple[float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        ratio = float(r["trust_ratio"])
        if math.isfinite(ratio):
            by_opt[r["optimizer"]][r["layer"]].append((float(r["lr"]), ratio, float(r["effective_lr"])))
    lines = [
        "## Trust ratios (LARS / LAMB)",
        "",
        "The effective per-layer learning rate is lr x trust ratio. Below: each layer's trust ratio and effective lr "
        "at the sweep point closest to the suggested max_lr (`trust_<optimizer>.png` shows them over the sweep).",
        "",
    ]
    for name, layers in by_opt.items():
        target = (summary["optimizers"].get(name) or {}).get("max_lr")
        lines += [
            f"**{name}** (at lr ≈ {_fmt(target)})",
            "",
            "| layer | trust ratio | effective lr | ratio range over sweep |",
            "|---|---|---|---|",
        ]
        for layer, pts in layers.items():
            pick = min(pts, key=lambda p: abs(math.log(p[0] / target))) if target else pts[len(pts) // 2]
            ratios = [p[1] for p in pts]
            lines.append(f"| {layer} | {_fmt(pick[1])} | {_fmt(pick[2])} | {_fmt(min(ratios))} – {_fmt(max(ratios))} |")
        spread = [statistics.median([p[1] for p in pts]) for pts in layers.values()]
        if spread and min(spread) > 0:
            lines += ["", f"Median trust ratios differ by {max(spread) / min(spread):.0f}x across layers: one global "
                      "lr gives each layer a different effective step.", ""]
    return lines


def _study_results(summary: dict) -> list[str]:
    """One sentence of this run's numbers per entry of SEED_BUGS (empty where the run has none)."""
    t = summary.get("training") or {}
    opt = summary.get("optimizers") or {}
    multistep = [f"{k}: test loss {_fmt(v.get('test_loss'))}" for k, v in t.items() if "multistep" in k]
    sgd1 = t.get("sgd-onecycle") or {}
    onecycle = (f"sgd-onecycle peaked at max_lr {_fmt(sgd1.get('lr'))}, test loss {_fmt(sgd1.get('test_loss'))} "
                f"(the study's ended at chance, ln 10 = 2.3)") if sgd1 else ""
    tests = [v.get("test_loss") for v in t.values() if v.get("test_loss") is not None]
    test = f"final test losses range {_fmt(min(tests))} – {_fmt(max(tests))}" if tests else ""
    sgd = opt.get("sgd") or {}
    sweep = "; ".join(f"{n}: {_fmt(s.get('min_lr'))} – {_fmt(s.get('max_lr'))}" for n, s in opt.items())
    if sgd.get("max_lr"):
        sweep = (f"suggested regions {sweep}. The study read an upper limit of 0.1 for SGD from its sweep; "
                 f"here max_lr = {_fmt(sgd['max_lr'])}")
    return ["; ".join(multistep), onecycle, test, "", sweep]


def _sweep_length_note(summary: dict) -> list[str]:
    """A sweep over the study's epochs trains the model while it sweeps; say what that did to this run's SGD."""
    t = summary.get("training") or {}
    sgd1 = t.get("sgd-onecycle") or {}
    steps = {k: v for k, v in t.items() if "multistep" in k and v.get("test_loss") is not None}
    if not sgd1.get("test_loss") or not steps:
        return []
    best_label, best = min(steps.items(), key=lambda kv: kv[1]["test_loss"])
    verdict = "below" if best["test_loss"] < sgd1["test_loss"] else "not below"
    return [
        "",
        "**Sweep length.** A sweep spread over the whole protocol trains the model while the lr grows: by the time "
        "the lr is large the loss is already low and falls slowly, so the heuristics lean to small learning rates. "
        f"Here {best_label} at lr {_fmt(best.get('lr'))} reached test loss {_fmt(best['test_loss'])}, {verdict} "
        f"sgd-onecycle's {_fmt(sgd1['test_loss'])} at the suggested max_lr {_fmt(sgd1.get('lr'))}. The quick mode "
        "(a few hundred iterations from the untrained model, the default) is the range test to pick a region with.",
    ]


def render(summary: dict, figures: list[Path], run_dir: Path) -> str:
    cfg = summary.get("config", {})
    mode = f"the study ({cfg.get('study_epochs')}-epoch protocol)" if cfg.get("study") else "quick"
    lines = ["# LR range test: LeNet5 on MNIST", ""]
    if summary.get("failed"):
        lines += [f"**Failed**: {summary['failed']}. This report covers what finished before the failure.", ""]
    if summary.get("interrupted"):
        lines += ["**Interrupted**: this report covers what finished before the run was stopped.", ""]
    lines += [
        f"- processes: {summary.get('world_size')}, device: {summary.get('device')}, implementation of LARS/LAMB: "
        f"`{summary.get('impl')}`; global batch {cfg.get('batch_size')}, "
        f"{summary.get('iterations_per_epoch', '?')} iterations per epoch",
        f"- mode: {mode}; smoothing beta {cfg.get('smooth')}, stop when the smoothed loss exceeds "
        f"{cfg.get('diverge_factor')}x its best",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in (summary.get("versions") or {}).items() if v),
        "",
        "## How to read the region",
        "",
        "Each curve is the training loss (smoothed) while the learning rate grows exponentially, one batch per lr. "
        "Left, the lr is too small to move the loss; the loss then falls, fastest around the *steepest* point; past "
        "the minimum it turns ragged and diverges. The shaded region is a (min_lr, max_lr) pair for OneCycle or "
        "cyclical schedules: max_lr where the loss still falls fast (median of steepest, valley and minimum/10), "
        "min_lr where it starts to fall (kept within max_lr/25 … max_lr/3). When the heuristics disagree by more than "
        "a decade the table says so: read the plot then.",
        "",
        "| optimizer | swept | points | stopped because | best loss | **min_lr** | **max_lr** | steepest | valley | "
        "min/10 | diverged at | heuristics agree |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.get("optimizers", {}).items():
        h = s.get("heuristics", {})
        lines.append(
            f"| {name} | {_fmt(s.get('start_lr'))} → {_fmt(s.get('end_lr'))} | {s.get('iterations')} | "
            f"{s.get('stop_reason')} | {_fmt(s.get('best_loss'))} | **{_fmt(s.get('min_lr'))}** | "
            f"**{_fmt(s.get('max_lr'))}** | {_fmt(h.get('steepest'))} | {_fmt(h.get('valley'))} | "
            f"{_fmt(h.get('min_over_10'))} | {_fmt(s.get('diverge_lr'))} | "
            f"{'yes' if s.get('agree') else 'no' if s.get('agree') is False else '–'} |"
        )
    notes = [f"- {name}: {s['note']}" for name, s in summary.get("optimizers", {}).items() if s.get("note")]
    cut = defaultdict(int)
    for r in read_csv(run_dir / "curves.csv"):
        if r["optimizer"] not in summary.get("optimizers", {}):
            cut[r["optimizer"]] += 1
    notes += [f"- {name}: sweep cut short after {n} points; no region suggested (the points are in curves.csv)"
              for name, n in cut.items()]
    if notes:
        lines += ["", *notes]
    lines += ["", "Sweep ranges: " + "; ".join(f"{n}: {s.get('sweep_why')}"
                                                for n, s in summary.get("optimizers", {}).items()), ""]
    for f in figures:
        lines.append(f"![{f.stem}]({f.name})")
    lines.append("")
    lines += _trust_table(run_dir, summary)
    training = summary.get("training") or {}
    if training:
        lines += ["", "## Training with the schedules", "",
                  "| run | lr | epochs | iterations | final train loss | test loss | momentum / beta1 before → after |",
                  "|---|---|---|---|---|---|---|"]
        for label, t in training.items():
            lines.append(
                f"| {label} | {_fmt(t.get('lr'))} | {_fmt(t.get('epochs'))} | {t.get('iterations')} | "
                f"{_fmt(t.get('final_train_loss'))} | {_fmt(t.get('test_loss'))} | "
                f"{_fmt(t.get('momentum_before'))} → {_fmt(t.get('momentum_after'))} |"
            )
        cyc = cfg.get("onecycle_momentum")
        lines += ["", f"OneCycle runs start at max_lr / (max_lr / min_lr) = min_lr and peak at max_lr; momentum "
                  f"cycling is **{'on' if cyc else 'off'}**" + (" (momentum / beta1 cycles 0.95 ↔ 0.85)." if cyc else
                                                              " (the optimizers keep their momentum).")]
    if cfg.get("study"):
        lines += ["", "## Differences from the original study, and why", ""]
        for (bug, fix), result in zip(SEED_BUGS, _study_results(summary)):
            lines += [f"- **Study:** {bug}  ", f"  **Here:** {fix}" + (f"  \n  **Result:** {result}" if result else "")]
        lines += _sweep_length_note(summary)
    return "\n".join(lines) + "\n"
