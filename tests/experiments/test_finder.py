"""The range test's parts on synthetic curves and a small model: schedule, smoothing, stop, restore, suggestions."""

import math
import random

import numpy as np
import pytest
import torch
from fused_optim.experiments import finder
from fused_optim.experiments.suggest import suggest

import fused_optim


def test_exponential_schedule():
    lrs = finder.exponential_lrs(1e-4, 1.0, 5)
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([10.0] * 4)
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        finder.exponential_lrs(1.0, 1.0, 10)
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        finder.exponential_lrs(0.0, 1.0, 10)
    with pytest.raises(ValueError, match="at least 2 iterations"):
        finder.exponential_lrs(1e-3, 1.0, 1)


def test_smoother_is_a_bias_corrected_ema():
    s = finder.Smoother(0.9)
    values = [3.0, 1.0, 4.0, 1.0, 5.0]
    got = [s.update(v) for v in values]
    assert got[0] == pytest.approx(3.0)  # bias correction: the first value comes back unchanged
    for k in range(1, len(values) + 1):
        weights = [0.1 * 0.9 ** (k - 1 - j) for j in range(k)]
        expected = sum(w * v for w, v in zip(weights, values)) / (1 - 0.9**k)
        assert got[k - 1] == pytest.approx(expected)
    with pytest.raises(ValueError):
        finder.Smoother(1.0)


def test_log_lr_smoothing_has_no_lag():
    lrs = finder.exponential_lrs(1e-4, 1.0, 401)
    losses = [2.0 if i < 200 else 1.0 for i in range(401)]
    smoothed = finder.smooth_log_lr(lrs, losses)
    # centred: the step stays at its place (the EMA would move it by ~1 / (1 - beta) points)
    assert smoothed[200] == pytest.approx(1.5, abs=0.05)
    assert smoothed[0] == pytest.approx(2.0) and smoothed[-1] == pytest.approx(1.0)


def _curve(lr: float) -> float:
    """A textbook range-test curve: flat, falling between 1e-3 and 1e-1, blowing up past 1."""
    x = math.log10(lr)
    return 2.3 - 1.8 / (1 + math.exp(-3 * (x + 2))) + (0 if x < -0.5 else 8 * (x + 0.5) ** 2)


def test_sweep_pairs_each_lr_with_the_loss_after_its_update_and_stops_on_divergence():
    lrs = finder.exponential_lrs(1e-5, 1e2, 300)
    calls = []

    def step(lr):
        # the loss a step reports is the one before its own update: that of the previous lr
        loss = _curve(calls[-1]) if calls else 2.3
        calls.append(lr)
        return loss

    result = finder.run_sweep(step, lrs, beta=0.9, diverge_factor=4.0)
    assert result.losses[:50] == pytest.approx([_curve(lr) for lr in result.lrs[:50]])
    assert result.stop_reason.startswith("smoothed loss above 4x")
    assert 1.0 < result.diverge_lr < 1e2
    assert len(result.lrs) < 300
    assert result.best_loss < 0.6


def test_sweep_stops_on_nan():
    lrs = finder.exponential_lrs(1e-3, 1.0, 50)
    state = {"n": 0}

    def step(lr):
        state["n"] += 1
        return float("nan") if state["n"] > 20 else 1.0

    result = finder.run_sweep(step, lrs)
    assert result.stop_reason == "loss is not finite"
    assert result.diverge_lr == lrs[19]
    assert math.isnan(result.losses[-1])


def test_snapshot_restores_model_optimizer_and_rngs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = fused_optim.LAMB(model.parameters(), lr=1e-2)
    for _ in range(2):
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    params = [p.detach().clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in opt.state[next(model.parameters())].items()}
    snap = finder.Snapshot(model, opt)
    draws = (torch.rand(3), np.random.rand(), random.random())
    for _ in range(3):
        opt.param_groups[0]["lr"] = 10.0
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    snap.restore()
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)
    restored = opt.state[next(model.parameters())]
    for key, value in state.items():
        assert torch.equal(restored[key], value), key
    assert opt.param_groups[0]["lr"] == 1e-2
    assert torch.equal(torch.rand(3), draws[0]) and np.random.rand() == draws[1] and random.random() == draws[2]


def test_suggestion_on_a_textbook_curve():
    lrs = finder.exponential_lrs(1e-5, 3.0, 300)
    rng = np.random.default_rng(0)
    losses = [_curve(lr) + 0.05 * rng.standard_normal() for lr in lrs]
    s = suggest(lrs, losses, diverge_lr=3.0)
    h = s["heuristics"]
    # the steepest fall of the curve is at 1e-2
    assert 3e-3 < h["steepest"] < 3e-2
    assert s["max_lr"] <= h["min_loss_lr"]
    assert 3e-4 < s["min_lr"] < s["max_lr"] < 1e-1
    assert s["min_lr"] >= s["max_lr"] / 25 - 1e-12 and s["min_lr"] <= s["max_lr"] / 3 + 1e-12
    assert s["agree"] is True and s["note"] == ""
    assert s["best_loss"] == pytest.approx(0.5, abs=0.1)


def test_suggestion_says_when_nothing_is_useful():
    lrs = finder.exponential_lrs(1e-3, 1.0, 100)
    rising = suggest(lrs, [1.0 + lr for lr in lrs])
    assert "never fell" in rising["note"]
    short = suggest(lrs[:5], [1.0] * 5)
    assert short["min_lr"] is None and short["max_lr"] is None and "too few" in short["note"]
    assert suggest([], [])["max_lr"] is None
