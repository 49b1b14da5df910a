"""Hostile and unusual input: mixed dtypes, duplicates, extreme learning rates, all-zero tensors."""

import pytest
import torch
from cases import DEVICE, assert_same, clone_params, grads_for_step, make_params, set_grads, step_with

import fused_optim

OPTS = [(fused_optim.LAMB, dict(lr=1e-2)), (fused_optim.LARS, dict(lr=0.1, momentum=0.9, weight_decay=1e-4))]
IDS = ["LAMB", "LARS"]


@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_mixed_dtypes_in_one_group_match_the_reference(cls, cfg):
    params = (make_params(torch.float32, shapes=[(6, 5)]) + make_params(torch.bfloat16, shapes=[(7,)], seed=1)
              + make_params(torch.float64, shapes=[(3, 3)], seed=2))
    ref_params = clone_params(params)
    opt, ref = cls(params, foreach=True, **cfg), cls(ref_params, foreach=False, **cfg)
    for step in range(3):
        grads = grads_for_step(params, step, drop=False)
        step_with([(params, opt), (ref_params, ref)], grads)
    for i, dtype in enumerate([torch.float32, torch.bfloat16, torch.float64]):
        assert_same(opt, params[i : i + 1], ref, ref_params[i : i + 1], dtype)
    assert opt.state[params[2]][next(k for k in opt.state[params[2]] if k != "step")].dtype == torch.float64


@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_duplicate_params_across_groups_are_refused(cls, cfg):
    params = make_params(shapes=[(3,), (4,)])
    with pytest.raises(ValueError, match="more than one parameter group"):
        cls([{"params": params}, {"params": params[:1]}], **cfg)


@pytest.mark.parametrize("lr", [1e-30, 1e6], ids=["tiny", "huge"])
@pytest.mark.parametrize("path", [dict(foreach=True), dict(fused=True)], ids=["foreach", "fused"])
@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_extreme_learning_rates_stay_finite_and_agree(cls, cfg, path, lr):
    cfg = dict(cfg, lr=lr)
    params = make_params(shapes=[(5, 4), (3,)])
    ref_params = clone_params(params)
    opt, ref = cls(params, **path, **cfg), cls(ref_params, foreach=False, **cfg)
    for step in range(2):
        grads = grads_for_step(params, step, drop=False)
        step_with([(params, opt), (ref_params, ref)], grads)
    assert_same(opt, params, ref, ref_params, torch.float32)


@pytest.mark.parametrize("path", [dict(foreach=False), dict(foreach=True), dict(fused=True)], ids=str)
@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_all_zero_params_and_grads(cls, cfg, path):
    # Both norms are 0: the trust ratio is 1 and nothing moves; no 0/0 anywhere.
    params = [torch.nn.Parameter(torch.zeros(4, 3, device=DEVICE)), torch.nn.Parameter(torch.zeros(5, device=DEVICE))]
    opt = cls(params, **path, **dict(cfg, weight_decay=0.01))
    for _ in range(2):
        set_grads(params, [torch.zeros_like(p) for p in params])
        opt.step()
    for p in params:
        assert torch.equal(p, torch.zeros_like(p))
        for key, value in opt.state[p].items():
            assert torch.isfinite(value).all(), key


def test_grad_on_another_device_is_refused():
    if DEVICE.type != "cuda":
        pytest.skip("needs two devices")
    p = torch.nn.Parameter(torch.zeros(3, device=DEVICE))
    p.grad = torch.zeros(3)
    with pytest.raises(RuntimeError, match="gradient on cpu"):
        fused_optim.LAMB([p]).step()
