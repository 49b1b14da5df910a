"""Shared test problems: parameter sets, gradient schedules and tolerances."""

from __future__ import annotations

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# Tolerances per param dtype (state is fp32 for every dtype). Low-precision params differ by one rounding of the
# param dtype where the fp32 results of two paths straddle a rounding boundary, and such differences feed back into
# later steps: a few units in the last place after 7 steps (bf16: 2^-8 relative per unit).
TOL = {
    torch.float32: dict(atol=1e-5, rtol=2e-5),
    torch.float64: dict(atol=1e-12, rtol=1e-10),
    torch.bfloat16: dict(atol=1e-2, rtol=4e-2),
    torch.float16: dict(atol=2e-3, rtol=5e-3),
}
STATE_TOL = {
    torch.float32: dict(atol=1e-6, rtol=1e-5),
    torch.float64: dict(atol=1e-12, rtol=1e-10),
    torch.bfloat16: dict(atol=1e-5, rtol=1e-3),
    torch.float16: dict(atol=1e-5, rtol=1e-3),
}

# Shapes of the standard problem: odd sizes, a 1-element tensor, a tensor over one interpreter block, and a
# zero-size tensor last.
SHAPES = [(5, 7), (13,), (4097,), (1,), (3, 1, 2), (0,)]


def make_params(dtype=torch.float32, device=DEVICE, shapes=SHAPES, seed=0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype))
        for s in shapes
    ]


def clone_params(params) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad) for p in params]


def grads_for_step(params, step: int, seed=0, scale=1.0, drop=True) -> list[torch.Tensor | None]:
    """Fresh random grads; on steps 2 and 5 the second and third params get none; the frozen (requires_grad=False)
    params never do."""
    gen = torch.Generator().manual_seed(1000 * seed + step)
    out = []
    for i, p in enumerate(params):
        g = (scale * torch.randn(p.shape, generator=gen)).to(device=p.device, dtype=p.dtype)
        if not p.requires_grad or (drop and step in (2, 5) and i in (1, 2)):
            g = None
        out.append(g)
    return out


def set_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()


def groups_of(params, second: dict) -> list[dict]:
    """Two param groups: the first half with the optimizer's defaults, the rest with `second` overrides."""
    k = len(params) // 2
    return [{"params": params[:k]}, {"params": params[k:], **second}]


def assert_same(opt_a, params_a, opt_b, params_b, dtype, msg="") -> None:
    """Params and every state entry equal within the dtype's tolerance; NaN never passes."""
    for i, (a, b) in enumerate(zip(params_a, params_b)):
        assert torch.isfinite(a).all(), f"{msg}: non-finite param {i}"
        torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{msg}: param {i}: {m}")
        sa, sb = opt_a.state.get(a, {}), opt_b.state.get(b, {})
        assert sa.keys() == sb.keys(), f"{msg}: param {i} state keys {sorted(sa)} vs {sorted(sb)}"
        for key in sa:
            va, vb = sa[key], sb[key]
            if key == "step":
                assert float(va) == float(vb), f"{msg}: param {i} step {float(va)} vs {float(vb)}"
                continue
            assert va.dtype == vb.dtype, f"{msg}: param {i} {key} dtype {va.dtype} vs {vb.dtype}"
            assert torch.isfinite(va).all(), f"{msg}: non-finite {key} of param {i}"
            torch.testing.assert_close(va, vb, **STATE_TOL[dtype], msg=lambda m: f"{msg}: param {i} {key}: {m}")


def step_with(runs, grads) -> None:
    """Give every (params, optimizer) run the same grads, then take a step with each."""
    for params, _ in runs:
        set_grads(params, grads)
    for _, opt in runs:
        opt.step()
