"""The fused kernels: launch counts, determinism, shapes, dtypes and the errors of unsupported inputs."""

import pytest
import torch
from cases import DEVICE, assert_same, clone_params, grads_for_step, make_params, set_grads, step_with
from fused_optim.kernels import _table

import fused_optim

LAMB_CFG = dict(lr=1e-2, weight_decay=0.01, max_grad_norm=1.0)
LARS_CFG = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
OPTS = [(fused_optim.LAMB, LAMB_CFG), (fused_optim.LARS, LARS_CFG)]
IDS = ["LAMB", "LARS"]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 elements and 2 blocks per program: a 4097-element tensor is spread over 33 programs whose
    partial norms the next pass reduces."""
    monkeypatch.setattr(_table, "CONFIG", _table.Config(block=64, blocks_per_program=2, max_slots=64, num_warps=4))
    for mod in ("lamb", "lars"):
        monkeypatch.setattr(f"fused_optim.kernels.{mod}.CONFIG", _table.CONFIG)


def _launches_for(cls, cfg, n_tensors):
    params = make_params(shapes=[(3,)] * n_tensors)
    opt = cls(params, fused=True, **cfg)
    set_grads(params, grads_for_step(params, 0, drop=False))
    before = _table.launches
    opt.step()
    return _table.launches - before


@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_launch_count_does_not_grow_with_tensors(cls, cfg):
    few, many = _launches_for(cls, cfg, 3), _launches_for(cls, cfg, 300)
    assert few == many
    assert few == (3 if cls is fused_optim.LAMB else 2)


def test_lamb_without_clipping_takes_two_launches():
    assert _launches_for(fused_optim.LAMB, dict(max_grad_norm=None), 5) == 2


@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_param_groups_share_launches(cls, cfg):
    params = make_params()
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.5, "weight_decay": 0.0}], fused=True, **cfg)
    set_grads(params, grads_for_step(params, 0, drop=False))
    before = _table.launches
    opt.step()
    assert _table.launches - before == (3 if cls is fused_optim.LAMB else 2)


@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_two_runs_are_bitwise_equal(cls, cfg, small_blocks):
    runs = []
    for _ in range(2):
        params = make_params(shapes=[(4097,), (63,), (1,), (200, 3)])
        opt = cls(params, fused=True, **cfg)
        for step in range(3):
            set_grads(params, grads_for_step(params, step, drop=False))
            opt.step()
        runs.append((params, opt))
    (pa, oa), (pb, ob) = runs
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)
        for key in oa.state[a]:
            assert torch.equal(oa.state[a][key], ob.state[b][key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_shapes_and_dtypes_match_reference(cls, cfg, dtype, small_blocks):
    shapes = [(0,), (1,), (63,), (4097,), (64,), (65,), (2, 3, 5)] + [(7,)] * 20 + [(0,)]
    params = make_params(dtype, shapes=shapes)
    ref_params = clone_params(params)
    opt = cls(params, fused=True, **cfg)
    ref = cls(ref_params, foreach=False, **cfg)
    for step in range(4):
        grads = grads_for_step(params, step)
        step_with([(params, opt), (ref_params, ref)], grads)
        assert_same(opt, params, ref, ref_params, dtype, msg=f"step {step}")


@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_mixed_dtypes_in_one_step(cls, cfg):
    params = make_params(torch.float32, shapes=[(10,), (20,)]) + make_params(torch.bfloat16, shapes=[(30,)], seed=1)
    ref_params = clone_params(params)
    opt = cls(params, fused=True, **cfg)
    ref = cls(ref_params, foreach=False, **cfg)
    for step in range(3):
        grads = grads_for_step(params, step, drop=False)
        step_with([(params, opt), (ref_params, ref)], grads)
    assert_same(opt, params[:2], ref, ref_params[:2], torch.float32)
    assert_same(opt, params[2:], ref, ref_params[2:], torch.bfloat16)


@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_fp64_params_are_refused_before_any_change(cls, cfg):
    params = make_params(torch.float64, shapes=[(5,)])
    before = params[0].detach().clone()
    opt = cls(params, fused=True, **cfg)
    set_grads(params, grads_for_step(params, 0, drop=False))
    with pytest.raises(RuntimeError, match="float32, bfloat16 and float16"):
        opt.step()
    assert torch.equal(params[0], before)


@pytest.mark.parametrize("cls,cfg", OPTS, ids=IDS)
def test_non_contiguous_params_are_refused(cls, cfg):
    p = torch.nn.Parameter(torch.randn(6, 4, device=DEVICE).t())
    p.grad = torch.randn_like(p)
    opt = cls([p], fused=True, **cfg)
    with pytest.raises(RuntimeError, match="contiguous"):
        opt.step()
