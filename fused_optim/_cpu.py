"""Compiled CPU loops for the multi-tensor path: each pass is one loop over a tensor, as the GPU kernels are.

The `torch._foreach_*` path runs one elementwise op after another, about a dozen round trips per element even when
the chunks stay in cache. Here numba compiles each pass into one vectorised, multi-threaded loop, so a step moves the
two-pass bound (LAMB 40 B, LARS 28 B per fp32 param) and nothing more. Used for contiguous fp32 CPU tensors when numba
is installed; everything else takes the `torch._foreach_*` ops. The math is the reference loop's, element by element;
sums are reassociated for vectorisation (fixed order for a given thread count, so runs repeat bitwise).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

ENABLED = importlib.util.find_spec("numba") is not None

_kernels = None


def usable(*lists: list[Tensor]) -> bool:
    """All tensors contiguous fp32 on the CPU, and numba installed."""
    if not ENABLED:
        return False
    return all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for ts in lists for t in ts
    )


def _compile():
    """Compiled on first use (cached on disk by numba), so importing fused_optim stays cheap."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import numpy as np
    from numba import njit, prange

    jit = njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "nsz"})

    @jit
    def lamb_moments(g, m, v, w, g_scale, beta1, beta3, beta2, one_minus_beta2, bc1, bc2, eps, wd, direct_lr):
        # pass A: new m, v; sums of w^2 and u^2; with direct_lr != 0 (no trust ratio) also w -= lr * u
        w_sq = np.float32(0.0)
        u_sq = np.float32(0.0)
        for i in prange(g.size):
            gi = g[i] * g_scale
            mi = beta1 * m[i] + beta3 * gi
            vi = beta2 * v[i] + one_minus_beta2 * gi * gi
            m[i] = mi
            v[i] = vi
            wi = w[i]
            ui = (mi / bc1) / (np.sqrt(vi / bc2) + eps) + wd * wi
            w_sq += wi * wi
            u_sq += ui * ui
            if direct_lr != 0:
                w[i] = wi - direct_lr * ui
        return w_sq, u_sq

    @jit
    def lamb_apply(m, v, w, bc1, bc2, eps, wd, step_size):
        # pass B: u again from m, v, w; w -= (lr * ratio) * u
        for i in prange(w.size):
            wi = w[i]
            ui = (m[i] / bc1) / (np.sqrt(v[i] / bc2) + eps) + wd * wi
            w[i] = wi - step_size * ui

    @jit
    def sums_of_squares(a, b):
        a_sq = np.float32(0.0)
        b_sq = np.float32(0.0)
        for i in prange(a.size):
            a_sq += a[i] * a[i]
            b_sq += b[i] * b[i]
        return a_sq, b_sq

    @jit
    def lars_apply(w, g, buf, sign, ratio, wd, adapt, momentum, one_minus_dampening, nesterov, first, lr):
        for i in prange(w.size):
            wi = w[i]
            gi = sign * g[i]
            d = (gi + wd * wi) * ratio if adapt else gi
            if momentum != 0:
                bi = d if first else momentum * buf[i] + one_minus_dampening * d
                buf[i] = bi
                d = d + momentum * bi if nesterov else bi
            w[i] = wi - lr * d

    _kernels = (lamb_moments, lamb_apply, sums_of_squares, lars_apply)
    return _kernels


def _flat(t: Tensor):
    return t.detach().view(-1).numpy()


def lamb(params, grads, exp_avgs, exp_avg_sqs, state_steps, *, clip_coef, lr, beta1, beta2, eps, weight_decay,
         bias_correction, grad_averaging, trust_clip, always_adapt, maximize) -> None:
    import numpy as np

    from ._math import bias_corrections, lamb_trust_ratio

    lamb_moments, lamb_apply, _, _ = _compile()
    f = np.float32
    lr = float(lr)
    adapt = weight_decay != 0 or always_adapt
    g_scale = (-1.0 if maximize else 1.0) / (float(clip_coef) if clip_coef is not None else 1.0)
    beta3 = 1.0 - beta1 if grad_averaging else 1.0
    torch._foreach_add_(state_steps, 1.0)
    corrections, sums = [], []
    for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, state_steps):
        bc1, bc2 = bias_corrections(step, beta1, beta2, bias_correction)
        corrections.append((f(bc1), f(bc2)))
        if p.numel() == 0:
            sums.append((0.0, 0.0))
            continue
        sums.append(
            lamb_moments(_flat(g), _flat(m), _flat(v), _flat(p), f(g_scale), f(beta1), f(beta3), f(beta2),
                         f(1.0 - beta2), f(bc1), f(bc2), f(eps), f(weight_decay), f(0.0 if adapt else lr))
        )
    if not adapt:
        return
    norms = torch.tensor(sums, dtype=torch.float32).sqrt()
    ratios = lamb_trust_ratio(norms[:, 0], norms[:, 1], trust_clip)
    # A host tensor: reading it waits for nothing.
    for p, m, v, (bc1, bc2), ratio in zip(params, exp_avgs, exp_avg_sqs, corrections, ratios.tolist()):
        if p.numel():
            lamb_apply(_flat(m), _flat(v), _flat(p), bc1, bc2, f(eps), f(weight_decay), f(lr * ratio))


def lars(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay, nesterov, trust_coeff, eps,
         trust_clip, always_adapt, maximize) -> None:
    import numpy as np

    from ._math import lars_trust_ratio

    _, _, sums_of_squares, lars_apply = _compile()
    f = np.float32
    lr = float(lr)
    adapt = weight_decay != 0 or always_adapt
    ratios = [1.0] * len(params)
    if adapt:
        sums = [sums_of_squares(_flat(p), _flat(g)) if p.numel() else (0.0, 0.0) for p, g in zip(params, grads)]
        norms = torch.tensor(sums, dtype=torch.float32).sqrt()
        # A host tensor: reading it waits for nothing.
        ratios = lars_trust_ratio(norms[:, 0], norms[:, 1], trust_coeff, weight_decay, eps, trust_clip, lr).tolist()
    empty = np.zeros(1, dtype=np.float32)
    for i, (p, g) in enumerate(zip(params, grads)):
        first = False
        if momentum != 0 and momentum_buffers[i] is None:
            momentum_buffers[i] = torch.empty_like(p, dtype=torch.float32, memory_format=torch.contiguous_format)
            first = True
        if p.numel() == 0:
            continue
        buf = _flat(momentum_buffers[i]) if momentum != 0 else empty
        lars_apply(_flat(p), _flat(g), buf, f(-1.0 if maximize else 1.0), f(ratios[i]), f(weight_decay), adapt,
                   f(momentum), f(1.0 - dampening), nesterov, first, f(lr))
