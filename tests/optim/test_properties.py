"""Property tests: random shapes, dtypes and hyper-parameters; every path agrees with the reference."""

import pytest
import torch
from cases import DEVICE, assert_same, clone_params, step_with

import fused_optim

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

shapes = st.lists(st.one_of(st.tuples(st.integers(0, 70)), st.tuples(st.integers(1, 9), st.integers(1, 9))),
                  min_size=1, max_size=4)
dtypes = st.sampled_from([torch.float32, torch.bfloat16])
paths = st.sampled_from(["foreach", "fused"])

lamb_cfg = st.fixed_dictionaries({
    "lr": st.floats(1e-4, 0.1), "betas": st.tuples(st.floats(0.0, 0.95), st.floats(0.5, 0.999)),
    "eps": st.floats(1e-8, 1e-3), "weight_decay": st.sampled_from([0.0, 1e-3, 0.1]),
    "bias_correction": st.booleans(), "grad_averaging": st.booleans(), "trust_clip": st.booleans(),
    "always_adapt": st.booleans(), "maximize": st.booleans(), "max_grad_norm": st.sampled_from([None, 0.5, 10.0]),
})
lars_cfg = st.fixed_dictionaries({
    "lr": st.floats(1e-3, 1.0), "momentum": st.sampled_from([0.0, 0.5, 0.9]), "weight_decay": st.sampled_from(
        [0.0, 1e-4, 1e-2]), "trust_coeff": st.floats(1e-3, 0.1), "eps": st.floats(0.0, 1e-6),
    "trust_clip": st.booleans(), "always_adapt": st.booleans(), "maximize": st.booleans(),
})


def _check(cls, cfg, shape_list, dtype, path, seed):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(DEVICE, dtype)) for s in shape_list]
    ref_params = clone_params(params)
    opt = cls(params, **cfg, **({"fused": True} if path == "fused" else {"foreach": True}))
    ref = cls(ref_params, foreach=False, **cfg)
    for _ in range(2):
        grads = [torch.randn(p.shape, generator=gen).to(DEVICE, dtype) for p in params]
        step_with([(params, opt), (ref_params, ref)], grads)
    assert_same(opt, params, ref, ref_params, dtype)


SETTINGS = hypothesis.settings(max_examples=30, deadline=None, derandomize=True,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])


@SETTINGS
@hypothesis.given(cfg=lamb_cfg, shape_list=shapes, dtype=dtypes, path=paths, seed=st.integers(0, 2**16))
def test_lamb_paths_agree(cfg, shape_list, dtype, path, seed):
    _check(fused_optim.LAMB, cfg, shape_list, dtype, path, seed)


@SETTINGS
@hypothesis.given(cfg=lars_cfg, shape_list=shapes, dtype=dtypes, path=paths, seed=st.integers(0, 2**16))
def test_lars_paths_agree(cfg, shape_list, dtype, path, seed):
    _check(fused_optim.LARS, cfg, shape_list, dtype, path, seed)
