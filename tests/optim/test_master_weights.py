"""fp32 master weights for bf16/fp16 params: every path against the reference, equal to an fp32 run, checkpoints."""

import pytest
import torch
from cases import DEVICE, TOL, assert_same, clone_params, grads_for_step, groups_of, make_params, set_grads, step_with

import fused_optim

LAMB_CFG = dict(lr=1e-2, weight_decay=0.01, max_grad_norm=0.5)
LARS_CFG = dict(lr=0.5, momentum=0.9, weight_decay=1e-4, nesterov=True)
OPTS = [(fused_optim.LAMB, LAMB_CFG, dict(weight_decay=0.0)), (fused_optim.LARS, LARS_CFG, dict(momentum=0.5))]
IDS = ["LAMB", "LARS"]
PATHS = {"foreach": dict(foreach=True), "fused": dict(fused=True)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cls,cfg,second", OPTS, ids=IDS)
def test_path_with_masters_matches_the_reference(cls, cfg, second, path, dtype):
    # A mixed group: low-precision params get masters, the fp32 one is updated directly.
    params = make_params(dtype) + make_params(torch.float32, shapes=[(9,)], seed=3)
    params[3].requires_grad_(False)
    ref_params = clone_params(params)
    ref = cls(groups_of(ref_params, second), foreach=False, master_weights=True, **cfg)
    opt = cls(groups_of(params, second), master_weights=True, **PATHS[path], **cfg)
    for step in range(7):
        grads = grads_for_step(params, step)
        step_with([(ref_params, ref), (params, opt)], grads)
        assert_same(opt, params[:-1], ref, ref_params[:-1], dtype, msg=f"step {step}")
        assert_same(opt, params[-1:], ref, ref_params[-1:], torch.float32, msg=f"step {step}")
    for p in params[:-1]:
        if p in opt.state:
            master = opt.state[p]["master_param"]
            assert master.dtype == torch.float32
            assert torch.equal(p, master.to(dtype)), "the param is its master rounded once"
    assert "master_param" not in opt.state[params[-1]]
    assert params[3] not in opt.state


@pytest.mark.parametrize("path", ["reference", *PATHS])
@pytest.mark.parametrize("cls,cfg,second", OPTS, ids=IDS)
def test_masters_follow_an_fp32_run_where_bf16_params_stall(cls, cfg, second, path):
    """Steps far below bf16's resolution: without masters the bf16 params never move; with them the masters are
    the params of an fp32 run on the same (bf16-valued) grads."""
    cfg = dict(cfg, lr=cfg["lr"] * 1e-4)
    kwargs = dict(foreach=False) if path == "reference" else PATHS[path]
    bf16 = make_params(torch.bfloat16, shapes=[(64, 3), (129,)])
    fp32 = [torch.nn.Parameter(p.detach().float()) for p in bf16]
    plain = clone_params(bf16)
    start = [p.detach().clone() for p in bf16]
    opt = cls(bf16, master_weights=True, **kwargs, **cfg)
    opt_fp32 = cls(fp32, **kwargs, **cfg)
    opt_plain = cls(plain, **kwargs, **cfg)
    for step in range(20):
        grads = grads_for_step(bf16, step, drop=False)
        set_grads(bf16, grads)
        set_grads(plain, grads)
        set_grads(fp32, [g.float() for g in grads])
        for o in (opt, opt_fp32, opt_plain):
            o.step()
    for p, q, r, s in zip(bf16, fp32, plain, start):
        master = opt.state[p]["master_param"]
        if path == "reference":
            assert torch.equal(master, q)
        else:
            torch.testing.assert_close(master, q, **TOL[torch.float32])
        assert torch.equal(p, master.to(torch.bfloat16))
        assert torch.equal(r, s), "without masters, these steps are lost to bf16 rounding"
        assert not torch.equal(master, s.float())


@pytest.mark.parametrize("path", ["reference", *PATHS])
@pytest.mark.parametrize("cls,cfg,second", OPTS, ids=IDS)
def test_checkpoint_with_masters_continues_bit_identically(cls, cfg, second, path, tmp_path):
    kwargs = dict(foreach=False) if path == "reference" else PATHS[path]
    params = make_params(torch.bfloat16, shapes=[(5, 7), (13,)])
    straight = clone_params(params)
    opt, opt_straight = (cls(ps, master_weights=True, **kwargs, **cfg) for ps in (params, straight))
    for step in range(3):
        grads = grads_for_step(params, step, drop=False)
        step_with([(params, opt), (straight, opt_straight)], grads)
    torch.save({"params": [p.detach() for p in params], "optim": opt.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt")
    resumed = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    opt2 = cls(resumed, master_weights=True, **kwargs, **cfg)
    opt2.load_state_dict(saved["optim"])
    for p in resumed:
        assert opt2.state[p]["master_param"].dtype == torch.float32
    for step in range(3, 6):
        grads = grads_for_step(params, step, drop=False)
        step_with([(resumed, opt2), (straight, opt_straight)], grads)
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)
        assert torch.equal(opt2.state[a]["master_param"], opt_straight.state[b]["master_param"])


@pytest.mark.parametrize("cls,cfg,second", OPTS, ids=IDS)
def test_turning_master_weights_off_drops_the_masters(cls, cfg, second):
    params = make_params(torch.bfloat16, shapes=[(6,)])
    opt = cls(params, master_weights=True, **cfg)
    set_grads(params, grads_for_step(params, 0, drop=False))
    opt.step()
    again = clone_params(params)
    opt2 = cls(again, **cfg)
    opt2.load_state_dict(opt.state_dict())
    # Like every hyper-parameter, master_weights comes back with the checkpoint's param groups.
    assert opt2.param_groups[0]["master_weights"] is True and "master_param" in opt2.state[again[0]]
    opt2.param_groups[0]["master_weights"] = False
    reference = clone_params(again)
    opt_ref = cls(reference, **cfg)
    opt_ref.load_state_dict({**opt2.state_dict(), "state": {0: {k: v for k, v in opt2.state[again[0]].items()
                                                                 if k != "master_param"}}})
    for ps in (again, reference):
        set_grads(ps, grads_for_step(params, 1, drop=False))
    opt2.step()  # the param is the truth again: the master is dropped, not updated behind its back
    opt_ref.step()
    assert "master_param" not in opt2.state[again[0]]
    assert torch.equal(again[0], reference[0])


@pytest.mark.parametrize("cls,cfg,second", OPTS, ids=IDS)
def test_bad_master_weights_arguments(cls, cfg, second):
    params = make_params(torch.bfloat16, shapes=[(6,)])
    with pytest.raises(ValueError, match="master_weights"):
        cls(params, master_weights="yes", **cfg)
    fn = fused_optim.lamb if cls is fused_optim.LAMB else fused_optim.lars
    p = params[0]
    g = torch.ones_like(p)
    if cls is fused_optim.LAMB:
        state = [[torch.zeros_like(p, dtype=torch.float32)], [torch.zeros_like(p, dtype=torch.float32)],
                 [torch.zeros((), dtype=torch.float32)]]
        hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01)
    else:
        state = [[]]
        hyper = dict(lr=0.1)
    before = p.detach().clone()
    for masters, match in [([p.detach().clone()], "float32"), ([torch.zeros(5, device=DEVICE)], "shape"),
                           ([], "master params")]:
        with pytest.raises(ValueError, match=match):
            fn([p], [g], *state, master_params=masters, **hyper)
    assert torch.equal(p, before)
