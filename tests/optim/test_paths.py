"""Every implementation path against the reference loop: several steps, params and every state entry."""

import pytest
import torch
from cases import DEVICE, assert_same, clone_params, grads_for_step, groups_of, make_params, set_grads, step_with

import fused_optim
import fused_optim._common as common
from fused_optim import _cpu

LAMB_CASES = [
    ("default", dict(lr=1e-2), dict(lr=5e-3, weight_decay=0.0)),
    ("no-clip", dict(lr=1e-2, max_grad_norm=None), dict(weight_decay=0.1)),
    ("clip-active", dict(lr=1e-2, max_grad_norm=0.5, weight_decay=0.1), dict(lr=2e-2)),
    ("no-bias-correction-no-averaging", dict(lr=1e-2, bias_correction=False, grad_averaging=False), dict()),
    ("trust-clip-always-adapt", dict(lr=1e-1, trust_clip=True, always_adapt=True, weight_decay=0.0), dict()),
    ("maximize-betas", dict(lr=1e-2, maximize=True, betas=(0.8, 0.99), eps=1e-4), dict(weight_decay=0.0)),
    ("tensor-lr", dict(lr=torch.tensor(1e-2)), dict(weight_decay=0.0)),
]

LARS_CASES = [
    ("default", dict(), dict(lr=0.5)),
    ("momentum-wd", dict(lr=0.1, momentum=0.9, weight_decay=1e-4), dict(weight_decay=0.0)),
    (
        "nesterov-trust-clip",
        dict(lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-3, trust_clip=True),
        dict(momentum=0.5),
    ),
    (
        "dampening-always-adapt-maximize",
        dict(lr=1.0, momentum=0.9, dampening=0.5, always_adapt=True, maximize=True, trust_coeff=0.02),
        dict(weight_decay=1e-2, eps=1e-3),
    ),
    ("tensor-lr", dict(lr=torch.tensor(0.1), momentum=0.9, weight_decay=1e-4), dict()),
]

PATHS = ["foreach", "foreach-eager", "foreach-chunked", "fused"]


def _path_kwargs(path, monkeypatch):
    if path in ("foreach-eager", "foreach-chunked"):
        # torch._foreach_* ops instead of the compiled CPU loops
        monkeypatch.setattr(_cpu, "ENABLED", False)
    if path == "foreach-chunked":
        # Small chunks so that tensors are cut into several slices and small ones packed together.
        monkeypatch.setattr(common, "CHUNK_ELEMENTS", 64)
    return dict(fused=True) if path == "fused" else dict(foreach=True)


def _run(cls, cfg, second, path, dtype, monkeypatch, steps=7):
    params = make_params(dtype)
    params[3].requires_grad_(False)  # a frozen param: never has a grad
    ref_params = clone_params(params)
    ref = cls(groups_of(ref_params, second), foreach=False, **cfg)
    opt = cls(groups_of(params, second), **_path_kwargs(path, monkeypatch), **cfg)
    for step in range(steps):
        grads = grads_for_step(params, step)
        step_with([(ref_params, ref), (params, opt)], grads)
        assert_same(opt, params, ref, ref_params, dtype, msg=f"step {step}")
    return opt, params


DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,cfg,second", LAMB_CASES, ids=[c[0] for c in LAMB_CASES])
def test_lamb_path_matches_reference(name, cfg, second, path, dtype, monkeypatch):
    opt, params = _run(fused_optim.LAMB, cfg, second, path, dtype, monkeypatch)
    # State is fp32 whatever the param dtype, and `step` counts only steps with a grad.
    state = opt.state[params[0]]
    assert state["exp_avg"].dtype == torch.float32 and state["exp_avg_sq"].dtype == torch.float32
    assert float(state["step"]) == 7 and float(opt.state[params[1]]["step"]) == 5
    assert params[3] not in opt.state


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,cfg,second", LARS_CASES, ids=[c[0] for c in LARS_CASES])
def test_lars_path_matches_reference(name, cfg, second, path, dtype, monkeypatch):
    opt, params = _run(fused_optim.LARS, cfg, second, path, dtype, monkeypatch)
    if cfg.get("momentum", 0) != 0:
        assert opt.state[params[0]]["momentum_buffer"].dtype == torch.float32


