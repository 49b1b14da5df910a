"""Equality with the libraries people use today, for the settings the docstrings declare equal."""

import itertools

import pytest
import torch
from cases import clone_params, grads_for_step, make_params, set_grads

import fused_optim

timm_optim = pytest.importorskip("timm.optim")

PATHS = [dict(foreach=False), dict(foreach=True), dict(fused=True)]
PATH_IDS = ["reference", "foreach", "fused"]
SHAPES = [(6, 5), (11,), (300,), (1,)]


def _trajectories(ours, theirs, params, steps=7, scale=1.0):
    """Run both on the same grads (every param has one every step); return both param lists."""
    mine = clone_params(params)
    other = clone_params(params)
    a, b = ours(mine), theirs(other)
    for step in range(steps):
        grads = grads_for_step(params, step, drop=False, scale=scale)
        set_grads(mine, grads)
        set_grads(other, grads)
        a.step()
        b.step()
    return a, mine, b, other


def _close(xs, ys, **tol):
    for x, y in zip(xs, ys):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y, **tol)


LAMB_GRID = [
    dict(bias_correction=bc, grad_averaging=ga, max_grad_norm=mgn, trust_clip=tc, always_adapt=aa, weight_decay=wd)
    for bc, ga, mgn, tc, aa, wd in itertools.product(
        [True, False], [True, False], [None, 1.0, 0.05], [False, True], [False, True], [0.0, 0.02]
    )
]


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_lamb_equals_timm_over_its_options(path):
    params = make_params(shapes=SHAPES)
    for cfg in LAMB_GRID:
        if "fused" in path and cfg != LAMB_GRID[0] and cfg["max_grad_norm"] != 0.05:
            continue  # the interpreter is slow: the fused path gets the clipped half of the grid
        a, mine, b, other = _trajectories(
            lambda ps: fused_optim.LAMB(ps, lr=0.02, **path, **cfg),
            lambda ps: timm_optim.Lamb(ps, lr=0.02, **cfg),
            params,
        )
        # Without trust ratio and grad averaging, params move by O(1) per step: fp32 rounding of 7 such steps.
        _close(mine, other, atol=5e-5, rtol=1e-5)
        for p, q in zip(mine, other):
            _close([a.state[p]["exp_avg"], a.state[p]["exp_avg_sq"]], [b.state[q]["exp_avg"], b.state[q]["exp_avg_sq"]],
                   atol=1e-6, rtol=1e-5)


LARS_GRID = [
    dict(momentum=mom, dampening=damp, nesterov=nest, weight_decay=wd, trust_clip=tc, always_adapt=aa)
    for mom, damp, nest, wd, tc, aa in itertools.product(
        [0.0, 0.9], [0.0, 0.3], [False, True], [0.0, 1e-3], [False, True], [False, True]
    )
    if not (nest and (mom == 0 or damp != 0))
]


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_lars_equals_timm_over_its_options(path):
    params = make_params(shapes=SHAPES)
    for i, cfg in enumerate(LARS_GRID):
        if "fused" in path and i % 3:
            continue  # the interpreter is slow: the fused path gets a third of the grid
        a, mine, b, other = _trajectories(
            lambda ps: fused_optim.LARS(ps, lr=0.5, trust_coeff=0.01, **path, **cfg),
            lambda ps: timm_optim.Lars(ps, lr=0.5, trust_coeff=0.01, **cfg),
            params,
        )
        _close(mine, other, atol=1e-5, rtol=1e-5)
        for p, q in zip(mine, other):
            if cfg["momentum"]:
                _close([a.state[p]["momentum_buffer"]], [b.state[q]["momentum_buffer"]], atol=1e-6, rtol=1e-5)


def _colossalai_optimizer():
    pytest.importorskip("colossalai")
    from colossalai.nn import optimizer

    return optimizer


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_lamb_equals_colossalai_lamb_without_bias_correction(weight_decay):
    optim = _colossalai_optimizer()
    params = make_params(shapes=SHAPES)
    _, mine, _, other = _trajectories(
        lambda ps: fused_optim.LAMB(ps, lr=0.02, weight_decay=weight_decay, bias_correction=False,
                                    max_grad_norm=None, always_adapt=True),
        lambda ps: optim.Lamb(ps, lr=0.02, weight_decay=weight_decay, bias_correction=False),
        params,
    )
    _close(mine, other, atol=1e-5, rtol=1e-5)


def test_lamb_equals_colossalai_adam_mode_without_decay():
    optim = _colossalai_optimizer()
    params = make_params(shapes=SHAPES)
    _, mine, _, other = _trajectories(
        lambda ps: fused_optim.LAMB(ps, lr=0.02, weight_decay=0.0, bias_correction=False, max_grad_norm=None),
        lambda ps: optim.Lamb(ps, lr=0.02, weight_decay=0.0, bias_correction=False, adam=True),
        params,
    )
    _close(mine, other, atol=1e-5, rtol=1e-5)


def test_colossalai_lamb_bias_correction_is_a_different_algorithm():
    # Documented as not offered: ColossalAI folds the correction into the step size.
    optim = _colossalai_optimizer()
    params = make_params(shapes=SHAPES)
    _, mine, _, other = _trajectories(
        lambda ps: fused_optim.LAMB(ps, lr=0.02, weight_decay=0.01, max_grad_norm=None, always_adapt=True),
        lambda ps: optim.Lamb(ps, lr=0.02, weight_decay=0.01, bias_correction=True),
        params,
        steps=1,
    )
    assert not torch.allclose(mine[0], other[0], atol=1e-4)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_lars_equals_colossalai_lars_without_momentum(weight_decay):
    optim = _colossalai_optimizer()
    params = make_params(shapes=SHAPES)
    # Small grads keep ColossalAI's clamps (ratio <= 50, |g + wd * w| <= 10) inactive.
    _, mine, _, other = _trajectories(
        lambda ps: fused_optim.LARS(ps, lr=0.5, weight_decay=weight_decay, trust_coeff=0.01, eps=1e-8,
                                    always_adapt=True),
        lambda ps: optim.Lars(ps, lr=0.5, weight_decay=weight_decay, eeta=0.01, epsilon=1e-8),
        params,
        scale=0.1,
    )
    _close(mine, other, atol=1e-5, rtol=1e-5)
