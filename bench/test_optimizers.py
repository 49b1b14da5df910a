"""Optimizer step time, ours against the anchors, on parameter sets shaped like real models."""

from __future__ import annotations

import pytest
import torch
from conftest import record, sync
from providers import PROVIDERS, floor_op, make
from shapes import SHAPESETS, bytes_per_param, numel

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
# BERT-large only where there is the memory bandwidth to time it; bf16 params only on GPU.
SETS = ["lenet5", "resnet50", "bert-base"] + (["bert-large"] if CUDA else [])
DTYPES = [torch.float32] + ([torch.bfloat16] if CUDA else [])
ROUNDS = {"lenet5": 50, "resnet50": 10, "bert-base": 5, "bert-large": 10}
SLOW_ON_CPU = {"reference", "colossalai"}


def _params(shapes, dtype):
    gen = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=gen).to(DEVICE, dtype))
        p.grad = (1e-2 * torch.randn(s, generator=gen)).to(DEVICE, dtype)
        params.append(p)
    return params


def _providers(op):
    out = list(PROVIDERS[op])
    if CUDA and op == "lamb":
        out.append("colossalai-fused")
    return out


CASES = [
    pytest.param(op, shapes, dtype, provider, id=f"{op}-{shapes}-{str(dtype)[6:]}-{provider}")
    for op in ("lamb", "lars")
    for shapes in SETS
    for dtype in DTYPES
    for provider in _providers(op)
]


@pytest.mark.parametrize("op,shapeset,dtype,provider", CASES)
def test_step(benchmark, stream_bandwidth, op, shapeset, dtype, provider):
    if provider in ("timm", "colossalai", "colossalai-fused"):
        pytest.importorskip("timm" if provider == "timm" else "colossalai")
    shapes = SHAPESETS[shapeset]()
    params = _params(shapes, dtype)
    try:
        opt = make(op, provider, params)
        opt.step()  # first call: state allocation, compilation
    except RuntimeError as e:
        pytest.skip(f"{provider} does not run here: {e}")
    group = f"{op}-{shapeset}-{str(dtype)[6:]}"
    benchmark.group = group
    n = numel(shapes)
    moved = bytes_per_param(floor_op(op, provider), dtype.itemsize) * n

    def step():
        opt.step()
        sync(DEVICE)

    rounds = ROUNDS[shapeset]
    if not CUDA and provider in SLOW_ON_CPU and shapeset == "bert-base":
        rounds = 3
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1, iterations=1)
    median = None if benchmark.disabled else benchmark.stats.stats.median
    benchmark.extra_info.update(
        numel=n, tensors=len(shapes), bytes_moved=moved, device=str(DEVICE),
        gb_per_s=(moved / median / 1e9) if median else None,
    )
    record(group, provider, median, dict(op=op, numel=n, tensors=len(shapes), param_bytes=dtype.itemsize),
           benchmark.extra_info)
    assert all(torch.isfinite(p).all() for p in params[:3])
