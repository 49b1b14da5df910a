"""State round-trips keep fp32 state for low-precision params and continue bit-identically."""

import pytest
import torch
from cases import clone_params, grads_for_step, make_params, set_grads, step_with

import fused_optim

CASES = [
    (fused_optim.LAMB, dict(lr=1e-2)),
    (fused_optim.LARS, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
]


@pytest.mark.parametrize("path", [dict(foreach=False), dict(foreach=True), dict(fused=True)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cls,cfg", CASES, ids=["LAMB", "LARS"])
def test_save_load_continue_is_bit_identical(cls, cfg, dtype, path, tmp_path):
    params = make_params(dtype, shapes=[(5, 7), (13,), (1,)])
    straight = clone_params(params)
    opt_straight = cls(straight, **path, **cfg)
    opt = cls(params, **path, **cfg)
    for step in range(3):
        grads = grads_for_step(params, step, drop=False)
        step_with([(params, opt), (straight, opt_straight)], grads)
    torch.save({"params": [p.detach() for p in params], "optim": opt.state_dict()}, tmp_path / "ckpt.pt")

    saved = torch.load(tmp_path / "ckpt.pt")
    resumed = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    opt2 = cls(resumed, **path, **cfg)
    opt2.load_state_dict(saved["optim"])
    for p in resumed:
        for key, value in opt2.state[p].items():
            if key != "step":
                assert value.dtype == torch.float32, key
    for step in range(3, 6):
        grads = grads_for_step(params, step, drop=False)
        step_with([(resumed, opt2), (straight, opt_straight)], grads)
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)


def _stepped(cls, params, **cfg):
    opt = cls(params, **cfg)
    set_grads(params, grads_for_step(params, 0, drop=False))
    opt.step()
    return opt


def _snapshot(opt, params):
    return [p.detach().clone() for p in params], {
        i: {k: v.clone() for k, v in opt.state[p].items()} for i, p in enumerate(params) if p in opt.state
    }, [dict(g, params=None) for g in opt.param_groups]


def _unchanged(opt, params, snap):
    ps, st, groups = snap
    assert all(torch.equal(p, q) for p, q in zip(params, ps))
    for i, p in enumerate(params):
        for k, v in st.get(i, {}).items():
            assert torch.equal(opt.state[p][k], v)
    assert [dict(g, params=None) for g in opt.param_groups] == groups


@pytest.mark.parametrize(
    "source,target,message",
    [
        (fused_optim.LARS, fused_optim.LAMB, "not one of a LAMB"),
        (fused_optim.LAMB, fused_optim.LARS, "not one of a LARS"),
    ],
    ids=["LARS->LAMB", "LAMB->LARS"],
)
def test_state_dict_of_another_optimizer_is_refused(source, target, message):
    sd = _stepped(source, make_params(shapes=[(3, 4), (5,)]), momentum=0.9).state_dict() \
        if source is fused_optim.LARS else _stepped(source, make_params(shapes=[(3, 4), (5,)])).state_dict()
    params = make_params(shapes=[(3, 4), (5,)], seed=1)
    opt = _stepped(target, params, **({"momentum": 0.9} if target is fused_optim.LARS else {}))
    snap = _snapshot(opt, params)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(sd)
    _unchanged(opt, params, snap)


@pytest.mark.parametrize("cls,cfg", CASES, ids=["LAMB", "LARS"])
def test_state_dict_of_other_shapes_is_refused(cls, cfg):
    sd = _stepped(cls, make_params(shapes=[(3, 4), (5,)]), **cfg).state_dict()
    params = make_params(shapes=[(4, 3), (5,)], seed=1)
    opt = _stepped(cls, params, **cfg)
    snap = _snapshot(opt, params)
    with pytest.raises(ValueError, match=r"shape \(3, 4\) for a param of shape \(4, 3\)"):
        opt.load_state_dict(sd)
    _unchanged(opt, params, snap)
    other_count = _stepped(cls, make_params(shapes=[(4, 3)]), **cfg).state_dict()
    with pytest.raises(ValueError, match="has 1 params"):
        opt.load_state_dict(other_count)
    _unchanged(opt, params, snap)


def test_timm_lamb_state_dict_loads_and_continues_like_timm():
    timm_optim = pytest.importorskip("timm.optim")
    params = make_params(shapes=[(6, 5), (11,)])
    theirs = clone_params(params)
    t = timm_optim.Lamb(theirs, lr=0.01)
    for step in range(3):
        set_grads(theirs, grads_for_step(theirs, step, drop=False))
        t.step()
    mine = clone_params(theirs)
    ours = fused_optim.LAMB(mine, lr=0.5)
    ours.load_state_dict(t.state_dict())
    assert ours.param_groups[0]["lr"] == 0.01 and float(ours.state[mine[0]]["step"]) == 3
    for step in range(3, 6):
        step_with([(theirs, t), (mine, ours)], grads_for_step(theirs, step, drop=False))
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_timm_lamb_with_options_we_lack_is_refused():
    timm_optim = pytest.importorskip("timm.optim")
    params = make_params(shapes=[(4,)])
    t = timm_optim.Lamb(clone_params(params), caution=True)
    opt = fused_optim.LAMB(params)
    with pytest.raises(ValueError, match="cannot continue a run with {'caution': True}"):
        opt.load_state_dict(t.state_dict())


def test_timm_lars_state_dict_loads_and_continues_like_timm():
    timm_optim = pytest.importorskip("timm.optim")
    params = make_params(shapes=[(6, 5), (11,)])
    theirs = clone_params(params)
    cfg = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
    t = timm_optim.Lars(theirs, **cfg)
    for step in range(3):
        set_grads(theirs, grads_for_step(theirs, step, drop=False))
        t.step()
    mine = clone_params(theirs)
    ours = fused_optim.LARS(mine, **cfg)
    ours.load_state_dict(t.state_dict())
    for step in range(3, 6):
        step_with([(theirs, t), (mine, ours)], grads_for_step(theirs, step, drop=False))
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_load_across_devices_with_map_location(tmp_path):
    params = make_params(shapes=[(5, 3)])
    opt = _stepped(fused_optim.LAMB, params)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    sd = torch.load(tmp_path / "opt.pt", map_location="cpu")
    cpu_params = [torch.nn.Parameter(p.detach().cpu()) for p in params]
    again = fused_optim.LAMB(cpu_params, foreach=False)
    again.load_state_dict(sd)
    assert again.state[cpu_params[0]]["exp_avg"].device.type == "cpu"
