"""GradScaler and non-finite gradients."""

import pytest
import torch
from cases import DEVICE, grads_for_step, make_params, set_grads

import fused_optim

OPTS = [(fused_optim.LAMB, dict(lr=1e-2)), (fused_optim.LARS, dict(lr=0.1, momentum=0.9, weight_decay=1e-4))]
PATHS = [dict(foreach=False), dict(foreach=True), dict(fused=True)]


@pytest.mark.parametrize("path", PATHS, ids=["reference", "foreach", "fused"])
@pytest.mark.parametrize("cls,cfg", OPTS, ids=["LAMB", "LARS"])
def test_grad_scaler_skips_an_inf_step_and_then_proceeds(cls, cfg, path):
    params = make_params(shapes=[(4, 3), (5,)])
    opt = cls(params, **cfg, **path)
    scaler = torch.amp.GradScaler(DEVICE.type, init_scale=2.0**8)

    def backward(grads):
        # the loss whose gradient is `grads`, scaled as GradScaler does
        loss = sum((p * g).sum() for p, g in zip(params, grads))
        scaler.scale(loss).backward()

    grads = grads_for_step(params, 0, drop=False)
    backward(grads)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad()
    before = [p.detach().clone() for p in params]
    state = {k: v.clone() for k, v in opt.state[params[0]].items()}

    bad = grads_for_step(params, 1, drop=False)
    bad[1][2] = float("inf")
    backward(bad)
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    opt.zero_grad()
    assert scaler.get_scale() == scale / 2  # the overflow was seen
    for p, b in zip(params, before):
        assert torch.equal(p, b)
    for k, v in state.items():
        assert torch.equal(opt.state[params[0]][k], v)

    backward(grads_for_step(params, 2, drop=False))
    scaler.step(opt)
    scaler.update()
    assert not torch.equal(params[0], before[0]) and all(torch.isfinite(p).all() for p in params)
    if cls is fused_optim.LAMB:
        assert float(opt.state[params[0]]["step"]) == 2


@pytest.mark.parametrize("path", PATHS, ids=["reference", "foreach", "fused"])
@pytest.mark.parametrize("cls,cfg", OPTS, ids=["LAMB", "LARS"])
def test_without_a_scaler_a_nan_gradient_reaches_the_params(cls, cfg, path):
    # Documented behaviour (as torch.optim): the step is taken; NaN spreads to the params it touches.
    params = make_params(shapes=[(4, 3), (5,)])
    opt = cls(params, **cfg, **path)
    grads = grads_for_step(params, 0, drop=False)
    grads[0][0, 0] = float("nan")
    set_grads(params, grads)
    opt.step()
    assert torch.isnan(params[0]).any()
    if cls is fused_optim.LAMB:
        assert torch.isnan(params[1]).all()  # the global norm for clipping is NaN: every grad is scaled by it
    else:
        assert torch.isfinite(params[1]).all()
