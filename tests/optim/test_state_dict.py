"""State round-trips keep fp32 state for low-precision params and continue bit-identically."""

import pytest
import torch
from cases import clone_params, grads_for_step, make_params, set_grads

import fused_optim

CASES = [
    (fused_optim.LAMB, dict(lr=1e-2)),
    (fused_optim.LARS, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
]


@pytest.mark.parametrize("path", [dict(foreach=False), dict(foreach=True), dict(fused=True)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cls,cfg", CASES, ids=["LAMB", "LARS"])
def test_save_load_continue_is_bit_identical(cls, cfg, dtype, path, tmp_path):
    params = make_params(dtype, shapes=[(5, 7), (13,), (1,)])
    straight = clone_params(params)
    opt_straight = cls(straight, **path, **cfg)
    opt = cls(params, **path, **cfg)
    for step in range(3):
        grads = grads_for_step(params, step, drop=False)
        set_grads(params, grads)
        set_grads(straight, grads)
        opt.step()
        opt_straight.step()
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
        set_grads(resumed, grads)
        set_grads(straight, grads)
        opt2.step()
        opt_straight.step()
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)