@pytest.mark.parametrize("cls", [fused_optim.LAMB, fused_optim.LARS], ids=lambda c: c.__name__)
@pytest.mark.parametrize("path", ["reference", "foreach", "fused"])
def test_fp16_params_keep_fp32_state(cls, path, monkeypatch):
    kwargs = dict(foreach=False) if path == "reference" else _path_kwargs(path, monkeypatch)
    cfg = dict(lr=1e-2) if cls is fused_optim.LAMB else dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
    params = make_params(torch.float16)
    ref_params = clone_params(params)
    ref = cls(ref_params, foreach=False, **cfg)
    opt = cls(params, **kwargs, **cfg)
    for step in range(4):
        grads = grads_for_step(params, step, drop=False)
        step_with([(params, opt), (ref_params, ref)], grads)
    assert_same(opt, params, ref, ref_params, torch.float16)
    assert all(v.dtype == torch.float32 for s in opt.state.values() for k, v in s.items() if k != "step")


@pytest.mark.parametrize("cls", [fused_optim.LAMB, fused_optim.LARS], ids=lambda c: c.__name__)
@pytest.mark.parametrize("path", ["reference", "foreach", "fused"])
def test_grads_are_not_modified(cls, path, monkeypatch):
    kwargs = dict(foreach=False) if path == "reference" else _path_kwargs(path, monkeypatch)
    cfg = dict(max_grad_norm=0.1, maximize=True) if cls is fused_optim.LAMB else dict(momentum=0.9, weight_decay=0.1)
    params = make_params()
    opt = cls(params, **kwargs, **cfg)
    grads = grads_for_step(params, 0, drop=False)
    set_grads(params, grads)
    opt.step()
    for p, g in zip(params, grads):
        assert torch.equal(p.grad, g)


@pytest.mark.parametrize("cls", [fused_optim.LAMB, fused_optim.LARS], ids=lambda c: c.__name__)
def test_functional_form_matches_class(cls):
    params = make_params()
    ref_params = clone_params(params)
    opt = cls(ref_params, foreach=False, weight_decay=0.01, lr=0.01)
    grads = grads_for_step(params, 0, drop=False)
    set_grads(ref_params, grads)
    opt.step()
    if cls is fused_optim.LAMB:
        m = [torch.zeros_like(p) for p in params]
        v = [torch.zeros_like(p) for p in params]
        steps = [torch.zeros((), dtype=torch.float32) for _ in params]
        with torch.no_grad():
            fused_optim.lamb(params, grads, m, v, steps, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-6,
                             weight_decay=0.01, max_grad_norm=1.0, foreach=True)
        torch.testing.assert_close(m[0], opt.state[ref_params[0]]["exp_avg"])
    else:
        with torch.no_grad():
            fused_optim.lars(params, grads, [], lr=0.01, weight_decay=0.01, foreach=True)
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p, q)


def test_default_path_selection():
    cpu = [torch.zeros(3)]
    assert common.select_impl(cpu, None, None, "X") == "foreach"
    assert common.select_impl(cpu, False, None, "X") == "reference"
    assert common.select_impl(cpu, True, None, "X") == "foreach"
    assert common.select_impl(cpu, None, False, "X") == "foreach"
    if DEVICE.type == "cuda":
        assert common.select_impl([torch.zeros(3, device=DEVICE)], None, None, "X") == "fused"


def test_fused_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = fused_optim.LAMB([p], fused=True)
    with pytest.raises(RuntimeError, match=r"fused=True\) needs CUDA tensors"):
        opt.step()
    assert torch.equal(p, torch.ones(3)) and len(opt.state) == 0


@pytest.mark.parametrize("cls", [fused_optim.LAMB, fused_optim.LARS], ids=lambda c: c.__name__)
def test_compiled_cpu_loops_repeat_bitwise(cls):
    if not _cpu.ENABLED or DEVICE.type != "cpu":
        pytest.skip("the compiled CPU loops need numba and CPU tensors")
    runs = []
    for _ in range(2):
        params = make_params(shapes=[(300, 301), (7,), (1,)])
        opt = cls(params, weight_decay=0.01, lr=0.01, foreach=True)
        for step in range(3):
            set_grads(params, grads_for_step(params, step, drop=False))
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        assert torch.equal(a, b)
