"""GradScaler and non-finite gradients."""

import pytest
import torch
from cases import DEVICE, assert_same, clone_params, grads_for_step, make_params, set_grads, step_with

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


def test_only_the_fused_path_takes_the_scaler_contract():
    params = make_params(shapes=[(4,)])
    assert fused_optim.LAMB(params, fused=True)._step_supports_amp_scaling
    assert not fused_optim.LAMB(params, foreach=True)._step_supports_amp_scaling
    assert not fused_optim.LAMB(params, foreach=False)._step_supports_amp_scaling
    assert fused_optim.LARS(params, fused=True, momentum=0.9)._step_supports_amp_scaling
    # A skipped first step leaves zero buffers, which equal LARS's first-step rule only without dampening.
    assert not fused_optim.LARS(params, fused=True, momentum=0.9, dampening=0.1)._step_supports_amp_scaling
    opt = fused_optim.LAMB(params, foreach=True)
    opt.grad_scale, opt.found_inf = torch.ones(()), torch.zeros(())
    set_grads(params, grads_for_step(params, 0, drop=False))
    with pytest.raises(RuntimeError, match="fused path only"):
        opt.step()


CONTRACT_OPTS = [
    # Options where the grad scale shows: eps and a clip norm of the order of the unscaled grads, weight decay of the
    # order of the gradient in the trust ratio.
    (fused_optim.LAMB, dict(lr=1e-2, max_grad_norm=10.0, eps=1e-2)),
    (fused_optim.LARS, dict(lr=0.1, momentum=0.9, weight_decay=0.5, nesterov=True)),
]


@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaled", "unscaled-by-user"])
@pytest.mark.parametrize("cls,cfg", CONTRACT_OPTS, ids=["LAMB", "LARS"])
def test_fused_scaler_contract_matches_the_plain_path(cls, cfg, unscale_first):
    """Fused kernels unscale and skip on the device; the reference goes through GradScaler's plain path (in-place
    unscale, host-side skip). Steps: inf (the very first: fresh state), good, inf, good, good."""
    params = make_params(shapes=[(5, 7), (13,), (1,)])
    ref_params = clone_params(params)
    opt, ref = cls(params, fused=True, **cfg), cls(ref_params, foreach=False, **cfg)
    assert opt._step_supports_amp_scaling and not ref._step_supports_amp_scaling
    scalers = [torch.amp.GradScaler(DEVICE.type, init_scale=2.0**10, growth_interval=2) for _ in range(2)]
    for step in range(5):
        grads = grads_for_step(params, step, drop=False)
        if step in (0, 2):
            grads[1][3] = float("inf")
        for ps, o, scaler in ((params, opt, scalers[0]), (ref_params, ref, scalers[1])):
            o.zero_grad()
            scaler.scale(sum((p * g).sum() for p, g in zip(ps, grads))).backward()
            scaled = [p.grad.clone() for p in ps]
            if unscale_first:
                scaler.unscale_(o)
            scaler.step(o)
            scaler.update()
            if o is opt and not unscale_first:
                # the kernels read the scaled grads without writing them back
                assert all(torch.equal(p.grad, g) for p, g in zip(ps, scaled))
        assert scalers[0].get_scale() == scalers[1].get_scale()
        if step == 0:
            # Skipped on the device: the state exists (the host did not look at the flag) but is a fresh one.
            assert all(torch.equal(p, q) for p, q in zip(params, ref_params)) and not ref.state
            assert all(not v.any() for s in opt.state.values() for v in s.values())
            continue
        assert_same(opt, params, ref, ref_params, torch.float32, msg=f"step {step}")
    if cls is fused_optim.LAMB:
        assert float(opt.state[params[0]]["step"]) == 3


SKIP_PATHS = {"reference": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
SKIP_OPTS = [
    (fused_optim.LAMB, dict(lr=1e-2)),
    (fused_optim.LAMB, dict(lr=1e-2, max_grad_norm=None, weight_decay=0.0)),
    (fused_optim.LARS, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
    (fused_optim.LARS, dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=1e-4)),  # fused: decided on the host
]


@pytest.mark.parametrize("path", SKIP_PATHS)
@pytest.mark.parametrize("cls,cfg", SKIP_OPTS, ids=["LAMB-clip", "LAMB-noclip", "LARS", "LARS-dampening"])
def test_skip_nonfinite_skips_the_whole_step(cls, cfg, path):
    """skip_nonfinite: a step whose grads hold inf/NaN (here: the first, and the third) changes nothing; the run
    equals one that never saw those steps."""
    params = make_params(shapes=[(5, 7), (13,), (1,)])
    clean = clone_params(params)
    opt = cls(params, skip_nonfinite=True, **SKIP_PATHS[path], **cfg)
    ref = cls(clean, foreach=False, **cfg)
    for step in range(5):
        grads = grads_for_step(params, step, drop=False)
        if step in (0, 2):
            grads[2 if step else 0].view(-1)[0] = float("nan") if step else float("inf")
            before = [p.detach().clone() for p in params]
            state = {i: {k: v.clone() for k, v in opt.state[p].items()} for i, p in enumerate(params)
                     if p in opt.state}
            set_grads(params, grads)
            opt.step()
            assert all(torch.equal(p, b) for p, b in zip(params, before))
            for i, p in enumerate(params):
                fresh = opt.state.get(p, {})
                if i in state:
                    assert all(torch.equal(fresh[k], v) for k, v in state[i].items())
                else:  # the fused path may set up the state it then skips: fresh, all zero
                    assert all(not v.any() for v in fresh.values())
            continue
        step_with([(params, opt), (clean, ref)], grads)
    assert_same(opt, params, ref, clean, torch.float32)


@pytest.mark.parametrize("cls", [fused_optim.LAMB, fused_optim.LARS], ids=lambda c: c.__name__)
def test_skip_nonfinite_is_set_for_the_whole_optimizer(cls):
    params = make_params(shapes=[(3,), (4,)])
    with pytest.raises(ValueError, match="skip_nonfinite"):
        cls([{"params": params[:1]}, {"params": params[1:], "skip_nonfinite": True}])
    with pytest.raises(ValueError, match="skip_nonfinite"):
        cls(params, skip_nonfinite=1)
